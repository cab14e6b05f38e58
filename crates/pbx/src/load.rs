//! Reading a dial plan file: the TOML is walked with its spans (toml's `DeTable`), so
//! that every fault is reported with the file, the line and the key, and all of them at
//! once, not only the first.

use crate::pattern::{AsteriskPattern, NumberPattern};
use crate::plan::{
    Action, ActionTemplate, CallerClass, CallerIdRule, Classes, Plan, RingGroup, Rule, Strategy,
    TimeWindow,
};
use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One fault in a plan file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    /// The file (as given).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// The key at fault, with the rule it is in (`rule 2 "intl": pattern`); empty for
    /// a TOML syntax error.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.file, self.line, self.key, self.message
            )
        }
    }
}

/// Every fault of a plan that cannot be used, in the order of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanErrors(pub Vec<PlanError>);

impl fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PlanErrors {}

const TOP_KEYS: &[&str] = &["timezone", "classes", "ring_group", "rule"];
const GROUP_KEYS: &[&str] = &["strategy", "members", "ring_seconds", "fallback"];
/// The keys of a group's fallback: an action and what it needs, trunks excepted.
const FALLBACK_KEYS: &[&str] = &[
    "action",
    "extension",
    "group",
    "mailbox",
    "menu",
    "code",
    "reason",
];
const CLASS_KEYS: &[&str] = &[
    "default",
    "emergency",
    "internal",
    "national",
    "international",
];
const RULE_KEYS: &[&str] = &[
    "name",
    "exact",
    "prefix",
    "pattern",
    "regex",
    "caller_class",
    "days",
    "time",
    "strip",
    "prepend",
    "caller_id_number",
    "caller_id_name",
    "action",
    "extension",
    "group",
    "trunk",
    "trunks",
    "mailbox",
    "menu",
    "code",
    "reason",
    "pbx",
];
const PATTERN_KEYS: &[&str] = &["exact", "prefix", "pattern", "regex"];
const ACTIONS: &[&str] = &[
    "extension",
    "ring_group",
    "trunk",
    "voicemail",
    "ivr",
    "reject",
];
/// Keys that belong to one action only, with that action.
const ACTION_KEYS: &[(&str, &str)] = &[
    ("extension", "extension"),
    ("group", "ring_group"),
    ("trunk", "trunk"),
    ("trunks", "trunk"),
    ("mailbox", "voicemail"),
    ("menu", "ivr"),
    ("code", "reject"),
    ("reason", "reject"),
    ("pbx", "extension"),
];

type Table<'i> = DeTable<'i>;
type Value<'i> = Spanned<DeValue<'i>>;

/// Collects faults as the file is walked.
struct Checker<'t> {
    text: &'t str,
    file: String,
    errors: Vec<PlanError>,
}

