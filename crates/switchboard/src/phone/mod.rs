//! `switchboard phone`: a softphone anyone can script. It registers (when given a
//! server), then does one thing: places a call, answers calls, sends a message or
//! prints the messages it receives, reporting every event as a line on standard output
//! and how a call ended in its exit code.
//!
//! The arguments are here; the user agent that does the work is `sip_ua::UserAgent`, run
//! as a `sip_net::Machine` on the one driver loop with real RTP sessions by [`driver`],
//! and the output format is [`print`].

mod driver;
mod print;

use clap::{Args, Subcommand};
use print::Printer;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sip_core::Transport;
use sip_net::{Endpoint, EndpointConfig, ListenSpec};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit codes: how the call (or message) ended, for scripts. The user agent's
/// ([`sip_ua::exit`]), and the usage error, which is the command line's.
pub mod exit {
    pub use sip_ua::exit::*;
    /// Usage error (bad arguments).
    pub const USAGE: u8 = 2;
}

/// The `phone` arguments shared by every action.
#[derive(Args, Debug)]
#[command(after_help = "Exit codes:\n  \
    0  the call was answered and ended normally (or the message was delivered)\n  \
    1  failed: no response, network error, registration refused, no usable SDP,\n     \
       the session timer ran out (the far end vanished)\n  \
    2  usage error\n  \
    3  busy (486 Busy Here, 600 Busy Everywhere)\n  \
    4  no answer (408, 480, or --answer-timeout ran out)\n  \
    5  rejected otherwise (403, 404, 488, 603...)\n\n\
Examples:\n  \
    switchboard phone --user alice --password s3cret --server 127.0.0.1:5060 \\\n      \
    call sip:bob@example.test --play hello.wav --dtmf 12# --hangup-after 10\n  \
    switchboard phone --user bob --password pw --server 127.0.0.1:5060 answer --auto --record got.wav\n  \
    switchboard phone --user bob --password pw --server 127.0.0.1:5060 answer --auto \\\n      \
    --transfer-to carol --transfer-after 5     (blind transfer of each caller to carol)\n  \
    switchboard phone --listen 127.0.0.1:5070 answer --auto       (no server: called directly)\n  \
    switchboard phone call sip:bob@127.0.0.1:5070 --hangup-after 5  (no server: calls directly)\n  \
    switchboard phone --user alice --password s3cret --server 127.0.0.1:5060 message sip:bob@example.test \"hi\"")]
pub struct PhoneArgs {
    /// The user name: the user part of the address of record and the digest username.
    #[arg(long, default_value = "phone")]
    user: String,
    /// The password for digest authentication (401/407 challenges).
    #[arg(long)]
    password: Option<String>,
    /// The registrar and outbound proxy, HOST:PORT. Without it the phone does not
    /// register and sends requests straight to the address in the URI.
    #[arg(long, value_name = "HOST:PORT")]
    server: Option<String>,
    /// The domain of the address of record (sip:USER@DOMAIN); the server's host when
    /// not given.
    #[arg(long)]
    domain: Option<String>,
    /// The transport to the server: udp, tcp, tls, ws or wss.
    #[arg(long, default_value = "udp", value_parser = parse_transport)]
    transport: Transport,
    /// Where to listen for SIP (UDP and TCP on the same port), IP:PORT. Default: an
    /// ephemeral port on the address that reaches the server (127.0.0.1 without one).
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<SocketAddr>,
    /// The registration lifetime to ask for, in seconds; refreshed at half the time
    /// the server grants.
    #[arg(long, default_value_t = 3600)]
    expires: u32,
    /// Ask for an RFC 4028 session timer of this many seconds in calls we place: the
    /// call is refreshed at half the interval and ended if the far end vanishes.
    #[arg(long, value_name = "SECS")]
    session_expires: Option<u32>,
    /// The display name in From.
    #[arg(long)]
    display_name: Option<String>,
    /// The voice codecs to offer and accept, in order of preference: pcmu, pcma
    /// (comma-separated). DTMF (telephone-event) is always offered beside them.
    #[arg(long, value_delimiter = ',', default_value = "pcmu,pcma", value_parser = ["pcmu", "pcma"])]
    codec: Vec<String>,
    /// A PEM file of certificates to trust for --transport tls or wss (the server's
    /// own certificate when it is self-signed).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Print events as JSON lines instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: PhoneAction,
}

