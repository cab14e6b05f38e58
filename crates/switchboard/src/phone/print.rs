//! What `switchboard phone` tells the person or script running it: one line per event
//! on standard output, as text (`ringing`, `dtmf sent: 1`, `ended: bye (local)`) or as
//! one JSON object per line with `--json` (`{"event":"ringing"}`).

use serde_json::{Map, Value, json};
pub use sip_ua::PhoneEvent;

/// Prints events as text or JSON lines.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    json: bool,
}

impl Printer {
    /// A printer writing text lines, or JSON lines when `json`.
    pub fn new(json: bool) -> Printer {
        Printer { json }
    }

    /// Prints `event` with an optional detail: text `event: detail` (or just `event`),
    /// JSON `{"event": event, ...fields}`. `fields` are JSON-only extras; the text form
    /// shows `detail`.
    pub fn event(&self, event: &str, detail: Option<&str>, fields: &[(&str, Value)]) {
        println!("{}", self.line(event, detail, fields));
    }

    /// The line [`Printer::event`] prints.
    fn line(&self, event: &str, detail: Option<&str>, fields: &[(&str, Value)]) -> String {
        if self.json {
            let mut obj = Map::new();
            obj.insert("event".into(), json!(event));
            if let Some(d) = detail {
                obj.insert("detail".into(), json!(d));
            }
            for (k, v) in fields {
                obj.insert((*k).to_owned(), v.clone());
            }
            Value::Object(obj).to_string()
        } else {
            match detail {
                Some(d) => format!("{event}: {d}"),
                None => event.to_owned(),
            }
        }
    }

    /// Prints a [`PhoneEvent`]; in JSON with the number of the call it is about
    /// (`"call": 2`), which tells a transfer's two calls apart.
    pub fn print(&self, e: &PhoneEvent) {
        println!("{}", self.event_line(e));
    }

    fn event_line(&self, e: &PhoneEvent) -> String {
        let mut fields = e.fields.clone();
        if let Some(call) = e.call {
            fields.push(("call", json!(call.number())));
        }
        self.line(e.name, e.detail.as_deref(), &fields)
    }

    /// A problem worth telling but not an event of the call: always on standard error.
    pub fn warn(&self, text: &str) {
        eprintln!("warning: {text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(call: Option<sip_ua::CallId>) -> PhoneEvent {
        PhoneEvent {
            name: "transferred",
            detail: Some("to sip:carol@example.test".into()),
            fields: vec![("target", json!("sip:carol@example.test"))],
            call,
        }
    }

    #[test]
    fn json_lines_name_the_call_and_text_lines_do_not() {
        let text = Printer::new(false);
        assert_eq!(
            text.event_line(&event(None)),
            "transferred: to sip:carol@example.test"
        );
        let json = Printer::new(true);
        let line: Value = serde_json::from_str(&json.event_line(&event(None))).unwrap_or_default();
        assert_eq!(line["event"], "transferred");
        assert_eq!(line["target"], "sip:carol@example.test");
        assert!(line.get("call").is_none());
    }
}
