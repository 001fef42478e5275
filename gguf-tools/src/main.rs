//! `gguf-tools`: inspect, quantize and convert GGUF files.

fn main() {
    eprintln!("gguf-tools: no commands yet");
    std::process::exit(2);
}
