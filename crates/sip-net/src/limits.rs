//! Limits on what the network may make us hold, and the counters that record what was
//! refused. Everything over a limit is dropped with a warning and a count, never a panic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bounds on memory and connections. The defaults suit a server of a few thousand
/// registered phones; raise them for a larger one.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest SIP message accepted or sent, in bytes (datagram, framed message or
    /// WebSocket message). Larger ones are dropped and counted as `oversize`.
    pub max_message: usize,
    /// Most open connections (TCP, TLS, WS, WSS together, in and out).
    pub max_connections: usize,
    /// Most inbound connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Messages waiting to be written on one connection; more are dropped.
    pub connection_queue: usize,
    /// Capacity of the channel that delivers [`crate::Incoming`] to the service.
    pub incoming_queue: usize,
    /// A connection with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
    /// How long opening an outbound connection (TCP connect plus TLS or WebSocket
    /// handshake) may take before the next target is tried.
    pub connect_timeout: Duration,
    /// How long an inbound TLS or WebSocket handshake may take.
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: 65_535,
            max_connections: 10_000,
            max_connections_per_ip: 100,
            connection_queue: 256,
            incoming_queue: 4096,
            // RFC 5626 keep-alives come every 2 minutes or so; outlive a few of them.
            idle_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Event counters, updated by the endpoint and readable by anyone
        /// (`Endpoint::counters`). Read them with [`Counters::snapshot`].
        #[derive(Debug, Default)]
        pub struct Counters {
            $($name: AtomicU64,)*
        }

        /// A copy of [`Counters`] at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct CounterSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Counters {
            /// The current values.
            pub fn snapshot(&self) -> CounterSnapshot {
                CounterSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
            $(
                $(#[$doc])*
                pub fn $name(&self) -> u64 {
                    self.$name.load(Ordering::Relaxed)
                }
            )*
        }
    };
}

counters! {
    /// Messages received and parsed (all transports).
    messages_received,
    /// Messages handed to a socket or connection queue.
    messages_sent,
    /// Messages received that did not parse (delivered as `Incoming::Invalid`).
    parse_errors,
    /// Messages dropped for exceeding `max_message`, in or out.
    oversize,
    /// Messages dropped because the incoming channel to the service was full.
    incoming_dropped,
    /// Messages dropped because a connection's write queue was full.
    queue_full,
    /// Connections refused because `max_connections` was reached.
    connections_over_limit,
    /// Connections refused because `max_connections_per_ip` was reached.
    connections_per_ip_over_limit,
    /// Connections accepted from peers.
    connections_accepted,
    /// Connections we opened.
    connections_opened,
    /// Connections closed, for any reason.
    connections_closed,
    /// Connections closed by an idle timeout.
    idle_closed,
    /// Streams closed because they could not be framed (bad Content-Length...).
    framing_errors,
    /// TLS or WebSocket handshakes that failed.
    handshake_failures,
    /// CRLFCRLF keep-alive pings answered.
    pings_answered,
    /// Sends that failed (socket error, connect refused or timed out).
    send_errors,
}

impl Counters {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn received(&self) {
        Self::inc(&self.messages_received)
    }
    pub(crate) fn sent(&self) {
        Self::inc(&self.messages_sent)
    }
    pub(crate) fn parse_error(&self) {
        Self::inc(&self.parse_errors)
    }
    pub(crate) fn oversize_msg(&self) {
        Self::inc(&self.oversize)
    }
    pub(crate) fn incoming_drop(&self) {
        Self::inc(&self.incoming_dropped)
    }
    pub(crate) fn queue_full_drop(&self) {
        Self::inc(&self.queue_full)
    }
    pub(crate) fn over_total(&self) {
        Self::inc(&self.connections_over_limit)
    }
    pub(crate) fn over_per_ip(&self) {
        Self::inc(&self.connections_per_ip_over_limit)
    }
    pub(crate) fn accepted(&self) {
        Self::inc(&self.connections_accepted)
    }
    pub(crate) fn opened(&self) {
        Self::inc(&self.connections_opened)
    }
    pub(crate) fn closed(&self) {
        Self::inc(&self.connections_closed)
    }
    pub(crate) fn idle(&self) {
        Self::inc(&self.idle_closed)
    }
    pub(crate) fn framing_error(&self) {
        Self::inc(&self.framing_errors)
    }
    pub(crate) fn handshake_failure(&self) {
        Self::inc(&self.handshake_failures)
    }
    pub(crate) fn ping(&self) {
        Self::inc(&self.pings_answered)
    }
    pub(crate) fn send_error(&self) {
        Self::inc(&self.send_errors)
    }
}