impl Checker<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        let at = span.start.min(self.text.len());
        self.text.as_bytes()[..at]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn fault(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        let line = self.line(&span);
        self.errors.push(PlanError {
            file: self.file.clone(),
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    /// Unknown keys of a table, each named with what is allowed.
    fn unknown_keys(&mut self, table: &Table<'_>, allowed: &[&str], place: &str) {
        for (k, _) in table.iter() {
            if !allowed.contains(&k.get_ref().as_ref()) {
                let key = format!("{place}{}", k.get_ref());
                self.fault(
                    k.span(),
                    key,
                    format!("unknown key; expected one of {}", allowed.join(", ")),
                );
            }
        }
    }

    fn string<'v>(&mut self, v: &'v Value<'_>, key: &str) -> Option<&'v str> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            other => {
                self.fault(
                    v.span(),
                    key,
                    format!("expected a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// A string, or an array of strings; each checked non-empty.
    fn strings(&mut self, v: &Value<'_>, key: &str) -> Option<Vec<String>> {
        let items: Vec<&Value<'_>> = match v.get_ref() {
            DeValue::String(_) => vec![v],
            DeValue::Array(a) => a.iter().collect(),
            other => {
                self.fault(
                    v.span(),
                    key,
                    format!(
                        "expected a string or an array of strings, found {}",
                        other.type_str()
                    ),
                );
                return None;
            }
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match self.string(item, key) {
                Some("") => {
                    self.fault(item.span(), key, "must not be empty");
                    ok = false;
                }
                Some(s) => out.push(s.to_owned()),
                None => ok = false,
            }
        }
        if ok && out.is_empty() {
            self.fault(v.span(), key, "the list is empty");
            return None;
        }
        ok.then_some(out)
    }

    fn boolean(&mut self, v: &Value<'_>, key: &str) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.fault(
                    v.span(),
                    key,
                    format!("expected true or false, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn integer(&mut self, v: &Value<'_>, key: &str, range: Range<i64>) -> Option<i64> {
        let DeValue::Integer(i) = v.get_ref() else {
            self.fault(
                v.span(),
                key,
                format!("expected a whole number, found {}", v.get_ref().type_str()),
            );
            return None;
        };
        let n = i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok();
        match n {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                self.fault(
                    v.span(),
                    key,
                    format!(
                        "{} is out of range: expected {} to {}",
                        i.as_str(),
                        range.start,
                        range.end - 1
                    ),
                );
                None
            }
        }
    }

    /// A name for a ring group, trunk or menu: letters, digits, `-`, `_`, `.`.
    fn name(&mut self, v: &Value<'_>, key: &str) -> Option<String> {
        let s = self.string(v, key)?;
        if s.is_empty()
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            self.fault(
                v.span(),
                key,
                format!("\"{s}\" is not a name: use letters, digits, '-', '_' and '.'"),
            );
            return None;
        }
        Some(s.to_owned())
    }

    /// An extension number or user name to ring.
    fn target(&mut self, v: &Value<'_>, key: &str) -> Option<String> {
        let s = self.string(v, key)?;
        if s.is_empty()
            || s.chars()
                .any(|c| c.is_whitespace() || matches!(c, '@' | ':' | ';'))
        {
            self.fault(
                v.span(),
                key,
                format!("\"{s}\" is not an extension or user name"),
            );
            return None;
        }
        Some(s.to_owned())
    }
}

impl Plan {
    /// Reads and checks a plan file.
    pub fn load(path: &Path) -> Result<Plan, PlanErrors> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Plan::parse(&text, &file),
            Err(e) => Err(PlanErrors(vec![PlanError {
                file,
                line: 0,
                key: String::new(),
                message: format!("cannot read the dial plan: {e}"),
            }])),
        }
    }

    /// Parses and checks plan text; `file` names it in errors and in [`Plan::source`].
    pub fn parse(text: &str, file: &str) -> Result<Plan, PlanErrors> {
        let mut c = Checker {
            text,
            file: file.to_owned(),
            errors: Vec::new(),
        };
        let (doc, syntax) = DeTable::parse_recoverable(text);
        for e in syntax {
            let span = e.span().unwrap_or(0..0);
            let message = e
                .message()
                .lines()
                .next()
                .unwrap_or("invalid TOML")
                .to_owned();
            c.fault(span, "", format!("TOML syntax: {message}"));
        }
        if !c.errors.is_empty() {
            // What the parser recovered is a guess at what was meant: its faults would
            // be noise beside the syntax errors, which are all reported.
            return Err(PlanErrors(c.errors));
        }
        let doc = doc.get_ref();
        c.unknown_keys(doc, TOP_KEYS, "");

        let (time_zone, time_zone_name) = match doc.get("timezone") {
            Some(v) => match c.string(v, "timezone") {
                Some(name) => match TimeZone::get(name) {
                    Ok(tz) => (tz, name.to_owned()),
                    Err(_) => {
                        c.fault(
                            v.span(),
                            "timezone",
                            format!(
                                "unknown time zone \"{name}\": use an IANA name like \"Europe/Paris\", or \"UTC\""
                            ),
                        );
                        (TimeZone::UTC, "UTC".into())
                    }
                },
                None => (TimeZone::UTC, "UTC".into()),
            },
            None => {
                let tz = TimeZone::system();
                let name = tz
                    .iana_name()
                    .unwrap_or("the system's local time")
                    .to_owned();
                (tz, name)
            }
        };

        let classes = read_classes(&mut c, doc.get("classes"));
        // Rules are checked against every group the file declares: a group with faults
        // has them reported where it is.
        let group_names: Vec<String> = match doc.get("ring_group").map(|v| v.get_ref()) {
            Some(DeValue::Table(t)) => t.iter().map(|(k, _)| k.get_ref().to_string()).collect(),
            _ => Vec::new(),
        };
        let groups = read_groups(&mut c, doc.get("ring_group"));

        let mut rules = Vec::new();
        match doc.get("rule") {
            None => {}
            Some(v) => match v.get_ref() {
                DeValue::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(rule) = read_rule(&mut c, item, i + 1, &group_names) {
                            rules.push(rule);
                        }
                    }
                }
                other => c.fault(
                    v.span(),
                    "rule",
                    format!(
                        "expected [[rule]] tables, found {}; write each rule under its own [[rule]] line",
                        other.type_str()
                    ),
                ),
            },
        }
        if rules.is_empty() && c.errors.is_empty() {
            c.fault(
                0..0,
                "rule",
                "the plan has no [[rule]]: every call would be refused",
            );
        }
        if !c.errors.is_empty() {
            let mut errors = c.errors;
            errors.sort_by_key(|e| e.line);
            return Err(PlanErrors(errors));
        }
        Ok(Plan {
            source: file.to_owned(),
            time_zone,
            time_zone_name,
            classes,
            rules,
            groups,
        })
    }
}

