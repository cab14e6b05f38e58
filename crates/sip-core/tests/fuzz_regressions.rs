//! Replays fuzzing findings and seeds through the checks of the fuzz targets.
//!
//! The checks are the very code the cargo-fuzz targets run (`fuzz/src/checks.rs`, included
//! by path), so a crash found by `cargo fuzz run <target>` and saved here as
//! `tests/fuzz-regressions/<target>-<name>.bin` fails this test until it is fixed.
//! Every seed of `fuzz/seeds/` (the RFC 4475 torture messages) also goes through every
//! check, so the test asserts the invariants even when no finding is stored.

#[path = "../../../fuzz/src/checks.rs"]
mod checks;

use std::panic;
use std::path::{Path, PathBuf};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(e) => panic!("cannot read {}: {e}", dir.display()),
    };
    files.sort();
    files
}

fn check_for(target: &str) -> Option<fn(&[u8])> {
    match target {
        "parse_message" => Some(checks::check_message),
        "framer" => Some(checks::check_framer),
        "uri" => Some(checks::check_uri),
        "sdp" => Some(checks::check_sdp),
        _ => None,
    }
}

/// Runs `check` on `data`, turning a panic into a failure description.
fn run(name: &str, check: fn(&[u8]), data: &[u8]) -> Option<String> {
    match panic::catch_unwind(|| check(data)) {
        Ok(()) => None,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| e.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            Some(format!("{name}: {}", msg.escape_debug()))
        }
    }
}

#[test]
fn regression_inputs() {
    let dir = Path::new(MANIFEST_DIR).join("tests/fuzz-regressions");
    let mut failures = Vec::new();
    for path in files_in(&dir) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') || name.ends_with(".md") {
            continue;
        }
        let target = name.split_once('-').map_or("", |(t, _)| t);
        let check = match check_for(target) {
            Some(check) => check,
            None => panic!("{name}: file name does not start with a fuzz target name"),
        };
        let data = match std::fs::read(&path) {
            Ok(data) => data,
            Err(e) => panic!("cannot read {}: {e}", path.display()),
        };
        failures.extend(run(&name, check, &data));
    }
    assert!(
        failures.is_empty(),
        "fuzz regressions fail:\n{}",
        failures.join("\n")
    );
}

#[test]
fn seeds_pass_every_check() {
    let dir = Path::new(MANIFEST_DIR).join("../../fuzz/seeds");
    let files = files_in(&dir);
    assert!(
        files.len() >= 50,
        "expected the torture seeds in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    let mut parsed = 0;
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let data = match std::fs::read(&path) {
            Ok(data) => data,
            Err(e) => panic!("cannot read {}: {e}", path.display()),
        };
        if sip_core::Message::parse(bytes::Bytes::from(data.clone())).is_ok() {
            parsed += 1;
        }
        for target in ["parse_message", "framer", "uri", "sdp"] {
            if let Some(check) = check_for(target) {
                failures.extend(run(&format!("{name} ({target})"), check, &data));
            }
        }
    }
    // The valid torture messages must all be read, or the round-trip checks test nothing.
    assert!(parsed >= 38, "only {parsed} seeds parse as messages");
    assert!(
        failures.is_empty(),
        "seeds fail the fuzz checks:\n{}",
        failures.join("\n")
    );
}

#[test]
fn checks_catch_a_broken_invariant() {
    // The checks must actually assert: a well-formed message, URI and SDP go through them
    // without a panic, so each property was evaluated on a real success.
    let msg = b"OPTIONS sip:bob@example.com;transport=tcp SIP/2.0\r\n\
Via: SIP/2.0/TCP h.example.com;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n\
To: <sip:bob@example.com>\r\nCall-ID: x@y\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n";
    assert!(sip_core::Message::parse(bytes::Bytes::from_static(msg)).is_ok());
    checks::check_message(msg);
    checks::check_uri(b"sips:alice:pw@[::1]:5061;lr?subject=x");
    checks::check_sdp(
        b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
    );
    let mut stream = vec![0u8];
    stream.extend_from_slice(msg);
    checks::check_framer(&stream);
}
