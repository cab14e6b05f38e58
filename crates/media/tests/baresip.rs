//! The media session against a real softphone: Debian's baresip (installed by
//! `scripts/test`) calls a minimal answering endpoint in this test, which answers with the
//! SDP of a `MediaSession`. Both sides then play a WAV file to each other and send DTMF,
//! so our RTP, G.711 and RFC 4733 are checked by an implementation that is not ours, and
//! theirs by ours.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use bytes::Bytes;
use common::{assert_recording_matches, write_test_wav};
use media::{AudioSink, AudioSource, Codec, MediaEvent, MediaSession, StreamParams};
use sip_core::Message;
use sip_core::sdp::SessionDescription;
use sip_core::{Method, response_to};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A running baresip, killed when dropped.
struct Baresip {
    child: Child,
    stdin: ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
    out: Vec<String>,
}

impl Baresip {
    fn start(dir: &Path, source: &Path, dial: &str) -> Baresip {
        let sip_port = std::net::UdpSocket::bind((LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "poll_method\t\tpoll\n\
             module_path\t\t/usr/lib/baresip/modules\n\
             sip_listen\t\t127.0.0.1:{sip_port}\n\
             net_interface\t\t127.0.0.1\n\
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
             module_app\t\tmenu.so\n",
            source = source.display(),
            dir = dir.display(),
        );
        std::fs::write(dir.join("config"), config).unwrap();
        std::fs::write(dir.join("accounts"), "<sip:bob@127.0.0.1>;regint=0\n").unwrap();
        let mut child = Command::new("baresip")
            .arg("-f")
            .arg(dir)
            .args(["-t", "30", "-e", dial])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("baresip is installed (scripts/test installs baresip-core)");
        let (tx, lines) = std::sync::mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take().unwrap();
        Baresip {
            child,
            stdin,
            lines,
            out: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.out.push(line);
        }
    }

    fn printed(&mut self) -> String {
        self.drain();
        self.out.join("\n")
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn recv_sip(socket: &UdpSocket, within: Duration) -> Option<(Message, SocketAddr)> {
    let mut buf = vec![0u8; 65535];
    let (len, from) = tokio::time::timeout(within, socket.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some((
        Message::parse(Bytes::copy_from_slice(&buf[..len])).ok()?,
        from,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_and_media_session_hear_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let theirs = dir.join("baresip-plays.wav");
    let ours = dir.join("we-play.wav");
    let recording = dir.join("we-record.wav");
    // baresip's file is the longer: it hangs up when it ends, by which time ours (paused
    // while our digits are sent) must be over.
    write_test_wav(&theirs, 8000, 4.0, 300.0);
    write_test_wav(&ours, 8000, 3.0, 500.0);

    let uas = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let uas_addr = uas.local_addr().unwrap();
    let mut phone = Baresip::start(
        &dir,
        &theirs,
        &format!("/dial sip:media@127.0.0.1:{}", uas_addr.port()),
    );

    let (invite, from) = recv_sip(&uas, Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no INVITE from baresip:\n{}", phone.printed()));
    assert_eq!(invite.method(), Some(&Method::Invite));
    let offer = SessionDescription::parse(invite.body()).unwrap();
    let audio = &offer.media[0];
    let remote_ip: IpAddr = offer
        .effective_connection(audio)
        .unwrap()
        .address
        .parse()
        .unwrap();
    let remote = SocketAddr::new(remote_ip, audio.port);
    let te = audio
        .rtpmaps()
        .find(|m| m.encoding.eq_ignore_ascii_case("telephone-event"))
        .map(|m| m.payload_type);
    assert_eq!(te, Some(101), "baresip offers telephone-event: {offer}");

    let mut session = MediaSession::bind(LOCALHOST).await.unwrap();
    let answer = SessionDescription::new_audio_offer(
        "-",
        42,
        LOCALHOST,
        session.local_rtp_port(),
        &[(0, "PCMU", 8000), (101, "telephone-event", 8000)],
    );
    let contact = format!("<sip:media@{uas_addr}>");
    let ok = response_to(&invite, 200, Some("mediatag"))
        .header("Contact", &contact)
        .body("application/sdp", answer.to_bytes())
        .build()
        .unwrap();
    uas.send_to(ok.as_bytes(), from).await.unwrap();
    // Wait for the ACK (re-sending the 200 as a UAS does until then).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match recv_sip(&uas, Duration::from_millis(500)).await {
            Some((m, _)) if m.method() == Some(&Method::Ack) => break,
            _ if Instant::now() > deadline => panic!("no ACK:\n{}", phone.printed()),
            _ => {
                uas.send_to(ok.as_bytes(), from).await.unwrap();
            }
        }
    }

    let mut events = session.events();
    session
        .start(
            StreamParams {
                telephone_event_pt: te,
                ..StreamParams::new(remote, Codec::Pcmu)
            },
            Some(AudioSource::Wav(ours.clone())),
            Some(AudioSink::wav(&recording).unwrap()),
        )
        .unwrap();
    session.send_dtmf("159#");
    // baresip's menu sends a digit typed during a call as RFC 4733 events (beside audio).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for key in ["2", "4"] {
        phone.stdin.write_all(key.as_bytes()).unwrap();
        phone.stdin.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }

    // baresip hangs up when its file ends: answer its BYE.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match recv_sip(&uas, left).await {
            Some((bye, from)) if bye.method() == Some(&Method::Bye) => {
                let ok = response_to(&bye, 200, None).build().unwrap();
                uas.send_to(ok.as_bytes(), from).await.unwrap();
                break;
            }
            Some(_) => continue,
            None => panic!("baresip did not hang up:\n{}", phone.printed()),
        }
    }
    let mut received = String::new();
    while let Ok(event) = events.try_recv() {
        if let MediaEvent::Dtmf(d) = event {
            received.push(d);
        }
    }
    let stats = session.stop().await;
    let printed = phone.printed();
    eprintln!("{stats:?}\n--- baresip:\n{printed}");

    // DTMF both ways.
    assert_eq!(received, "24");
    assert_eq!(stats.dtmf_received, "24");
    let heard: String = printed
        .lines()
        .filter_map(|l| l.strip_prefix("received event: '"))
        .filter(|l| l.ends_with("(end=1)"))
        .filter_map(|l| l.chars().next())
        .collect();
    assert_eq!(heard, "159#", "digits baresip reported");

    // Their file in our recording, ours in baresip's dump of what it decoded.
    let dump = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .expect("baresip's sndfile dump of the received audio");
    assert_recording_matches("our recording of baresip", &theirs, &recording);
    assert_recording_matches("baresip's recording of us", &ours, &dump);
}
