//! The trace tap: every message in and out passes one [`TraceSink`], so that logging,
//! a web page of ladder diagrams and HEP export can all hang off the same place.

use bytes::Bytes;
use sip_core::Transport;
use std::net::SocketAddr;
use std::time::SystemTime;

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received from the network.
    In,
    /// Sent to the network.
    Out,
}

/// One message crossing the wire.
#[derive(Debug, Clone)]
pub struct TraceEvent {
    /// Wall-clock time, because HEP and ladder pages show dates.
    pub time: SystemTime,
    /// In or out.
    pub direction: Direction,
    /// The transport.
    pub transport: Transport,
    /// Our address, when known (a wildcard listen address stays a wildcard).
    pub local: Option<SocketAddr>,
    /// The peer's address.
    pub remote: SocketAddr,
    /// The message exactly as on the wire (cheap to clone: reference counted).
    pub bytes: Bytes,
}

/// Receives every [`TraceEvent`]. Called inline on the I/O path, so an implementation
/// must be quick and must not block: hand the event to a channel if there is work to do.
pub trait TraceSink: Send + Sync + 'static {
    /// Records one event.
    fn record(&self, event: &TraceEvent);
}

/// The default sink: one `tracing` event per message at debug level, under the
/// `sip_net::trace` target so it can be enabled alone.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogSink;

impl TraceSink for LogSink {
    fn record(&self, e: &TraceEvent) {
        if tracing::enabled!(target: "sip_net::trace", tracing::Level::DEBUG) {
            let arrow = match e.direction {
                Direction::In => "<-",
                Direction::Out => "->",
            };
            tracing::debug!(
                target: "sip_net::trace",
                transport = %e.transport,
                local = ?e.local,
                remote = %e.remote,
                "{arrow} {} bytes\n{}",
                e.bytes.len(),
                String::from_utf8_lossy(&e.bytes)
            );
        }
    }
}

/// A sink that publishes events on a tokio broadcast channel, for any number of
/// subscribers (a web page, a HEP exporter). Slow subscribers lose the oldest events
/// rather than slowing the network down.
#[derive(Debug, Clone)]
pub struct BroadcastSink {
    tx: tokio::sync::broadcast::Sender<TraceEvent>,
}

impl BroadcastSink {
    /// A sink keeping up to `capacity` events per subscriber.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = tokio::sync::broadcast::channel(capacity.max(1));
        BroadcastSink { tx }
    }
    /// A new subscriber, seeing events from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<TraceEvent> {
        self.tx.subscribe()
    }
}

impl TraceSink for BroadcastSink {
    fn record(&self, event: &TraceEvent) {
        // An error only means nobody is subscribed at the moment.
        let _ = self.tx.send(event.clone());
    }
}

/// Sends each event to several sinks in turn (logging and a broadcast, say).
pub struct Tee(pub Vec<std::sync::Arc<dyn TraceSink>>);

impl TraceSink for Tee {
    fn record(&self, event: &TraceEvent) {
        for sink in &self.0 {
            sink.record(event);
        }
    }
}
