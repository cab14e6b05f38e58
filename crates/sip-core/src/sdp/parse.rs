//! Parsing SDP bodies (RFC 8866 §5): line splitting, per-field parsers and the order rules.

use super::*;

/// Error values can echo attacker-controlled input into logs; cap what they carry.
pub(super) fn snippet(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

pub(super) fn bad(
    line: usize,
    field: &'static str,
    value: &str,
    problem: &'static str,
) -> SdpError {
    SdpError::BadValue {
        line,
        field,
        value: snippet(value),
        problem,
    }
}

/// Parses a decimal field, telling "not a number" apart from "too large" in the error.
pub(super) fn number<T: std::str::FromStr>(
    line: usize,
    field: &'static str,
    value: &str,
) -> Result<T, SdpError> {
    value.parse().map_err(|_| {
        let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
        bad(
            line,
            field,
            value,
            if digits {
                "is out of range"
            } else {
                "is not a number"
            },
        )
    })
}

/// Splits a value into exactly `N` whitespace-separated fields.
pub(super) fn fields<'a, const N: usize>(
    line: usize,
    field: &'static str,
    value: &'a str,
    problem: &'static str,
) -> Result<[&'a str; N], SdpError> {
    let mut out = [""; N];
    let mut parts = value.split_ascii_whitespace();
    for slot in &mut out {
        *slot = parts
            .next()
            .ok_or_else(|| bad(line, field, value, problem))?;
    }
    if parts.next().is_some() {
        return Err(bad(line, field, value, problem));
    }
    Ok(out)
}

/// One `<type>=<value>` line, already checked for encoding.
pub(super) struct Line<'a> {
    number: usize,
    letter: char,
    value: &'a str,
}

/// Every line type RFC 8866 defines; anything else is refused rather than dropped, since a
/// typo'd letter silently vanishing would change the session's meaning.
pub(super) const KNOWN_TYPES: &[u8] = b"vosiuepcbtrzkam";

pub(super) fn split_line(number: usize, raw: &[u8]) -> Result<Line<'_>, SdpError> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let not_a_field = || SdpError::NotAField {
        line: number,
        text: snippet(&String::from_utf8_lossy(raw)),
    };
    let (&letter, rest) = raw.split_first().ok_or_else(not_a_field)?;
    let value = rest.strip_prefix(b"=").ok_or_else(not_a_field)?;
    if !letter.is_ascii_graphic() {
        return Err(not_a_field());
    }
    if !KNOWN_TYPES.contains(&letter) {
        return Err(SdpError::UnknownType {
            line: number,
            letter: char::from(letter),
        });
    }
    if value.iter().any(|&b| b == 0 || b == b'\r') {
        return Err(SdpError::ControlCharacter { line: number });
    }
    let value = std::str::from_utf8(value).map_err(|_| SdpError::InvalidUtf8 { line: number })?;
    Ok(Line {
        number,
        letter: char::from(letter),
        value,
    })
}

pub(super) fn parse_version(line: &Line<'_>) -> Result<u32, SdpError> {
    let version: u32 = number(line.number, "v=", line.value.trim())?;
    if version != 0 {
        return Err(bad(
            line.number,
            "v=",
            line.value,
            "is not a supported version (only 0)",
        ));
    }
    Ok(version)
}

pub(super) fn parse_origin(line: &Line<'_>) -> Result<Origin, SdpError> {
    let [username, id, version, nettype, addrtype, address] = fields(
        line.number,
        "o=",
        line.value,
        "must have 6 fields: username sess-id sess-version nettype addrtype address",
    )?;
    Ok(Origin {
        username: username.to_owned(),
        session_id: number(line.number, "o= sess-id", id)?,
        session_version: number(line.number, "o= sess-version", version)?,
        nettype: nettype.to_owned(),
        addrtype: addrtype.to_owned(),
        unicast_address: address.to_owned(),
    })
}

pub(super) fn parse_connection(line: &Line<'_>) -> Result<Connection, SdpError> {
    let [nettype, addrtype, address] = fields(
        line.number,
        "c=",
        line.value,
        "must have 3 fields: nettype addrtype address",
    )?;
    Ok(Connection {
        nettype: nettype.to_owned(),
        addrtype: addrtype.to_owned(),
        address: address.to_owned(),
    })
}

pub(super) fn parse_bandwidth(line: &Line<'_>) -> Result<Bandwidth, SdpError> {
    let (bwtype, value) = line
        .value
        .split_once(':')
        .filter(|(bwtype, _)| !bwtype.is_empty())
        .ok_or_else(|| bad(line.number, "b=", line.value, "is not <bwtype>:<bandwidth>"))?;
    Ok(Bandwidth {
        bwtype: bwtype.to_owned(),
        bandwidth: number(line.number, "b= bandwidth", value.trim())?,
    })
}

pub(super) fn parse_timing(line: &Line<'_>) -> Result<Timing, SdpError> {
    let [start, stop] = fields(
        line.number,
        "t=",
        line.value,
        "must have 2 fields: start-time stop-time",
    )?;
    Ok(Timing {
        start: number(line.number, "t= start-time", start)?,
        stop: number(line.number, "t= stop-time", stop)?,
        repeats: Vec::new(),
    })
}

pub(super) fn parse_attribute(line: &Line<'_>) -> Result<Attribute, SdpError> {
    let (name, value) = match line.value.split_once(':') {
        Some((name, value)) => (name, Some(value.to_owned())),
        None => (line.value, None),
    };
    if name.is_empty() {
        return Err(bad(
            line.number,
            "a=",
            line.value,
            "has an empty attribute name",
        ));
    }
    Ok(Attribute {
        name: name.to_owned(),
        value,
    })
}

