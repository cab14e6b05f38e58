//! Interop matrix, baresip row (issue 12): Debian's baresip 1.0 (`baresip-core`,
//! installed by `scripts/test`) with its defaults but for what a headless test must set
//! (its SIP and RTP ports on 127.0.0.1, a WAV file as microphone, its `sndfile` module
//! to keep what it heard), registered as alice with a password to a default `serve`
//! over UDP, TCP and TLS, with serve on the wildcard address and on 127.0.0.1.
//!
//! baresip registers, sends bob a MESSAGE (`/message` to its current contact), calls
//! bob (`switchboard phone`, answering and recording) through serve, sends DTMF (keys
//! typed during the call: RFC 4733), holds and resumes (`/hold`, `/resume`: re-INVITEs)
//! and hangs up. Audio is checked both ways: bob's recording holds baresip's tone and
//! baresip's decoded dump holds bob's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/interop.rs"]
mod interop;
#[path = "../../media/tests/common/mod.rs"]
mod media_common;

use common::baresip::{self, Proc};
use interop::{Audio, Listen, PASSWORD, Row, Serve, Transport};
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

fn start_baresip(dir: &Path, serve: &Serve, transport: Transport, audio: &Audio) -> Proc {
    let rtp = interop::free_port_range(4);
    let mut config = format!(
        "rtp_ports\t\t{rtp}-{}\n\
         audio_source\t\taufile,{source}\n\
         audio_player\t\taubridge,nowhere\n\
         audio_alert\t\taubridge,nowhere\n\
         snd_path\t\t{dir}\n\
         module\t\t\tstdio.so\n\
         module\t\t\tg711.so\n\
         module\t\t\taufile.so\n\
         module\t\t\taubridge.so\n\
         module\t\t\tsndfile.so\n\
         module_app\t\taccount.so\n\
         module_app\t\tcontact.so\n\
         module_app\t\tmenu.so\n",
        rtp + 3,
        source = audio.client_plays.display(),
        dir = dir.display(),
    );
    if transport == Transport::Tls {
        config.push_str(&format!(
            "sip_cafile\t\t{}\n",
            serve.certificate().display()
        ));
    }
    // The contact that `/message` writes to.
    std::fs::write(dir.join("contacts"), format!("\"Bob\" <{}>\n", serve.bob())).unwrap();
    std::fs::write(dir.join("current_contact"), serve.bob()).unwrap();
    let account = format!(
        "<sip:alice@127.0.0.1>;auth_pass={PASSWORD};outbound=\"sip:{};transport={}\";regint=600",
        serve.addr(transport),
        transport.name()
    );
    baresip::start(dir, interop::free_port(), &config, &account, &["-t", "60"])
}

fn decoded_dump(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
}

fn row(transport: Transport, listen: Listen) {
    if !interop::installed("baresip") {
        interop::say(
            "SKIPPED: baresip is not installed (scripts/test installs Debian's baresip-core)",
        );
        return;
    }
    let serve = Serve::start(listen, transport == Transport::Tls, &["alice", "bob"]);
    let tmp = tempfile::tempdir().unwrap();
    let audio = Audio::new(tmp.path(), 20.0);
    let mut row = Row::new("baresip 1.0", transport, listen);
    let Some(mut bob) = row.check("the far end registers", || {
        interop::answering_phone(&serve, Transport::Udp, &audio)
    }) else {
        return row.finish(&serve.log());
    };
    let Some(mut alice) = row.check("baresip starts", || {
        start_baresip(tmp.path(), &serve, transport, &audio)
    }) else {
        return row.finish(&serve.log());
    };
    let registered = row
        .check("register", || {
            alice.expect("200 OK", WAIT);
        })
        .is_some();
    if registered {
        row.check("MESSAGE", || {
            alice.type_keys(&["/message hello from baresip\n"]);
            bob.expect(
                "message: from sip:alice@127.0.0.1: hello from baresip",
                WAIT,
            );
        });
        alice.type_keys(&[&format!("/dial {}\n", serve.bob())]);
        let called = row
            .check("call", || {
                alice.expect("Call established", WAIT);
                bob.expect("answered: ", WAIT);
            })
            .is_some();
        if called {
            // Both 3 s files play out, then digits, then hold and resume.
            std::thread::sleep(Duration::from_millis(3500));
            alice.type_keys(&["1", "5", "#"]);
            std::thread::sleep(Duration::from_millis(500));
            alice.type_keys(&["/hold\n"]);
            std::thread::sleep(Duration::from_millis(1000));
            alice.type_keys(&["/resume\n"]);
            std::thread::sleep(Duration::from_millis(1000));
            alice.type_keys(&["/hangup\n"]);
            row.check("DTMF", || {
                for d in ["1", "5", "#"] {
                    bob.expect(&format!("dtmf received: {d}"), WAIT);
                }
                // Each digit once: the summary bob prints when the call ends.
                bob.expect("ended: ", WAIT);
                assert_eq!(bob.expect("dtmf: ", WAIT), "dtmf: 15#", "{}", bob.printed());
            });
            row.check("hold", || {
                bob.expect("held: remote", WAIT);
                bob.expect("resumed: remote", WAIT);
            });
            row.check("audio both ways", || {
                bob.expect("ended: ", WAIT);
                interop::assert_holds(
                    "bob's recording of baresip",
                    &audio.client_tone,
                    &audio.phone_records,
                );
                let dump = decoded_dump(tmp.path()).expect("baresip's sndfile dump");
                interop::wait_for_file(&dump, WAIT);
                interop::assert_holds("baresip's recording of bob", &audio.phone_plays, &dump);
            });
        } else {
            for cell in ["DTMF", "hold", "audio both ways"] {
                row.not_reached(cell, "no call");
            }
        }
    } else {
        for cell in ["MESSAGE", "call", "DTMF", "hold", "audio both ways"] {
            row.not_reached(cell, "not registered");
        }
    }
    alice.type_keys(&["/quit\n"]);
    let diagnostics = format!(
        "--- baresip:\n{}\n--- bob:\n{}\n--- serve:\n{}",
        alice.printed(),
        bob.printed(),
        serve.log()
    );
    row.finish(&diagnostics);
}

#[test]
fn baresip_udp_wildcard() {
    row(Transport::Udp, Listen::Wildcard);
}

#[test]
fn baresip_udp_specific() {
    row(Transport::Udp, Listen::Specific);
}

#[test]
fn baresip_tcp_wildcard() {
    row(Transport::Tcp, Listen::Wildcard);
}

#[test]
fn baresip_tcp_specific() {
    row(Transport::Tcp, Listen::Specific);
}

#[test]
fn baresip_tls_wildcard() {
    row(Transport::Tls, Listen::Wildcard);
}

#[test]
fn baresip_tls_specific() {
    row(Transport::Tls, Listen::Specific);
}
