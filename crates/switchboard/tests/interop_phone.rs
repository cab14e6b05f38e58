//! Interop matrix, `switchboard phone` row (issue 12): our own softphone, with its
//! defaults, registered to a default `serve` over UDP, TCP and TLS, with serve on the
//! wildcard address and on 127.0.0.1. alice registers, sends bob a MESSAGE, calls him
//! (audio both ways, checked in both recordings), sends DTMF, holds and resumes, hangs
//! up; bob is another `switchboard phone` on the same transport.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/interop.rs"]
mod interop;
#[path = "../../media/tests/common/mod.rs"]
mod media_common;

use interop::{Audio, Listen, PASSWORD, Row, Serve, Transport};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

fn row(transport: Transport, listen: Listen) {
    let serve = Serve::start(listen, transport == Transport::Tls, &["alice", "bob"]);
    let tmp = tempfile::tempdir().unwrap();
    let audio = Audio::new(tmp.path(), 0.0);
    let client_records = tmp.path().join("alice-records.wav");
    let mut row = Row::new("switchboard phone", transport, listen);
    let server = serve.addr(transport);
    let mut account = vec![
        "--user".to_owned(),
        "alice".into(),
        "--password".into(),
        PASSWORD.into(),
        "--server".into(),
        server,
        "--transport".into(),
        transport.name().into(),
    ];
    if transport == Transport::Tls {
        match row.check("TLS certificate from serve", || serve.certificate()) {
            Some(ca) => account.extend(["--ca".into(), ca.display().to_string()]),
            None => {
                for cell in [
                    "register",
                    "MESSAGE",
                    "call",
                    "audio both ways",
                    "DTMF",
                    "hold",
                ] {
                    row.not_reached(cell, "no certificate to trust");
                }
                return row.finish(&serve.log());
            }
        }
    }
    let Some(mut bob) = row.check("the far end registers", || {
        interop::answering_phone(&serve, transport, &audio)
    }) else {
        return row.finish(&serve.log());
    };
    let with = |rest: &[&str]| -> Vec<String> {
        let mut a = account.clone();
        a.extend(rest.iter().map(|s| s.to_string()));
        a
    };

    let bob_uri = serve.bob();
    let args = with(&["message", &bob_uri, "hello from alice"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut message = interop::phone(&args);
    row.check("register", || {
        message.expect("registered: ", WAIT);
    });
    row.check("MESSAGE", || {
        assert_eq!(message.wait(WAIT), 0, "{}", message.printed());
        bob.expect("message: from sip:alice@127.0.0.1: hello from alice", WAIT);
    });

    let args = with(&[
        "call",
        &bob_uri,
        "--play",
        audio.client_tone.to_str().unwrap(),
        "--record",
        client_records.to_str().unwrap(),
        "--dtmf",
        "159#",
        "--dtmf-after",
        "3.5",
        "--hold-after",
        "4.5",
        "--resume-after",
        "5.2",
        "--hangup-after",
        "6",
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut alice = interop::phone(&args);
    let called = row
        .check("call", || {
            alice.expect("answered: ", WAIT);
            bob.expect("incoming: ", WAIT);
            assert_eq!(alice.wait(WAIT), 0, "{}", alice.printed());
            bob.expect("ended: ", WAIT);
        })
        .is_some();
    if called {
        row.check("audio both ways", || {
            interop::assert_holds(
                "bob's recording of alice",
                &audio.client_tone,
                &audio.phone_records,
            );
            interop::assert_holds(
                "alice's recording of bob",
                &audio.phone_plays,
                &client_records,
            );
        });
        row.check("DTMF", || {
            for d in ["1", "5", "9", "#"] {
                bob.expect(&format!("dtmf received: {d}"), WAIT);
            }
            assert_eq!(
                bob.expect("dtmf: ", WAIT),
                "dtmf: 159#",
                "{}",
                bob.printed()
            );
        });
        row.check("hold", || {
            bob.expect("held: remote", WAIT);
            bob.expect("resumed: remote", WAIT);
        });
    } else {
        for cell in ["audio both ways", "DTMF", "hold"] {
            row.not_reached(cell, "no call");
        }
    }
    let diagnostics = format!(
        "--- alice (message):\n{}\n--- alice (call):\n{}\n--- bob:\n{}\n--- serve:\n{}",
        message.printed(),
        alice.printed(),
        bob.printed(),
        serve.log()
    );
    row.finish(&diagnostics);
}

#[test]
fn phone_udp_wildcard() {
    row(Transport::Udp, Listen::Wildcard);
}

#[test]
fn phone_udp_specific() {
    row(Transport::Udp, Listen::Specific);
}

#[test]
fn phone_tcp_wildcard() {
    row(Transport::Tcp, Listen::Wildcard);
}

#[test]
fn phone_tcp_specific() {
    row(Transport::Tcp, Listen::Specific);
}

#[test]
fn phone_tls_wildcard() {
    row(Transport::Tls, Listen::Wildcard);
}

#[test]
fn phone_tls_specific() {
    row(Transport::Tls, Listen::Specific);
}
