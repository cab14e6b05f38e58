//! Media for the Switchboard softphone: RTP and RTCP sessions carrying voice between two
//! endpoints that agreed on a stream through SDP.
//!
//! What is in it:
//! - [`MediaSession`]: the tokio driver. One even RTP port with RTCP on the next port, a
//!   task that ticks a [`MediaStream`] every ptime, carries its datagrams to the sockets and
//!   its audio to an [`AudioSink`], and forwards its [`MediaEvent`]s.
//! - [`MediaStream`] ([`stream`]): the stream's logic, sans-IO (explicit `now`, outputs
//!   polled): paced sending from an [`AudioSource`], symmetric RTP, a jitter buffer played
//!   out in real time, RFC 4733 DTMF both ways, RTCP sender/receiver reports.
//! - Sans-IO pieces, each tested without sockets: [`g711`] (µ-law, A-law), [`dtmf`]
//!   (telephone-event payloads, a sender state machine, a de-duplicating receiver),
//!   [`jitter`] (reordering buffer with loss concealment), [`stats`] (RFC 3550 A.1/A.3/A.8
//!   sequence, loss and jitter accounting), [`rtcp`] (SR/RR build and parse over
//!   `rtcp-types`), [`codec`] (codec names, payload types, encoders and decoders).
//! - [`audio`]: WAV files as a source (any rate and channel count, mixed and resampled to
//!   8 kHz mono 16-bit) and as a sink (8 kHz mono 16-bit, via `hound`), tones and silence.
//!
//! Opus is behind the cargo feature `opus` (needs the system libopus); without it
//! [`Codec::Opus`] exists for SDP but [`MediaSession::start`] refuses it.
//!
//! # Example
//! ```no_run
//! use media::{AudioSink, AudioSource, Codec, Direction, MediaEvent, MediaSession, StreamParams};
//! # async fn call() -> Result<(), Box<dyn std::error::Error>> {
//! let mut session = MediaSession::bind("127.0.0.1".parse()?).await?;
//! let port = session.local_rtp_port(); // goes into our SDP offer/answer
//! # let _ = port;
//! let params = StreamParams {
//!     remote: "127.0.0.1:40000".parse()?, // from the peer's SDP
//!     codec: Codec::Pcmu,
//!     payload_type: Codec::Pcmu.payload_type(),
//!     telephone_event_pt: Some(101),
//!     direction: Direction::SendRecv,
//!     ptime_ms: 20,
//! };
//! session.start(
//!     params.clone(),
//!     Some(AudioSource::Wav("hello.wav".into())),
//!     Some(AudioSink::wav("recording.wav")?),
//! )?;
//! let mut events = session.events();
//! session.send_dtmf("159#");
//! // Hold: a re-INVITE made us sendonly.
//! session.update(StreamParams { direction: Direction::SendOnly, ..params });
//! while let Ok(Some(event)) =
//!     tokio::time::timeout(std::time::Duration::from_secs(1), events.recv()).await
//! {
//!     if let MediaEvent::Dtmf(digit) = event {
//!         println!("peer pressed {digit}");
//!     }
//! }
//! let stats = session.stop().await; // finalizes recording.wav
//! println!("{} sent, {} received, {} lost", stats.packets_sent, stats.packets_received, stats.packets_lost);
//! # Ok(()) }
//! ```
//!
//! # Choices worth knowing
//! - Ports: [`MediaSession::bind`] takes an even RTP port and RTCP on the next one. RTCP that
//!   a peer multiplexes on the RTP port (RFC 5761) is understood too; ours goes to port+1.
//! - Symmetric RTP: the first accepted RTP packet fixes where we send, whatever the SDP
//!   said ([`MediaEvent::RemoteAddressLatched`]); an `update` with a new remote re-arms it.
//!   Another SSRC takes over (and is latched to) after 3 packets in sequence, so a stream
//!   moved elsewhere is followed but a stray or forged packet changes nothing. Datagrams
//!   that are not RTP, or not of an agreed payload type, are counted and dropped.
//! - Hold the RFC 2543 way (`c=0.0.0.0`, an unspecified remote address) sends nothing.
//! - Pacing: one packet per ptime from a tokio interval with `MissedTickBehavior::Burst`: after
//!   a stall (a busy machine) the late packets go out at once, so no audio is lost and the RTP
//!   clock stays on real time; the receiver's jitter buffer absorbs the burst. The marker bit
//!   starts every talkspurt (start, after hold, after a digit). SSRC, first sequence number
//!   and first timestamp are random.
//! - DTMF: 100 ms events and 50 ms gaps, the end packet sent three times. Sending a digit
//!   pauses the audio source (no audio packets meanwhile, the source does not advance), so a
//!   recording of the far side holds the whole file whatever digits were pressed. Digits
//!   received are reported once per event, whether the peer pauses audio, (like baresip)
//!   sends events beside it, or (like SIPp) sends them in an RTP stream of their own (another
//!   SSRC) from the address its audio comes from: such a stream brings digits but does not
//!   replace the audio source.
//! - When a WAV source ends, [`MediaEvent::SourceFinished`] is reported and silence is sent
//!   from then on, while the session runs: a peer whose jitter buffer holds the last packets
//!   until more arrive (baresip) still plays them, and digits sent after the file arrive
//!   whole. [`AudioSource::Silence`] sends silence forever (keeps NAT bindings and the far
//!   side's latching alive); no source at all sends no audio.
//! - Receiving: a jitter buffer of 3 packets ([`MediaSession::set_jitter_depth`]) reorders,
//!   drops duplicates and late packets, and conceals a lost packet with silence. Playout
//!   takes one ptime of audio per tick, in as many packets as that needs, so the peer's ptime
//!   need not be ours. After a codec change packets of the old codec still in flight are
//!   decoded with it.
//! - Recording holds what was received: a lost packet inside a stream becomes a frame of
//!   silence (keeps the timing), but time when the far side sends nothing (hold, end of its
//!   file, a digit sent instead of audio) adds nothing. So a held call neither stalls the
//!   recording nor pads it with hours of silence, and a file played by a peer that then
//!   falls silent is recorded at its own length (silence a peer sends, as we do after a
//!   file, is recorded). [`MediaSession::stop`] plays what is still buffered and finalizes
//!   the WAV header.
//! - Directions are ours ([`Direction`] from sip-core): `SendOnly`/`Inactive` stop sending,
//!   `RecvOnly`/`Inactive` stop receiving and recording. [`MediaEvent::RtpTimeout`] (30 s by
//!   default) only fires while we expect to receive.
//! - RTCP: a compound SR or RR (RFC 3550 §6.4: SR when we sent since the previous report)
//!   with SDES CNAME every 5 s, the first after 2.5 s, and a BYE at `stop`. Received reports
//!   fill [`MediaStats::remote_report`] (loss, jitter, round-trip time from LSR/DLSR).
//! - Interop is tested against baresip (`tests/baresip.rs`): WAV files both ways recorded
//!   with correlation 0.9999, DTMF both ways.

