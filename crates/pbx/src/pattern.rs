//! What a rule matches on the dialled number: exact numbers, prefixes, Asterisk-style
//! patterns (`_NXX.`) and regular expressions, each matched against the whole number.

use regex::Regex;

/// A rule's test on the dialled number.
#[derive(Debug, Clone)]
pub enum NumberPattern {
    /// Any number (a rule with no pattern key is refused: this is the built-in plan's).
    Any,
    /// One of these numbers exactly.
    Exact(Vec<String>),
    /// A number starting with one of these (the prefix alone matches too).
    Prefix(Vec<String>),
    /// An Asterisk-style pattern.
    Asterisk(AsteriskPattern),
    /// A regular expression, matched against the whole number.
    Regex(Regex),
}

impl NumberPattern {
    /// Whether `number` matches.
    pub fn matches(&self, number: &str) -> bool {
        match self {
            NumberPattern::Any => true,
            NumberPattern::Exact(list) => list.iter().any(|n| n == number),
            NumberPattern::Prefix(list) => list.iter().any(|p| number.starts_with(p.as_str())),
            NumberPattern::Asterisk(p) => p.matches(number),
            NumberPattern::Regex(r) => r.is_match(number),
        }
    }

    /// The pattern as the plan wrote it, for printing (`prefix 00`, `pattern _NXX.`).
    pub fn describe(&self) -> String {
        match self {
            NumberPattern::Any => "any number".into(),
            NumberPattern::Exact(list) => format!("exact {}", list.join(", ")),
            NumberPattern::Prefix(list) => format!("prefix {}", list.join(", ")),
            NumberPattern::Asterisk(p) => format!("pattern {}", p.text),
            NumberPattern::Regex(r) => {
                // Shown as written, without the anchors added when it was compiled.
                let s = r.as_str();
                let inner = s
                    .strip_prefix("^(?:")
                    .and_then(|s| s.strip_suffix(")$"))
                    .unwrap_or(s);
                format!("regex {inner}")
            }
        }
    }

    /// A regular expression matched against the whole number.
    pub fn regex(text: &str) -> Result<NumberPattern, String> {
        Regex::new(&format!("^(?:{text})$"))
            .map(NumberPattern::Regex)
            .map_err(|e| match e {
                regex::Error::Syntax(s) => format!(
                    "not a valid regular expression: {}",
                    s.lines().last().unwrap_or("syntax error").trim()
                ),
                other => format!("not a valid regular expression: {other}"),
            })
    }
}

/// One position of an Asterisk pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Element {
    /// This character.
    Literal(char),
    /// Any character in one of these inclusive ranges (`X` is `0-9`).
    OneOf(Vec<(char, char)>),
}

impl Element {
    fn matches(&self, c: char) -> bool {
        match self {
            Element::Literal(l) => *l == c,
            Element::OneOf(ranges) => ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)),
        }
    }
}

/// What may follow the fixed positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// Nothing: the number has exactly as many characters as the pattern.
    Nothing,
    /// `.`: one or more characters, whatever they are.
    OneOrMore,
    /// `!`: zero or more characters.
    ZeroOrMore,
}

/// An Asterisk-style pattern: `_` (optional here) then, per position, `X` (0-9), `Z`
/// (1-9), `N` (2-9), `[1-5]` or `[137]` (a set, with ranges), or the character itself;
/// it may end with `.` (one or more characters) or `!` (zero or more). `_NXXNXXXXXX`
/// matches a ten-digit North American number, `_00.` any number starting with 00.
#[derive(Debug, Clone)]
pub struct AsteriskPattern {
    text: String,
    elements: Vec<Element>,
    tail: Tail,
}

