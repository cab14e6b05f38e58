//! Two media sessions on 127.0.0.1 talk to each other for real: a WAV file played by one
//! is recorded by the other (G.711 and the jitter buffer in between), DTMF goes across,
//! hold pauses the stream, and symmetric RTP latches to the real source.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{assert_recording_matches, wait_for, write_test_wav};
use media::{
    AudioSink, AudioSource, Codec, Direction, MediaEvent, MediaSession, MediaStats, StreamParams,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::timeout;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn params(remote: SocketAddr) -> StreamParams {
    StreamParams::new(remote, Codec::Pcmu)
}

fn addr(session: &MediaSession) -> SocketAddr {
    SocketAddr::new(LOCALHOST, session.local_rtp_port())
}

/// Two bound sessions, A to play a generated WAV file and B to record it; each test starts
/// them its own way.
struct Call {
    a: MediaSession,
    b: MediaSession,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    a_events: mpsc::Receiver<MediaEvent>,
    b_events: mpsc::Receiver<MediaEvent>,
    _dir: tempfile::TempDir,
    source: PathBuf,
    recording: PathBuf,
}

impl Call {
    /// Binds both sessions and writes a `seconds` long 16 kHz source file.
    async fn new(seconds: f64) -> Call {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("a-plays.wav");
        write_test_wav(&source, 16_000, seconds, 200.0);
        let mut a = MediaSession::bind(LOCALHOST).await.unwrap();
        let mut b = MediaSession::bind(LOCALHOST).await.unwrap();
        Call {
            a_addr: addr(&a),
            b_addr: addr(&b),
            a_events: a.events(),
            b_events: b.events(),
            a,
            b,
            recording: dir.path().join("b-records.wav"),
            source,
            _dir: dir,
        }
    }

    fn wav(&self) -> Option<AudioSource> {
        Some(AudioSource::Wav(self.source.clone()))
    }

    fn sink(&self) -> Option<AudioSink> {
        Some(AudioSink::wav(&self.recording).unwrap())
    }

    /// Waits until A's file has been sent (collecting digits A received), then a little
    /// for B's jitter buffer to play the tail.
    async fn play_out(&mut self) -> String {
        let mut digits = String::new();
        let finished = wait_for(
            &mut self.a_events,
            &mut digits,
            Duration::from_secs(20),
            |e, _| *e == MediaEvent::SourceFinished,
        )
        .await;
        assert!(finished, "A's file never finished playing");
        tokio::time::sleep(Duration::from_millis(200)).await;
        digits
    }

    /// Stops both, checks B's recording against A's file, returns both counters.
    async fn stop_and_check(self) -> (MediaStats, MediaStats) {
        let a = timeout(Duration::from_secs(5), self.a.stop())
            .await
            .unwrap();
        let b = timeout(Duration::from_secs(5), self.b.stop())
            .await
            .unwrap();
        eprintln!("A: {a:?}\nB: {b:?}");
        assert_recording_matches("B's recording of A", &self.source, &self.recording);
        (a, b)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wav_and_dtmf_cross_and_the_recording_matches() {
    let mut call = Call::new(3.0).await;
    assert_eq!(call.a.local_rtp_port() % 2, 0);
    call.a.set_rtcp_interval(Duration::from_millis(400));
    call.b.set_rtcp_interval(Duration::from_millis(400));
    let sink = call.sink();
    call.b
        .start(params(call.a_addr), Some(AudioSource::Silence), sink)
        .unwrap();
    call.a.start(params(call.b_addr), call.wav(), None).unwrap();
    call.a.send_dtmf("159#");
    // DTMF goes the other way at the same time (B sends silence, paused for the digits).
    call.b.send_dtmf("*0");

    call.play_out().await;
    let mut b_digits = String::new();
    let all = wait_for(
        &mut call.b_events,
        &mut b_digits,
        Duration::from_secs(5),
        |_, d| d.len() >= 4,
    )
    .await;
    assert!(all, "B got digits {b_digits:?}");
    assert_eq!(b_digits, "159#");

    let (a, b) = call.stop_and_check().await;
    assert_eq!(b.dtmf_received, "159#");
    assert_eq!(a.dtmf_sent, "159#");
    assert_eq!(a.dtmf_received, "*0");
    // 150 audio packets, and per digit 5 event packets of which the last 3 times; then
    // silence until the stop.
    assert!(a.packets_sent >= 150 + 4 * 7, "{}", a.packets_sent);
    assert_eq!(b.packets_received, a.packets_sent);
    assert_eq!(b.packets_lost, 0);
    assert_eq!(b.packets_ignored, 0);
    // B sent silence back all along: A received it.
    assert!(a.packets_received > 100, "{}", a.packets_received);
    // RTCP went both ways; B's reports on A's stream say nothing was lost, and echo A's
    // sender reports, which gives A a round-trip time.
    assert!(a.rtcp_sent >= 3 && b.rtcp_received >= 3, "{a:?} {b:?}");
    let report = a.remote_report.expect("B reported on A's stream");
    assert_eq!(report.cumulative_lost, 0);
    assert!(report.rtt_ms.is_some_and(|rtt| rtt < 1000.0), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_pauses_sending_and_resume_continues_the_file() {
    let mut call = Call::new(2.0).await;
    let sink = call.sink();
    call.b.start(params(call.a_addr), None, sink).unwrap();
    call.a.start(params(call.b_addr), call.wav(), None).unwrap();

    tokio::time::sleep(Duration::from_millis(600)).await;
    // A re-INVITE puts the stream on hold: A stops sending (inactive).
    call.a.update(StreamParams {
        direction: Direction::Inactive,
        ..params(call.b_addr)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let held = call.b.stats().await.packets_received;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        call.b.stats().await.packets_received,
        held,
        "A sent while on hold"
    );
    call.a.update(params(call.b_addr));

    call.play_out().await;
    // The pause added nothing to the recording, and the file resumed where it stopped.
    let (_, b) = call.stop_and_check().await;
    assert_eq!(b.packets_lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_rtp_latches_to_the_address_packets_come_from() {
    let mut a = MediaSession::bind(LOCALHOST).await.unwrap();
    let mut b = MediaSession::bind(LOCALHOST).await.unwrap();
    let a_addr = addr(&a);
    // B was told a wrong address for A (as behind a NAT): an unused port.
    let nowhere = std::net::UdpSocket::bind((LOCALHOST, 0)).unwrap();
    let wrong = nowhere.local_addr().unwrap();
    drop(nowhere);
    let mut b_events = b.events();
    b.start(params(wrong), Some(AudioSource::Tone { hz: 800.0 }), None)
        .unwrap();
    a.start(params(addr(&b)), Some(AudioSource::Silence), None)
        .unwrap();

    let mut digits = String::new();
    let latched = wait_for(
        &mut b_events,
        &mut digits,
        Duration::from_secs(5),
        |e, _| *e == MediaEvent::RemoteAddressLatched(a_addr),
    )
    .await;
    assert!(latched, "B never latched to A's address");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a_stats = a.stop().await;
    b.stop().await;
    assert!(
        a_stats.packets_received > 5,
        "A got {} packets from B after latching",
        a_stats.packets_received
    );
}

#[tokio::test]
async fn starting_twice_or_with_a_missing_file_fails_cleanly() {
    let mut a = MediaSession::bind(LOCALHOST).await.unwrap();
    let remote = SocketAddr::new(LOCALHOST, 9);
    let missing = a.start(
        params(remote),
        Some(AudioSource::Wav(
            tempfile::tempdir().unwrap().path().join("absent.wav"),
        )),
        None,
    );
    assert!(missing.is_err());
    // The failed start consumed the sockets: a new session is needed.
    let mut b = MediaSession::bind(LOCALHOST).await.unwrap();
    b.start(params(remote), None, None).unwrap();
    assert!(matches!(
        b.start(params(remote), None, None),
        Err(media::MediaError::AlreadyStarted)
    ));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_ports_is_ignored_and_the_call_goes_on() {
    let mut call = Call::new(2.0).await;
    let sink = call.sink();
    call.b.start(params(call.a_addr), None, sink).unwrap();
    call.a.start(params(call.b_addr), call.wav(), None).unwrap();
    let attacker = tokio::net::UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let rtcp = SocketAddr::new(LOCALHOST, call.b_addr.port() + 1);
    let mut datagrams: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x80],
        b"INVITE sip:x SIP/2.0\r\n\r\n".to_vec(),
        // RTP version 1; RTP with 15 CSRCs announced and no room for them.
        vec![0x40, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1],
        vec![0x8F, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1],
        // A telephone-event too short to hold an event, from a stranger's SSRC.
        vec![0x80, 101, 0, 1, 0, 0, 0, 1, 0xDE, 0xAD, 0xBE, 0xEF, 1],
        // RTCP with a length running past the datagram.
        vec![0x81, 200, 0x00, 0x40, 1, 2, 3, 4],
    ];
    // And some pseudo-random bytes (a fixed xorshift, so failures repeat).
    let mut x: u32 = 0x1234_5678;
    for len in 1..64 {
        datagrams.push(
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect(),
        );
    }
    for d in &datagrams {
        // The garbage goes to the RTP port only after A's first packet, so that B latches
        // to A and not to the attacker.
        tokio::time::sleep(Duration::from_millis(5)).await;
        attacker.send_to(d, call.b_addr).await.unwrap();
        attacker.send_to(d, rtcp).await.unwrap();
    }
    call.play_out().await;
    let (_, b) = call.stop_and_check().await;
    assert!(b.packets_ignored > 0);
    assert_eq!(b.dtmf_received, "");
    assert_eq!(b.packets_lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_source_takes_over_after_probation() {
    let mut b = MediaSession::bind(LOCALHOST).await.unwrap();
    let mut a = MediaSession::bind(LOCALHOST).await.unwrap();
    let mut c = MediaSession::bind(LOCALHOST).await.unwrap();
    let mut b_events = b.events();
    b.start(params(addr(&a)), Some(AudioSource::Silence), None)
        .unwrap();
    a.start(params(addr(&b)), Some(AudioSource::Silence), None)
        .unwrap();
    let mut digits = String::new();
    assert!(
        wait_for(
            &mut b_events,
            &mut digits,
            Duration::from_secs(3),
            |e, _| { *e == MediaEvent::RemoteAddressLatched(addr(&a)) }
        )
        .await
    );
    // The far end moves its media elsewhere (a new SSRC from a new port), as when a call
    // is handed to a media server.
    a.stop().await;
    let c_addr = addr(&c);
    c.start(
        params(addr(&b)),
        Some(AudioSource::Tone { hz: 700.0 }),
        None,
    )
    .unwrap();
    assert!(
        wait_for(
            &mut b_events,
            &mut digits,
            Duration::from_secs(3),
            |e, _| { *e == MediaEvent::RemoteAddressLatched(c_addr) }
        )
        .await,
        "B did not follow the new source"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c_stats = c.stop().await;
    let b_stats = b.stop().await;
    // B's silence now reaches C; the new stream's stats start afresh.
    assert!(c_stats.packets_received > 5, "{c_stats:?}");
    assert_eq!(b_stats.packets_lost, 0, "{b_stats:?}");
}

/// Forwards what arrives on `socket` to `to`, dropping every 40th datagram and sending every
/// 7th after the one behind it (reordering), until nothing came for 2 s.
async fn lossy_relay(socket: tokio::net::UdpSocket, to: SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let mut held: Option<Vec<u8>> = None;
    let mut n = 0u32;
    while let Ok(Ok((len, _))) = timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await {
        n += 1;
        let packet = buf[..len].to_vec();
        if n.is_multiple_of(40) {
            continue;
        }
        if n.is_multiple_of(7) && held.is_none() {
            held = Some(packet);
            continue;
        }
        socket.send_to(&packet, to).await.unwrap();
        if let Some(late) = held.take() {
            socket.send_to(&late, to).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_and_reordering_are_absorbed_by_the_jitter_buffer() {
    let mut call = Call::new(3.0).await;
    let relay = tokio::net::UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let relay_task = tokio::spawn(lossy_relay(relay, call.b_addr));
    let sink = call.sink();
    call.b.start(params(call.a_addr), None, sink).unwrap();
    call.a.start(params(relay_addr), call.wav(), None).unwrap();

    call.play_out().await;
    let (_, b) = call.stop_and_check().await;
    relay_task.abort();
    // The relay drops every 40th packet; A sends silence after its file until the stop,
    // so count the drops among the packets B accounted for (a drop after the last packet
    // B got is not a loss it can see).
    let dropped = (b.packets_received as i64 + b.packets_lost) / 40;
    assert_eq!(b.packets_lost, dropped);
    // Each dropped packet was concealed; so was any reordered one that came too late (none
    // on an idle machine: the 60 ms buffer waits for a packet one place out of order).
    assert_eq!(b.frames_concealed, dropped as u64 + b.packets_late);
}

#[cfg(feature = "opus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_carries_the_file_too() {
    let mut call = Call::new(3.0).await;
    let opus = |remote| StreamParams::new(remote, Codec::Opus);
    let sink = call.sink();
    call.b.start(opus(call.a_addr), None, sink).unwrap();
    call.a.start(opus(call.b_addr), call.wav(), None).unwrap();
    call.play_out().await;
    let (_, b) = call.stop_and_check().await;
    // The file, then silence until the stop.
    assert!(b.packets_received >= 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_codec_change_mid_call_keeps_the_recording_whole() {
    let mut call = Call::new(2.0).await;
    let sink = call.sink();
    call.b.start(params(call.a_addr), None, sink).unwrap();
    call.a.start(params(call.b_addr), call.wav(), None).unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    // A re-INVITE moves both to A-law; the receiver switches first, as the answerer would,
    // and still decodes the µ-law packets on their way.
    call.b.update(StreamParams::new(call.a_addr, Codec::Pcma));
    call.a.update(StreamParams::new(call.b_addr, Codec::Pcma));
    call.play_out().await;
    let (_, b) = call.stop_and_check().await;
    assert_eq!(b.packets_lost, 0);
}

#[tokio::test]
async fn silence_from_the_far_side_is_an_rtp_timeout_unless_held() {
    let mut a = MediaSession::bind(LOCALHOST).await.unwrap();
    let quiet = MediaSession::bind(LOCALHOST).await.unwrap();
    a.set_rtp_timeout(Duration::from_millis(300));
    let mut events = a.events();
    a.start(params(addr(&quiet)), Some(AudioSource::Silence), None)
        .unwrap();
    let mut digits = String::new();
    assert!(
        wait_for(&mut events, &mut digits, Duration::from_secs(3), |e, _| {
            *e == MediaEvent::RtpTimeout
        })
        .await
    );
    // Held (sendonly: nothing to receive): no timeout however long.
    let mut held = MediaSession::bind(LOCALHOST).await.unwrap();
    held.set_rtp_timeout(Duration::from_millis(300));
    let mut held_events = held.events();
    held.start(
        StreamParams {
            direction: Direction::SendOnly,
            ..params(addr(&quiet))
        },
        Some(AudioSource::Silence),
        None,
    )
    .unwrap();
    assert!(
        !wait_for(
            &mut held_events,
            &mut digits,
            Duration::from_millis(800),
            |e, _| { *e == MediaEvent::RtpTimeout }
        )
        .await
    );
    a.stop().await;
    held.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_side_may_packetize_at_its_own_ptime() {
    let mut call = Call::new(2.0).await;
    // A sends 10 ms packets; B plays out every 30 ms.
    let sink = call.sink();
    let b_params = StreamParams {
        ptime_ms: 30,
        ..params(call.a_addr)
    };
    call.b.start(b_params, None, sink).unwrap();
    let a_params = StreamParams {
        ptime_ms: 10,
        ..params(call.b_addr)
    };
    call.a.start(a_params, call.wav(), None).unwrap();
    call.play_out().await;
    let (a, b) = call.stop_and_check().await;
    // 200 packets of file, then silence until the stop.
    assert!(a.packets_sent >= 200, "{}", a.packets_sent);
    assert_eq!(b.packets_lost, 0);
}
