//! The `switchboard` binary: one command for every Switchboard service.
//!
//! Only this crate talks to the outside world: it parses arguments, prints, picks exit
//! codes and touches files; the protocol logic it calls lives in `sip-core`.

#[allow(dead_code)] // read by `serve`, which lands with the transport layer (issue 3)
mod config;
mod parse_cmd;
#[allow(dead_code)] // driven by `serve`, which lands with the transport layer (issue 3)
mod registrar;
#[allow(dead_code)] // driven by `serve`, which lands with the transport layer (issue 3)
mod service;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Switchboard: a SIP registrar, proxy, PBX and softphone in one binary.
#[derive(Parser)]
#[command(name = "switchboard", version, about, long_about = None)]
#[command(after_help = "Examples:\n  \
    switchboard parse invite.txt        show a SIP message from a capture as JSON\n  \
    pbpaste | switchboard parse -       the same, from standard input")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read one SIP message and print it as JSON: the start line, each header (typed
    /// where Switchboard knows it), the body, and the SDP decoded when there is one.
    ///
    /// Exits 0 for a valid message. For a message that is not valid SIP it prints
    /// `error: <what and where>` on standard error and exits 1. Bare LF line ends (as
    /// when a message is pasted into a file) are accepted.
    Parse {
        /// The file holding the message, or `-` (the default) for standard input.
        #[arg(default_value = "-")]
        file: String,
        /// Print compact JSON on one line instead of indented JSON.
        #[arg(long)]
        compact: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Parse { file, compact } => parse_cmd::run(&file, compact),
    }
}
