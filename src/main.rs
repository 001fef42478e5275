//! The `llava-edge` command line: parses flags and calls the library.

fn main() {
    eprintln!("llava-edge: no commands yet");
    std::process::exit(2);
}
