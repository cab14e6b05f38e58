//! `sip-core`: the sans-IO heart of Switchboard.
//!
//! This crate reads and writes SIP messages (RFC 3261) and SDP (RFC 8866) and holds the
//! protocol state machines. It has no sockets, no clock and no threads: callers hand it
//! bytes and an explicit `now`, and it tells them what to send and when to wake it.
//!
//! What is in it: the message model and parser ([`Message`], [`headers`], [`uri`]) and
//! the builder ([`MessageBuilder`], [`response_to`]); stream framing ([`StreamFramer`]);
//! Via stamping and the response target of RFC 3261 §18.2.2 ([`via`]); the transaction
//! layer ([`transaction`]) and dialogs ([`dialog`]); digest authentication ([`auth`]);
//! SDP and offer/answer ([`sdp`]).
//!
//! Parsing a request and answering it:
//!
//! ```
//! use sip_core::{HeaderName, Message, Method, response_to};
//!
//! let register = Message::parse(bytes::Bytes::from_static(
//!     b"REGISTER sip:example.test SIP/2.0\r\n\
//!       Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK776asdhds\r\n\
//!       Max-Forwards: 70\r\n\
//!       To: <sip:alice@example.test>\r\n\
//!       From: <sip:alice@example.test>;tag=456248\r\n\
//!       Call-ID: 843817637684230@998sdasdh09\r\n\
//!       CSeq: 1826 REGISTER\r\n\
//!       Contact: <sip:alice@192.0.2.7:5060>\r\n\
//!       Content-Length: 0\r\n\r\n",
//! ))
//! .unwrap();
//! assert_eq!(register.method(), Some(&Method::Register));
//! assert_eq!(register.call_id().unwrap(), "843817637684230@998sdasdh09");
//!
//! // A response copies Via, From, To (with our tag), Call-ID and CSeq from the request.
//! let ok = response_to(&register, 200, Some("reg1")).build().unwrap();
//! assert_eq!(ok.status(), Some(200));
//! assert_eq!(ok.get(HeaderName::CallId), register.get(HeaderName::CallId));
//! ```

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
