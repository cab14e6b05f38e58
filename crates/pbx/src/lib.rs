//! `pbx`: the PBX's decisions, sans-IO. The dial plan: what to do with a call to a
//! dialled number from a caller at a time ([`Plan::route`], a pure function), read from
//! a TOML file whose faults are all reported with file, line and key ([`Plan::load`]),
//! with its ring groups ([`RingGroup`]). And [`hunt`]: the engine a B2BUA runs per call
//! to ring a user (following their forwarding) or a group (its strategy, then its
//! fallback), one command at a time; and [`b2bua`], the call machine of one call through
//! the B2BUA (caller leg, the legs the hunt rings, offers relayed both ways), which the
//! server carries out on `sip-ua`'s signalling-only legs.
//!
//! A plan is a list of `[[rule]]`s tried in order; the first that applies decides:
//!
//! ```
//! use pbx::{Action, Caller, Plan};
//! let plan = Plan::parse(r#"
//! timezone = "UTC"
//! [classes]
//! default = "national"
//! international = ["alice"]
//!
//! [[rule]]
//! name = "extensions"
//! pattern = "_2XX"
//! action = "extension"
//!
//! [[rule]]
//! name = "international"
//! prefix = "00"
//! caller_class = ["international"]
//! strip = 2
//! prepend = "+"
//! action = "trunk"
//! trunks = ["carrier1", "carrier2"]
//! "#, "plan.toml").unwrap();
//! let alice = Caller { name: "alice".into(), extension: Some("201".into()) };
//! let d = plan.route("0044207", &alice, jiff::Timestamp::UNIX_EPOCH);
//! assert_eq!(d.number, "+44207");
//! assert_eq!(d.action, Action::Trunk { trunks: vec!["carrier1".into(), "carrier2".into()] });
//! ```

pub mod b2bua;
pub mod hunt;
mod load;
mod pattern;
mod plan;

pub use load::{PlanError, PlanErrors};
pub use pattern::{AsteriskPattern, NumberPattern};
pub use plan::{
    Action, Caller, CallerClass, CallerId, Decision, MatchedRule, Plan, RingGroup, Strategy,
};

#[cfg(test)]
mod hunt_tests;
#[cfg(test)]
mod tests;