pub mod audio;
pub mod codec;
pub mod dtmf;
pub mod g711;
pub mod jitter;
#[cfg(feature = "opus")]
pub mod opus_codec;
pub mod rtcp;
mod session;
pub mod stats;
pub mod stream;

pub use audio::{AudioSink, AudioSource};
pub use codec::{Codec, TELEPHONE_EVENT_PT, telephone_event_rtpmap};
pub use session::MediaSession;
pub use sip_core::sdp::Direction;
pub use stream::{MediaEvent, MediaStats, MediaStream, RemoteReport, StreamParams};

/// What can go wrong starting or running media.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// A socket or file operation failed.
    #[error("media I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A WAV file could not be read or written.
    #[error("WAV file: {0}")]
    Wav(#[from] hound::Error),
    /// The codec is known but this build cannot encode it (Opus without the `opus` feature).
    #[error("codec {0} is not available in this build")]
    CodecUnavailable(&'static str),
    /// The codec library refused to start.
    #[error("codec: {0}")]
    Codec(String),
    /// `start` was called twice.
    #[error("the media session is already started")]
    AlreadyStarted,
}

impl From<MediaError> for std::io::Error {
    /// For callers whose errors are `io::Error`: I/O errors come back as they were, the
    /// others wrapped.
    fn from(e: MediaError) -> std::io::Error {
        match e {
            MediaError::Io(e) => e,
            other => std::io::Error::other(other),
        }
    }
}