fn read_classes(c: &mut Checker<'_>, v: Option<&Value<'_>>) -> Classes {
    let mut classes = Classes {
        default: CallerClass::National,
        members: Vec::new(),
    };
    let Some(v) = v else {
        return classes;
    };
    let DeValue::Table(t) = v.get_ref() else {
        c.fault(v.span(), "classes", "expected a table: [classes]");
        return classes;
    };
    c.unknown_keys(t, CLASS_KEYS, "classes.");
    if let Some(d) = t.get("default")
        && let Some(name) = c.string(d, "classes.default")
    {
        match CallerClass::from_name(name) {
            Some(class) => classes.default = class,
            None => c.fault(
                d.span(),
                "classes.default",
                format!("\"{name}\" is not a class: {}", class_names()),
            ),
        }
    }
    for class in CallerClass::ALL {
        let key = format!("classes.{}", class.name());
        let Some(list) = t.get(class.name()) else {
            continue;
        };
        let DeValue::Array(items) = list.get_ref() else {
            c.fault(list.span(), &key, "expected an array of user names");
            continue;
        };
        for item in items.iter() {
            let Some(user) = c.string(item, &key) else {
                continue;
            };
            if let Some((_, other)) = classes.members.iter().find(|(n, _)| n == user) {
                let message = format!("{user} is already in classes.{other}");
                c.fault(item.span(), &key, message);
                continue;
            }
            classes.members.push((user.to_owned(), class));
        }
    }
    classes
}

fn class_names() -> String {
    let names: Vec<&str> = CallerClass::ALL.iter().map(|c| c.name()).collect();
    format!("one of {}", names.join(", "))
}

