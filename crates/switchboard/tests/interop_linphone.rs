//! Interop matrix, linphonec row (issue 12): Debian's linphonec 5.1 (`linphone-cli`,
//! installed by `scripts/test`) as alice with a password against a default `serve` over
//! UDP, TCP and TLS, with serve on the wildcard address and on 127.0.0.1.
//!
//! linphonec runs with its defaults but for what a headless test must set: its ports,
//! no video, no network monitor (`[net] auto_net_state_mon=0`: else it waits for a
//! network that it never sees come up), its file sound card (`soundcard use files`: a
//! WAV played into calls, calls recorded to a WAV), and a home of its own (its
//! database lives in `~/.local/share/linphone`, which must exist). It registers
//! (`register IDENTITY PROXY PASSWORD`), sends bob (`switchboard phone`) a MESSAGE
//! (`chat`), calls bob, sends DTMF (digits typed during the call: RFC 4733, its
//! default), holds and resumes (`pause`, `resume`: re-INVITEs) and hangs up.
//!
//! serve listens on SIP's default port (5060) for UDP and TCP here, as it does by
//! default. linphonec keeps a chat's peer as `sip:user@host` and drops any port (`chat
//! sip:bob@127.0.0.1:PORT` sends a MESSAGE to `sip:bob@127.0.0.1`, through its proxy,
//! which it does use), and a URI without a port names 5060 (RFC 3263): with serve on
//! another port, that names another server, and serve rightly refuses to relay there.
//! So these tests take turns for the port (and skip, saying why, when another program
//! holds it for long); bob is called as `sip:bob@127.0.0.1`, as a user would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/interop.rs"]
mod interop;
#[path = "../../media/tests/common/mod.rs"]
mod media_common;

use common::baresip::Proc;
use interop::{Audio, Listen, PASSWORD, Row, Serve, Transport};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

fn start_linphonec(home: &Path, serve: &Serve, transport: Transport) -> Proc {
    std::fs::create_dir_all(home.join(".local/share/linphone")).unwrap();
    let mut sip = format!(
        "[sip]\nsip_port={}\nsip_tcp_port={}\nsip_tls_port={}\ndefault_proxy=-1\n\
         register_only_when_network_is_up=0\n",
        interop::free_port(),
        interop::free_port(),
        interop::free_port(),
    );
    if transport == Transport::Tls {
        sip.push_str(&format!("root_ca={}\n", serve.certificate().display()));
    }
    let rtp = interop::free_port_range(4);
    let rc = format!(
        "{sip}[rtp]\naudio_rtp_port={rtp}\nvideo_rtp_port={}\n\
         [video]\nenabled=0\ncapture=0\ndisplay=0\n\
         [net]\nauto_net_state_mon=0\nfirewall_policy=0\n\
         [sound]\nechocancellation=0\n",
        rtp + 2
    );
    let path = home.join("linphonerc");
    std::fs::write(&path, rc).unwrap();
    let mut cmd = Command::new("linphonec");
    cmd.arg("-c").arg(&path).args(["-d", "0"]).env("HOME", home);
    Proc::spawn(cmd)
}