/// What the phone does once registered.
#[derive(Subcommand, Debug)]
pub enum PhoneAction {
    /// Place a call and print its events: calling, trying, ringing, answered (codec),
    /// held, resumed, dtmf sent, dtmf received, ended (reason). The exit code says how
    /// it ended.
    Call {
        /// Whom to call, e.g. sip:bob@example.test (or sip:bob@127.0.0.1:5070 without
        /// a server).
        target: String,
        /// A WAV file to play to the far end (any rate; sent as G.711).
        #[arg(long, value_name = "WAV")]
        play: Option<PathBuf>,
        /// Record what the far end sends to this WAV file (8 kHz, 16-bit mono).
        #[arg(long, value_name = "WAV")]
        record: Option<PathBuf>,
        /// DTMF digits to send (RFC 4733) once answered: 0-9, *, #, A-D.
        #[arg(long)]
        dtmf: Option<String>,
        /// Seconds after the answer when the DTMF digits are sent.
        #[arg(long, default_value_t = 1.0, value_name = "SECS")]
        dtmf_after: f64,
        /// Put the call on hold (a re-INVITE with a=sendonly) this many seconds after
        /// the answer.
        #[arg(long, value_name = "SECS")]
        hold_after: Option<f64>,
        /// Take it off hold (a re-INVITE with a=sendrecv) this many seconds after the
        /// answer.
        #[arg(long, value_name = "SECS")]
        resume_after: Option<f64>,
        /// Hold and resume with UPDATE (RFC 3311) instead of re-INVITE.
        #[arg(long)]
        hold_with_update: bool,
        /// Hold with a=inactive (no media either way) instead of a=sendonly.
        #[arg(long)]
        hold_inactive: bool,
        /// Change codec mid-call: re-offer the session with only this codec...
        #[arg(long, value_name = "CODEC", value_parser = ["pcmu", "pcma"], requires = "change_codec_after")]
        change_codec: Option<String>,
        /// ...this many seconds after the answer.
        #[arg(long, value_name = "SECS", requires = "change_codec")]
        change_codec_after: Option<f64>,
        /// Hang up (BYE) this many seconds after the answer. Without it the call lasts
        /// until the far end hangs up or Ctrl-C.
        #[arg(long, value_name = "SECS")]
        hangup_after: Option<f64>,
        /// Give up (CANCEL) when nobody answers within this many seconds.
        #[arg(long, default_value_t = 60.0, value_name = "SECS")]
        answer_timeout: f64,
        #[command(flatten)]
        transfer: TransferArgs,
    },
    /// Wait for calls and answer them, printing the caller, each DTMF digit as it
    /// arrives and, when a call ends, all its digits on one line (`dtmf: 159#`).
    Answer(AnswerArgs),
    /// Send one instant message (SIP MESSAGE, RFC 3428).
    Message {
        /// The recipient, e.g. sip:bob@example.test.
        target: String,
        /// The text.
        text: String,
    },
    /// Send an OPTIONS (a SIP "ping") and print the answer with what the far end
    /// allows: `options: 200 OK (Allow: INVITE, ...)`.
    Options {
        /// Whom to ask, e.g. sip:bob@example.test or sip:127.0.0.1:5060.
        target: String,
    },
    /// Print the instant messages that arrive: `message: from sip:alice@...: text`.
    Listen {
        /// Exit after this many messages.
        #[arg(long, value_name = "N")]
        count: Option<u32>,
    },
}