fn read_rule(
    c: &mut Checker<'_>,
    item: &Value<'_>,
    index: usize,
    groups: &[String],
) -> Option<Rule> {
    let DeValue::Table(t) = item.get_ref() else {
        c.fault(
            item.span(),
            format!("rule {index}"),
            "expected a [[rule]] table",
        );
        return None;
    };
    let errors_before = c.errors.len();
    let name = match t.get("name") {
        Some(v) => c
            .string(v, &format!("rule {index}: name"))
            .map(str::to_owned),
        None => None,
    };
    let place = match &name {
        Some(n) => format!("rule {index} \"{n}\": "),
        None => format!("rule {index}: "),
    };
    let key = |k: &str| format!("{place}{k}");
    c.unknown_keys(t, RULE_KEYS, &place);
    // The line of the rule: its first key (the table's own span is its header).
    let header = item.span();

    // Pattern: exactly one kind.
    let given: Vec<&str> = PATTERN_KEYS
        .iter()
        .copied()
        .filter(|k| t.contains_key(*k))
        .collect();
    let pattern = match given.as_slice() {
        [] => {
            c.fault(
                header.clone(),
                format!("{place}pattern"),
                "the rule matches nothing: give one of exact, prefix, pattern or regex (pattern = \"_!\" matches every number)",
            );
            None
        }
        [one] => {
            let v = t.get(*one)?;
            let k = key(one);
            match *one {
                "exact" => c.strings(v, &k).map(NumberPattern::Exact),
                "prefix" => c.strings(v, &k).map(NumberPattern::Prefix),
                "pattern" => c
                    .string(v, &k)
                    .and_then(|s| match AsteriskPattern::parse(s) {
                        Ok(p) => Some(NumberPattern::Asterisk(p)),
                        Err(e) => {
                            c.fault(v.span(), &k, e);
                            None
                        }
                    }),
                _ => c.string(v, &k).and_then(|s| match NumberPattern::regex(s) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        c.fault(v.span(), &k, e);
                        None
                    }
                }),
            }
        }
        several => {
            let second = t.get(several[1])?;
            c.fault(
                second.span(),
                key(several[1]),
                format!(
                    "a rule has one pattern, and this one has {}",
                    several.join(" and ")
                ),
            );
            None
        }
    };

    let classes = t.get("caller_class").and_then(|v| {
        let k = key("caller_class");
        let names = c.strings(v, &k)?;
        let mut out = Vec::new();
        for n in names {
            match CallerClass::from_name(&n) {
                Some(class) => out.push(class),
                None => c.fault(
                    v.span(),
                    &k,
                    format!("\"{n}\" is not a class: {}", class_names()),
                ),
            }
        }
        Some(out)
    });

    let days = t.get("days").and_then(|v| {
        let k = key("days");
        let names = c.strings(v, &k)?;
        let mut out = Vec::new();
        for n in names {
            match parse_days(&n) {
                Ok(days) => {
                    for d in days {
                        if !out.contains(&d) {
                            out.push(d);
                        }
                    }
                }
                Err(e) => c.fault(v.span(), &k, e),
            }
        }
        Some(out)
    });

    let time = t.get("time").and_then(|v| {
        let k = key("time");
        let s = c.string(v, &k)?;
        match parse_window(s) {
            Ok(w) => Some(w),
            Err(e) => {
                c.fault(v.span(), &k, e);
                None
            }
        }
    });

    let strip = match t.get("strip") {
        Some(v) => c
            .integer(v, &key("strip"), 0..65)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0),
        None => 0,
    };
    let prepend = match t.get("prepend") {
        Some(v) => c.string(v, &key("prepend")).unwrap_or_default().to_owned(),
        None => String::new(),
    };
    let caller_id = CallerIdRule {
        number: t
            .get("caller_id_number")
            .and_then(|v| c.string(v, &key("caller_id_number")))
            .map(str::to_owned),
        name: t
            .get("caller_id_name")
            .and_then(|v| c.string(v, &key("caller_id_name")))
            .map(str::to_owned),
    };
    for (k, template) in [
        ("caller_id_number", &caller_id.number),
        ("caller_id_name", &caller_id.name),
    ] {
        if let (Some(v), Some(s)) = (t.get(k), template) {
            let rest = s.replace("${user}", "").replace("${extension}", "");
            if rest.contains("${") {
                c.fault(
                    v.span(),
                    key(k),
                    format!("\"{s}\": the only variables are ${{user}} and ${{extension}}"),
                );
            }
        }
    }

    // The B2BUA for a plain extension call: ring groups and forwarding take it anyway.
    let pbx = match t.get("pbx") {
        Some(v) => c.boolean(v, &key("pbx")).unwrap_or(false),
        None => false,
    };
    let action = read_action(c, t, &place, header, groups);
    if c.errors.len() > errors_before {
        return None;
    }
    Some(Rule {
        name: name.unwrap_or_else(|| format!("rule {index}")),
        line: c.line(&item.span()),
        pattern: pattern?,
        classes,
        days,
        time,
        strip,
        prepend,
        caller_id,
        action: action?,
        pbx,
    })
}

