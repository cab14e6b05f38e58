//! `sip-net`: the tokio I/O layer of Switchboard, between the network and the sans-IO
//! `sip-core`.
//!
//! An [`Endpoint`] listens on UDP, TCP, TLS, WebSocket and secure WebSocket addresses
//! ([`ListenSpec`], e.g. `udp:0.0.0.0:5060`), and delivers every message it receives to
//! the service above as an [`Incoming`] on a bounded channel: parsed with
//! `sip_core::Message::parse`, or as raw bytes with the parse error so that the service
//! can answer 400 naming the fault. [`Endpoint::send`] takes a [`Target`]: a
//! [`sip_core::Flow`] (the way a response goes back, see [`response_target`]), an
//! address, or a SIP URI located by RFC 3263 ([`dns::SipResolver`]) with failover.
//!
//! What the layer does for the service, so that the service does not have to:
//! - stream transports are cut into messages by `sip_core::StreamFramer`, CRLFCRLF
//!   keep-alives are answered (RFC 5626 §3.5.1), idle connections close;
//! - connections are reused by transport and remote address, and opened on demand;
//! - every request's top Via gets `received`/`rport` (RFC 3261 §18.2.1, RFC 3581) before
//!   delivery ([`stamp_via`]);
//! - a request over 1300 bytes bound for UDP goes over TCP (RFC 3261 §18.1.1);
//! - every message in and out passes one [`TraceSink`];
//! - everything is bounded by [`Limits`], and what is refused is counted in
//!   [`Counters`] and logged with `tracing::warn!`. Nothing here prints.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use sip_net::{Endpoint, EndpointConfig, Incoming, response_target};
//! let config = EndpointConfig::new(["udp:127.0.0.1:5060".parse()?, "tcp:127.0.0.1:5060".parse()?]);
//! let (endpoint, mut incoming) = Endpoint::bind(config).await?;
//! while let Some(event) = incoming.recv().await {
//!     if let Incoming::Message { msg, flow, .. } = event {
//!         if msg.is_request() {
//!             let ok = sip_core::response_to(&msg, 200, Some("tag1")).into_bytes()?;
//!             endpoint.send(response_target(&flow, &msg), ok).await?;
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod dns;
pub mod driver;
mod endpoint;
mod limits;
mod spec;
pub mod tls;
mod trace;
mod udp_batch;

pub use dns::{ResolvedTarget, SipResolver};
pub use driver::{Driver, Ended, Machine, Now, Transmit};
pub use endpoint::{
    BindError, Dispatch, Endpoint, EndpointConfig, HandshakeFailure, Incoming, SendError, Target,
    UDP_MTU_LIMIT,
};
pub use limits::{CounterSnapshot, Counters, Limits};
pub use spec::{ListenSpec, ListenSpecError};
pub use trace::{BroadcastSink, Direction, LogSink, Tee, TraceEvent, TraceSink};
// The Via rules are sip-core's (pure); re-exported for the users of the endpoint.
pub use sip_core::via::{response_target, stamp_via};
