//! Two media sessions on 127.0.0.1 talk to each other for real: a WAV file played by one
//! is recorded by the other (G.711 and the jitter buffer in between), DTMF goes across,
//! hold pauses the stream, and symmetric RTP latches to the real source.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use media::audio::read_wav_8k_mono;
use media::{
    AudioSink, AudioSource, Codec, Direction, MediaEvent, MediaSession, MediaStats, StreamParams,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::timeout;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("media-loopback-{}-{name}", std::process::id()))
}

/// A 3 s, 16 kHz test signal: a chirp from 200 Hz to 3 kHz under a slow envelope plus a
/// steady 440 Hz, so one alignment of the recording fits far better than any other.
fn write_test_wav(path: &Path, seconds: f64) {
    let rate = 16_000u32;
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let n = (seconds * f64::from(rate)) as usize;
    for i in 0..n {
        let t = i as f64 / f64::from(rate);
        let sweep = 200.0 * t + (2800.0 / (2.0 * seconds)) * t * t;
        let envelope = 0.6 + 0.4 * (std::f64::consts::TAU * 1.3 * t).sin();
        let s = 0.5 * envelope * (std::f64::consts::TAU * sweep).sin()
            + 0.2 * (std::f64::consts::TAU * 440.0 * t).sin();
        w.write_sample((s * 32767.0) as i16).unwrap();
    }
    w.finalize().unwrap();
}

/// The best normalized cross-correlation of `recording` against `reference`, over lags
/// within `max_lag` samples.
fn best_correlation(reference: &[i16], recording: &[i16], max_lag: isize) -> (f64, isize) {
    let mut best = (f64::MIN, 0);
    for lag in -max_lag..=max_lag {
        let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
        for (i, &x) in reference.iter().enumerate() {
            let j = i as isize + lag;
            if j < 0 || j as usize >= recording.len() {
                continue;
            }
            let (x, y) = (f64::from(x), f64::from(recording[j as usize]));
            xy += x * y;
            xx += x * x;
            yy += y * y;
        }
        if xx > 0.0 && yy > 0.0 {
            let c = xy / (xx * yy).sqrt();
            if c > best.0 {
                best = (c, lag);
            }
        }
    }
    best
}

fn params(remote: SocketAddr) -> StreamParams {
    StreamParams::new(remote, Codec::Pcmu)
}

fn addr(session: &MediaSession) -> SocketAddr {
    SocketAddr::new(LOCALHOST, session.local_rtp_port())
}

/// Waits for the first event matching `want`, collecting DTMF digits on the way.
async fn wait_for(
    events: &mut mpsc::Receiver<MediaEvent>,
    digits: &mut String,
    within: Duration,
    want: impl Fn(&MediaEvent, &str) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => {
                if let MediaEvent::Dtmf(d) = &event {
                    digits.push(*d);
                }
                if want(&event, digits) {
                    return true;
                }
            }
            _ => return false,
        }
    }
}

