//! `sip-core`: the sans-IO heart of Switchboard.
//!
//! This crate reads and writes SIP messages (RFC 3261) and SDP (RFC 8866) and holds the
//! protocol state machines. It has no sockets, no clock and no threads: callers hand it
//! bytes and an explicit `now`, and it tells them what to send and when to wake it.

pub mod auth;