pub(super) fn parse_media(line: &Line<'_>) -> Result<MediaDescription, SdpError> {
    let mut parts = line.value.split_ascii_whitespace();
    let short = || {
        bad(
            line.number,
            "m=",
            line.value,
            "must be <media> <port>[/<count>] <proto> <fmt> ...",
        )
    };
    let media = parts.next().ok_or_else(short)?;
    let port_field = parts.next().ok_or_else(short)?;
    let proto = parts.next().ok_or_else(short)?;
    let formats: Vec<String> = parts.map(str::to_owned).collect();
    if formats.is_empty() {
        return Err(bad(line.number, "m=", line.value, "has no media formats"));
    }
    let (port, port_count) = match port_field.split_once('/') {
        Some((port, count)) => (port, Some(number(line.number, "m= port count", count)?)),
        None => (port_field, None),
    };
    Ok(MediaDescription {
        media: media.to_owned(),
        port: number(line.number, "m= port", port)?,
        port_count,
        proto: proto.to_owned(),
        formats,
        information: None,
        connections: Vec::new(),
        bandwidths: Vec::new(),
        encryption_key: None,
        attributes: Vec::new(),
    })
}

pub(super) fn set_once<T>(slot: &mut Option<T>, value: T, line: &Line<'_>) -> Result<(), SdpError> {
    if slot.is_some() {
        return Err(SdpError::Duplicate {
            line: line.number,
            letter: line.letter,
        });
    }
    *slot = Some(value);
    Ok(())
}

impl SessionDescription {
    /// Parses an SDP body.
    ///
    /// Accepts CRLF or bare LF line ends and trailing empty lines. `v=`, `o=` and `s=` must
    /// come first and in that order; after them session-level lines are accepted in any order
    /// (deployed stacks do not all follow RFC 8866 order) up to the first `m=`, after which
    /// only media-level lines (`i=`, `c=`, `b=`, `k=`, `a=`, `m=`) may appear. A missing
    /// `t=` is tolerated. Unknown line type letters are refused.
    pub fn parse(input: &[u8]) -> Result<SessionDescription, SdpError> {
        let mut raw_lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        // Trailing blank lines are an artefact of framing (a final CRLF, padding), not content.
        while raw_lines
            .last()
            .is_some_and(|l| l.is_empty() || *l == b"\r")
        {
            raw_lines.pop();
        }
        let mut lines = raw_lines
            .iter()
            .enumerate()
            .map(|(index, raw)| split_line(index + 1, raw));
        let end_line = raw_lines.len() + 1;

        let mut mandatory = |expected: char| -> Result<Line<'_>, SdpError> {
            match lines.next() {
                None => Err(SdpError::UnexpectedEnd {
                    line: end_line,
                    expected,
                }),
                Some(line) => {
                    let line = line?;
                    if line.letter == expected {
                        Ok(line)
                    } else {
                        Err(SdpError::UnexpectedLine {
                            line: line.number,
                            expected,
                            found: line.letter,
                        })
                    }
                }
            }
        };
        let version = parse_version(&mandatory('v')?)?;
        let origin = parse_origin(&mandatory('o')?)?;
        let session_name = mandatory('s')?.value.to_owned();

        let mut sdp = SessionDescription {
            version,
            origin,
            session_name,
            information: None,
            uri: None,
            emails: Vec::new(),
            phones: Vec::new(),
            connection: None,
            bandwidths: Vec::new(),
            timings: Vec::new(),
            time_zones: None,
            encryption_key: None,
            attributes: Vec::new(),
            media: Vec::new(),
        };

        for line in lines {
            let line = line?;
            if line.letter == 'm' {
                sdp.media.push(parse_media(&line)?);
                continue;
            }
            match sdp.media.last_mut() {
                Some(media) => media.parse_line(&line)?,
                None => sdp.parse_session_line(&line)?,
            }
        }
        Ok(sdp)
    }

    pub(super) fn parse_session_line(&mut self, line: &Line<'_>) -> Result<(), SdpError> {
        let value = line.value;
        match line.letter {
            'i' => set_once(&mut self.information, value.to_owned(), line)?,
            'u' => set_once(&mut self.uri, value.to_owned(), line)?,
            'e' => self.emails.push(value.to_owned()),
            'p' => self.phones.push(value.to_owned()),
            'c' => set_once(&mut self.connection, parse_connection(line)?, line)?,
            'b' => self.bandwidths.push(parse_bandwidth(line)?),
            't' => self.timings.push(parse_timing(line)?),
            'r' => self
                .timings
                .last_mut()
                .ok_or(SdpError::RepeatWithoutTime { line: line.number })?
                .repeats
                .push(value.to_owned()),
            'z' => set_once(&mut self.time_zones, value.to_owned(), line)?,
            'k' => set_once(&mut self.encryption_key, value.to_owned(), line)?,
            'a' => self.attributes.push(parse_attribute(line)?),
            // v, o and s were consumed up front, so any other occurrence is a repeat.
            letter => {
                return Err(SdpError::Duplicate {
                    line: line.number,
                    letter,
                });
            }
        }
        Ok(())
    }
}

impl MediaDescription {
    pub(super) fn parse_line(&mut self, line: &Line<'_>) -> Result<(), SdpError> {
        match line.letter {
            'i' => set_once(&mut self.information, line.value.to_owned(), line)?,
            'c' => self.connections.push(parse_connection(line)?),
            'b' => self.bandwidths.push(parse_bandwidth(line)?),
            'k' => set_once(&mut self.encryption_key, line.value.to_owned(), line)?,
            'a' => self.attributes.push(parse_attribute(line)?),
            letter => {
                return Err(SdpError::NotInMedia {
                    line: line.number,
                    letter,
                });
            }
        }
        Ok(())
    }
}