fn check_recording(source: &Path, recording: &Path) -> (f64, f64) {
    let reference = read_wav_8k_mono(source).unwrap();
    let reader = hound::WavReader::open(recording).unwrap();
    assert_eq!(reader.spec().sample_rate, 8000);
    assert_eq!(reader.spec().channels, 1);
    let recorded: Vec<i16> = reader.into_samples::<i16>().map(Result::unwrap).collect();
    let duration_ratio = recorded.len() as f64 / reference.len() as f64;
    let (correlation, lag) = best_correlation(&reference, &recorded, 800);
    eprintln!(
        "recorded {} of {} samples (ratio {duration_ratio:.3}), correlation {correlation:.4} at lag {lag}",
        recorded.len(),
        reference.len()
    );
    (correlation, duration_ratio)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wav_and_dtmf_cross_and_the_recording_matches() {
    let source = temp("a.wav");
    let recording = temp("b.wav");
    write_test_wav(&source, 3.0);

    let mut a = MediaSession::bind(LOCALHOST).await.unwrap();
    let mut b = MediaSession::bind(LOCALHOST).await.unwrap();
    assert_eq!(a.local_rtp_port() % 2, 0);
    let (a_addr, b_addr) = (addr(&a), addr(&b));
    let mut a_events = a.events();
    let mut b_events = b.events();
    a.set_rtcp_interval(Duration::from_millis(400));
    b.set_rtcp_interval(Duration::from_millis(400));

    b.start(
        params(a_addr),
        Some(AudioSource::Silence),
        Some(AudioSink::wav(&recording).unwrap()),
    )
    .unwrap();
    a.start(params(b_addr), Some(AudioSource::Wav(source.clone())), None)
        .unwrap();
    a.send_dtmf("159#");
    // DTMF goes the other way at the same time (B sends silence, paused for the digits).
    b.send_dtmf("*0");

    let mut a_digits = String::new();
    let finished = wait_for(
        &mut a_events,
        &mut a_digits,
        Duration::from_secs(20),
        |e, _| *e == MediaEvent::SourceFinished,
    )
    .await;
    assert!(finished, "A's file never finished playing");
    let mut b_digits = String::new();
    let all_digits = wait_for(
        &mut b_events,
        &mut b_digits,
        Duration::from_secs(5),
        |_, d| d.len() >= 4,
    )
    .await;
    assert!(all_digits, "B got digits {b_digits:?}");
    assert_eq!(b_digits, "159#");
    // Let the jitter buffer play the tail.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let a_stats: MediaStats = timeout(Duration::from_secs(5), a.stop()).await.unwrap();
    let b_stats: MediaStats = timeout(Duration::from_secs(5), b.stop()).await.unwrap();
    eprintln!("A: {a_stats:?}\nB: {b_stats:?}");
    assert_eq!(b_stats.dtmf_received, "159#");
    assert_eq!(a_stats.dtmf_sent, "159#");
    assert_eq!(a_stats.dtmf_received, "*0");
    // 150 audio packets, and per digit 5 event packets of which the last 3 times.
    assert_eq!(a_stats.packets_sent, 150 + 4 * 7);
    assert_eq!(b_stats.packets_received, a_stats.packets_sent);
    assert_eq!(b_stats.packets_ignored, 0);
    assert_eq!(b_stats.packets_lost, 0);
    // B sent silence back all along: A received it.
    assert!(
        a_stats.packets_received > 100,
        "{}",
        a_stats.packets_received
    );

    let (correlation, duration_ratio) = check_recording(&source, &recording);
    assert!(correlation > 0.9, "correlation {correlation}");
    assert!(
        (duration_ratio - 1.0).abs() < 0.05,
        "duration ratio {duration_ratio}"
    );
    std::fs::remove_file(&source).unwrap();
    std::fs::remove_file(&recording).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_pauses_sending_and_resume_continues_the_file() {
    let source = temp("hold-a.wav");
    let recording = temp("hold-b.wav");
    write_test_wav(&source, 2.0);

    let mut a = MediaSession::bind(LOCALHOST).await.unwrap();
    let mut b = MediaSession::bind(LOCALHOST).await.unwrap();
    let (a_addr, b_addr) = (addr(&a), addr(&b));
    let mut a_events = a.events();
    b.start(
        params(a_addr),
        None,
        Some(AudioSink::wav(&recording).unwrap()),
    )
    .unwrap();
    a.start(params(b_addr), Some(AudioSource::Wav(source.clone())), None)
        .unwrap();

    tokio::time::sleep(Duration::from_millis(600)).await;
    // A puts B on hold (a=sendonly from B's side means A is... here A itself stops: inactive).
    a.update(StreamParams {
        direction: Direction::Inactive,
        ..params(b_addr)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let held = b.stats().await.packets_received;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        b.stats().await.packets_received,
        held,
        "A sent while on hold"
    );
    a.update(params(b_addr));

    let mut digits = String::new();
    assert!(
        wait_for(
            &mut a_events,
            &mut digits,
            Duration::from_secs(20),
            |e, _| { *e == MediaEvent::SourceFinished }
        )
        .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.stop().await;
    let b_stats = b.stop().await;
    assert_eq!(b_stats.packets_lost, 0);
    // The pause added nothing to the recording, and the file resumed where it stopped.
    let (correlation, duration_ratio) = check_recording(&source, &recording);
    assert!(correlation > 0.9, "correlation {correlation}");
    assert!(
        (duration_ratio - 1.0).abs() < 0.05,
        "duration ratio {duration_ratio}"
    );
    std::fs::remove_file(&source).unwrap();
    std::fs::remove_file(&recording).unwrap();
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
        Some(AudioSource::Wav(temp("absent.wav"))),
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
    let source = temp("lossy-a.wav");
    let recording = temp("lossy-b.wav");
    write_test_wav(&source, 3.0);

    let mut a = MediaSession::bind(LOCALHOST).await.unwrap();
    let mut b = MediaSession::bind(LOCALHOST).await.unwrap();
    let relay = tokio::net::UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let relay_task = tokio::spawn(lossy_relay(relay, addr(&b)));
    let mut a_events = a.events();
    b.start(
        params(addr(&a)),
        None,
        Some(AudioSink::wav(&recording).unwrap()),
    )
    .unwrap();
    a.start(
        params(relay_addr),
        Some(AudioSource::Wav(source.clone())),
        None,
    )
    .unwrap();

    let mut digits = String::new();
    assert!(
        wait_for(
            &mut a_events,
            &mut digits,
            Duration::from_secs(20),
            |e, _| { *e == MediaEvent::SourceFinished }
        )
        .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a_stats = a.stop().await;
    let b_stats = b.stop().await;
    relay_task.abort();
    eprintln!("A: {a_stats:?}\nB: {b_stats:?}");
    let dropped = a_stats.packets_sent as i64 / 40;
    assert_eq!(b_stats.packets_lost, dropped);
    // Each dropped packet was concealed; so was any reordered one that came too late (none
    // on an idle machine: the 60 ms buffer waits for a packet one place out of order).
    assert_eq!(
        b_stats.frames_concealed,
        dropped as u64 + b_stats.packets_late
    );
    let (correlation, duration_ratio) = check_recording(&source, &recording);
    assert!(correlation > 0.9, "correlation {correlation}");
    assert!(
        (duration_ratio - 1.0).abs() < 0.05,
        "duration ratio {duration_ratio}"
    );
    std::fs::remove_file(&source).unwrap();
    std::fs::remove_file(&recording).unwrap();
}

#[cfg(feature = "opus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_carries_the_file_too() {
    let source = temp("opus-a.wav");
    let recording = temp("opus-b.wav");
    write_test_wav(&source, 3.0);
    let opus = |remote| StreamParams {
        codec: Codec::Opus,
        payload_type: 111,
        ..params(remote)
    };
    let mut a = MediaSession::bind(LOCALHOST).await.unwrap();
    let mut b = MediaSession::bind(LOCALHOST).await.unwrap();
    let mut a_events = a.events();
    b.start(
        opus(addr(&a)),
        None,
        Some(AudioSink::wav(&recording).unwrap()),
    )
    .unwrap();
    a.start(opus(addr(&b)), Some(AudioSource::Wav(source.clone())), None)
        .unwrap();
    let mut digits = String::new();
    assert!(
        wait_for(
            &mut a_events,
            &mut digits,
            Duration::from_secs(20),
            |e, _| { *e == MediaEvent::SourceFinished }
        )
        .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.stop().await;
    let b_stats = b.stop().await;
    assert_eq!(b_stats.packets_received, 150);
    let (correlation, duration_ratio) = check_recording(&source, &recording);
    assert!(correlation > 0.9, "correlation {correlation}");
    assert!(
        (duration_ratio - 1.0).abs() < 0.05,
        "duration ratio {duration_ratio}"
    );
    std::fs::remove_file(&source).unwrap();
    std::fs::remove_file(&recording).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_codec_change_mid_call_keeps_the_recording_whole() {
    let source = temp("recodec-a.wav");
    let recording = temp("recodec-b.wav");
    write_test_wav(&source, 2.0);
    let mut a = MediaSession::bind(LOCALHOST).await.unwrap();
    let mut b = MediaSession::bind(LOCALHOST).await.unwrap();
    let (a_addr, b_addr) = (addr(&a), addr(&b));
    let mut a_events = a.events();
    b.start(
        params(a_addr),
        None,
        Some(AudioSink::wav(&recording).unwrap()),
    )
    .unwrap();
    a.start(params(b_addr), Some(AudioSource::Wav(source.clone())), None)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    // A re-INVITE moves both to A-law; the receiver switches first, as the answerer would.
    b.update(StreamParams::new(a_addr, Codec::Pcma));
    a.update(StreamParams::new(b_addr, Codec::Pcma));
    let mut digits = String::new();
    assert!(
        wait_for(
            &mut a_events,
            &mut digits,
            Duration::from_secs(20),
            |e, _| { *e == MediaEvent::SourceFinished }
        )
        .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.stop().await;
    let b_stats = b.stop().await;
    assert_eq!(b_stats.packets_lost, 0);
    let (correlation, duration_ratio) = check_recording(&source, &recording);
    assert!(correlation > 0.9, "correlation {correlation}");
    assert!(
        (duration_ratio - 1.0).abs() < 0.05,
        "duration ratio {duration_ratio}"
    );
    std::fs::remove_file(&source).unwrap();
    std::fs::remove_file(&recording).unwrap();
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
    let source = temp("ptime-a.wav");
    let recording = temp("ptime-b.wav");
    write_test_wav(&source, 2.0);
    let mut a = MediaSession::bind(LOCALHOST).await.unwrap();
    let mut b = MediaSession::bind(LOCALHOST).await.unwrap();
    let (a_addr, b_addr) = (addr(&a), addr(&b));
    let mut a_events = a.events();
    // A sends 10 ms packets; B plays out every 30 ms.
    b.start(
        StreamParams {
            ptime_ms: 30,
            ..params(a_addr)
        },
        None,
        Some(AudioSink::wav(&recording).unwrap()),
    )
    .unwrap();
    a.start(
        StreamParams {
            ptime_ms: 10,
            ..params(b_addr)
        },
        Some(AudioSource::Wav(source.clone())),
        None,
    )
    .unwrap();
    let mut digits = String::new();
    assert!(
        wait_for(
            &mut a_events,
            &mut digits,
            Duration::from_secs(20),
            |e, _| { *e == MediaEvent::SourceFinished }
        )
        .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a_stats = a.stop().await;
    let b_stats = b.stop().await;
    assert_eq!(a_stats.packets_sent, 200);
    assert_eq!(b_stats.packets_lost, 0);
    let (correlation, duration_ratio) = check_recording(&source, &recording);
    assert!(correlation > 0.9, "correlation {correlation}");
    assert!(
        (duration_ratio - 1.0).abs() < 0.05,
        "duration ratio {duration_ratio}"
    );
    std::fs::remove_file(&source).unwrap();
    std::fs::remove_file(&recording).unwrap();
}
