//! `pareidolia`: the command line. Parses arguments (clap), turns them into a checked
//! config, wires the library crates together and maps every error to a message and a
//! non-zero exit code, in this one place.

mod audit;
mod bench;
mod classify;
mod cli;
mod daemon;
mod export;
mod fitness_check;
mod montage;
mod plugins;
mod retrain;
mod run;
mod status;
mod transfer;
mod worker;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match &cli.command {
        cli::Command::Daemon(a) => daemon::init_logging(a.serve.log_format),
        cli::Command::Resume(a) => daemon::init_logging(a.serve.log_format),
        cli::Command::Worker(a) => daemon::init_logging(a.log_format),
        _ => init_logging(cli.verbose),
    }
    let result = match cli.command {
        cli::Command::Run(args) => run::run(args),
        cli::Command::Classify(args) => classify::classify(args),
        cli::Command::Bench(args) => bench::bench(args),
        cli::Command::Daemon(args) => daemon::daemon(args),
        cli::Command::Resume(args) => daemon::resume(args),
        cli::Command::Status(args) => status::status(args),
        cli::Command::Export(args) => export::export(args),
        cli::Command::ExportGenome(args) => export::export_genome(args),
        cli::Command::Montage(args) => montage::montage(args),
        cli::Command::Transfer(args) => transfer::transfer(args),
        cli::Command::Train(args) => retrain::train(args),
        cli::Command::Retrain(args) => retrain::retrain(args),
        cli::Command::Plugins(cmd) => plugins::plugins(cmd),
        cli::Command::Worker(args) => worker::worker(args),
        cli::Command::Audit(args) => audit::audit(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`pareidolia classify ... | head -1`) is not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
