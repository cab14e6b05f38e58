//! The `switchboard` binary: one command for every Switchboard service.
//!
//! Only this crate talks to the outside world: it parses arguments, prints, picks exit
//! codes and touches files; the protocol logic it calls lives in `sip-core`.
//!
//! A registrar and proxy with one user, and a phone that calls through it:
//!
//! ```text
//! switchboard user add alice --password s3cret
//! switchboard serve
//! switchboard phone --user alice --password s3cret --server 127.0.0.1:5060 call sip:bob@example.test
//! ```

mod admin_cmd;
mod admin_ops;
mod authenticator;
mod b2bua;
mod cdr_cmd;
mod config;
mod dial_plan;
mod myself;
mod parse_cmd;
mod pbx_directory;
mod pbx_records;
mod phone;
mod proxy;
mod registrar;
mod route_cmd;
mod router;
mod serve;
mod service;
mod tls_setup;
mod user_cmd;
mod user_ops;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: `serve` allocates and frees many small blocks per
/// message, and glibc spent ~14% of its CPU per REGISTER in malloc, mostly merging its
/// fast bins each time a block over 1 KiB was asked for (`malloc_consolidate`). Seven
/// alternating runs at 3,000 REGISTERs/s: median 71.0 against 79.0 µs per registration.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Switchboard: a SIP registrar, proxy, PBX and softphone in one binary.
#[derive(Parser)]
#[command(name = "switchboard", version, about, long_about = None)]
#[command(after_help = "Examples:\n  \
    switchboard parse invite.txt        show a SIP message from a capture as JSON\n  \
    pbpaste | switchboard parse -       the same, from standard input\n  \
    switchboard user add alice --password s3cret   let alice register\n  \
    switchboard location                show who is registered where\n  \
    switchboard route 201 --from alice  what the dial plan does with a call\n  \
    switchboard cdr --since 1h          the calls of the last hour\n  \
    switchboard admin add ops --password-stdin   an administrator of the HTTP API\n  \
    switchboard phone --user alice --password s3cret --server 127.0.0.1:5060 call sip:bob@example.test")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the SIP server: listen on the configured transports (UDP and TCP 5060 by
    /// default), register phones, route calls and messages through the dial plan
    /// (`[pbx] dial_plan`), answer OPTIONS. Stops cleanly on Ctrl-C or SIGTERM; SIGHUP
    /// reloads the dial plan (so does a change to its file).
    ///
    /// Without --config it runs on defaults: SIP on 0.0.0.0:5060 UDP and TCP, users and
    /// registrations in ./switchboard.db, domain "localhost". Log detail is set with
    /// RUST_LOG (e.g. RUST_LOG=debug, or RUST_LOG=sip_net::trace=debug to see every message).
    Serve {
        /// The TOML configuration file (see README for every key).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
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
    /// Manage the users who may register: add, list, show, passwd, remove, import,
    /// extension, forward (call forwarding).
    ///
    /// Works on the database `serve` uses (`[storage] database`), whether `serve` is
    /// running or not. Passwords are stored only as digest hashes for the realm
    /// `[sip] domain`.
    User {
        /// The configuration file, the same as `serve`'s (the defaults when not given).
        #[arg(long, global = true, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: user_cmd::UserAction,
    },
    /// Print the current registrations: AOR, contact, expiry, transport, source address
    /// and user agent.
    Location {
        /// The configuration file, the same as `serve`'s (the defaults when not given).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print JSON (every stored field) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A scriptable softphone: registers, places and answers calls with RTP audio,
    /// holds and resumes, sends DTMF, sends and receives instant messages. Prints one
    /// line per event (or JSON with --json); the exit code says how the call ended.
    Phone(Box<phone::PhoneArgs>),
    /// Show what the dial plan would do with a call, without placing it: the rule that
    /// applies and its line, the rewritten number, the action, the caller ID, and what
    /// `serve` does with it today.
    Route(route_cmd::RouteArgs),
    /// Print the call detail records: one line per call `serve` handled, with the
    /// caller, the number dialled, the callee, the times, the billable seconds, how it
    /// ended and who hung up. Filter by time (--since, --until), user and count; JSON
    /// and CSV for reports.
    Cdr(cdr_cmd::CdrArgs),
    /// Manage the administrators of the HTTP admin API (`[admin]`, on 127.0.0.1:8080 by
    /// default): add, passwd, list, remove, and token (an API token for scripts).
    ///
    /// Works on the database `serve` uses, whether `serve` is running or not.
    Admin {
        /// The configuration file, the same as `serve`'s (the defaults when not given).
        #[arg(long, global = true, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: admin_cmd::AdminAction,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve::run(config.as_deref()),
        Command::Parse { file, compact } => parse_cmd::run(&file, compact),
        Command::User { config, action } => user_cmd::run_user(config.as_deref(), action),
        Command::Location { config, json } => user_cmd::run_location(config.as_deref(), json),
        Command::Phone(args) => phone::run(*args),
        Command::Route(args) => route_cmd::run(args),
        Command::Cdr(args) => cdr_cmd::run(args),
        Command::Admin { config, action } => admin_cmd::run(config.as_deref(), action),
    }
}
