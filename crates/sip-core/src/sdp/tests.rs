use super::*;
use proptest::prelude::*;
use std::net::IpAddr;

fn parse(text: &str) -> SessionDescription {
    SessionDescription::parse(text.as_bytes()).unwrap()
}

fn error(text: &str) -> String {
    SessionDescription::parse(text.as_bytes())
        .unwrap_err()
        .to_string()
}

/// Parses, then checks that writing and re-parsing gives the same value.
fn round_trip(text: &str) -> SessionDescription {
    let sdp = parse(text);
    let written = sdp.to_string();
    assert_eq!(SessionDescription::parse(written.as_bytes()).unwrap(), sdp);
    sdp
}

// RFC 3264 §10.1, Bob's second offer.
const BASERIP_LIKE_OFFER: &str = "v=0\r\n\
    o=- 1 2 IN IP4 192.0.2.10\r\n\
    s=-\r\n\
    c=IN IP4 192.0.2.10\r\n\
    t=0 0\r\n\
    m=video 5000 RTP/AVP 96\r\n\
    a=rtpmap:96 H264/90000\r\n\
    m=audio 4000 RTP/AVP 9 8 0 101\r\n\
    a=rtpmap:101 telephone-event/8000\r\n\
    a=fmtp:101 0-15\r\n\
    a=sendonly\r\n";

const OURS: &[(u8, &str, u32)] = &[
    (0, "PCMU", 8000),
    (8, "PCMA", 8000),
    (101, "telephone-event", 8000),
];

#[test]
fn answer_keeps_m_line_order_rejects_other_streams_and_reverses_direction() {
    let offer = parse(BASERIP_LIKE_OFFER);
    let ip: IpAddr = "192.0.2.20".parse().unwrap();
    let answer =
        SessionDescription::answer(&offer, "bob", 7, ip, 6000, OURS, Direction::SendRecv).unwrap();
    assert_eq!(answer.media.len(), 2);
    assert_eq!(answer.media[0].media, "video");
    assert_eq!(answer.media[0].port, 0);
    let audio = &answer.media[1];
    assert_eq!(audio.port, 6000);
    // G.722 is not ours; PCMA comes first because the offerer listed it first.
    assert_eq!(audio.formats, vec!["8", "0", "101"]);
    assert_eq!(audio.direction(), Some(Direction::RecvOnly));
    assert_eq!(audio.fmtp(101), Some("0-15"));
    // The answer parses back, and read from the offerer's side it names PCMA.
    let back = SessionDescription::parse(&answer.to_bytes()).unwrap();
    let stream = back.audio_stream(OURS).unwrap();
    assert_eq!(stream.codec.encoding, "PCMA");
    assert_eq!(stream.port, 6000);
    assert_eq!(stream.telephone_event, Some(101));
    let offered = offer.audio_stream(OURS).unwrap();
    assert_eq!(offered.index, 1);
    assert_eq!(offered.direction, Direction::SendOnly);
    assert_eq!(offered.address, "192.0.2.10".parse::<IpAddr>().unwrap());
}

