//! Stand-in for `crates/media` until it lands: the same API, reserving an RTP port so
//! that SDP offers and answers are real, but sending and receiving nothing.
#![allow(dead_code)]

use sip_core::sdp::Direction;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Pcmu,
    Pcma,
    Opus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamParams {
    pub remote: SocketAddr,
    pub codec: Codec,
    pub payload_type: u8,
    pub telephone_event_pt: Option<u8>,
    pub direction: Direction,
    pub ptime_ms: u32,
}

pub enum AudioSource {
    Wav(PathBuf),
    Silence,
    Tone { hz: f32 },
}

pub struct AudioSink(PathBuf);

impl AudioSink {
    pub fn wav(path: impl Into<PathBuf>) -> std::io::Result<AudioSink> {
        Ok(AudioSink(path.into()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    Dtmf(char),
    RemoteAddressLatched(SocketAddr),
    SourceFinished,
    RtpTimeout,
}

#[derive(Debug, Default, Clone)]
pub struct MediaStats {
    pub packets_sent: u64,
    pub packets_received: u64,
    pub packets_lost: u64,
}

pub struct MediaSession {
    socket: UdpSocket,
    events_tx: mpsc::UnboundedSender<MediaEvent>,
    events_rx: Option<mpsc::UnboundedReceiver<MediaEvent>>,
}

impl MediaSession {
    pub async fn bind(ip: IpAddr) -> std::io::Result<MediaSession> {
        let socket = UdpSocket::bind((ip, 0)).await?;
        let (events_tx, rx) = mpsc::unbounded_channel();
        Ok(MediaSession {
            socket,
            events_tx,
            events_rx: Some(rx),
        })
    }

    pub fn local_rtp_port(&self) -> u16 {
        self.socket.local_addr().map_or(0, |a| a.port())
    }

    pub fn start(
        &mut self,
        _params: StreamParams,
        _source: Option<AudioSource>,
        _sink: Option<AudioSink>,
    ) -> Result<(), std::io::Error> {
        Ok(())
    }

    pub fn update(&mut self, _params: StreamParams) {}

    pub fn send_dtmf(&mut self, _digits: &str) {}

    pub fn events(&mut self) -> mpsc::UnboundedReceiver<MediaEvent> {
        self.events_rx.take().unwrap_or_else(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            self.events_tx = tx;
            rx
        })
    }

    pub async fn stop(self) -> MediaStats {
        MediaStats::default()
    }
}

impl Codec {
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::Opus => 111,
        }
    }
}
