//! CLI dispatch only: `serve`, `check`, `flags eval`.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "LLM gateway routed by PostHog feature flags"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Flag tools.
    Flags {
        #[command(subcommand)]
        command: FlagsCommand,
    },
}

#[derive(Subcommand)]
enum FlagsCommand {
    /// Evaluate flags locally exactly as posthog-python does.
    Eval(switchyard::flags::cli::EvalArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Flags {
            command: FlagsCommand::Eval(args),
        }) => {
            let stdin = std::io::stdin().lock();
            let stdout = std::io::stdout().lock();
            match switchyard::flags::cli::run(&args, stdin, stdout) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchyard flags eval: {e}");
                    ExitCode::from(64)
                }
            }
        }
        None => ExitCode::SUCCESS,
    }
}
