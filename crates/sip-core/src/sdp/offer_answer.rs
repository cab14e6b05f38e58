//! Offer/answer (RFC 3264): building an audio offer, answering one, and tracking the
//! negotiation state of a dialog.

use super::*;
use std::net::IpAddr;

impl SessionDescription {
    /// `ip`:`rtp_port` with one `rtpmap` per codec `(payload type, encoding, clock rate)`,
    /// `fmtp:<pt> 0-16` for every `telephone-event` codec (DTMF digits, RFC 4733),
    /// `ptime:20` and `sendrecv`.
    ///
    /// The session version starts equal to the session id, as in the RFC 3264 examples;
    /// bump `origin.session_version` for every re-offer.
    pub fn new_audio_offer(
        origin_user: &str,
        session_id: u64,
        ip: IpAddr,
        rtp_port: u16,
        codecs: &[(u8, &str, u32)],
    ) -> SessionDescription {
        let addrtype = match ip {
            IpAddr::V4(_) => "IP4",
            IpAddr::V6(_) => "IP6",
        };
        let mut attributes = Vec::new();
        for &(payload_type, encoding, clock_rate) in codecs {
            let rtpmap = RtpMap {
                payload_type,
                encoding: encoding.to_owned(),
                clock_rate,
                channels: None,
            };
            attributes.push(Attribute::new("rtpmap", Some(rtpmap.to_string())));
        }
        for &(payload_type, encoding, _) in codecs {
            if encoding.eq_ignore_ascii_case("telephone-event") {
                attributes.push(Attribute::new("fmtp", Some(format!("{payload_type} 0-16"))));
            }
        }
        attributes.push(Attribute::new("ptime", Some("20".to_owned())));
        attributes.push(Direction::SendRecv.to_attribute());

        SessionDescription {
            version: 0,
            origin: Origin {
                username: origin_user.to_owned(),
                session_id,
                session_version: session_id,
                nettype: "IN".to_owned(),
                addrtype: addrtype.to_owned(),
                unicast_address: ip.to_string(),
            },
            session_name: "-".to_owned(),
            information: None,
            uri: None,
            emails: Vec::new(),
            phones: Vec::new(),
            connection: Some(Connection {
                nettype: "IN".to_owned(),
                addrtype: addrtype.to_owned(),
                address: ip.to_string(),
            }),
            bandwidths: Vec::new(),
            timings: vec![Timing {
                start: 0,
                stop: 0,
                repeats: Vec::new(),
            }],
            time_zones: None,
            encryption_key: None,
            attributes: Vec::new(),
            media: vec![MediaDescription {
                media: "audio".to_owned(),
                port: rtp_port,
                port_count: None,
                proto: "RTP/AVP".to_owned(),
                formats: codecs.iter().map(|(pt, _, _)| pt.to_string()).collect(),
                information: None,
                connections: Vec::new(),
                bandwidths: Vec::new(),
                encryption_key: None,
                attributes,
            }],
        }
    }
}

/// The encoding of static RTP payload types (RFC 3551 table 4) for offers that list
/// them without an `a=rtpmap`.
pub(super) fn static_payload(pt: u8) -> Option<(&'static str, u32)> {
    match pt {
        0 => Some(("PCMU", 8000)),
        3 => Some(("GSM", 8000)),
        8 => Some(("PCMA", 8000)),
        9 => Some(("G722", 8000)),
        18 => Some(("G729", 8000)),
        _ => None,
    }
}

impl MediaDescription {
    /// The encoding of format `pt` in this section: its `a=rtpmap`, else the RFC 3551
    /// static assignment.
    pub fn codec_of(&self, pt: u8) -> Option<RtpMap> {
        self.rtpmap(pt).or_else(|| {
            static_payload(pt).map(|(encoding, clock_rate)| RtpMap {
                payload_type: pt,
                encoding: encoding.to_owned(),
                clock_rate,
                channels: None,
            })
        })
    }

    /// The RTP payload types of this section, in order (non-numeric formats skipped).
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats.iter().filter_map(|f| f.parse().ok())
    }
}

