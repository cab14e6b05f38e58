//! Shared by the media integration tests: test signals, alignment by cross-correlation,
//! and waiting for session events.
#![allow(dead_code, clippy::unwrap_used)]

use media::MediaEvent;
use media::audio::read_wav_8k_mono;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

/// Writes a mono 16-bit test signal: a chirp rising from `base_hz` under a slow envelope
/// plus a steady 440 Hz, so that one alignment with a recording fits far better than any
/// other.
pub fn write_test_wav(path: &Path, rate: u32, seconds: f64, base_hz: f64) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..(seconds * f64::from(rate)) as usize {
        let t = i as f64 / f64::from(rate);
        let sweep = base_hz * t + (2800.0 / (2.0 * seconds)) * t * t;
        let envelope = 0.6 + 0.4 * (std::f64::consts::TAU * 1.3 * t).sin();
        let s = 0.5 * envelope * (std::f64::consts::TAU * sweep).sin()
            + 0.2 * (std::f64::consts::TAU * 440.0 * t).sin();
        w.write_sample((s * 32767.0) as i16).unwrap();
    }
    w.finalize().unwrap();
}

/// The best normalized cross-correlation of `recording` against `reference` over lags
/// within `max_lag` samples, and that lag.
pub fn best_correlation(reference: &[i16], recording: &[i16], max_lag: isize) -> (f64, isize) {
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
        if xx > 0.0 && yy > 0.0 && xy / (xx * yy).sqrt() > best.0 {
            best = (xy / (xx * yy).sqrt(), lag);
        }
    }
    best
}

/// Asserts that `recording` holds `reference` (as 8 kHz mono): correlation above 0.9 once
/// aligned, duration within 5%. Silence at the end of the recording is not counted: a
/// sender keeps sending silence once its file is over, until the call ends.
pub fn assert_recording_matches(what: &str, reference: &Path, recording: &Path) {
    let reference = read_wav_8k_mono(reference).unwrap();
    let mut recorded = read_wav_8k_mono(recording).unwrap();
    // G.711 silence decodes to 0 (µ-law) or ±8 (A-law).
    let end = recorded
        .iter()
        .rposition(|s| s.unsigned_abs() > 8)
        .map_or(0, |i| i + 1);
    recorded.truncate(end);
    let (correlation, lag) = best_correlation(&reference, &recorded, 2000);
    let ratio = recorded.len() as f64 / reference.len() as f64;
    eprintln!("{what}: correlation {correlation:.4} at lag {lag}, duration ratio {ratio:.3}");
    assert!(correlation > 0.9, "{what}: correlation {correlation}");
    assert!((ratio - 1.0).abs() < 0.05, "{what}: duration ratio {ratio}");
}

/// Waits up to `within` for an event matching `want`, adding the DTMF digits seen on the
/// way to `digits`; false on timeout.
pub async fn wait_for(
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
