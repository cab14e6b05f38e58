//! Opus (RFC 7587) through the system libopus, with the `opus` feature: encodes and
//! decodes the session's 8 kHz mono PCM directly (libopus resamples internally), while the
//! RTP clock stays at 48 kHz as RFC 7587 requires.

use crate::MediaError;
use crate::codec::PCM_RATE;

/// The largest payload we produce: ample for a 20-120 ms narrowband voice frame.
const MAX_PAYLOAD: usize = 1500;
/// The largest frame libopus may return: 120 ms at 8 kHz.
const MAX_FRAME: usize = 960;

/// An Opus encoder for 8 kHz mono voice.
pub struct OpusEncoder(opus::Encoder);

impl OpusEncoder {
    /// A VoIP-mode encoder.
    pub fn new() -> Result<OpusEncoder, MediaError> {
        opus::Encoder::new(PCM_RATE, opus::Channels::Mono, opus::Application::Voip)
            .map(OpusEncoder)
            .map_err(|e| MediaError::Codec(format!("opus encoder: {e}")))
    }

    /// One frame (2.5-60 ms of PCM) to one payload; a frame libopus refuses gives an
    /// empty payload, which the session does not send.
    pub fn encode(&mut self, pcm: &[i16]) -> Vec<u8> {
        self.0.encode_vec(pcm, MAX_PAYLOAD).unwrap_or_else(|e| {
            tracing::debug!("opus encode of {} samples: {e}", pcm.len());
            Vec::new()
        })
    }
}

/// An Opus decoder to 8 kHz mono.
pub struct OpusDecoder(opus::Decoder);

impl OpusDecoder {
    /// A decoder.
    pub fn new() -> Result<OpusDecoder, MediaError> {
        opus::Decoder::new(PCM_RATE, opus::Channels::Mono)
            .map(OpusDecoder)
            .map_err(|e| MediaError::Codec(format!("opus decoder: {e}")))
    }

    /// One payload to PCM; a corrupt payload gives an empty frame.
    pub fn decode(&mut self, payload: &[u8]) -> Vec<i16> {
        let mut pcm = vec![0; MAX_FRAME];
        match self.0.decode(payload, &mut pcm, false) {
            Ok(n) => {
                pcm.truncate(n);
                pcm
            }
            Err(e) => {
                tracing::debug!("opus decode of {} bytes: {e}", payload.len());
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_tone_survives_encoding() {
        let mut encoder = OpusEncoder::new().unwrap();
        let mut decoder = OpusDecoder::new().unwrap();
        let tone: Vec<i16> = (0..8000)
            .map(|i| ((i as f64 * std::f64::consts::TAU * 440.0 / 8000.0).sin() * 12000.0) as i16)
            .collect();
        let mut out = Vec::new();
        for frame in tone.chunks(160) {
            let payload = encoder.encode(frame);
            assert!(!payload.is_empty() && payload.len() < 200);
            let pcm = decoder.decode(&payload);
            assert_eq!(pcm.len(), 160);
            out.extend(pcm);
        }
        // Opus is lossy and delays by a few ms: compare energy, not samples.
        let energy = |s: &[i16]| s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
        let ratio = energy(&out[800..]) / energy(&tone[800..]);
        assert!((0.5..2.0).contains(&ratio), "energy ratio {ratio}");
    }
}
