//! What the user agent asks of the media session and hears from it, in its own terms:
//! the stream the offer/answer exchange settled on ([`StreamParams`]), what to send
//! ([`AudioSource`]) and the events the session reports ([`MediaEvent`]). The driver
//! maps them onto a real RTP session; nothing here sends a packet.

use sip_core::sdp::Direction;
use std::net::SocketAddr;
use std::path::PathBuf;

/// An audio codec of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// Opus (RFC 7587).
    Opus,
}

/// What the session sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioSource {
    /// A WAV file, played once (silence after).
    Wav(PathBuf),
    /// Silence.
    Silence,
}

/// The audio stream offer/answer settled on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamParams {
    /// The far end's RTP address from its SDP (unspecified when it holds the RFC 2543
    /// way, `c=0.0.0.0`).
    pub remote: SocketAddr,
    /// The voice codec.
    pub codec: Codec,
    /// Its payload type in this session.
    pub payload_type: u8,
    /// The RFC 4733 telephone-event payload type, when both sides have it.
    pub telephone_event_pt: Option<u8>,
    /// Our direction (`SendOnly` or `Inactive` while we hold).
    pub direction: Direction,
    /// Packetization time in milliseconds.
    pub ptime_ms: u32,
}

/// Something the media session reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// The far end sent this DTMF digit (RFC 4733), once per key press.
    Dtmf(char),
    /// RTP arrived from this address, and the session now sends there.
    RemoteAddressLatched(SocketAddr),
    /// The WAV source is over.
    SourceFinished,
    /// No RTP arrived for a while though some was expected.
    RtpTimeout,
}