fn row(transport: Transport, listen: Listen) {
    if !interop::installed("linphonec") {
        interop::say(
            "SKIPPED: linphonec is not installed (scripts/test installs Debian's linphone-cli)",
        );
        return;
    }
    // On SIP's default port, as serve runs by default: linphonec's chat addresses bob
    // without a port (see the module documentation).
    let serve =
        match Serve::start_on_sip_port(listen, transport == Transport::Tls, &["alice", "bob"]) {
            Ok(serve) => serve,
            Err(why) => return interop::say(&format!("SKIPPED: {why}")),
        };
    let tmp = tempfile::tempdir().unwrap();
    let audio = Audio::new(tmp.path(), 20.0);
    let client_records = tmp.path().join("linphonec-records.wav");
    let mut row = Row::new("linphonec 5.1", transport, listen);
    let Some(mut bob) = row.check("the far end registers", || {
        interop::answering_phone(&serve, Transport::Udp, &audio)
    }) else {
        return row.finish(&serve.log());
    };
    let home = tmp.path().join("home");
    let Some(mut alice) = row.check("linphonec starts", || {
        start_linphonec(&home, &serve, transport)
    }) else {
        return row.finish(&serve.log());
    };
    std::thread::sleep(Duration::from_millis(1500));
    let proxy = match transport {
        Transport::Udp => format!("sip:{}", serve.addr(transport)),
        Transport::Tcp => format!("sip:{};transport=tcp", serve.addr(transport)),
        // linphonec (belle-sip on mbedTLS) checks the server's certificate by name
        // only: an address never matches the certificate's IP entry ("CN-mismatch"),
        // so it reaches serve by the name in the certificate, as a user would.
        Transport::Tls => format!(
            "sip:localhost:{};transport=tls",
            serve.tls_port.expect("started with TLS")
        ),
    };
    alice.type_keys(&[
        "soundcard use files\n",
        &format!("play {}\n", audio.client_plays.display()),
        &format!("record {}\n", client_records.display()),
        &format!("register sip:alice@127.0.0.1 {proxy} {PASSWORD}\n"),
    ]);
    let registered = row
        .check("register", || {
            let deadline = Instant::now() + WAIT;
            while !serve.location().contains("sip:alice@") {
                assert!(
                    Instant::now() < deadline,
                    "no binding for alice: {}",
                    serve.location()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        })
        .is_some();
    let mut quit = false;
    if registered {
        row.check("MESSAGE", || {
            alice.type_keys(&[&format!("chat {} hello from linphonec\n", serve.bob())]);
            bob.expect(
                "message: from sip:alice@127.0.0.1: hello from linphonec",
                WAIT,
            );
        });
        alice.type_keys(&[&format!("call {}\n", serve.bob())]);
        let called = row
            .check("call", || {
                alice.expect("connected.", WAIT);
                bob.expect("answered: ", WAIT);
            })
            .is_some();
        if called {
            // Both 3 s files play out, then digits, then hold and resume.
            std::thread::sleep(Duration::from_millis(3500));
            alice.type_keys(&["1\n", "5\n", "#\n"]);
            std::thread::sleep(Duration::from_millis(500));
            alice.type_keys(&["pause\n"]);
            let held = row
                .check("hold", || {
                    alice.expect("is now paused", WAIT);
                    bob.expect("held: remote", WAIT);
                    alice.type_keys(&["resume\n"]);
                    bob.expect("resumed: remote", WAIT);
                })
                .is_some();
            let _ = held;
            alice.type_keys(&["terminate\n"]);
            row.check("DTMF", || {
                bob.expect("ended: ", WAIT);
                // linphonec closes its recording when the call has ended.
                alice.expect(" ended (", WAIT);
                assert_eq!(bob.expect("dtmf: ", WAIT), "dtmf: 15#", "{}", bob.printed());
            });
            alice.type_keys(&["quit\n"]);
            quit = true;
            row.check("audio both ways", || {
                alice.wait(WAIT);
                interop::assert_holds(
                    "bob's recording of linphonec",
                    &audio.client_tone,
                    &audio.phone_records,
                );
                interop::assert_holds(
                    "linphonec's recording of bob",
                    &audio.phone_plays,
                    &interop::wav_with_true_sizes(&client_records),
                );
            });
        } else {
            for cell in ["hold", "DTMF", "audio both ways"] {
                row.not_reached(cell, "no call");
            }
        }
    } else {
        for cell in ["MESSAGE", "call", "hold", "DTMF", "audio both ways"] {
            row.not_reached(cell, "not registered");
        }
    }
    if !quit {
        alice.type_keys(&["quit\n"]);
    }
    let diagnostics = format!(
        "--- linphonec:\n{}\n--- bob:\n{}\n--- serve:\n{}",
        alice.printed(),
        bob.printed(),
        serve.log()
    );
    row.finish(&diagnostics);
}

#[test]
fn linphonec_udp_wildcard() {
    row(Transport::Udp, Listen::Wildcard);
}

#[test]
fn linphonec_udp_specific() {
    row(Transport::Udp, Listen::Specific);
}

#[test]
fn linphonec_tcp_wildcard() {
    row(Transport::Tcp, Listen::Wildcard);
}

#[test]
fn linphonec_tcp_specific() {
    row(Transport::Tcp, Listen::Specific);
}

#[test]
fn linphonec_tls_wildcard() {
    row(Transport::Tls, Listen::Wildcard);
}

#[test]
fn linphonec_tls_specific() {
    row(Transport::Tls, Listen::Specific);
}
