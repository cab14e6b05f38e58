//! The dial plan as the PBX runs it: ordered rules, each a pattern on the dialled number,
//! conditions on the caller, number rewriting, caller ID and an action; and
//! [`Plan::route`], the pure function that picks the first rule that applies.

use crate::pattern::NumberPattern;
use jiff::Timestamp;
use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use serde::Serialize;
use std::fmt;

/// How far a caller may dial: a label the plan's rules test with `caller_class`. The
/// classes are ordered from the most to the least restricted, and each is meant to
/// allow what the one before it does, and more:
///
/// - `emergency`: emergency numbers only (a lobby or lift phone);
/// - `internal`: extensions and names on this PBX, and emergency numbers;
/// - `national`: also numbers in the home country through a trunk;
/// - `international`: also numbers abroad.
///
/// The plan enforces them through its rules: a rule for international numbers with
/// `caller_class = ["international"]`, followed by one that rejects the same numbers
/// for everybody else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallerClass {
    /// Emergency numbers only.
    Emergency,
    /// This PBX and emergency numbers.
    Internal,
    /// Also national numbers.
    National,
    /// Everything.
    International,
}

impl CallerClass {
    /// Every class, most restricted first.
    pub const ALL: [CallerClass; 4] = [
        CallerClass::Emergency,
        CallerClass::Internal,
        CallerClass::National,
        CallerClass::International,
    ];

    /// The name used in the plan file.
    pub fn name(self) -> &'static str {
        match self {
            CallerClass::Emergency => "emergency",
            CallerClass::Internal => "internal",
            CallerClass::National => "national",
            CallerClass::International => "international",
        }
    }

    /// The class with this name.
    pub fn from_name(name: &str) -> Option<CallerClass> {
        CallerClass::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for CallerClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who is calling, as the PBX knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user name (the From user of an authenticated request).
    pub name: String,
    /// The user's extension number, if they have one.
    pub extension: Option<String>,
}

/// What to do with a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Ring a local user: `target` is an extension number or a user name (the number
    /// after rewriting, unless the rule named one).
    Extension {
        /// The extension or user name.
        target: String,
    },
    /// Ring the group with this name.
    RingGroup {
        /// The group.
        group: String,
    },
    /// Out through these trunks, tried in order.
    Trunk {
        /// The trunks' names, first choice first.
        trunks: Vec<String>,
    },
    /// The voicemail box of this extension or user.
    Voicemail {
        /// The mailbox.
        mailbox: String,
    },
    /// The IVR menu with this name.
    Ivr {
        /// The menu.
        menu: String,
    },
    /// Refuse the call with this SIP status.
    Reject {
        /// 400 to 699.
        code: u16,
        /// The reason phrase, when the plan gave one.
        reason: Option<String>,
    },
}

impl Action {
    /// Whether serving it needs the B2BUA (ring groups, trunks, voicemail, IVR): a
    /// proxy alone can only ring extensions and reject.
    pub fn needs_b2bua(&self) -> bool {
        !matches!(self, Action::Extension { .. } | Action::Reject { .. })
    }

    /// One line for people: `extension 201`, `trunk carrier1, then carrier2`.
    pub fn describe(&self) -> String {
        match self {
            Action::Extension { target } => format!("extension {target}"),
            Action::RingGroup { group } => format!("ring group {group}"),
            Action::Trunk { trunks } => format!("trunk {}", trunks.join(", then ")),
            Action::Voicemail { mailbox } => format!("voicemail of {mailbox}"),
            Action::Ivr { menu } => format!("IVR {menu}"),
            Action::Reject { code, reason } => match reason {
                Some(r) => format!("reject {code} {r}"),
                None => format!("reject {code}"),
            },
        }
    }
}

/// The action as a rule writes it: the target may be the number being routed.
#[derive(Debug, Clone)]
pub(crate) enum ActionTemplate {
    Extension(Option<String>),
    RingGroup(String),
    Trunk(Vec<String>),
    Voicemail(Option<String>),
    Ivr(String),
    Reject(u16, Option<String>),
}

impl ActionTemplate {
    fn for_number(&self, number: &str) -> Action {
        match self {
            ActionTemplate::Extension(t) => Action::Extension {
                target: t.clone().unwrap_or_else(|| number.to_owned()),
            },
            ActionTemplate::RingGroup(g) => Action::RingGroup { group: g.clone() },
            ActionTemplate::Trunk(t) => Action::Trunk { trunks: t.clone() },
            ActionTemplate::Voicemail(m) => Action::Voicemail {
                mailbox: m.clone().unwrap_or_else(|| number.to_owned()),
            },
            ActionTemplate::Ivr(m) => Action::Ivr { menu: m.clone() },
            ActionTemplate::Reject(code, reason) => Action::Reject {
                code: *code,
                reason: reason.clone(),
            },
        }
    }
}

