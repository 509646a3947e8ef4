//! `switchyard flags eval`: evaluate flags from a definitions file, one case or JSON Lines on stdin.

use std::io::{BufRead, Write};

/// Arguments of `switchyard flags eval` (see the contract).
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// A file in the shape of PostHog's flag-definitions response.
    #[arg(long)]
    pub flags: std::path::PathBuf,
}

/// Runs `flags eval`; returns an error message for a fatal problem (unreadable file, bad argument).
pub fn run(_args: &EvalArgs, _stdin: impl BufRead, _stdout: impl Write) -> Result<(), String> {
    Err("flags eval is not built yet".to_owned())
}