pub(super) fn same_codec(map: &RtpMap, encoding: &str, clock_rate: u32) -> bool {
    map.encoding.eq_ignore_ascii_case(encoding) && map.clock_rate == clock_rate
}

pub(super) fn is_dtmf(encoding: &str) -> bool {
    encoding.eq_ignore_ascii_case("telephone-event")
}

/// The audio stream an offer/answer exchange settled on, read from the far end's
/// description: where to send, with which codec and payload type, and which direction
/// the far end asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioStream {
    /// Index of the `m=` section.
    pub index: usize,
    /// The far end's RTP address (its `c=`).
    pub address: IpAddr,
    /// The far end's RTP port.
    pub port: u16,
    /// The voice codec, with the payload type the far end uses for it.
    pub codec: RtpMap,
    /// The payload type of `telephone-event` (RFC 4733), when both sides have it.
    pub telephone_event: Option<u8>,
    /// The direction in the far end's description, from its point of view.
    pub direction: Direction,
    /// `a=ptime`, when given.
    pub ptime: Option<u32>,
}

impl SessionDescription {
    /// The first audio stream of this (remote) description that is not rejected and
    /// has a codec in `supported` `(payload type, encoding, clock rate)`: for an offer,
    /// the codec an answer built by [`SessionDescription::answer`] picks; for an
    /// answer, the codec the far end chose. `None` when there is none (answer 488).
    pub fn audio_stream(&self, supported: &[(u8, &str, u32)]) -> Option<AudioStream> {
        self.media.iter().enumerate().find_map(|(index, m)| {
            if m.media != "audio" || m.port == 0 || !m.proto.starts_with("RTP/") {
                return None;
            }
            let codec = m.payload_types().find_map(|pt| {
                let map = m.codec_of(pt)?;
                let ours = supported
                    .iter()
                    .any(|(_, e, r)| !is_dtmf(e) && same_codec(&map, e, *r));
                ours.then_some(map)
            })?;
            let telephone_event = m.payload_types().find(|pt| {
                m.codec_of(*pt)
                    .is_some_and(|map| is_dtmf(&map.encoding) && map.clock_rate == codec.clock_rate)
            });
            let telephone_event =
                telephone_event.filter(|_| supported.iter().any(|(_, e, _)| is_dtmf(e)));
            let address = self.effective_connection(m)?.ip()?;
            Some(AudioStream {
                index,
                address,
                port: m.port,
                codec,
                telephone_event,
                direction: self.effective_direction(m),
                ptime: m.ptime(),
            })
        })
    }

    /// The answer to `offer` (RFC 3264 §6): one `m=` line per offered one, in the same
    /// order; the first acceptable audio stream answered on `ip`:`rtp_port` with every
    /// offered codec we support (in the offerer's order and with its payload type
    /// numbers, §6.1) plus telephone-event when both have it, and the direction the
    /// offer allows nearest to `wanted` (sendonly offered: we can only receive); every
    /// other stream rejected with port 0.
    ///
    /// Returns `None` when no audio stream can be accepted: answer the request with
    /// 488 Not Acceptable Here.
    pub fn answer(
        offer: &SessionDescription,
        origin_user: &str,
        session_id: u64,
        ip: IpAddr,
        rtp_port: u16,
        supported: &[(u8, &str, u32)],
        wanted: Direction,
    ) -> Option<SessionDescription> {
        let chosen = offer.audio_stream(supported)?;
        let mut answer =
            SessionDescription::new_audio_offer(origin_user, session_id, ip, rtp_port, &[]);
        let template = answer.media.pop()?;
        for (index, offered) in offer.media.iter().enumerate() {
            if index != chosen.index {
                answer.media.push(MediaDescription {
                    port: 0,
                    attributes: Vec::new(),
                    connections: Vec::new(),
                    bandwidths: Vec::new(),
                    ..offered.clone()
                });
                continue;
            }
            let mut m = template.clone();
            m.attributes.clear();
            m.formats.clear();
            for pt in offered.payload_types() {
                let Some(map) = offered.codec_of(pt) else {
                    continue;
                };
                let ours = if is_dtmf(&map.encoding) {
                    Some(pt) == chosen.telephone_event
                } else {
                    supported
                        .iter()
                        .any(|(_, e, r)| !is_dtmf(e) && same_codec(&map, e, *r))
                };
                if !ours {
                    continue;
                }
                m.formats.push(pt.to_string());
                m.attributes
                    .push(Attribute::new("rtpmap", Some(map.to_string())));
                if is_dtmf(&map.encoding) {
                    let events = offered.fmtp(pt).unwrap_or("0-15").to_owned();
                    m.attributes
                        .push(Attribute::new("fmtp", Some(format!("{pt} {events}"))));
                }
            }
            m.attributes.push(Attribute::new(
                "ptime",
                Some(chosen.ptime.unwrap_or(20).to_string()),
            ));
            m.attributes
                .push(answer_direction(chosen.direction, wanted).to_attribute());
            answer.media.push(m);
        }
        Some(answer)
    }
}