fn read_action(
    c: &mut Checker<'_>,
    t: &Table<'_>,
    place: &str,
    header: Range<usize>,
    groups: &[String],
) -> Option<ActionTemplate> {
    let key = |k: &str| format!("{place}{k}");
    let Some(v) = t.get("action") else {
        c.fault(
            header,
            key("action"),
            format!(
                "the rule has no action: give action = one of {}",
                ACTIONS.join(", ")
            ),
        );
        return None;
    };
    let action = c.string(v, &key("action"))?;
    if !ACTIONS.contains(&action) {
        c.fault(
            v.span(),
            key("action"),
            format!(
                "\"{action}\" is not an action: one of {}",
                ACTIONS.join(", ")
            ),
        );
        return None;
    }
    // Keys of another action are a mistake worth naming (a trunk on a reject rule).
    let mut misplaced = false;
    for (k, belongs) in ACTION_KEYS {
        if *belongs != action
            && let Some(kv) = t.get(*k)
        {
            c.fault(
                kv.span(),
                key(k),
                format!("{k} goes with action = \"{belongs}\", not \"{action}\""),
            );
            misplaced = true;
        }
    }
    let need = |c: &mut Checker<'_>, k: &str| -> Option<()> {
        if t.contains_key(k) {
            Some(())
        } else {
            c.fault(v.span(), key(k), format!("action = \"{action}\" needs {k}"));
            None
        }
    };
    let template = match action {
        "extension" => ActionTemplate::Extension(match t.get("extension") {
            Some(e) => Some(c.target(e, &key("extension"))?),
            None => None,
        }),
        "ring_group" => {
            need(c, "group")?;
            let v = t.get("group")?;
            let name = c.name(v, &key("group"))?;
            if !groups.contains(&name) {
                let known = if groups.is_empty() {
                    "the plan has no ring groups".to_owned()
                } else {
                    format!("the plan's groups are {}", groups.join(", "))
                };
                c.fault(
                    v.span(),
                    key("group"),
                    format!("no [ring_group.{name}] in the plan ({known})"),
                );
                return None;
            }
            ActionTemplate::RingGroup(name)
        }
        "trunk" => match (t.get("trunk"), t.get("trunks")) {
            (Some(one), None) => ActionTemplate::Trunk(vec![c.name(one, &key("trunk"))?]),
            (None, Some(list)) => {
                let k = key("trunks");
                let DeValue::Array(items) = list.get_ref() else {
                    c.fault(
                        list.span(),
                        &k,
                        "expected an array of trunk names, first choice first",
                    );
                    return None;
                };
                let mut names = Vec::new();
                for item in items.iter() {
                    names.push(c.name(item, &k)?);
                }
                if names.is_empty() {
                    c.fault(list.span(), &k, "the list is empty");
                    return None;
                }
                ActionTemplate::Trunk(names)
            }
            (Some(_), Some(list)) => {
                c.fault(
                    list.span(),
                    key("trunks"),
                    "give trunk (one) or trunks (a list), not both",
                );
                return None;
            }
            (None, None) => {
                c.fault(
                    v.span(),
                    key("trunk"),
                    "action = \"trunk\" needs trunk = \"NAME\" or trunks = [\"FIRST\", \"SECOND\"]",
                );
                return None;
            }
        },
        "voicemail" => ActionTemplate::Voicemail(match t.get("mailbox") {
            Some(m) => Some(c.target(m, &key("mailbox"))?),
            None => None,
        }),
        "ivr" => {
            need(c, "menu")?;
            ActionTemplate::Ivr(c.name(t.get("menu")?, &key("menu"))?)
        }
        _ => {
            need(c, "code")?;
            let code = c.integer(t.get("code")?, &key("code"), 400..700)?;
            let reason = match t.get("reason") {
                Some(r) => {
                    let s = c.string(r, &key("reason"))?;
                    if s.chars().any(char::is_control) {
                        c.fault(r.span(), key("reason"), "must be one line of text");
                        return None;
                    }
                    Some(s.to_owned())
                }
                None => None,
            };
            ActionTemplate::Reject(u16::try_from(code).ok()?, reason)
        }
    };
    (!misplaced).then_some(template)
}

