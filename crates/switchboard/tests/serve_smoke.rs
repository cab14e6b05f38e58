//! The smallest end-to-end check: `serve` starts on loopback and answers SIPp's OPTIONS
//! over UDP and TCP.
#![allow(clippy::unwrap_used)]

mod common;
use common::{Server, ServerOptions, sipp};
use std::path::PathBuf;
use std::time::Duration;

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

#[test]
fn options_over_udp_and_tcp() {
    let server = Server::start(ServerOptions::default());
    for transport in ["u1", "t1"] {
        let (code, out) = sipp(
            &scenario("options.xml"),
            server.port,
            &["-t", transport, "-m", "20", "-r", "50"],
            Duration::from_secs(20),
        );
        assert_eq!(
            code,
            0,
            "transport {transport}: {out}\nserver log:\n{}",
            server.log()
        );
    }
}