/// The direction to answer with when the offer says `offered` and we would like
/// `wanted` (RFC 3264 §6.1): what we may do is the offer's direction reversed, and we
/// do at most that.
pub fn answer_direction(offered: Direction, wanted: Direction) -> Direction {
    let allowed = offered.reversed();
    let (send, recv) = (
        allowed.sends() && wanted.sends(),
        allowed.receives() && wanted.receives(),
    );
    match (send, recv) {
        (true, true) => Direction::SendRecv,
        (true, false) => Direction::SendOnly,
        (false, true) => Direction::RecvOnly,
        (false, false) => Direction::Inactive,
    }
}

impl Direction {
    /// Whether this side sends media in this direction.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether this side receives media in this direction.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// Where an offer/answer exchange stands in a dialog (RFC 3264 §4, RFC 6337): at most
/// one offer may be outstanding at a time, and a second one is refused (491 in an
/// INVITE or UPDATE, §14.1 of RFC 3261, RFC 3311 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OfferAnswer {
    /// No offer outstanding: either side may make one.
    #[default]
    Stable,
    /// We sent an offer and wait for the answer.
    LocalOffer,
    /// We received an offer and owe the answer.
    RemoteOffer,
}

/// An offer/answer step not allowed in the current [`OfferAnswer`] state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{what} while {state:?}")]
pub struct OfferAnswerError {
    /// What was attempted.
    pub what: &'static str,
    /// The state it was attempted in.
    pub state: OfferAnswer,
}

impl OfferAnswer {
    /// We send an offer. Refused while any offer is outstanding (glare: the far end's
    /// pending offer wins and ours waits, or ours is pending).
    pub fn send_offer(&mut self) -> Result<(), OfferAnswerError> {
        self.step(
            OfferAnswer::Stable,
            OfferAnswer::LocalOffer,
            "sending an offer",
        )
    }

    /// An offer arrived. Refused while one is outstanding: answer 491.
    pub fn receive_offer(&mut self) -> Result<(), OfferAnswerError> {
        self.step(
            OfferAnswer::Stable,
            OfferAnswer::RemoteOffer,
            "receiving an offer",
        )
    }

    /// We answer the far end's offer.
    pub fn send_answer(&mut self) -> Result<(), OfferAnswerError> {
        self.step(
            OfferAnswer::RemoteOffer,
            OfferAnswer::Stable,
            "sending an answer",
        )
    }

    /// The answer to our offer arrived.
    pub fn receive_answer(&mut self) -> Result<(), OfferAnswerError> {
        self.step(
            OfferAnswer::LocalOffer,
            OfferAnswer::Stable,
            "receiving an answer",
        )
    }

    /// Our offer was refused (a non-2xx final response to the request that carried
    /// it): back to the state before it (RFC 3264 §4, RFC 6337 §3.1.1).
    pub fn offer_rejected(&mut self) {
        *self = OfferAnswer::Stable;
    }

    pub(super) fn step(
        &mut self,
        from: OfferAnswer,
        to: OfferAnswer,
        what: &'static str,
    ) -> Result<(), OfferAnswerError> {
        if *self != from {
            return Err(OfferAnswerError { what, state: *self });
        }
        *self = to;
        Ok(())
    }
}
