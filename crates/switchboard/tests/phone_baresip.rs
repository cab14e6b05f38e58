//! `switchboard phone` against a real third-party softphone (issue 6): Debian's baresip
//! (`baresip-core`, installed by `scripts/test`), headless on loopback, in each
//! direction. Audio goes both ways (each side plays a WAV file; each recording must hold
//! the other's file: correlation above 0.9, duration within 5%), and DTMF goes both
//! ways (RFC 4733), so our SIP, SDP, RTP, G.711 and telephone-events are checked by an
//! implementation that is not ours.
//!
//! baresip hangs up by itself when its audio file ends (its `aufile` source), which ends
//! both calls; its `sndfile` module dumps what it decoded to `*-dec.wav`. A third test
//! holds and resumes baresip by re-INVITE.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../media/tests/common/mod.rs"]
mod media_common;
use common::baresip::{self, Proc};
use common::{Server, ServerOptions, binary, free_port};
use media_common::{assert_recording_matches, write_test_wav};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Starts baresip on 127.0.0.1:`sip_port` as bob, playing `source`, dumping what it
/// hears into `dir`, answering calls by itself, dialling `dial` when given.
fn baresip(dir: &Path, sip_port: u16, source: &Path, dial: Option<&str>) -> Proc {
    let config = format!(
        "audio_source\t\taufile,{source}\n\
         audio_player\t\taubridge,nowhere\n\
         audio_alert\t\taubridge,nowhere\n\
         snd_path\t\t{dir}\n\
         module\t\t\tstdio.so\n\
         module\t\t\tg711.so\n\
         module\t\t\taufile.so\n\
         module\t\t\taubridge.so\n\
         module\t\t\tsndfile.so\n\
         module_app\t\taccount.so\n\
         module_app\t\tmenu.so\n",
        source = source.display(),
        dir = dir.display(),
    );
    let mut args = vec!["-t", "40"];
    if let Some(d) = dial {
        args.extend(["-e", d]);
    }
    baresip::start(
        dir,
        sip_port,
        &config,
        "<sip:bob@127.0.0.1>;regint=0;answermode=auto",
        &args,
    )
}

fn phone(args: &[&str]) -> Proc {
    let mut cmd = Command::new(binary());
    cmd.arg("phone").args(args).env("RUST_LOG", "warn");
    Proc::spawn(cmd)
}

fn decoded_dump(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .expect("baresip's sndfile dump of the received audio")
}

fn digits_baresip_heard(printed: &str) -> String {
    printed
        .lines()
        .filter_map(|l| l.strip_prefix("received event: '"))
        .filter(|l| l.ends_with("(end=1)"))
        .filter_map(|l| l.chars().next())
        .collect()
}

#[test]
fn baresip_calls_the_phone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let theirs = dir.join("baresip-plays.wav");
    let ours = dir.join("phone-plays.wav");
    let recording = dir.join("phone-records.wav");
    // baresip's file is the longer: it hangs up when it ends, by which time ours is over.
    write_test_wav(&theirs, 8000, 4.0, 300.0);
    write_test_wav(&ours, 8000, 3.0, 500.0);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut bob = phone(&[
        "--user",
        "bob",
        "--listen",
        &listen,
        "answer",
        "--auto",
        "--calls",
        "1",
        "--play",
        ours.to_str().unwrap(),
        "--record",
        recording.to_str().unwrap(),
    ]);
    bob.expect("waiting for calls", Duration::from_secs(10));
    let dial = format!("/dial sip:bob@127.0.0.1:{port}");
    let mut softphone = baresip(dir, free_port(), &theirs, Some(&dial));
    bob.expect("answered: PCMU", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1000));
    softphone.type_keys(&["2", "4"]);
    assert_eq!(bob.wait(Duration::from_secs(20)), 0, "{}", bob.printed());
    let printed = bob.printed();
    eprintln!(
        "--- phone:\n{printed}\n--- baresip:\n{}",
        softphone.printed()
    );
    assert!(printed.contains("incoming: "), "{printed}");
    assert!(printed.contains("ended: bye (remote)"), "{printed}");
    assert!(printed.contains("dtmf: 24"), "{printed}");
    assert_recording_matches("the phone's recording of baresip", &theirs, &recording);
    std::thread::sleep(Duration::from_millis(500));
    assert_recording_matches(
        "baresip's recording of the phone",
        &ours,
        &decoded_dump(dir),
    );
}

