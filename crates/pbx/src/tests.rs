#![allow(clippy::unwrap_used)]
use super::*;
use jiff::Timestamp;

const PLAN: &str = r#"timezone = "UTC"

[classes]
default = "internal"
national = ["bob"]
international = ["alice"]

[[rule]]
name = "emergency"
exact = ["112", "911"]
action = "trunk"
trunk = "carrier1"

[[rule]]
name = "extensions"
pattern = "_2XX"
action = "extension"

[[rule]]
name = "reception by day"
exact = "0"
days = ["mon-fri"]
time = "08:00-18:00"
action = "ring_group"
group = "reception"

[[rule]]
name = "reception at night"
exact = "0"
action = "voicemail"
mailbox = "200"

[[rule]]
name = "international"
prefix = "00"
caller_class = ["international"]
strip = 2
prepend = "+"
caller_id_number = "+331555${extension}"
caller_id_name = "ACME ${user}"
action = "trunk"
trunks = ["carrier1", "carrier2"]

[[rule]]
name = "no international"
prefix = "00"
action = "reject"
code = 403
reason = "International calls not allowed"

[[rule]]
name = "national"
regex = "0[1-9][0-9]{8}"
caller_class = ["national", "international"]
action = "trunk"
trunk = "carrier1"

[[rule]]
name = "menu"
exact = "*500"
action = "ivr"
menu = "main"

[[rule]]
name = "names"
pattern = "_!"
action = "extension"

[ring_group.reception]
strategy = "sequential"
members = ["201", "alice", "203"]
ring_seconds = 15
fallback = { action = "voicemail", mailbox = "200" }
"#;

fn plan() -> Plan {
    Plan::parse(PLAN, "plan.toml").unwrap()
}

fn caller(name: &str, ext: Option<&str>) -> Caller {
    Caller {
        name: name.into(),
        extension: ext.map(str::to_owned),
    }
}

/// 2026-12-07 is a Monday.
fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

#[test]
fn first_matching_rule_decides() {
    let p = plan();
    let bob = caller("bob", Some("202"));
    let d = p.route("201", &bob, at("2026-12-07T10:00:00Z"));
    let rule = d.rule.clone().unwrap();
    assert_eq!(
        (rule.index, rule.name.as_str(), rule.line),
        (2, "extensions", 14)
    );
    assert_eq!(
        d.action,
        Action::Extension {
            target: "201".into()
        }
    );
    assert_eq!(d.caller_id.number, "202", "plain caller ID: the extension");
    assert_eq!(d.caller_id.name, "bob");
    let d = p.route("911", &bob, at("2026-12-07T10:00:00Z"));
    assert_eq!(d.rule.unwrap().name, "emergency");
    let d = p.route("alice", &bob, at("2026-12-07T10:00:00Z"));
    assert_eq!(
        d.action,
        Action::Extension {
            target: "alice".into()
        }
    );
}

#[test]
fn caller_class_rewriting_and_caller_id() {
    let p = plan();
    let alice = caller("alice", Some("201"));
    let d = p.route("0044207946", &alice, at("2026-12-07T10:00:00Z"));
    assert_eq!(d.caller_class, CallerClass::International);
    assert_eq!(d.number, "+44207946");
    assert_eq!(
        d.action,
        Action::Trunk {
            trunks: vec!["carrier1".into(), "carrier2".into()]
        }
    );
    assert_eq!(d.caller_id.number, "+331555201");
    assert_eq!(d.caller_id.name, "ACME alice");
    // Bob is national: the next rule refuses.
    let d = p.route(
        "0044207946",
        &caller("bob", None),
        at("2026-12-07T10:00:00Z"),
    );
    assert_eq!(d.rule.as_ref().unwrap().name, "no international");
    assert_eq!(
        d.action,
        Action::Reject {
            code: 403,
            reason: Some("International calls not allowed".into())
        }
    );
    // Carol has the default class, internal: no national calls either.
    let carol = caller("carol", None);
    assert_eq!(p.class_of("carol"), CallerClass::Internal);
    let d = p.route("0123456789", &carol, at("2026-12-07T10:00:00Z"));
    assert_eq!(
        d.rule.unwrap().name,
        "names",
        "falls through to the last rule"
    );
    let d = p.route(
        "0123456789",
        &caller("bob", None),
        at("2026-12-07T10:00:00Z"),
    );
    assert_eq!(d.rule.unwrap().name, "national");
}

