//! A real softphone against the real `switchboard serve` (issue 4): Debian's baresip
//! (`baresip-core`, installed by `scripts/test`), headless on loopback, registers alice
//! with her password through digest authentication, shows up in `switchboard location`
//! with its User-Agent, and unregisters when it is stopped.
//!
//! The server offers MD5 only here: baresip 1.0.0 (Debian 12, libre 1.1) gives up with
//! "Register: Function not implemented" (ENOSYS) as soon as a 401 holds any challenge
//! whose algorithm is not MD5, even when an MD5 challenge follows, so the default
//! `digest_algorithms = ["SHA-256", "MD5"]` locks it out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::baresip::{self, Proc};
use common::{Server, ServerOptions, free_port};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// Starts baresip in `dir` with one account, `account`, listening on 127.0.0.1 only. It
/// quits by itself after 30 s should the test not stop it.
fn baresip(dir: &Path, account: &str) -> Proc {
    baresip::start(
        dir,
        free_port(),
        "module_tmp\t\taccount.so\n",
        account,
        &["-t", "30"],
    )
}

fn location(server: &Server) -> Vec<Value> {
    let out = server.cli(&["location", "--json"]);
    assert!(out.status.success(), "location --json: {out:?}");
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(v) => v,
        other => panic!("location --json printed {other}"),
    }
}

#[test]
fn baresip_registers_with_a_password_and_unregisters_on_exit() {
    let server = Server::start(ServerOptions {
        users: vec![("alice".into(), "alice-pw".into())],
        extra_toml: "[registrar]\ndigest_algorithms = [\"MD5\"]\n".into(),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut phone = baresip(
        dir.path(),
        &format!(
            "<sip:alice@example.test>;auth_pass=alice-pw;outbound=\"sip:127.0.0.1:{}\";regint=600",
            server.port
        ),
    );
    // e.g. "alice@example.test: {0/UDP/v4} 200 OK (Switchboard/0.1.0) [1 binding]"
    let line = phone.expect("alice@example.test: ", Duration::from_secs(10));
    assert!(
        line.contains("200 OK (Switchboard/") && line.contains("[1 binding]"),
        "baresip: {line}\nserver log:\n{}",
        server.log()
    );

    let b = location(&server);
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["aor"], "sip:alice@example.test");
    assert_eq!(b[0]["transport"], "udp");
    let contact = b[0]["contact"].as_str().unwrap();
    assert!(
        contact.starts_with("sip:alice-") && contact.contains("@127.0.0.1:"),
        "{contact}"
    );
    let ua = b[0]["user_agent"].as_str().unwrap();
    assert!(ua.starts_with("baresip v"), "{ua}");
    let expires_in = b[0]["expires_in"].as_u64().unwrap();
    assert!((590..=600).contains(&expires_in), "{expires_in}");

    let status = phone.stop();
    assert!(status.success(), "baresip exit: {status:?}");
    assert_eq!(
        location(&server),
        Vec::<Value>::new(),
        "baresip unregisters when it quits; it printed:\n{}",
        phone.out.join("\n")
    );
}
