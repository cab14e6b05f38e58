//! `sip-core`: the sans-IO heart of Switchboard.
//!
//! This crate reads and writes SIP messages (RFC 3261) and SDP (RFC 8866) and holds the
//! protocol state machines. It has no sockets, no clock and no threads: callers hand it
//! bytes and an explicit `now`, and it tells them what to send and when to wake it.

pub mod auth;
pub mod builder;
pub mod dialog;
pub mod error;
pub mod forward;
pub mod framing;
pub mod headers;
pub mod ids;
pub mod message;
pub mod method;
pub mod name;
pub mod params;
pub mod scan;
pub mod sdp;
pub mod transaction;
pub mod transport;
pub mod uri;
pub mod via;

pub use builder::{MessageBuilder, response_to};
pub use error::ParseError;
pub use framing::{Frame, FramingError, StreamFramer};
pub use message::{HeaderField, Limits, Message};
pub use method::Method;
pub use name::HeaderName;
pub use transport::{ConnectionId, Flow, Transport};
pub use uri::{Host, SipUri, Uri};
pub use via::{response_target, stamp_via};