impl AsteriskPattern {
    /// Parses a pattern; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<AsteriskPattern, String> {
        let body = text.strip_prefix('_').unwrap_or(text);
        let mut elements = Vec::new();
        let mut tail = Tail::Nothing;
        let mut chars = body.chars().peekable();
        while let Some(c) = chars.next() {
            if tail != Tail::Nothing {
                return Err(format!(
                    "\"{text}\": '.' and '!' may only end a pattern (they match the rest of the number)"
                ));
            }
            match c {
                'X' | 'x' => elements.push(Element::OneOf(vec![('0', '9')])),
                'Z' | 'z' => elements.push(Element::OneOf(vec![('1', '9')])),
                'N' | 'n' => elements.push(Element::OneOf(vec![('2', '9')])),
                '.' => tail = Tail::OneOrMore,
                '!' => tail = Tail::ZeroOrMore,
                '[' => {
                    let mut set = Vec::new();
                    let mut closed = false;
                    while let Some(c) = chars.next() {
                        if c == ']' {
                            closed = true;
                            break;
                        }
                        if chars.peek() == Some(&'-') {
                            chars.next();
                            match chars.next() {
                                Some(']') | None => {
                                    return Err(format!(
                                        "\"{text}\": the range starting at '{c}' has no end"
                                    ));
                                }
                                Some(hi) if hi < c => {
                                    return Err(format!(
                                        "\"{text}\": the range {c}-{hi} runs backwards"
                                    ));
                                }
                                Some(hi) => set.push((c, hi)),
                            }
                        } else {
                            set.push((c, c));
                        }
                    }
                    if !closed {
                        return Err(format!("\"{text}\": '[' is not closed by ']'"));
                    }
                    if set.is_empty() {
                        return Err(format!("\"{text}\": '[]' is an empty set"));
                    }
                    elements.push(Element::OneOf(set));
                }
                ']' => return Err(format!("\"{text}\": ']' without '['")),
                c => elements.push(Element::Literal(c)),
            }
        }
        if elements.is_empty() && tail == Tail::Nothing {
            return Err("the pattern is empty".into());
        }
        Ok(AsteriskPattern {
            text: text.to_owned(),
            elements,
            tail,
        })
    }

    /// Whether the whole of `number` matches.
    pub fn matches(&self, number: &str) -> bool {
        let mut chars = number.chars();
        for e in &self.elements {
            match chars.next() {
                Some(c) if e.matches(c) => {}
                _ => return false,
            }
        }
        let rest = chars.count();
        match self.tail {
            Tail::Nothing => rest == 0,
            Tail::OneOrMore => rest >= 1,
            Tail::ZeroOrMore => true,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn p(text: &str) -> AsteriskPattern {
        AsteriskPattern::parse(text).unwrap()
    }

    #[test]
    fn asterisk_classes() {
        assert!(p("_NXX").matches("201"));
        assert!(!p("_NXX").matches("101"), "N is 2-9");
        assert!(!p("_NXX").matches("2011"), "no tail: exact length");
        assert!(!p("_NXX").matches("20"));
        assert!(p("_ZX").matches("10") && !p("_ZX").matches("01"));
        assert!(p("_00.").matches("0044") && !p("_00.").matches("00"));
        assert!(p("_00!").matches("00") && p("_00!").matches("001"));
        assert!(p("_[1-35]X").matches("30") && p("_[1-35]X").matches("50"));
        assert!(!p("_[1-35]X").matches("40"));
        assert!(p("_+44.").matches("+4420") && p("*9X").matches("*91"));
        assert!(p("nxx").matches("299"), "lower case wildcards too");
    }

    #[test]
    fn asterisk_errors_say_what() {
        for (bad, says) in [
            ("_0.1", "may only end"),
            ("_[12", "not closed"),
            ("_[]", "empty set"),
            ("_[9-1]", "backwards"),
            ("_[1-]", "no end"),
            ("_1]", "without '['"),
            ("_", "empty"),
        ] {
            let e = AsteriskPattern::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn other_kinds() {
        let exact = NumberPattern::Exact(vec!["112".into(), "911".into()]);
        assert!(exact.matches("911") && !exact.matches("9111"));
        let prefix = NumberPattern::Prefix(vec!["00".into()]);
        assert!(prefix.matches("00") && prefix.matches("0033") && !prefix.matches("033"));
        let re = NumberPattern::regex(r"\+?44\d+").unwrap();
        assert!(re.matches("+4420") && re.matches("4420") && !re.matches("x4420"));
        assert!(!re.matches("+4420x"), "the whole number");
        assert_eq!(re.describe(), r"regex \+?44\d+");
        assert!(
            NumberPattern::regex("(")
                .unwrap_err()
                .starts_with("not a valid regular expression")
        );
    }

    /// The same pattern as a regular expression, written independently of the matcher.
    fn as_regex(pattern: &str) -> Regex {
        let mut re = String::from("^");
        let mut in_set = false;
        for c in pattern.trim_start_matches('_').chars() {
            match (in_set, c) {
                (false, 'X') => re.push_str("[0-9]"),
                (false, 'Z') => re.push_str("[1-9]"),
                (false, 'N') => re.push_str("[2-9]"),
                (false, '.') => re.push_str(".+"),
                (false, '!') => re.push_str(".*"),
                (false, '[') => {
                    in_set = true;
                    re.push('[');
                }
                (true, ']') => {
                    in_set = false;
                    re.push(']');
                }
                (true, '-') => re.push('-'),
                (_, c) => re.push_str(&regex::escape(&c.to_string())),
            }
        }
        re.push('$');
        Regex::new(&re).unwrap()
    }

    proptest! {
        /// The matcher agrees with the pattern's meaning written as a regex.
        #[test]
        fn matcher_agrees_with_regex(
            body in "[0-9XZN*#+]{0,5}(\\[[0-4]-[5-9]\\])?[0-9XZN]{0,3}[.!]?",
            number in "[0-9*#+]{0,10}",
        ) {
            prop_assume!(!body.is_empty());
            let pattern = format!("_{body}");
            let parsed = AsteriskPattern::parse(&pattern).unwrap();
            prop_assert_eq!(parsed.matches(&number), as_regex(&pattern).is_match(&number));
        }

        /// `_<digits>.` is "starts with those digits, and something follows".
        #[test]
        fn prefix_dot_is_starts_with(prefix in "[0-9]{1,6}", number in "[0-9]{0,12}") {
            let parsed = AsteriskPattern::parse(&format!("_{prefix}.")).unwrap();
            prop_assert_eq!(
                parsed.matches(&number),
                number.starts_with(&prefix) && number.len() > prefix.len()
            );
        }

        /// No input makes the parser or the matcher panic.
        #[test]
        fn never_panics(pattern in "\\PC{0,12}", number in "\\PC{0,12}") {
            if let Ok(p) = AsteriskPattern::parse(&pattern) {
                let _ = p.matches(&number);
            }
        }
    }
}
