//! TLS as an admin sets it up without a certificate of their own: `serve` with a `tls:`
//! listener and no `[tls]` writes its self-signed certificate beside the database, and
//! a phone that trusts only that file registers over TLS at 127.0.0.1.
#![allow(clippy::unwrap_used)]

mod common;
use common::{Server, ServerOptions};
use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

/// Runs `switchboard phone` as alice over TLS, trusting `ca`, to send one OPTIONS
/// through the server after registering; returns (exit code, output).
fn phone_over_tls(server_tls_port: u16, ca: &std::path::Path) -> (i32, String) {
    let out = Command::new("timeout")
        .arg("20")
        .arg(common::binary())
        .args(["phone", "--user", "alice", "--password", "pw"])
        .args(["--domain", "example.test", "--transport", "tls"])
        .arg("--server")
        .arg(format!("127.0.0.1:{server_tls_port}"))
        .arg("--ca")
        .arg(ca)
        .args(["options", "sip:example.test"])
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_self_signed_certificate_is_written_and_phones_that_trust_it_register() {
    let mut server = Server::start(ServerOptions {
        users: vec![("alice".into(), "pw".into())],
        extra_transports: vec!["tls"],
        ..ServerOptions::default()
    });
    let tls_port = server.extra.iter().find(|(t, _)| t == "tls").unwrap().1;
    let cert = server.dir.path().join("switchboard-tls.crt");
    let key = server.dir.path().join("switchboard-tls.key");
    let pem = std::fs::read_to_string(&cert).expect("the certificate is beside the database");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the key is its owner's only");
    let log = server.log();
    assert!(
        log.contains(&format!("phones must trust {}", cert.display())),
        "{log}"
    );

    // Trusting that file alone, the phone accepts the server at 127.0.0.1.
    let (code, out) = phone_over_tls(tls_port, &cert);
    assert_eq!(code, 0, "{out}\nserver log:\n{}", server.log());
    assert!(out.contains("registered: sip:alice@example.test"), "{out}");
    assert!(out.contains("options: 200 OK"), "{out}");

    // Trusting another certificate, it does not.
    let other = sip_net::tls::self_signed(&["example.test", "localhost", "127.0.0.1"]).unwrap();
    let other_file = server.dir.path().join("other.crt");
    std::fs::write(&other_file, other.cert_pem).unwrap();
    let (code, out) = phone_over_tls(tls_port, &other_file);
    assert_ne!(code, 0, "{out}");
    assert!(!out.contains("registered:"), "{out}");

    // A restart keeps the certificate the phones were given.
    server.stop().unwrap();
    server.spawn();
    let reused = format!("using the self-signed {}", cert.display());
    assert!(server.log().contains(&reused), "{}", server.log());
    assert_eq!(std::fs::read_to_string(&cert).unwrap(), pem);
    let (code, out) = phone_over_tls(tls_port, &cert);
    assert_eq!(code, 0, "{out}");
}