/// Transferring the call (`phone call` and `phone answer`): blind with `--transfer-to`,
/// attended with `--consult`.
#[derive(Debug, Clone, Args)]
pub struct TransferArgs {
    /// Transfer the call to TARGET (blind: a REFER, RFC 3515): after --transfer-after
    /// seconds, or when Enter is pressed. Our call ends once the far end reaches TARGET.
    #[arg(long, value_name = "TARGET", conflicts_with = "consult")]
    transfer_to: Option<String>,
    /// Attended transfer: put the call on hold and call TARGET (after --consult-after
    /// seconds); then, after --transfer-after seconds of that call (or on Enter), join
    /// the two (a REFER with Replaces, RFC 3891).
    #[arg(long, value_name = "TARGET")]
    consult: Option<String>,
    /// Seconds after the answer to hold the call and call the --consult target
    /// (default 1).
    #[arg(long, value_name = "SECS", requires = "consult")]
    consult_after: Option<f64>,
    /// Seconds after the answer (with --consult: the consult call's answer) to transfer.
    #[arg(long, value_name = "SECS")]
    transfer_after: Option<f64>,
}

impl TransferArgs {
    /// The user agent's script, or `None` when no transfer was asked for.
    fn script(self, domain: &str) -> Result<Option<sip_ua::TransferScript>, String> {
        if self.transfer_to.is_none() && self.consult.is_none() {
            if self.transfer_after.is_some() {
                return Err("--transfer-after needs --transfer-to or --consult".into());
            }
            return Ok(None);
        }
        Ok(Some(sip_ua::TransferScript {
            to: self.transfer_to.map(|t| sip_uri(t, domain)),
            consult: self.consult.map(|t| sip_uri(t, domain)),
            consult_after: self.consult_after.unwrap_or(1.0),
            after: self.transfer_after,
        }))
    }
}

/// `phone answer`'s options (the field docs are its `--help`).
#[derive(Debug, Clone, Args)]
pub struct AnswerArgs {
    /// Answer at once. Without it the phone rings and answers when Enter is
    /// pressed.
    #[arg(long)]
    auto: bool,
    /// A WAV file to play to callers.
    #[arg(long, value_name = "WAV")]
    play: Option<PathBuf>,
    // Record callers to this WAV file (8 kHz, 16-bit mono); `{n}` in the name is
    // replaced by the call number. The help is built by `record_help`: clap turns a
    // `{n}` in a doc comment into a line break.
    #[arg(long, value_name = "WAV", help = record_help())]
    record: Option<PathBuf>,
    /// Refuse every call with this status (486 busy, 603 decline...).
    #[arg(long, value_name = "STATUS", value_parser = clap::value_parser!(u16).range(300..700))]
    reject: Option<u16>,
    /// Hang up this many seconds after answering.
    #[arg(long, value_name = "SECS")]
    hangup_after: Option<f64>,
    /// Exit after this many calls (with the last call's exit code).
    #[arg(long, value_name = "N")]
    calls: Option<u32>,
    #[command(flatten)]
    transfer: TransferArgs,
}

impl From<AnswerArgs> for sip_ua::AnswerTask {
    fn from(a: AnswerArgs) -> Self {
        sip_ua::AnswerTask {
            auto: a.auto,
            play: a.play,
            record: a.record,
            reject: a.reject,
            hangup_after: a.hangup_after,
            calls: a.calls,
        }
    }
}

/// The help of `answer --record`. clap replaces every `{n}` in help text by a line
/// break and has no escape for it, so the `n` of our placeholder is set apart by a
/// style (bold on a terminal; the escape codes are dropped elsewhere) and the text
/// never holds the three characters together.
fn record_help() -> clap::builder::StyledStr {
    let placeholder = clap::builder::styling::Style::new().bold();
    clap::builder::StyledStr::from(format!(
        "Record callers to this WAV file (8 kHz, 16-bit mono); `{{{placeholder}n{placeholder:#}}}` \
         in the name is replaced by the call number (1, 2...)"
    ))
}

fn parse_transport(s: &str) -> Result<Transport, String> {
    match s.to_ascii_lowercase().as_str() {
        "udp" => Ok(Transport::Udp),
        "tcp" => Ok(Transport::Tcp),
        "tls" => Ok(Transport::Tls),
        "ws" => Ok(Transport::Ws),
        "wss" => Ok(Transport::Wss),
        _ => Err(format!(
            "\"{s}\" is not a transport: use udp, tcp, tls, ws or wss"
        )),
    }
}