/// The `[ring_group.NAME]` tables, in the order of the file. A group's fallback may
/// name another group, checked here too, and must not come back to it.
fn read_groups(c: &mut Checker<'_>, v: Option<&Value<'_>>) -> Vec<RingGroup> {
    let Some(v) = v else {
        return Vec::new();
    };
    let DeValue::Table(t) = v.get_ref() else {
        c.fault(
            v.span(),
            "ring_group",
            "expected ring group tables: [ring_group.NAME]",
        );
        return Vec::new();
    };
    // Every name first: a fallback may name a group further down.
    let names: Vec<String> = t.iter().map(|(k, _)| k.get_ref().to_string()).collect();
    let mut groups = Vec::new();
    // (group, its fallback group, the span of that key), for the loop check.
    let mut fallback_groups: Vec<(String, String, Range<usize>)> = Vec::new();
    for (k, item) in t.iter() {
        let name = k.get_ref().to_string();
        let place = format!("ring_group.{name}");
        let line = c.line(&k.span());
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
        {
            c.fault(
                k.span(),
                &place,
                format!("\"{name}\" is not a name: use letters, digits, '-', '_' and '.'"),
            );
            continue;
        }
        let DeValue::Table(g) = item.get_ref() else {
            c.fault(
                item.span(),
                &place,
                format!("expected a table: [ring_group.{name}] with members = [...]"),
            );
            continue;
        };
        let errors_before = c.errors.len();
        c.unknown_keys(g, GROUP_KEYS, &format!("{place}."));
        let key = |k: &str| format!("{place}.{k}");
        let strategy = match g.get("strategy") {
            None => Some(Strategy::Simultaneous),
            Some(s) => c.string(s, &key("strategy")).and_then(|text| {
                let found = Strategy::from_name(text);
                if found.is_none() {
                    let all: Vec<&str> = Strategy::ALL.iter().map(|s| s.name()).collect();
                    c.fault(
                        s.span(),
                        key("strategy"),
                        format!("\"{text}\" is not a strategy: one of {}", all.join(", ")),
                    );
                }
                found
            }),
        };
        let members = match g.get("members") {
            None => {
                c.fault(
                    k.span(),
                    key("members"),
                    "a ring group needs members = [\"201\", \"alice\", ...] (extensions or user names)",
                );
                None
            }
            Some(m) => {
                let k = key("members");
                let DeValue::Array(items) = m.get_ref() else {
                    c.fault(
                        m.span(),
                        &k,
                        "expected an array of extensions or user names, in ringing order",
                    );
                    continue;
                };
                let mut out: Vec<String> = Vec::new();
                for item in items.iter() {
                    let Some(member) = c.target(item, &k) else {
                        continue;
                    };
                    if out.contains(&member) {
                        c.fault(item.span(), &k, format!("{member} is listed twice"));
                        continue;
                    }
                    out.push(member);
                }
                if items.is_empty() {
                    c.fault(m.span(), &k, "the list is empty");
                }
                Some(out)
            }
        };
        let ring_seconds = match g.get("ring_seconds") {
            None => Some(RingGroup::DEFAULT_RING_SECONDS),
            Some(s) => c
                .integer(s, &key("ring_seconds"), 1..601)
                .and_then(|n| u32::try_from(n).ok()),
        };
        let fallback = match g.get("fallback") {
            None => Some(None),
            Some(f) => read_fallback(c, f, &key("fallback"), &names).map(|(action, span)| {
                if let Action::RingGroup { group } = &action {
                    fallback_groups.push((name.clone(), group.clone(), span));
                }
                Some(action)
            }),
        };
        if c.errors.len() > errors_before {
            continue;
        }
        if let (Some(strategy), Some(members), Some(ring_seconds), Some(fallback)) =
            (strategy, members, ring_seconds, fallback)
        {
            groups.push(RingGroup {
                name,
                line,
                strategy,
                members,
                ring_seconds,
                fallback,
            });
        }
    }
    // A fallback that comes back to its group would ring the same phones for ever.
    for (start, _, span) in &fallback_groups {
        let mut path = vec![start.clone()];
        let mut at = start.clone();
        while let Some((_, next, _)) = fallback_groups.iter().find(|(g, _, _)| *g == at) {
            path.push(next.clone());
            if next == start {
                // Reported once, at the group of the loop that comes first in the file.
                let first = names.iter().find(|n| path.contains(n));
                if first == Some(start) {
                    c.fault(
                        span.clone(),
                        format!("ring_group.{start}.fallback.group"),
                        format!("the fallbacks go round in a loop: {}", path.join(" -> ")),
                    );
                }
                break;
            }
            if path[..path.len() - 1].contains(next) {
                break; // a loop that does not come back to `start`: its own groups say so
            }
            at = next.clone();
        }
    }
    groups.sort_by_key(|g| g.line);
    groups
}

