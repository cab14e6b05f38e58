//! What the PBX's hunt engine (`pbx::hunt`) asks of Switchboard, answered from its
//! parts: users and their call forwarding from the user store (the server's
//! `CachedUsers`, so every answer comes from memory), ring groups and forward numbers
//! from the dial plan in force, and the round-robin rotation the B2BUA keeps. The B2BUA
//! builds one per input it hands a `Hunt`; `switchboard route` uses it to say who a
//! call reaches and how they forward.

use pbx::hunt::{Directory, HuntUser, Rotation};
use pbx::{Caller, Decision, Plan, RingGroup};
use store::UserStore;

/// A [`Directory`] over a plan, a user store and a rotation, at one time of day (the
/// plan's time windows apply to forward numbers as to dialled ones).
pub struct PbxDirectory<'a, U: UserStore + ?Sized> {
    /// The dial plan in force.
    pub plan: &'a Plan,
    /// The users.
    pub users: &'a U,
    /// The round-robin state; `None`: every round starts at the first member.
    pub rotation: Option<&'a Rotation>,
    /// Now, for the plan's time windows.
    pub now: jiff::Timestamp,
}

/// The stored forwarding as the engine takes it.
pub fn hunt_forwarding(f: &store::Forwarding) -> pbx::hunt::Forwarding {
    pbx::hunt::Forwarding {
        always: f.always.clone(),
        busy: f.busy.clone(),
        no_answer: f.no_answer.clone(),
        no_answer_secs: f.no_answer_secs,
        unreachable: f.unreachable.clone(),
    }
}

impl<U: UserStore + ?Sized> Directory for PbxDirectory<'_, U> {
    /// By extension, then by name. A store that fails to answer (a damaged file) is
    /// taken as no such user: the call fails as it would for one, rather than hang.
    fn user(&self, extension_or_name: &str) -> Option<HuntUser> {
        let user = self
            .users
            .by_extension(extension_or_name)
            .ok()
            .flatten()
            .or_else(|| self.users.get(extension_or_name).ok().flatten())?;
        Some(HuntUser {
            forwarding: hunt_forwarding(&user.forwarding),
            name: user.name,
        })
    }

    fn group(&self, name: &str) -> Option<RingGroup> {
        self.plan.ring_group(name).cloned()
    }

    fn route(&self, number: &str, dialled_by: &str) -> Decision {
        let extension = self
            .users
            .get(dialled_by)
            .ok()
            .flatten()
            .and_then(|u| u.extension);
        let caller = Caller {
            name: dialled_by.to_owned(),
            extension,
        };
        self.plan.route(number, &caller, self.now)
    }

    fn last_answered(&self, group: &str) -> Option<String> {
        self.rotation?.last_answered(group).map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pbx::hunt::{Command, ForwardKind, GroupAnswer, Hunt, LegOutcome, Ring, Why};
    use std::time::{Duration, Instant};
    use store::{Forwarding, MemoryUserStore, User};

    /// The engine over the real plan and user store: alice (201) forwards to a number
    /// the plan sends out through a trunk when she does not answer; the group rotates.
    #[test]
    fn the_engine_runs_on_the_plan_and_the_users() {
        let plan = Plan::parse(
            r#"
[[rule]]
prefix = "9"
strip = 1
action = "trunk"
trunk = "carrier1"

[[rule]]
exact = "0"
action = "ring_group"
group = "desk"

[[rule]]
pattern = "_!"
action = "extension"

[ring_group.desk]
strategy = "round_robin"
members = ["201", "bob"]
"#,
            "p.toml",
        )
        .unwrap();
        let mut users = MemoryUserStore::default();
        let mut alice = User::new("alice", "r", "pw", 1).unwrap();
        alice.extension = Some("201".into());
        alice.forwarding = Forwarding {
            no_answer: Some("90612".into()),
            no_answer_secs: 5,
            ..Forwarding::default()
        };
        users.add(&alice).unwrap();
        users.add(&User::new("bob", "r", "pw", 1).unwrap()).unwrap();
        let mut rotation = Rotation::default();
        rotation.record(&GroupAnswer {
            group: "desk".into(),
            member: "201".into(),
        });
        let dir = PbxDirectory {
            plan: &plan,
            users: &users,
            rotation: Some(&rotation),
            now: jiff::Timestamp::UNIX_EPOCH,
        };
        let caller = Caller {
            name: "bob".into(),
            extension: None,
        };
        let t = Instant::now();
        let mut hunt = Hunt::new(plan.route("201", &caller, dir.now), t, &dir);
        assert!(matches!(
            hunt.poll_command(),
            Some(Command::Ring { to: Ring::User { name }, .. }) if name == "alice"
        ));
        hunt.handle_timeout(t + Duration::from_secs(5), &dir);
        assert!(matches!(hunt.poll_command(), Some(Command::Cancel { .. })));
        let Some(Command::Ring {
            leg,
            to: Ring::Number { number, trunks, .. },
            why,
        }) = hunt.poll_command()
        else {
            panic!()
        };
        assert_eq!((number.as_str(), trunks[0].as_str()), ("0612", "carrier1"));
        assert_eq!(
            why,
            Why::Forwarded {
                by: "alice".into(),
                kind: ForwardKind::NoAnswer
            }
        );
        hunt.on_leg(t, leg, LegOutcome::Answered, &dir);
        assert!(matches!(hunt.poll_command(), Some(Command::Connect { .. })));
        // The group starts after 201, who answered last: with bob.
        let mut hunt = Hunt::new(plan.route("0", &caller, dir.now), t, &dir);
        assert!(matches!(
            hunt.poll_command(),
            Some(Command::Ring { to: Ring::User { name }, .. }) if name == "bob"
        ));
    }
}
