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
        if self.json {
            let mut obj = Map::new();
            obj.insert("event".into(), json!(event));
            if let Some(d) = detail {
                obj.insert("detail".into(), json!(d));
            }
            for (k, v) in fields {
                obj.insert((*k).to_owned(), v.clone());
            }
            println!("{}", Value::Object(obj));
        } else {
            match detail {
                Some(d) => println!("{event}: {d}"),
                None => println!("{event}"),
            }
        }
    }

    /// Prints a [`PhoneEvent`].
    pub fn print(&self, e: &PhoneEvent) {
        self.event(e.name, e.detail.as_deref(), &e.fields);
    }

    /// A problem worth telling but not an event of the call: always on standard error.
    pub fn warn(&self, text: &str) {
        eprintln!("warning: {text}");
    }
}
