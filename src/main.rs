//! The `llava-edge` command line: parses flags, calls the library, prints. The library loads
//! the model ([`llava_edge::load`]) and answers requests; the modules under `src/cli/` are the
//! binary's own.

use std::process::ExitCode;

use clap::Parser;

mod cli {
    pub mod args;
    pub mod bench;
    pub mod compare;
    pub mod interrupt;
    pub mod run;
    #[cfg(feature = "server")]
    pub mod serve;
}

use cli::args::{llama_cpp_args, missing_verb, Cli, Command};

fn main() -> ExitCode {
    let args = llama_cpp_args(std::env::args_os());
    if let Some(hint) = missing_verb(&args) {
        eprintln!("llava-edge: error: {hint}");
        return ExitCode::from(2);
    }
    let done = match Cli::parse_from(args).command {
        Command::Run(a) => cli::run::run(*a),
        Command::Bench(a) => cli::bench::bench(&a),
        #[cfg(feature = "server")]
        Command::Serve(a) => cli::serve::serve(*a),
    };
    #[cfg(feature = "vulkan")]
    if llava_edge::vulkan::profile::enabled() {
        let times = llava_edge::vulkan::profile::take();
        eprint!("{}", llava_edge::vulkan::profile::report(&times));
    }
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llava-edge: error: {e}");
            ExitCode::FAILURE
        }
    }
}