#[test]
fn the_phone_calls_baresip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let theirs = dir.join("baresip-plays.wav");
    let ours = dir.join("phone-plays.wav");
    let recording = dir.join("phone-records.wav");
    write_test_wav(&theirs, 8000, 5.0, 300.0);
    write_test_wav(&ours, 8000, 3.0, 500.0);
    let sip_port = free_port();
    let mut softphone = baresip(dir, sip_port, &theirs, None);
    softphone.expect("baresip is ready", Duration::from_secs(10));
    let target = format!("sip:bob@127.0.0.1:{sip_port}");
    let mut alice = phone(&[
        "--user",
        "alice",
        "call",
        &target,
        "--play",
        ours.to_str().unwrap(),
        "--record",
        recording.to_str().unwrap(),
        "--dtmf",
        "159#",
        // After our 3 s file ended, before baresip's 5 s file ends: baresip's jitter
        // buffer holds the last packets it got until more arrive, so this checks that
        // we keep sending (silence) after the file and the digits arrive whole.
        "--dtmf-after",
        "3.5",
    ]);
    // baresip answers by itself and hangs up when its file ends.
    assert_eq!(
        alice.wait(Duration::from_secs(30)),
        0,
        "{}",
        alice.printed()
    );
    let printed = alice.printed();
    let theirs_printed = softphone.printed();
    eprintln!("--- phone:\n{printed}\n--- baresip:\n{theirs_printed}");
    assert!(printed.contains("answered: PCMU"), "{printed}");
    assert!(printed.contains("ended: bye (remote)"), "{printed}");
    assert_eq!(digits_baresip_heard(&theirs_printed), "159#");
    let lines: Vec<&str> = printed.lines().collect();
    let finished = lines.iter().position(|l| *l == "playback finished");
    let first_digit = lines.iter().position(|l| l.starts_with("dtmf sent: "));
    assert!(
        finished.is_some() && finished < first_digit,
        "digits sent after the file ended: {printed}"
    );
    assert_recording_matches("the phone's recording of baresip", &theirs, &recording);
    assert_recording_matches(
        "baresip's recording of the phone",
        &ours,
        &decoded_dump(dir),
    );
}

#[test]
fn the_phone_holds_and_resumes_baresip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let theirs = dir.join("baresip-plays.wav");
    write_test_wav(&theirs, 8000, 4.0, 300.0);
    let sip_port = free_port();
    let mut softphone = baresip(dir, sip_port, &theirs, None);
    softphone.expect("baresip is ready", Duration::from_secs(10));
    let target = format!("sip:bob@127.0.0.1:{sip_port}");
    let mut alice = phone(&["call", &target, "--hold-after", "1", "--resume-after", "2"]);
    // The re-INVITEs (a=sendonly, then a=sendrecv) are answered; baresip hangs up when
    // its file ends.
    assert_eq!(
        alice.wait(Duration::from_secs(30)),
        0,
        "{}",
        alice.printed()
    );
    let printed = alice.printed();
    eprintln!(
        "--- phone:\n{printed}\n--- baresip:\n{}",
        softphone.printed()
    );
    for line in ["held: local", "resumed: local", "ended: bye (remote)"] {
        assert!(printed.lines().any(|l| l == line), "{line}: {printed}");
    }
}

#[test]
fn baresip_calls_the_phone_registered_over_tls_through_serve() {
    // Issue 12, defect 11: the phone registered over TLS advertised its TCP listener
    // in a transport=tls Contact; serve forwarded what baresip sent in the dialog (the
    // ACK, then the BYE) there over TLS, and it never arrived.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ss = sip_net::tls::self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, &ss.cert_pem).unwrap();
    std::fs::write(&key, &ss.key_pem).unwrap();
    let server = Server::start(ServerOptions {
        users: vec![
            ("bob".into(), "b-pw".into()),
            ("carol".into(), "c-pw".into()),
        ],
        extra_transports: vec!["tls"],
        // baresip 1.0 answers MD5 challenges only.
        extra_toml: format!(
            "[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n\
             [registrar]\ndigest_algorithms = [\"MD5\"]\n",
            cert.display(),
            key.display()
        ),
    });
    let tls = server.extra.iter().find(|(t, _)| t == "tls").unwrap().1;
    let mut bob = phone(&[
        "--user",
        "bob",
        "--password",
        "b-pw",
        "--server",
        &format!("127.0.0.1:{tls}"),
        "--domain",
        "example.test",
        "--transport",
        "tls",
        "--ca",
        cert.to_str().unwrap(),
        "answer",
        "--auto",
        "--calls",
        "1",
    ]);
    bob.expect("waiting for calls", Duration::from_secs(10));
    // carol on baresip, over UDP; she hangs up when her 2 s file ends.
    let theirs = dir.join("baresip-plays.wav");
    write_test_wav(&theirs, 8000, 2.0, 300.0);
    let config = format!(
        "audio_source\t\taufile,{}\n\
         audio_player\t\taubridge,nowhere\n\
         audio_alert\t\taubridge,nowhere\n\
         module\t\t\tstdio.so\n\
         module\t\t\tg711.so\n\
         module\t\t\taufile.so\n\
         module\t\t\taubridge.so\n\
         module_app\t\taccount.so\n\
         module_app\t\tmenu.so\n",
        theirs.display()
    );
    let account = format!(
        "<sip:carol@example.test>;auth_pass=c-pw;\
         outbound=\"sip:127.0.0.1:{};transport=udp\";regint=0",
        server.port
    );
    let mut softphone = baresip::start(
        dir,
        free_port(),
        &config,
        &account,
        &["-t", "30", "-e", "/dial sip:bob@example.test"],
    );
    let printed = |bob: &mut Proc, softphone: &mut Proc| {
        format!(
            "--- phone:\n{}\n--- baresip:\n{}\n--- serve:\n{}",
            bob.printed(),
            softphone.printed(),
            server.log()
        )
    };
    // Bounded: the phone exits after the call; the diagnostics need all three outputs.
    let deadline = std::time::Instant::now() + Duration::from_secs(25);
    while !bob.printed().contains("ended: ") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = bob.printed();
    assert!(
        out.contains("answered: PCMU"),
        "{}",
        printed(&mut bob, &mut softphone)
    );
    assert!(
        out.contains("ended: bye (remote)"),
        "{}",
        printed(&mut bob, &mut softphone)
    );
    assert!(
        !out.contains("no ACK"),
        "{}",
        printed(&mut bob, &mut softphone)
    );
}