/// A group's `fallback = { action = "voicemail", mailbox = "200" }`: the action keys of
/// a rule, with every target given (there is no dialled number to default to), and no
/// trunk. Returns the action and the span of its `group` key, if any.
fn read_fallback(
    c: &mut Checker<'_>,
    v: &Value<'_>,
    place: &str,
    groups: &[String],
) -> Option<(Action, Range<usize>)> {
    let DeValue::Table(t) = v.get_ref() else {
        c.fault(
            v.span(),
            place,
            "expected a table, like fallback = { action = \"voicemail\", mailbox = \"200\" }",
        );
        return None;
    };
    let prefix = format!("{place}.");
    if let Some(a) = t.get("action")
        && let DeValue::String(s) = a.get_ref()
        && s.as_ref() == "trunk"
    {
        c.fault(
            a.span(),
            format!("{prefix}action"),
            "a fallback cannot be a trunk (it has no number to dial): use extension, ring_group, voicemail, ivr or reject",
        );
        return None;
    }
    let errors_before = c.errors.len();
    c.unknown_keys(t, FALLBACK_KEYS, &prefix);
    if c.errors.len() > errors_before {
        return None;
    }
    let template = read_action(c, t, &prefix, v.span(), groups)?;
    let group_span = t.get("group").map_or(v.span(), |g| g.span());
    let missing = |c: &mut Checker<'_>, k: &str, example: &str| {
        c.fault(
            v.span(),
            format!("{prefix}{k}"),
            format!("a fallback names its target: {k} = \"{example}\""),
        );
    };
    let action = match template {
        ActionTemplate::Extension(Some(target)) => Action::Extension { target },
        ActionTemplate::Voicemail(Some(mailbox)) => Action::Voicemail { mailbox },
        ActionTemplate::Extension(None) => {
            missing(c, "extension", "201");
            return None;
        }
        ActionTemplate::Voicemail(None) => {
            missing(c, "mailbox", "200");
            return None;
        }
        ActionTemplate::RingGroup(group) => Action::RingGroup { group },
        ActionTemplate::Ivr(menu) => Action::Ivr { menu },
        ActionTemplate::Reject(code, reason) => Action::Reject { code, reason },
        ActionTemplate::Trunk(_) => return None,
    };
    Some((action, group_span))
}

fn weekday(name: &str) -> Option<Weekday> {
    let n = name.trim().to_ascii_lowercase();
    let all = [
        ("mon", Weekday::Monday),
        ("tue", Weekday::Tuesday),
        ("wed", Weekday::Wednesday),
        ("thu", Weekday::Thursday),
        ("fri", Weekday::Friday),
        ("sat", Weekday::Saturday),
        ("sun", Weekday::Sunday),
    ];
    all.into_iter()
        .find(|(short, day)| n == *short || n == format!("{day:?}").to_ascii_lowercase())
        .map(|(_, d)| d)
}

/// `mon`, `monday`, or a range `mon-fri` (which may wrap: `fri-mon`).
fn parse_days(text: &str) -> Result<Vec<Weekday>, String> {
    let bad = || format!("\"{text}\" is not a day (mon … sun) or a range like mon-fri");
    match text.split_once('-') {
        None => weekday(text).map(|d| vec![d]).ok_or_else(bad),
        Some((a, b)) => {
            let (from, to) = (weekday(a).ok_or_else(bad)?, weekday(b).ok_or_else(bad)?);
            let mut days = vec![from];
            let mut d = from;
            while d != to {
                d = d.next();
                days.push(d);
            }
            Ok(days)
        }
    }
}

/// `HH:MM-HH:MM`, the end excluded (`24:00` allowed as an end).
fn parse_window(text: &str) -> Result<TimeWindow, String> {
    let bad = |why: &str| format!("\"{text}\": {why}; expected HH:MM-HH:MM, like 08:00-18:00");
    let (a, b) = text.split_once('-').ok_or_else(|| bad("no '-'"))?;
    let minute = |s: &str, is_end: bool| -> Result<u16, String> {
        let (h, m) = s
            .trim()
            .split_once(':')
            .ok_or_else(|| bad("a time needs ':'"))?;
        let (h, m): (u16, u16) = (
            h.parse().map_err(|_| bad("not an hour"))?,
            m.parse().map_err(|_| bad("not a minute"))?,
        );
        let limit = if is_end { 24 } else { 23 };
        if h > limit || m > 59 || (h == 24 && m != 0) {
            return Err(bad("out of range"));
        }
        Ok(h * 60 + m)
    };
    let (start, end) = (minute(a, false)?, minute(b, true)?);
    if start == end {
        return Err(bad("the window is empty"));
    }
    Ok(TimeWindow { start, end })
}