#[test]
fn days_and_time_windows() {
    let p = plan();
    let bob = caller("bob", None);
    let name = |t: &str| p.route("0", &bob, at(t)).rule.unwrap().name;
    assert_eq!(name("2026-12-07T08:00:00Z"), "reception by day");
    assert_eq!(name("2026-12-07T17:59:59Z"), "reception by day");
    assert_eq!(name("2026-12-07T18:00:00Z"), "reception at night");
    assert_eq!(name("2026-12-07T07:59:00Z"), "reception at night");
    assert_eq!(
        name("2026-12-05T10:00:00Z"),
        "reception at night",
        "a Saturday"
    );
    let d = p.route("0", &bob, at("2026-12-05T10:00:00Z"));
    assert_eq!(
        d.action,
        Action::Voicemail {
            mailbox: "200".into()
        }
    );
    // A window over midnight, in a time zone.
    let night = Plan::parse(
        "timezone = \"Europe/Paris\"\n[[rule]]\nexact = \"1\"\ntime = \"22:00-06:00\"\naction = \"extension\"\nextension = \"night\"\n",
        "n.toml",
    )
    .unwrap();
    let hit = |t: &str| night.route("1", &bob, at(t)).rule.is_some();
    assert!(hit("2026-12-07T21:30:00Z"), "22:30 in Paris");
    assert!(hit("2026-12-07T04:59:00Z"), "05:59 in Paris");
    assert!(!hit("2026-12-07T05:00:00Z"), "06:00 in Paris");
    assert!(!hit("2026-12-07T20:59:00Z"), "21:59 in Paris");
}

#[test]
fn no_rule_is_a_404() {
    let p = Plan::parse(
        "[[rule]]\nexact = \"1\"\naction = \"extension\"\n",
        "p.toml",
    )
    .unwrap();
    let d = p.route("2", &caller("bob", None), Timestamp::UNIX_EPOCH);
    assert!(d.rule.is_none());
    assert!(matches!(d.action, Action::Reject { code: 404, .. }));
}

#[test]
fn builtin_plan_routes_numbers_and_names() {
    let p = Plan::builtin();
    for n in ["201", "alice"] {
        let d = p.route(n, &caller("bob", None), Timestamp::UNIX_EPOCH);
        assert_eq!(d.action, Action::Extension { target: n.into() });
    }
}

#[test]
fn every_error_names_file_line_and_key() {
    let text = r#"timezone = "Mars/Olympus"
colour = "blue"

[classes]
default = "vip"

[[rule]]
name = "bad pattern"
pattern = "_0.1"
action = "extension"

[[rule]]
prefix = "00"
action = "trunk"

[[rule]]
name = "two patterns"
exact = "1"
regex = "2"
action = "reject"
code = 200
group = "sales"

[[rule]]
exact = "3"
time = "25:00-26:00"
days = ["mon-fry"]
caller_class = "vip"
action = "dance"
"#;
    let errors = Plan::parse(text, "bad.toml").unwrap_err();
    let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    let expected = [
        "bad.toml:1: timezone: unknown time zone \"Mars/Olympus\"",
        "bad.toml:2: colour: unknown key",
        "bad.toml:5: classes.default: \"vip\" is not a class",
        "bad.toml:9: rule 1 \"bad pattern\": pattern: \"_0.1\": '.' and '!' may only end",
        "bad.toml:14: rule 2: trunk: action = \"trunk\" needs trunk = \"NAME\"",
        "bad.toml:19: rule 3 \"two patterns\": regex: a rule has one pattern",
        "bad.toml:21: rule 3 \"two patterns\": code: 200 is out of range",
        "bad.toml:22: rule 3 \"two patterns\": group: group goes with action = \"ring_group\"",
        "bad.toml:26: rule 4: time: \"25:00-26:00\": out of range",
        "bad.toml:27: rule 4: days: \"mon-fry\" is not a day",
        "bad.toml:28: rule 4: caller_class: \"vip\" is not a class",
        "bad.toml:29: rule 4: action: \"dance\" is not an action",
    ];
    for want in expected {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "missing {want:?} in:\n{errors}"
        );
    }
    assert_eq!(lines.len(), expected.len(), "{errors}");
}

#[test]
fn syntax_errors_have_lines_and_an_empty_plan_is_refused() {
    let e = Plan::parse("[[rule]]\nexact = \n", "s.toml").unwrap_err();
    assert!(
        e.0[0].to_string().starts_with("s.toml:2: TOML syntax"),
        "{e}"
    );
    let e = Plan::parse("timezone = \"UTC\"\n", "e.toml").unwrap_err();
    assert!(e.to_string().contains("no [[rule]]"), "{e}");
    let e = Plan::load(std::path::Path::new("/nonexistent/plan.toml")).unwrap_err();
    assert!(e.to_string().contains("cannot read the dial plan"), "{e}");
}

