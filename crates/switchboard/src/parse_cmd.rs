//! `switchboard parse`: a SIP message from a file or standard input, shown as JSON so
//! that an admin (or a script) can see exactly how Switchboard reads it.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use sip_core::headers::{Contact, NameAddr, Via};
use sip_core::params::Params;
use sip_core::sdp::SessionDescription;
use sip_core::{HeaderName, Host, Message, ParseError, Uri};
use std::io::Read;
use std::process::ExitCode;

pub fn run(file: &str, compact: bool) -> ExitCode {
    let data = if file == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map(|_| buf)
    } else {
        std::fs::read(file)
    };
    let data = match data {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot read {file}: {e}");
            return ExitCode::from(2);
        }
    };
    match to_json(Bytes::from(data)) {
        Ok(v) => {
            let text = if compact {
                serde_json::to_string(&v)
            } else {
                serde_json::to_string_pretty(&v)
            };
            println!("{}", text.unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Parses and validates the message and renders it; any fault is the error.
pub fn to_json(data: Bytes) -> Result<Value, ParseError> {
    let msg = Message::parse(data)?;
    msg.validate()?;
    let mut out = Map::new();
    if let Some(method) = msg.method() {
        let uri = msg.request_uri_str().unwrap_or_default();
        out.insert(
            "request".into(),
            json!({
                "method": method.as_str(),
                "uri": uri,
                "uri_parts": msg.request_uri().map(|u| uri_json(&u)),
            }),
        );
    } else {
        out.insert(
            "response".into(),
            json!({ "status": msg.status(), "reason": msg.reason() }),
        );
    }
    let mut headers = Vec::new();
    for h in msg.headers() {
        let mut entry = Map::new();
        entry.insert("name".into(), json!(h.name.as_str().unwrap_or(h.name_text)));
        if h.name.as_str() != Some(h.name_text) {
            entry.insert("written_as".into(), json!(h.name_text));
        }
        entry.insert("value".into(), json!(h.value));
        if let Some(parsed) = typed(h.name, h.value)? {
            entry.insert("parsed".into(), parsed);
        }
        headers.push(Value::Object(entry));
    }
    out.insert("headers".into(), Value::Array(headers));
    let body = msg.body();
    out.insert("body_length".into(), json!(body.len()));
    if !body.is_empty() {
        match std::str::from_utf8(body) {
            Ok(text) => out.insert("body".into(), json!(text)),
            Err(_) => out.insert("body_hex".into(), json!(hex(body))),
        };
        let is_sdp = msg
            .content_type()?
            .is_some_and(|ct| ct.is("application", "sdp"));
        if is_sdp {
            let sdp = SessionDescription::parse(body)
                .map_err(|e| ParseError::Malformed(format!("bad SDP body: {e}")))?;
            out.insert(
                "sdp".into(),
                serde_json::to_value(&sdp).unwrap_or(Value::Null),
            );
        }
    }
    Ok(Value::Object(out))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn params_json(p: &Params<'_>) -> Value {
    let mut m = Map::new();
    for (k, v) in p.iter() {
        m.insert(k.to_string(), v.map_or(Value::Bool(true), |v| json!(v)));
    }
    Value::Object(m)
}

fn host_json(h: &Host<'_>) -> Value {
    json!(h.to_string())
}

fn uri_json(u: &Uri<'_>) -> Value {
    match u {
        Uri::Sip(s) => json!({
            "scheme": if s.secure { "sips" } else { "sip" },
            "user": s.user,
            "password": s.password,
            "host": host_json(&s.host),
            "port": s.port,
            "params": params_json(&s.params),
            "headers": s.headers,
        }),
        Uri::Tel(t) => {
            json!({ "scheme": "tel", "number": t.number, "params": params_json(&t.params) })
        }
        Uri::Other { scheme, raw } => json!({ "scheme": scheme, "opaque": raw }),
    }
}

fn name_addr_json(n: &NameAddr<'_>) -> Value {
    json!({
        "display_name": n.display_name_text(),
        "uri": uri_json(&n.uri),
        "params": params_json(&n.params),
    })
}

fn via_json(v: &Via<'_>) -> Value {
    json!({
        "protocol": format!("{}/{}", v.protocol.0, v.protocol.1),
        "transport": v.transport,
        "host": host_json(&v.host),
        "port": v.port,
        "params": params_json(&v.params),
    })
}

fn list<'a, T>(
    value: &'a str,
    parse: impl Fn(&'a str) -> Result<T, ParseError>,
    show: impl Fn(&T) -> Value,
) -> Result<Value, ParseError> {
    let mut out = Vec::new();
    for item in sip_core::headers::split_list(value) {
        out.push(show(&parse(item)?));
    }
    Ok(Value::Array(out))
}

/// The typed reading of a header, for the headers `sip-core` knows.
fn typed(name: HeaderName, value: &str) -> Result<Option<Value>, ParseError> {
    use sip_core::headers as h;
    Ok(Some(match name {
        HeaderName::Via => list(value, Via::parse, via_json)?,
        HeaderName::From | HeaderName::To => {
            let label = if name == HeaderName::From {
                "From"
            } else {
                "To"
            };
            name_addr_json(&NameAddr::parse(value, label)?)
        }
        HeaderName::Contact => list(value, Contact::parse, |c| match c {
            Contact::Star => json!("*"),
            Contact::Addr(a) => name_addr_json(a),
        })?,
        HeaderName::Route | HeaderName::RecordRoute | HeaderName::Path => {
            list(value, |v| NameAddr::parse(v, name.label()), name_addr_json)?
        }
        HeaderName::CSeq => {
            let c = h::CSeq::parse(value)?;
            json!({ "seq": c.seq, "method": c.method.as_str() })
        }
        HeaderName::CallId => json!(h::parse_call_id(value)?),
        HeaderName::MaxForwards => json!(h::parse_max_forwards(value)?),
        HeaderName::Expires
        | HeaderName::MinExpires
        | HeaderName::RSeq
        | HeaderName::ContentLength => {
            json!(h::parse_delta(name.as_str().unwrap_or(""), value)?)
        }
        HeaderName::ContentType => {
            let t = h::MediaType::parse(value)?;
            json!({ "type": t.mtype, "subtype": t.subtype, "params": params_json(&t.params) })
        }
        HeaderName::Allow
        | HeaderName::Supported
        | HeaderName::Require
        | HeaderName::ProxyRequire
        | HeaderName::Unsupported => json!(h::split_list(value).collect::<Vec<_>>()),
        HeaderName::Event | HeaderName::SubscriptionState => {
            let e = h::Event::parse(value, "Event")?;
            json!({ "value": e.value, "params": params_json(&e.params) })
        }
        HeaderName::SessionExpires => {
            let s = h::SessionExpires::parse(value)?;
            json!({ "seconds": s.delta, "params": params_json(&s.params) })
        }
        HeaderName::RAck => {
            let r = h::RAck::parse(value)?;
            json!({ "rseq": r.rseq, "cseq": r.cseq, "method": r.method.as_str() })
        }
        HeaderName::Authorization | HeaderName::ProxyAuthorization => {
            match sip_core::auth::Credentials::parse(value) {
                Ok(c) => auth_json(&c.to_string(), c.scheme()),
                Err(e) => {
                    return Err(ParseError::Malformed(format!(
                        "bad {} header: {e}",
                        name.as_str().unwrap_or("")
                    )));
                }
            }
        }
        HeaderName::WwwAuthenticate | HeaderName::ProxyAuthenticate => {
            match sip_core::auth::Challenge::parse(value) {
                Ok(c) => auth_json(&c.to_string(), c.scheme()),
                Err(e) => {
                    return Err(ParseError::Malformed(format!(
                        "bad {} header: {e}",
                        name.as_str().unwrap_or("")
                    )));
                }
            }
        }
        _ => return Ok(None),
    }))
}

/// Auth headers shown as scheme plus a parameter map.
fn auth_json(text: &str, scheme: &str) -> Value {
    let rest = text.get(scheme.len()..).unwrap_or("").trim();
    let mut m = Map::new();
    for item in sip_core::headers::split_list(rest) {
        if let Some((k, v)) = item.split_once('=') {
            m.insert(
                k.trim().to_string(),
                json!(sip_core::scan::unquote(v.trim())),
            );
        }
    }
    json!({ "scheme": scheme, "params": m })
}