/// A window of the day, in minutes since midnight in the plan's time zone: from `start`
/// (included) to `end` (excluded); one that ends before it starts runs past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeWindow {
    pub start: u16,
    pub end: u16,
}

impl TimeWindow {
    fn contains(&self, minute: u16) -> bool {
        if self.start <= self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

/// The caller ID a rule sets: templates where `${user}` is the caller's name and
/// `${extension}` their extension (their name when they have none).
#[derive(Debug, Clone, Default)]
pub(crate) struct CallerIdRule {
    pub number: Option<String>,
    pub name: Option<String>,
}

/// One rule of the plan.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub name: String,
    /// 1-based line of its `[[rule]]` header (0 for the built-in plan).
    pub line: usize,
    pub pattern: NumberPattern,
    pub classes: Option<Vec<CallerClass>>,
    pub days: Option<Vec<Weekday>>,
    pub time: Option<TimeWindow>,
    pub strip: usize,
    pub prepend: String,
    pub caller_id: CallerIdRule,
    pub action: ActionTemplate,
    /// `pbx = true`: the B2BUA carries the call even when the proxy could.
    pub pbx: bool,
}

/// The caller ID to present on the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallerId {
    /// The number (the user part of From).
    pub number: String,
    /// The display name.
    pub name: String,
}

/// The rule that decided, for people reading [`Decision`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchedRule {
    /// Its position in the plan, from 1.
    pub index: usize,
    /// Its `name`, or `rule N`.
    pub name: String,
    /// The line of its `[[rule]]` header in the file (0 for the built-in plan).
    pub line: usize,
    /// Its pattern, as written (`prefix 00`).
    pub pattern: String,
}

/// What the plan does with one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The number as dialled.
    pub dialled: String,
    /// The caller's class.
    pub caller_class: CallerClass,
    /// The rule that applied; `None` when none did (the call is rejected with 404).
    pub rule: Option<MatchedRule>,
    /// The number after the rule's rewriting.
    pub number: String,
    /// What to do.
    pub action: Action,
    /// The caller ID to present.
    pub caller_id: CallerId,
    /// The rule says `pbx = true`: the B2BUA carries the call even when the proxy
    /// could (an extension whose user has no forwarding). Ring groups and forwarding
    /// always need it.
    pub pbx: bool,
}

/// How a ring group rings its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Every member at once; the first to answer wins and the others are cancelled.
    /// `ring_seconds` is for the whole group.
    Simultaneous,
    /// One member after the other, in the order listed, `ring_seconds` each.
    Sequential,
    /// As sequential, but starting with the member after the one who answered the
    /// group's last call, so that calls are spread over the members.
    RoundRobin,
}

impl Strategy {
    /// Every strategy.
    pub const ALL: [Strategy; 3] = [
        Strategy::Simultaneous,
        Strategy::Sequential,
        Strategy::RoundRobin,
    ];

    /// The name used in the plan file.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Simultaneous => "simultaneous",
            Strategy::Sequential => "sequential",
            Strategy::RoundRobin => "round_robin",
        }
    }

    /// The strategy with this name.
    pub fn from_name(name: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A ring group of the plan (`[ring_group.NAME]`): phones rung together or in turn for
/// one number, and what happens when none of them answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RingGroup {
    /// Its name, as rules and fallbacks give it (`group = "reception"`).
    pub name: String,
    /// The line of its `[ring_group.NAME]` header (0 for one built in code).
    pub line: usize,
    /// How the members are rung.
    pub strategy: Strategy,
    /// Extension numbers or user names, in order; each at most once.
    pub members: Vec<String>,
    /// Seconds each member rings (sequential, round robin), or the whole group rings
    /// (simultaneous), before the next member, or the fallback.
    pub ring_seconds: u32,
    /// What to do when nobody answers (every member busy, unreachable, rejecting or
    /// not answering in time); `None`: the caller is answered 486 when every member
    /// was busy, 480 otherwise. Never a trunk (it would have no number to dial).
    pub fallback: Option<Action>,
}

impl RingGroup {
    /// Seconds a member, or the group, rings when the plan does not say.
    pub const DEFAULT_RING_SECONDS: u32 = 20;

    /// One line for people: `simultaneous: 201, alice, 203 (20 s), then voicemail of 200`.
    pub fn describe(&self) -> String {
        let each = match self.strategy {
            Strategy::Simultaneous => "",
            Strategy::Sequential | Strategy::RoundRobin => " each",
        };
        let mut s = format!(
            "{}: {} ({} s{each})",
            self.strategy,
            self.members.join(", "),
            self.ring_seconds
        );
        match &self.fallback {
            Some(f) => s.push_str(&format!(", then {}", f.describe())),
            None => s.push_str(", then 480 (486 when all are busy)"),
        }
        s
    }
}