#[test]
fn ring_groups_are_read_with_their_fallbacks() {
    let p = plan();
    let g = p.ring_group("reception").unwrap();
    assert_eq!(g.strategy, Strategy::Sequential);
    assert_eq!(g.members, ["201", "alice", "203"]);
    assert_eq!((g.ring_seconds, g.line), (15, 69));
    assert_eq!(
        g.fallback,
        Some(Action::Voicemail {
            mailbox: "200".into()
        })
    );
    assert_eq!(
        g.describe(),
        "sequential: 201, alice, 203 (15 s each), then voicemail of 200"
    );
    let p = Plan::parse(
        r#"
[[rule]]
exact = "0"
action = "ring_group"
group = "sales"

[ring_group.sales]
members = ["201", "202"]
fallback = { action = "ring_group", group = "overflow" }

[ring_group.overflow]
strategy = "round_robin"
members = ["bob"]

[ring_group.overflow.fallback]
action = "reject"
code = 486
reason = "Everybody is busy"
"#,
        "g.toml",
    )
    .unwrap();
    let sales = p.ring_group("sales").unwrap();
    assert_eq!(
        (sales.strategy, sales.ring_seconds),
        (Strategy::Simultaneous, RingGroup::DEFAULT_RING_SECONDS)
    );
    assert_eq!(
        sales.describe(),
        "simultaneous: 201, 202 (20 s), then ring group overflow"
    );
    let overflow = p.ring_group("overflow").unwrap();
    assert_eq!(overflow.strategy, Strategy::RoundRobin);
    assert_eq!(
        overflow.fallback,
        Some(Action::Reject {
            code: 486,
            reason: Some("Everybody is busy".into())
        })
    );
    let names: Vec<&str> = p.ring_groups().iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["sales", "overflow"]);
    let d = p.route("0", &caller("bob", None), Timestamp::UNIX_EPOCH);
    assert_eq!(
        d.action,
        Action::RingGroup {
            group: "sales".into()
        }
    );
}

#[test]
fn ring_group_faults_name_file_line_and_key() {
    let text = r#"[[rule]]
exact = "0"
action = "ring_group"
group = "sales"

[ring_group.a]
strategy = "random"
members = ["201", "201", "x y"]
ring_seconds = 0
colour = "red"

[ring_group.b]
members = []
fallback = { action = "trunk", trunk = "carrier1" }

[ring_group.c]
members = ["201"]
fallback = { action = "ring_group", group = "d" }

[ring_group.d]
members = ["202"]
fallback = { action = "ring_group", group = "c" }

[ring_group.e]
fallback = { action = "voicemail" }

[ring_group.f]
members = ["203"]
fallback = { action = "ring_group", group = "nope" }
"#;
    let errors = Plan::parse(text, "g.toml").unwrap_err();
    let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    let expected = [
        "g.toml:4: rule 1: group: no [ring_group.sales] in the plan (the plan's groups are a, b, c, d, e, f)",
        "g.toml:7: ring_group.a.strategy: \"random\" is not a strategy: one of simultaneous, sequential, round_robin",
        "g.toml:8: ring_group.a.members: 201 is listed twice",
        "g.toml:8: ring_group.a.members: \"x y\" is not an extension or user name",
        "g.toml:9: ring_group.a.ring_seconds: 0 is out of range: expected 1 to 600",
        "g.toml:10: ring_group.a.colour: unknown key",
        "g.toml:13: ring_group.b.members: the list is empty",
        "g.toml:14: ring_group.b.fallback.action: a fallback cannot be a trunk",
        "g.toml:18: ring_group.c.fallback.group: the fallbacks go round in a loop: c -> d -> c",
        "g.toml:24: ring_group.e.members: a ring group needs members",
        "g.toml:25: ring_group.e.fallback.mailbox: a fallback names its target: mailbox = \"200\"",
        "g.toml:29: ring_group.f.fallback.group: no [ring_group.nope] in the plan",
    ];
    for want in expected {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "missing {want:?} in:\n{errors}"
        );
    }
    assert_eq!(lines.len(), expected.len(), "{errors}");
    // A rule naming a group when the plan has none.
    let e = Plan::parse(
        "[[rule]]\nexact = \"0\"\naction = \"ring_group\"\ngroup = \"sales\"\n",
        "n.toml",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "n.toml:4: rule 1: group: no [ring_group.sales] in the plan (the plan has no ring groups)"
    );
}