#[test]
fn an_ipv6_offer_is_answered_with_its_address_bare_or_in_brackets() {
    // SIPp's `[local_ip]` puts an IPv6 address in brackets; RFC 8866 writes it bare.
    for address in ["::1", "[::1]"] {
        let offer = SessionDescription::parse(
            format!(
                "v=0\r\no=sipp 1 1 IN IP6 {address}\r\ns=-\r\nc=IN IP6 {address}\r\n\
                 t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let stream = offer.audio_stream(OURS).expect(address);
        assert_eq!(stream.address, "::1".parse::<IpAddr>().unwrap());
        let ip: IpAddr = "::1".parse().unwrap();
        let answer =
            SessionDescription::answer(&offer, "us", 1, ip, 7000, OURS, Direction::SendRecv)
                .expect(address);
        let text = String::from_utf8(answer.to_bytes()).unwrap();
        assert!(text.contains("c=IN IP6 ::1\r\n"), "{text}");
    }
}

#[test]
fn no_common_codec_means_no_answer() {
    let offer = parse(BASERIP_LIKE_OFFER);
    let ip: IpAddr = "192.0.2.20".parse().unwrap();
    assert!(
        SessionDescription::answer(
            &offer,
            "b",
            1,
            ip,
            1,
            &[(96, "opus", 48000)],
            Direction::SendRecv
        )
        .is_none()
    );
}

#[test]
fn answer_directions() {
    use Direction::*;
    assert_eq!(answer_direction(SendRecv, SendRecv), SendRecv);
    assert_eq!(answer_direction(SendOnly, SendRecv), RecvOnly);
    assert_eq!(answer_direction(RecvOnly, SendRecv), SendOnly);
    assert_eq!(answer_direction(Inactive, SendRecv), Inactive);
    assert_eq!(answer_direction(SendRecv, SendOnly), SendOnly);
    assert_eq!(answer_direction(SendOnly, SendOnly), Inactive);
}

#[test]
fn one_offer_at_a_time() {
    let mut oa = OfferAnswer::default();
    oa.send_offer().unwrap();
    assert!(oa.receive_offer().is_err(), "glare: answer 491");
    oa.receive_answer().unwrap();
    oa.receive_offer().unwrap();
    assert!(oa.send_offer().is_err());
    oa.send_answer().unwrap();
    assert_eq!(oa, OfferAnswer::Stable);
    oa.send_offer().unwrap();
    oa.offer_rejected();
    assert_eq!(oa, OfferAnswer::Stable);
}

const RFC3264_REOFFER: &str = "v=0\r\n\
    o=bob 2890844730 2890844731 IN IP4 host.example.com\r\n\
    s=\r\n\
    c=IN IP4 host.example.com\r\n\
    t=0 0\r\n\
    m=audio 65422 RTP/AVP 0\r\n\
    a=rtpmap:0 PCMU/8000\r\n\
    m=video 0 RTP/AVP 31\r\n\
    m=video 53000 RTP/AVP 32\r\n\
    a=rtpmap:32 MPV/90000\r\n\
    m=audio 51434 RTP/AVP 110\r\n\
    a=rtpmap:110 telephone-events/8000\r\n\
    a=recvonly\r\n";

// RFC 3264 §10.2, Alice's initial one-of-N offer.
const RFC3264_ONE_OF_N: &str = "v=0\n\
    o=alice 2890844526 2890844526 IN IP4 host.anywhere.com\n\
    s=\n\
    c=IN IP4 host.anywhere.com\n\
    t=0 0\n\
    m=audio 62986 RTP/AVP 0 4 18\n\
    a=rtpmap:0 PCMU/8000\n\
    a=rtpmap:4 G723/8000\n\
    a=rtpmap:18 G729/8000\n\
    a=inactive\n";

// Bodies of the RFC 4475 / RFC 5118 torture messages named after each constant.
const IPV6_IN_SDP: &str = "v=0\r\n\
    o=assistant 971731711378798081 0 IN IP6 2001:db8::20\r\n\
    s=Live video feed for today's meeting\r\n\
    c=IN IP6 2001:db8::20\r\n\
    t=3338481189 3370017201\r\n\
    m=audio 6000 RTP/AVP 2\r\n\
    a=rtpmap:2 G726-32/8000\r\n\
    m=video 6024 RTP/AVP 107\r\n\
    a=rtpmap:107 H263-1998/90000\r\n";

const MULT_IP_IN_SDP: &str = "v=0\r\n\
    o=bob 280744730 28977631 IN IP4 host.example.com\r\n\
    s=\r\n\
    t=0 0\r\n\
    m=audio 22334 RTP/AVP 0\r\n\
    c=IN IP4 192.0.2.1\r\n\
    m=video 6024 RTP/AVP 107\r\n\
    c=IN IP6 2001:db8::1\r\n\
    a=rtpmap:107 H263-1998/90000\r\n";

const IPV4_MAPPED_IPV6: &str = "v=0\r\n\
    o=assistant 971731711378798081 0 IN IP6 ::ffff:192.0.2.2\r\n\
    s=Call me soon, please!\r\n\
    c=IN IP6 ::ffff:192.0.2.2\r\n\
    t=3338481189 3370017201\r\n\
    m=audio 6000 RTP/AVP 2\r\n\
    a=rtpmap:2 G726-32/8000\r\n\
    m=video 6024 RTP/AVP 107\r\n\
    a=rtpmap:107 H263-1998/90000\r\n";

const SDP01: &str = "v=0\r\n\
    o=mhandley 29739 7272939 IN IP4 192.0.2.5\r\n\
    s=-\r\n\
    c=IN IP4 192.0.2.5\r\n\
    t=0 0\r\n\
    m=audio 49217 RTP/AVP 0 12\r\n\
    m=video 3227 RTP/AVP 31\r\n\
    a=rtpmap:31 LPC\r\n";

// Every line type, several of each where allowed, to exercise the writer's ordering.
const EVERYTHING: &str = "v=0\r\n\
    o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5\r\n\
    s=SDP Seminar\r\n\
    i=A Seminar on the session description protocol\r\n\
    u=http://www.example.com/seminars/sdp.pdf\r\n\
    e=j.doe@example.com (Jane Doe)\r\n\
    p=+1 617 555-6011\r\n\
    c=IN IP4 224.2.17.12/127\r\n\
    b=CT:128\r\n\
    t=2873397496 2873404696\r\n\
    r=7d 1h 0 25h\r\n\
    t=0 0\r\n\
    z=2882844526 -1h 2898848070 0\r\n\
    k=prompt\r\n\
    a=recvonly\r\n\
    a=tool:switchboard\r\n\
    m=audio 49170/2 RTP/SAVPF 0 101\r\n\
    i=voice\r\n\
    c=IN IP6 FF15::101/3\r\n\
    c=IN IP6 FF15::102/3\r\n\
    b=AS:64\r\n\
    k=clear:secret\r\n\
    a=rtpmap:0 PCMU/8000\r\n\
    a=rtpmap:101 telephone-event/8000\r\n\
    a=fmtp:101 0-15\r\n\
    a=ptime:30\r\n\
    a=rtcp:53020 IN IP6 2001:db8::7\r\n\
    a=sendonly\r\n\
    m=application 5000 UDP/DTLS/SCTP webrtc-datachannel\r\n\
    a=sctp-port:5000\r\n";

#[test]
fn parses_rfc3264_reoffer() {
    let sdp = round_trip(RFC3264_REOFFER);
    assert_eq!(sdp.version, 0);
    assert_eq!(
        sdp.origin,
        Origin {
            username: "bob".into(),
            session_id: 2890844730,
            session_version: 2890844731,
            nettype: "IN".into(),
            addrtype: "IP4".into(),
            unicast_address: "host.example.com".into(),
        }
    );
    assert_eq!(sdp.session_name, "");
    assert_eq!(sdp.media.len(), 4);
    assert_eq!(sdp.media[1].port, 0);
    assert_eq!(sdp.media[1].formats, ["31"]);
    assert!(sdp.media[1].attributes.is_empty());
    let dtmf = &sdp.media[3];
    assert_eq!(
        dtmf.rtpmap(110),
        Some(RtpMap {
            payload_type: 110,
            encoding: "telephone-events".into(),
            clock_rate: 8000,
            channels: None,
        })
    );
    assert_eq!(dtmf.direction(), Some(Direction::RecvOnly));
    assert_eq!(sdp.effective_direction(&sdp.media[0]), Direction::SendRecv);
    assert_eq!(
        sdp.effective_connection(dtmf).unwrap().address,
        "host.example.com"
    );
    // The canonical writer reproduces an already-canonical body byte for byte.
    assert_eq!(sdp.to_string(), RFC3264_REOFFER);
}

#[test]
fn parses_bare_lf_and_writes_crlf() {
    let sdp = round_trip(RFC3264_ONE_OF_N);
    assert_eq!(sdp.to_string(), RFC3264_ONE_OF_N.replace('\n', "\r\n"));
    let audio = &sdp.media[0];
    assert_eq!(audio.formats, ["0", "4", "18"]);
    let encodings: Vec<String> = audio.rtpmaps().map(|m| m.encoding).collect();
    assert_eq!(encodings, ["PCMU", "G723", "G729"]);
    assert_eq!(sdp.effective_direction(audio), Direction::Inactive);
}

#[test]
fn parses_ipv6_in_sdp() {
    let sdp = round_trip(IPV6_IN_SDP);
    assert_eq!(sdp.origin.session_id, 971731711378798081);
    assert_eq!(sdp.origin.addrtype, "IP6");
    assert_eq!(sdp.origin.unicast_address, "2001:db8::20");
    assert_eq!(sdp.session_name, "Live video feed for today's meeting");
    let connection = sdp.connection.as_ref().unwrap();
    assert_eq!(connection.address, "2001:db8::20");
    assert_eq!(connection.ip(), Some("2001:db8::20".parse().unwrap()));
    assert_eq!(
        sdp.timings,
        [Timing {
            start: 3338481189,
            stop: 3370017201,
            repeats: vec![],
        }]
    );
    assert_eq!(sdp.media[1].rtpmap(107).unwrap().encoding, "H263-1998");
    assert_eq!(sdp.media[1].rtpmap(107).unwrap().clock_rate, 90000);
}

#[test]
fn parses_mult_ip_in_sdp() {
    let sdp = round_trip(MULT_IP_IN_SDP);
    assert_eq!(sdp.session_name, "");
    assert_eq!(sdp.connection, None);
    let audio = sdp.effective_connection(&sdp.media[0]).unwrap();
    assert_eq!(
        (audio.addrtype.as_str(), audio.address.as_str()),
        ("IP4", "192.0.2.1")
    );
    let video = sdp.effective_connection(&sdp.media[1]).unwrap();
    assert_eq!(
        (video.addrtype.as_str(), video.address.as_str()),
        ("IP6", "2001:db8::1")
    );
}

#[test]
fn parses_ipv4_mapped_ipv6() {
    let sdp = round_trip(IPV4_MAPPED_IPV6);
    assert_eq!(sdp.origin.unicast_address, "::ffff:192.0.2.2");
    let connection = sdp.effective_connection(&sdp.media[0]).unwrap();
    assert_eq!(connection.address, "::ffff:192.0.2.2");
    assert_eq!(connection.ip(), Some("::ffff:192.0.2.2".parse().unwrap()));
}

#[test]
fn sdp01_skips_malformed_rtpmap() {
    let sdp = round_trip(SDP01);
    assert_eq!(sdp.session_name, "-");
    assert_eq!(sdp.media[0].formats, ["0", "12"]);
    let video = &sdp.media[1];
    // "a=rtpmap:31 LPC" has no clock rate: kept raw, but not offered as a typed map.
    assert_eq!(video.attribute("rtpmap"), Some("31 LPC"));
    assert_eq!(video.rtpmaps().count(), 0);
    assert_eq!(video.rtpmap(31), None);
}

#[test]
fn parses_every_field() {
    let sdp = round_trip(EVERYTHING);
    assert_eq!(sdp.to_string(), EVERYTHING);
    assert_eq!(
        sdp.information.as_deref(),
        Some("A Seminar on the session description protocol")
    );
    assert_eq!(
        sdp.uri.as_deref(),
        Some("http://www.example.com/seminars/sdp.pdf")
    );
    assert_eq!(sdp.emails, ["j.doe@example.com (Jane Doe)"]);
    assert_eq!(sdp.phones, ["+1 617 555-6011"]);
    assert_eq!(sdp.connection.as_ref().unwrap().address, "224.2.17.12/127");
    assert_eq!(
        sdp.connection.as_ref().unwrap().ip(),
        Some("224.2.17.12".parse().unwrap())
    );
    assert_eq!(
        sdp.bandwidths,
        [Bandwidth {
            bwtype: "CT".into(),
            bandwidth: 128,
        }]
    );
    assert_eq!(sdp.timings.len(), 2);
    assert_eq!(sdp.timings[0].repeats, ["7d 1h 0 25h"]);
    assert!(sdp.timings[1].repeats.is_empty());
    assert_eq!(
        sdp.time_zones.as_deref(),
        Some("2882844526 -1h 2898848070 0")
    );
    assert_eq!(sdp.encryption_key.as_deref(), Some("prompt"));
    assert_eq!(sdp.attribute("tool"), Some("switchboard"));
    assert_eq!(sdp.attribute("recvonly"), Some(""));

    let audio = &sdp.media[0];
    assert_eq!((audio.port, audio.port_count), (49170, Some(2)));
    assert_eq!(audio.proto, "RTP/SAVPF");
    assert_eq!(audio.information.as_deref(), Some("voice"));
    assert_eq!(audio.connections.len(), 2);
    assert_eq!(audio.connections[1].address, "FF15::102/3");
    assert_eq!(audio.bandwidths[0].to_string(), "AS:64");
    assert_eq!(audio.encryption_key.as_deref(), Some("clear:secret"));
    assert_eq!(audio.fmtp(101), Some("0-15"));
    assert_eq!(audio.fmtp(0), None);
    assert_eq!(audio.ptime(), Some(30));
    assert_eq!(
        audio.rtcp(),
        Some(Rtcp {
            port: 53020,
            connection: Some(Connection {
                nettype: "IN".into(),
                addrtype: "IP6".into(),
                address: "2001:db8::7".into(),
            }),
        })
    );
    assert_eq!(
        audio.rtcp().unwrap().to_string(),
        "53020 IN IP6 2001:db8::7"
    );
    assert_eq!(
        sdp.effective_connection(audio).unwrap().address,
        "FF15::101/3"
    );

    let data = &sdp.media[1];
    assert_eq!(data.formats, ["webrtc-datachannel"]);
    assert_eq!(data.rtpmaps().count(), 0);
    assert_eq!(data.ptime(), None);
    assert_eq!(data.rtcp(), None);
    assert_eq!(
        sdp.effective_connection(data).unwrap().address,
        "224.2.17.12/127"
    );
}

#[test]
fn rtpmap_channels_and_rtcp_port_only() {
    let sdp = parse(
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\n\
         m=audio 5004 RTP/AVP 111\na=rtpmap:111 opus/48000/2\na=rtcp:5005\n\
         a=fmtp:111 minptime=10;useinbandfec=1\n",
    );
    let audio = &sdp.media[0];
    let opus = audio.rtpmap(111).unwrap();
    assert_eq!(opus.channels, Some(2));
    assert_eq!(opus.to_string(), "111 opus/48000/2");
    assert_eq!(
        audio.rtcp(),
        Some(Rtcp {
            port: 5005,
            connection: None,
        })
    );
    assert_eq!(audio.fmtp(111), Some("minptime=10;useinbandfec=1"));
    assert_eq!(sdp.effective_connection(audio), None);
}

#[test]
fn direction_precedence() {
    let base = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n";
    // No attribute anywhere: sendrecv.
    let sdp = parse(&format!("{base}m=audio 4000 RTP/AVP 0\r\n"));
    assert_eq!(sdp.direction(), Direction::SendRecv);
    assert_eq!(sdp.media[0].direction(), None);
    assert_eq!(sdp.effective_direction(&sdp.media[0]), Direction::SendRecv);

    // Session level applies to media without their own.
    let sdp = parse(&format!(
        "{base}a=sendonly\r\nm=audio 4000 RTP/AVP 0\r\nm=video 4002 RTP/AVP 31\r\na=inactive\r\n"
    ));
    assert_eq!(sdp.direction(), Direction::SendOnly);
    assert_eq!(sdp.effective_direction(&sdp.media[0]), Direction::SendOnly);
    // Media level overrides session level.
    assert_eq!(sdp.effective_direction(&sdp.media[1]), Direction::Inactive);

    // A direction-named attribute with a value is not a direction.
    let sdp = parse(&format!("{base}m=audio 4000 RTP/AVP 0\r\na=recvonly:x\r\n"));
    assert_eq!(sdp.media[0].direction(), None);
}

#[test]
fn set_direction_replaces_in_place() {
    let mut sdp = parse(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n\
         m=audio 4000 RTP/AVP 0\r\na=sendrecv\r\na=ptime:20\r\na=inactive\r\n",
    );
    sdp.media[0].set_direction(Direction::RecvOnly);
    let names: Vec<&str> = sdp.media[0]
        .attributes
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(names, ["recvonly", "ptime"]);

    sdp.set_direction(Direction::SendOnly);
    assert_eq!(sdp.attributes, [Attribute::new("sendonly", None)]);
    assert_eq!(sdp.effective_direction(&sdp.media[0]), Direction::RecvOnly);
    assert_eq!(sdp.direction(), Direction::SendOnly);
}

#[test]
fn direction_helpers() {
    assert_eq!(Direction::SendOnly.reversed(), Direction::RecvOnly);
    assert_eq!(Direction::RecvOnly.reversed(), Direction::SendOnly);
    assert_eq!(Direction::Inactive.reversed(), Direction::Inactive);
    for d in [
        Direction::SendRecv,
        Direction::SendOnly,
        Direction::RecvOnly,
        Direction::Inactive,
    ] {
        assert_eq!(Direction::from_name(&d.to_string()), Some(d));
    }
    assert_eq!(Direction::from_name("sendrecv2"), None);
}

#[test]
fn audio_offer_builder() {
    let sdp = SessionDescription::new_audio_offer(
        "alice",
        4242,
        "192.0.2.10".parse().unwrap(),
        40000,
        &[
            (0, "PCMU", 8000),
            (8, "PCMA", 8000),
            (101, "telephone-event", 8000),
        ],
    );
    let expected = "v=0\r\n\
        o=alice 4242 4242 IN IP4 192.0.2.10\r\n\
        s=-\r\n\
        c=IN IP4 192.0.2.10\r\n\
        t=0 0\r\n\
        m=audio 40000 RTP/AVP 0 8 101\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-16\r\n\
        a=ptime:20\r\n\
        a=sendrecv\r\n";
    assert_eq!(sdp.to_string(), expected);
    assert_eq!(SessionDescription::parse(&sdp.to_bytes()).unwrap(), sdp);
    assert_eq!(sdp.media[0].fmtp(101), Some("0-16"));
    assert_eq!(sdp.media[0].ptime(), Some(20));

    let v6 = SessionDescription::new_audio_offer(
        "-",
        1,
        "2001:db8::1".parse().unwrap(),
        5004,
        &[(0, "PCMU", 8000)],
    );
    assert!(v6.to_string().contains("\r\nc=IN IP6 2001:db8::1\r\n"));
    assert_eq!(v6.media[0].fmtp(101), None);
    let mut out = Vec::new();
    v6.write_to(&mut out);
    assert_eq!(out, v6.to_bytes());
}

#[test]
fn accepts_trailing_blank_lines_and_missing_final_newline() {
    let reference = parse(SDP01);
    assert_eq!(parse(&format!("{SDP01}\r\n\r\n")), reference);
    assert_eq!(parse(SDP01.trim_end()), reference);
}

#[test]
fn error_messages() {
    let head = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n";
    let cases: &[(String, &str)] = &[
        (
            String::new(),
            "line 1: sdp ends where a v= line is required",
        ),
        (
            "o=- 1 1 IN IP4 h\r\nv=0\r\n".into(),
            "line 1: expected v= line, found o= line",
        ),
        (
            "v=0\r\n".into(),
            "line 2: sdp ends where a o= line is required",
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 h\r\nt=0 0\r\ns=-\r\n".into(),
            "line 3: expected s= line, found t= line",
        ),
        (
            "v=1\r\n".into(),
            r#"line 1: v= "1" is not a supported version (only 0)"#,
        ),
        ("v=zero\r\n".into(), r#"line 1: v= "zero" is not a number"#),
        (
            "v=0\r\no=- 1 1 IN IP4\r\n".into(),
            r#"line 2: o= "- 1 1 IN IP4" must have 6 fields: username sess-id sess-version nettype addrtype address"#,
        ),
        (
            "v=0\r\no=- x1 1 IN IP4 h\r\n".into(),
            r#"line 2: o= sess-id "x1" is not a number"#,
        ),
        (
            "v=0\r\no=- 1 99999999999999999999 IN IP4 h\r\n".into(),
            r#"line 2: o= sess-version "99999999999999999999" is out of range"#,
        ),
        (
            format!("{head}m=audio abc RTP/AVP 0\r\n"),
            r#"line 5: m= port "abc" is not a number"#,
        ),
        (
            format!("{head}m=audio 70000 RTP/AVP 0\r\n"),
            r#"line 5: m= port "70000" is out of range"#,
        ),
        (
            format!("{head}m=audio 4000/x RTP/AVP 0\r\n"),
            r#"line 5: m= port count "x" is not a number"#,
        ),
        (
            format!("{head}m=audio 4000 RTP/AVP\r\n"),
            r#"line 5: m= "audio 4000 RTP/AVP" has no media formats"#,
        ),
        (
            format!("{head}m=audio\r\n"),
            r#"line 5: m= "audio" must be <media> <port>[/<count>] <proto> <fmt> ..."#,
        ),
        (format!("{head}x=1\r\n"), "line 5: unknown line type 'x='"),
        (format!("{head}A=1\r\n"), "line 5: unknown line type 'A='"),
        (
            format!("{head}this is not sdp\r\n"),
            r#"line 5: "this is not sdp" is not a <type>=<value> line"#,
        ),
        (
            format!("{head}a =rtpmap\r\n"),
            r#"line 5: "a =rtpmap" is not a <type>=<value> line"#,
        ),
        (
            format!("{head}\r\na=x\r\n"),
            r#"line 5: "" is not a <type>=<value> line"#,
        ),
        (
            format!("{head}a=\r\n"),
            r#"line 5: a= "" has an empty attribute name"#,
        ),
        (
            format!("{head}c=IN IP4\r\n"),
            r#"line 5: c= "IN IP4" must have 3 fields: nettype addrtype address"#,
        ),
        (
            format!("{head}b=AS\r\n"),
            r#"line 5: b= "AS" is not <bwtype>:<bandwidth>"#,
        ),
        (
            format!("{head}b=AS:fast\r\n"),
            r#"line 5: b= bandwidth "fast" is not a number"#,
        ),
        (
            format!("{head}t=now 0\r\n"),
            r#"line 5: t= start-time "now" is not a number"#,
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nr=1d 1h 0\r\n".into(),
            "line 4: r= line without a preceding t= line",
        ),
        (
            format!("{head}c=IN IP4 a\r\nc=IN IP4 b\r\n"),
            "line 6: more than one c= line",
        ),
        (
            format!("{head}o=- 1 1 IN IP4 h\r\n"),
            "line 5: more than one o= line",
        ),
        (
            format!("{head}m=audio 1 RTP/AVP 0\r\ni=a\r\ni=b\r\n"),
            "line 7: more than one i= line",
        ),
        (
            format!("{head}m=audio 1 RTP/AVP 0\r\nt=0 0\r\n"),
            "line 6: t= is not allowed inside a media description",
        ),
        (
            format!("{head}s=x\0y\r\n"),
            "line 5: contains a nul or carriage return character",
        ),
        (
            format!("{head}s=x\ry\r\n"),
            "line 5: contains a nul or carriage return character",
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(&error(input), expected, "input: {input:?}");
    }
    let mut bad_utf8 = format!("{head}i=").into_bytes();
    bad_utf8.extend_from_slice(b"\xff\xfe\r\n");
    let err = SessionDescription::parse(&bad_utf8).unwrap_err();
    assert_eq!(err.to_string(), "line 5: not valid utf-8");
    assert_eq!(err.line(), 5);
}

#[test]
fn long_bad_values_are_shortened() {
    let long = "9".repeat(200);
    let message = error(&format!("v=0\r\no=- {long} 1 IN IP4 h\r\n"));
    assert!(message.len() < 120, "{message}");
    assert!(message.ends_with(r#"..." is out of range"#), "{message}");
}

#[test]
fn every_prefix_and_garbage_returns() {
    for body in [EVERYTHING, RFC3264_REOFFER, IPV6_IN_SDP, SDP01] {
        let bytes = body.as_bytes();
        for end in 0..=bytes.len() {
            let _ = SessionDescription::parse(&bytes[..end]);
            let _ = SessionDescription::parse(&bytes[end..]);
        }
    }
    let garbage: &[&[u8]] = &[
        b"",
        b"\n",
        b"\r\n\r\n",
        b"=",
        b"v",
        b"v=",
        b"\xff=0",
        b"v=0\no=\ns=\n",
        b"v=0\no=- - - - - -\n",
        b"v=0\no=- 1 1 IN IP4 h\ns=\nm=\n",
        b"v=0\no=- 1 1 IN IP4 h\ns=\nm=a 1/ p f\n",
        b"v=0\no=- 1 1 IN IP4 h\ns=\na=:\n",
        b"\0\0\0\0",
        "v=0\no=\u{e9}\u{1F600} 1 1 IN IP4 h\ns=\u{1F600}\n".as_bytes(),
    ];
    for input in garbage {
        let _ = SessionDescription::parse(input);
    }
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9.:/+_-]{1,12}"
}

/// Free text: anything but the characters that end or corrupt a line.
fn text() -> impl Strategy<Value = String> {
    "[^\r\n\0]{0,16}"
}

fn connection() -> impl Strategy<Value = Connection> {
    (token(), token(), token()).prop_map(|(nettype, addrtype, address)| Connection {
        nettype,
        addrtype,
        address,
    })
}

fn bandwidth() -> impl Strategy<Value = Bandwidth> {
    ("[A-Za-z0-9-]{1,6}", any::<u64>())
        .prop_map(|(bwtype, bandwidth)| Bandwidth { bwtype, bandwidth })
}

fn attribute() -> impl Strategy<Value = Attribute> {
    ("[A-Za-z0-9-]{1,10}", proptest::option::of(text()))
        .prop_map(|(name, value)| Attribute { name, value })
}

fn attributes() -> impl Strategy<Value = Vec<Attribute>> {
    proptest::collection::vec(attribute(), 0..4)
}

fn media() -> impl Strategy<Value = MediaDescription> {
    (
        (
            token(),
            any::<u16>(),
            proptest::option::of(any::<u16>()),
            token(),
            proptest::collection::vec(token(), 1..4),
        ),
        (
            proptest::option::of(text()),
            proptest::collection::vec(connection(), 0..3),
            proptest::collection::vec(bandwidth(), 0..2),
            proptest::option::of(text()),
            attributes(),
        ),
    )
        .prop_map(
            |(
                (media, port, port_count, proto, formats),
                (information, connections, bandwidths, encryption_key, attributes),
            )| MediaDescription {
                media,
                port,
                port_count,
                proto,
                formats,
                information,
                connections,
                bandwidths,
                encryption_key,
                attributes,
            },
        )
}

fn timing() -> impl Strategy<Value = Timing> {
    (
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(text(), 0..3),
    )
        .prop_map(|(start, stop, repeats)| Timing {
            start,
            stop,
            repeats,
        })
}

fn session() -> impl Strategy<Value = SessionDescription> {
    let origin = (
        token(),
        any::<u64>(),
        any::<u64>(),
        token(),
        token(),
        token(),
    )
        .prop_map(
            |(username, session_id, session_version, nettype, addrtype, unicast_address)| Origin {
                username,
                session_id,
                session_version,
                nettype,
                addrtype,
                unicast_address,
            },
        );
    (
        (
            origin,
            text(),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::collection::vec(text(), 0..2),
            proptest::collection::vec(text(), 0..2),
            proptest::option::of(connection()),
        ),
        (
            proptest::collection::vec(bandwidth(), 0..2),
            proptest::collection::vec(timing(), 0..3),
            proptest::option::of(text()),
            proptest::option::of(text()),
            attributes(),
            proptest::collection::vec(media(), 0..3),
        ),
    )
        .prop_map(
            |(
                (origin, session_name, information, uri, emails, phones, connection),
                (bandwidths, timings, time_zones, encryption_key, attributes, media),
            )| SessionDescription {
                version: 0,
                origin,
                session_name,
                information,
                uri,
                emails,
                phones,
                connection,
                bandwidths,
                timings,
                time_zones,
                encryption_key,
                attributes,
                media,
            },
        )
}

proptest! {
    #[test]
    fn write_then_parse_round_trips(sdp in session()) {
        let written = sdp.to_string();
        prop_assert_eq!(SessionDescription::parse(written.as_bytes()), Ok(sdp));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = SessionDescription::parse(&bytes);
    }

    /// Mutating a real body keeps most of it parseable, which reaches the deeper paths;
    /// whatever parses must then survive a canonical round trip.
    #[test]
    fn mutated_bodies_parse_or_fail_cleanly(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)
    ) {
        let mut bytes = EVERYTHING.as_bytes().to_vec();
        for (index, byte) in edits {
            let at = index.index(bytes.len());
            bytes[at] = byte;
        }
        if let Ok(sdp) = SessionDescription::parse(&bytes) {
            prop_assert_eq!(SessionDescription::parse(&sdp.to_bytes()), Ok(sdp));
        }
    }
}

#[cfg(feature = "serde")]
#[test]
fn serializes_to_json() {
    let sdp = parse(RFC3264_REOFFER);
    let json = serde_json::to_value(&sdp).unwrap();
    assert_eq!(json["origin"]["session_version"], 2890844731_u64);
    assert_eq!(json["media"][3]["attributes"][1]["name"], "recvonly");
    assert_eq!(
        json["media"][3]["attributes"][1]["value"],
        serde_json::Value::Null
    );
    assert_eq!(
        serde_json::to_string(&Direction::SendOnly).unwrap(),
        r#""sendonly""#
    );
    let rtpmap = serde_json::to_value(sdp.media[0].rtpmap(0).unwrap()).unwrap();
    assert_eq!(rtpmap["encoding"], "PCMU");
}