/// Runs `switchboard phone`.
pub fn run(args: PhoneArgs) -> ExitCode {
    // Quiet by default: standard output is for events, and scripts read it.
    crate::serve::init_logging("warn");
    let Some(runtime) = crate::serve::single_thread_runtime() else {
        return ExitCode::from(exit::FAILED);
    };
    match runtime.block_on(phone(args)) {
        Ok(code) => ExitCode::from(code),
        Err((code, e)) => {
            eprintln!("error: {e}");
            ExitCode::from(code)
        }
    }
}

/// The local address that routes to `server` (no packet is sent).
fn route_ip(server: SocketAddr) -> IpAddr {
    let unspecified: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    std::net::UdpSocket::bind(unspecified)
        .and_then(|s| {
            s.connect(server)?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// A port free for both UDP and TCP on `ip`, when none was given.
fn free_port(ip: IpAddr) -> u16 {
    for _ in 0..50 {
        let Ok(udp) = std::net::UdpSocket::bind((ip, 0)) else {
            break;
        };
        let Ok(addr) = udp.local_addr() else {
            break;
        };
        if std::net::TcpListener::bind((ip, addr.port())).is_ok() {
            return addr.port();
        }
    }
    0
}

/// `bob` (as `sip:bob@DOMAIN`), `bob@example.test`, a host, or a full URI, as a SIP URI.
fn sip_uri(target: String, domain: &str) -> String {
    if target.starts_with("sip:") || target.starts_with("sips:") {
        target
    } else if target.contains('@') || target.contains(['.', ':']) {
        // user@host, or a bare host (`127.0.0.1:5060`, `example.test`).
        format!("sip:{target}")
    } else {
        format!("sip:{target}@{domain}")
    }
}

/// A `--play` file must exist before anything is sent.
fn check_playable(play: Option<&std::path::Path>) -> Result<(), (u8, String)> {
    match play {
        Some(p) if !p.is_file() => {
            Err((exit::USAGE, format!("--play {}: no such file", p.display())))
        }
        _ => Ok(()),
    }
}

async fn phone(args: PhoneArgs) -> Result<u8, (u8, String)> {
    let usage = |e: String| (exit::USAGE, e);
    let server = match &args.server {
        Some(s) => {
            let with_port = if s.contains(':') {
                s.clone()
            } else {
                format!("{s}:5060")
            };
            let addr = tokio::net::lookup_host(&with_port)
                .await
                .map_err(|e| usage(format!("--server {s}: {e}")))?
                .next()
                .ok_or_else(|| usage(format!("--server {s}: no address")))?;
            Some(addr)
        }
        None => None,
    };
    if server.is_some() && args.password.is_none() {
        tracing::debug!("no --password: challenges will fail");
    }
    let domain = match (&args.domain, &args.server) {
        (Some(d), _) => d.clone(),
        (None, Some(s)) => s.rsplit_once(':').map_or(s.as_str(), |(h, _)| h).to_owned(),
        (None, None) => "localhost".to_owned(),
    };
    let listen = match args.listen {
        Some(l) => l,
        None => {
            let ip = server.map_or(IpAddr::from([127, 0, 0, 1]), route_ip);
            SocketAddr::new(ip, free_port(ip))
        }
    };
    if listen.ip().is_unspecified() {
        return Err(usage(
            "--listen needs a concrete address (it goes into Via and Contact)".into(),
        ));
    }
    let mut config = EndpointConfig::new([
        ListenSpec::new(Transport::Udp, listen),
        ListenSpec::new(Transport::Tcp, listen),
    ]);
    if args.transport.is_secure() {
        let roots = match &args.ca {
            Some(path) => CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| usage(format!("--ca {}: {e}", path.display())))?,
            None => {
                return Err(usage(
                    "--transport tls and wss need --ca FILE: the certificate(s) to trust".into(),
                ));
            }
        };
        config.tls_client =
            Some(sip_net::tls::client_config(roots).map_err(|e| usage(format!("--ca: {e}")))?);
    }
    let (endpoint, incoming) = Endpoint::bind(config)
        .await
        .map_err(|e| (exit::FAILED, format!("cannot listen on {listen}: {e}")))?;
    let out = Printer::new(args.json);
    let bound: Vec<String> = endpoint
        .local_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    out.event(
        "listening",
        Some(&bound.join(" ")),
        &[("addresses", serde_json::json!(bound))],
    );
    let settings = sip_ua::Settings {
        user: args.user,
        password: args.password,
        server,
        domain,
        transport: args.transport,
        expires: args.expires,
        session_expires: args.session_expires,
        display_name: args.display_name,
        codecs: sip_ua::sdp_codecs(&args.codec),
        timers: sip_core::transaction::TimerConfig::default(),
    };
    let mut transfer_script = None;
    let task = match args.action {
        PhoneAction::Call {
            target,
            play,
            record,
            dtmf,
            dtmf_after,
            hold_after,
            resume_after,
            hold_with_update,
            hold_inactive,
            change_codec,
            change_codec_after,
            hangup_after,
            answer_timeout,
            transfer,
        } => {
            transfer_script = transfer.script(&settings.domain).map_err(usage)?;
            let target = sip_uri(target, &settings.domain);
            if let Some(d) = &dtmf
                && let Some(bad) = d.chars().find(|c| !"0123456789*#ABCDabcd".contains(*c))
            {
                return Err(usage(format!("--dtmf: '{bad}' is not a DTMF digit")));
            }
            check_playable(play.as_deref())?;
            sip_ua::Task::Call(sip_ua::CallTask {
                target,
                play,
                record,
                dtmf: dtmf.map(|d| d.to_ascii_uppercase()),
                dtmf_after,
                hold_after,
                resume_after,
                hold_with_update,
                hold_inactive,
                change_codec: change_codec
                    .zip(change_codec_after)
                    .and_then(|(name, after)| {
                        let codec = *sip_ua::sdp_codecs(&[name]).first()?;
                        Some((after, codec))
                    }),
                hangup_after,
                answer_timeout,
            })
        }
        PhoneAction::Answer(task) => {
            check_playable(task.play.as_deref())?;
            transfer_script = task
                .transfer
                .clone()
                .script(&settings.domain)
                .map_err(usage)?;
            sip_ua::Task::Answer(task.into())
        }
        PhoneAction::Message { target, text } => {
            let target = sip_uri(target, &settings.domain);
            sip_ua::Task::Message { target, text }
        }
        PhoneAction::Options { target } => sip_ua::Task::Options {
            target: sip_uri(target, &settings.domain),
        },
        PhoneAction::Listen { count } => sip_ua::Task::Listen { count },
    };
    let code = driver::run(
        endpoint.clone(),
        incoming,
        settings,
        task,
        transfer_script,
        out,
    )
    .await;
    endpoint.shutdown();
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_become_sip_uris() {
        let d = "example.test";
        assert_eq!(sip_uri("bob".into(), d), "sip:bob@example.test");
        assert_eq!(sip_uri("bob@other.test".into(), d), "sip:bob@other.test");
        assert_eq!(sip_uri("127.0.0.1:5060".into(), d), "sip:127.0.0.1:5060");
        assert_eq!(sip_uri("sips:bob@x.test".into(), d), "sips:bob@x.test");
    }

    #[test]
    fn codec_names_in_order_with_dtmf_last() {
        let list = sip_ua::sdp_codecs(&["pcma".into(), "PCMU".into(), "g729".into()]);
        assert_eq!(
            list,
            vec![
                (8, "PCMA", 8000),
                (0, "PCMU", 8000),
                (101, "telephone-event", 8000)
            ]
        );
    }

    #[test]
    fn transports_by_name() {
        assert_eq!(parse_transport("TCP"), Ok(Transport::Tcp));
        assert!(parse_transport("sctp").is_err());
    }
}