/// Which callers are in which class.
#[derive(Debug, Clone)]
pub(crate) struct Classes {
    pub default: CallerClass,
    /// (user name, class).
    pub members: Vec<(String, CallerClass)>,
}

/// A dial plan: see the crate documentation for the file format.
#[derive(Debug, Clone)]
pub struct Plan {
    pub(crate) source: String,
    pub(crate) time_zone: TimeZone,
    pub(crate) time_zone_name: String,
    pub(crate) classes: Classes,
    pub(crate) rules: Vec<Rule>,
    /// By name, in the order of the file.
    pub(crate) groups: Vec<RingGroup>,
}

impl Plan {
    /// The plan `serve` runs without a file: every number or name is tried as an
    /// extension, then as a user name, for callers of any class (what the proxy did
    /// before there were dial plans).
    pub fn builtin() -> Plan {
        Plan {
            source: "(built-in plan)".into(),
            time_zone: TimeZone::UTC,
            time_zone_name: "UTC".into(),
            classes: Classes {
                default: CallerClass::International,
                members: Vec::new(),
            },
            rules: vec![Rule {
                name: "extensions and names".into(),
                line: 0,
                pattern: NumberPattern::Any,
                classes: None,
                days: None,
                time: None,
                strip: 0,
                prepend: String::new(),
                caller_id: CallerIdRule::default(),
                action: ActionTemplate::Extension(None),
                pbx: false,
            }],
            groups: Vec::new(),
        }
    }

    /// The ring group with this name.
    pub fn ring_group(&self, name: &str) -> Option<&RingGroup> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// Every ring group, in the order of the file.
    pub fn ring_groups(&self) -> &[RingGroup] {
        &self.groups
    }

    /// Where the plan came from: the file, or `(built-in plan)`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// How many rules it has.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether it has no rule (every call is rejected).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The time zone its time windows are in.
    pub fn time_zone(&self) -> &TimeZone {
        &self.time_zone
    }

    /// The name of that time zone, as the plan gave it (or the system's).
    pub fn time_zone_name(&self) -> &str {
        &self.time_zone_name
    }

    /// The class of a caller by name: the one the plan puts them in, else its default.
    pub fn class_of(&self, name: &str) -> CallerClass {
        self.classes
            .members
            .iter()
            .find(|(n, _)| n == name)
            .map_or(self.classes.default, |(_, c)| *c)
    }

    /// What to do with a call from `caller` to `dialled` at `now`: the first rule whose
    /// pattern matches the dialled number and whose conditions hold (caller class, days,
    /// time of day in the plan's zone) decides; its rewriting (strip, then prepend)
    /// gives the number the action gets, and its caller ID rule the caller ID. When no
    /// rule applies the decision is a 404.
    pub fn route(&self, dialled: &str, caller: &Caller, now: Timestamp) -> Decision {
        let class = self.class_of(&caller.name);
        let local = now.to_zoned(self.time_zone.clone());
        let minute = u16::try_from(i32::from(local.hour()) * 60 + i32::from(local.minute()))
            .unwrap_or_default();
        let weekday = local.weekday();
        let plain_caller_id = CallerId {
            number: caller
                .extension
                .clone()
                .unwrap_or_else(|| caller.name.clone()),
            name: caller.name.clone(),
        };
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.pattern.matches(dialled)
                || rule.classes.as_ref().is_some_and(|c| !c.contains(&class))
                || rule.days.as_ref().is_some_and(|d| !d.contains(&weekday))
                || rule.time.is_some_and(|w| !w.contains(minute))
            {
                continue;
            }
            let kept: String = dialled.chars().skip(rule.strip).collect();
            let number = format!("{}{kept}", rule.prepend);
            let fill = |template: &str| {
                template.replace("${user}", &caller.name).replace(
                    "${extension}",
                    caller.extension.as_ref().unwrap_or(&caller.name),
                )
            };
            let caller_id = CallerId {
                number: rule
                    .caller_id
                    .number
                    .as_deref()
                    .map_or_else(|| plain_caller_id.number.clone(), fill),
                name: rule
                    .caller_id
                    .name
                    .as_deref()
                    .map_or_else(|| plain_caller_id.name.clone(), fill),
            };
            return Decision {
                dialled: dialled.to_owned(),
                caller_class: class,
                rule: Some(MatchedRule {
                    index: i + 1,
                    name: rule.name.clone(),
                    line: rule.line,
                    pattern: rule.pattern.describe(),
                }),
                action: rule.action.for_number(&number),
                number,
                caller_id,
                pbx: rule.pbx,
            };
        }
        Decision {
            dialled: dialled.to_owned(),
            caller_class: class,
            rule: None,
            number: dialled.to_owned(),
            action: Action::Reject {
                code: 404,
                reason: Some("no dial plan rule for this number".into()),
            },
            caller_id: plain_caller_id,
            pbx: false,
        }
    }
}
