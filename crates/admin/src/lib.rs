//! `admin`: Switchboard's HTTP admin API, the door through which the people who run the
//! server see and change it without reading logs.
//!
//! - REST in JSON under `/api/` (registrations, users), described by an OpenAPI document
//!   generated from the handlers (`GET /api/openapi.json`, utoipa); every error has one
//!   shape, [`ErrorBody`], naming the field at fault.
//! - `GET /metrics` in the Prometheus text format: the SIP side's counters and the
//!   process figures.
//! - Administrators log in with a name and password (`POST /api/login`, a session
//!   cookie) or send an API token (`Authorization: Bearer ...`); nothing but the login
//!   answers without one, and failed attempts are limited per address.
//!
//! The server ([`AdminServer`]) runs on a thread and tokio runtime of its own, so a slow
//! or hostile HTTP client never takes time from the SIP loop. It reaches the SIP side
//! only through the [`Operations`] trait, which `switchboard serve` implements over its
//! stores and its router; every call of it runs on the blocking pool of that runtime.
//! [`accounts`] makes the password hashes (argon2id) and API tokens the stores keep.

pub mod accounts;
mod api;
mod auth;
mod json;
mod metrics;
mod ops;
mod server;

pub use api::openapi_json;
pub use ops::{
    ErrorBody, ErrorDetail, ErrorKind, ForwardingView, NewUser, OpError, Operations, Registration,
    SipFigures, UserChange, UserView, registration_id,
};
pub use server::{AdminConfig, AdminServer, StartError};
