//! Codecs the softphone speaks: names and payload types for SDP, and the encoders and
//! decoders between 8 kHz mono 16-bit PCM (the session's internal audio) and RTP payloads.

use crate::MediaError;
use crate::g711;

/// The audio sample rate inside a session, whatever the codec's RTP clock.
pub const PCM_RATE: u32 = 8000;

/// An audio codec the session can send and receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
    /// Opus (RFC 7587), dynamic payload type; needs the `opus` feature to be used.
    Opus,
}

impl Codec {
    /// The payload type to offer: the static one for G.711, 111 (customary) for Opus.
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::Opus => 111,
        }
    }

    /// The RTP clock rate (the `a=rtpmap` rate): 48000 for Opus whatever the audio rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::Opus => 48000,
        }
    }

    /// The encoding name of `a=rtpmap`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::Opus => "opus",
        }
    }

    /// The `a=rtpmap` value after the payload type, e.g. `PCMU/8000` or `opus/48000/2`.
    pub fn rtpmap(self) -> String {
        match self {
            Codec::Opus => format!("{}/{}/2", self.name(), self.clock_rate()),
            _ => format!("{}/{}", self.name(), self.clock_rate()),
        }
    }

    /// The codec with this rtpmap encoding name (case-insensitive) and clock rate.
    pub fn from_rtpmap(name: &str, clock_rate: u32) -> Option<Codec> {
        [Codec::Pcmu, Codec::Pcma, Codec::Opus]
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name) && c.clock_rate() == clock_rate)
    }

    /// The codec of a static payload type (0 or 8).
    pub fn from_static_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// Whether this build can encode and decode it.
    pub fn is_available(self) -> bool {
        match self {
            Codec::Pcmu | Codec::Pcma => true,
            Codec::Opus => cfg!(feature = "opus"),
        }
    }

    /// RTP timestamp units in `ptime_ms` of audio.
    pub fn samples_per_packet(self, ptime_ms: u32) -> u32 {
        self.clock_rate() / 1000 * ptime_ms
    }
}

/// The customary RFC 4733 telephone-event payload type.
pub const TELEPHONE_EVENT_PT: u8 = 101;

/// The `a=rtpmap` value of telephone-event beside `codec` (same clock: they share the RTP
/// timestamp), e.g. `telephone-event/8000`; its `a=fmtp` is `0-15` (the DTMF events).
pub fn telephone_event_rtpmap(codec: Codec) -> String {
    format!("telephone-event/{}", codec.clock_rate())
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Turns 8 kHz PCM frames into payloads of one codec.
pub enum Encoder {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// Opus through libopus.
    #[cfg(feature = "opus")]
    Opus(crate::opus_codec::OpusEncoder),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encoder::Pcmu => "Encoder::Pcmu",
            Encoder::Pcma => "Encoder::Pcma",
            #[cfg(feature = "opus")]
            Encoder::Opus(_) => "Encoder::Opus",
        })
    }
}

impl Encoder {
    /// An encoder for `codec`, or an error when this build lacks it.
    pub fn new(codec: Codec) -> Result<Encoder, MediaError> {
        match codec {
            Codec::Pcmu => Ok(Encoder::Pcmu),
            Codec::Pcma => Ok(Encoder::Pcma),
            #[cfg(feature = "opus")]
            Codec::Opus => Ok(Encoder::Opus(crate::opus_codec::OpusEncoder::new()?)),
            #[cfg(not(feature = "opus"))]
            Codec::Opus => Err(MediaError::CodecUnavailable("opus")),
        }
    }

    /// Encodes one frame of 8 kHz PCM into a payload.
    pub fn encode(&mut self, pcm: &[i16]) -> Vec<u8> {
        match self {
            Encoder::Pcmu => pcm.iter().map(|&s| g711::linear_to_ulaw(s)).collect(),
            Encoder::Pcma => pcm.iter().map(|&s| g711::linear_to_alaw(s)).collect(),
            #[cfg(feature = "opus")]
            Encoder::Opus(e) => e.encode(pcm),
        }
    }
}

/// Turns payloads of one codec into 8 kHz PCM.
pub enum Decoder {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// Opus through libopus.
    #[cfg(feature = "opus")]
    Opus(crate::opus_codec::OpusDecoder),
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Decoder::Pcmu => "Decoder::Pcmu",
            Decoder::Pcma => "Decoder::Pcma",
            #[cfg(feature = "opus")]
            Decoder::Opus(_) => "Decoder::Opus",
        })
    }
}

impl Decoder {
    /// A decoder for `codec`, or an error when this build lacks it.
    pub fn new(codec: Codec) -> Result<Decoder, MediaError> {
        match codec {
            Codec::Pcmu => Ok(Decoder::Pcmu),
            Codec::Pcma => Ok(Decoder::Pcma),
            #[cfg(feature = "opus")]
            Codec::Opus => Ok(Decoder::Opus(crate::opus_codec::OpusDecoder::new()?)),
            #[cfg(not(feature = "opus"))]
            Codec::Opus => Err(MediaError::CodecUnavailable("opus")),
        }
    }

    /// Decodes one payload into 8 kHz PCM; a payload the codec rejects gives an empty frame.
    pub fn decode(&mut self, payload: &[u8]) -> Vec<i16> {
        match self {
            Decoder::Pcmu => payload.iter().map(|&b| g711::ulaw_to_linear(b)).collect(),
            Decoder::Pcma => payload.iter().map(|&b| g711::alaw_to_linear(b)).collect(),
            #[cfg(feature = "opus")]
            Decoder::Opus(d) => d.decode(payload),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sdp_names_and_rates() {
        assert_eq!(Codec::Pcmu.rtpmap(), "PCMU/8000");
        assert_eq!(Codec::Pcma.rtpmap(), "PCMA/8000");
        assert_eq!(Codec::Opus.rtpmap(), "opus/48000/2");
        assert_eq!(Codec::from_rtpmap("pcma", 8000), Some(Codec::Pcma));
        assert_eq!(Codec::from_rtpmap("OPUS", 48000), Some(Codec::Opus));
        assert_eq!(Codec::from_rtpmap("PCMU", 16000), None);
        assert_eq!(Codec::Pcmu.samples_per_packet(20), 160);
        assert_eq!(Codec::Opus.samples_per_packet(20), 960);
        assert_eq!(telephone_event_rtpmap(Codec::Pcma), "telephone-event/8000");
        assert_eq!(telephone_event_rtpmap(Codec::Opus), "telephone-event/48000");
    }

    #[test]
    fn g711_encoders_round_trip_a_frame() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let pcm: Vec<i16> = (0..160).map(|i| (i * 100 - 8000) as i16).collect();
            let payload = Encoder::new(codec).unwrap().encode(&pcm);
            assert_eq!(payload.len(), 160);
            let back = Decoder::new(codec).unwrap().decode(&payload);
            for (a, b) in pcm.iter().zip(&back) {
                assert!((*a as i32 - *b as i32).abs() < 300, "{codec}: {a} vs {b}");
            }
        }
    }

    #[cfg(not(feature = "opus"))]
    #[test]
    fn opus_is_refused_without_the_feature() {
        assert!(!Codec::Opus.is_available());
        assert!(matches!(
            Encoder::new(Codec::Opus),
            Err(MediaError::CodecUnavailable("opus"))
        ));
    }
}
