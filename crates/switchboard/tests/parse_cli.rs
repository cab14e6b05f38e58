//! `switchboard parse` run as a user runs it: the real binary on the torture corpus.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn torture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/torture")
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("parse")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn valid_messages_print_json_and_exit_0() {
    let mut n = 0;
    for entry in std::fs::read_dir(torture().join("valid")).unwrap() {
        let path = entry.unwrap().path();
        let (code, out, err) = run(&[path.to_str().unwrap()], None);
        assert_eq!(code, 0, "{}: {err}", path.display());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(v.get("request").is_some() || v.get("response").is_some());
        assert!(v["headers"].as_array().is_some_and(|h| !h.is_empty()));
        n += 1;
    }
    assert_eq!(n, 38);
}

#[test]
fn invalid_messages_print_error_and_exit_1() {
    let mut n = 0;
    for entry in std::fs::read_dir(torture().join("invalid")).unwrap() {
        let path = entry.unwrap().path();
        let (code, out, err) = run(&[path.to_str().unwrap()], None);
        assert_eq!(code, 1, "{} was accepted: {out}", path.display());
        assert!(
            err.starts_with("error: ") && err.len() > 12,
            "{}: {err}",
            path.display()
        );
        assert!(out.is_empty());
        n += 1;
    }
    assert_eq!(n, 24);
}

#[test]
fn typed_headers_and_sdp_in_the_json() {
    let path = torture().join("valid/wsinv.dat");
    let (code, out, _) = run(&[path.to_str().unwrap()], None);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["request"]["method"], "INVITE");
    let headers = v["headers"].as_array().unwrap();
    let cseq = headers.iter().find(|h| h["name"] == "CSeq").unwrap();
    assert_eq!(cseq["parsed"]["seq"], 9);
    assert_eq!(cseq["written_as"], "cseq");
    let via = headers.iter().find(|h| h["name"] == "Via").unwrap();
    assert_eq!(via["parsed"][0]["params"]["branch"], "390skdjuw");
    assert_eq!(v["sdp"]["media"][0]["media"], "audio");
    assert_eq!(v["sdp"]["media"][0]["port"], 49217);
}

#[test]
fn reads_standard_input_with_bare_lf() {
    let msg = b"OPTIONS sip:bob@example.test SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\nFrom: <sip:alice@example.test>;tag=1\nTo: <sip:bob@example.test>\nCall-ID: abc\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n";
    let (code, out, err) = run(&["-"], Some(msg));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["request"]["uri_parts"]["user"], "bob");
    let (code, _, err) = run(&["-"], Some(b"this is not SIP\r\n\r\n"));
    assert_eq!(code, 1);
    assert!(
        err.contains("not \\\"METHOD URI SIP/2.0\\\"") || err.contains("METHOD URI SIP/2.0"),
        "{err}"
    );
}

#[test]
fn missing_file_is_a_clear_error() {
    let (code, _, err) = run(&["/nonexistent/message.txt"], None);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("error: cannot read /nonexistent/message.txt"),
        "{err}"
    );
}
