//! Every parser reads the same values from every message, and those are the values
//! written in the message files: a benchmark of parsers that read different things (or
//! nothing) would be meaningless.

use parser_bench::{Parser, Summary, messages};

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

/// What each message says, written out by hand from the files in `messages/`.
fn expected(name: &str) -> Summary {
    match name {
        "invite" => Summary {
            branch: s("z9hG4bK3a1f.8c2e6d1f0b7a4e5c1d9f.0"),
            from_tag: s("Qm8yZ2pWx"),
            to_tag: None,
            call_id: "8cGKx-Fz2P".into(),
            cseq: 20,
            method: "INVITE".into(),
            max_forwards: Some(69),
            routes: 2,
        },
        "ok200" => Summary {
            branch: s("z9hG4bK7f3c9e1a2b4d6f80"),
            from_tag: s("Qm8yZ2pWx"),
            to_tag: s("1410948204"),
            call_id: "8cGKx-Fz2P".into(),
            cseq: 20,
            method: "INVITE".into(),
            max_forwards: None,
            routes: 0,
        },
        "register" => Summary {
            branch: s("z9hG4bK1867431291"),
            from_tag: s("1027417693"),
            to_tag: None,
            call_id: "0_1389046474@192.168.1.50".into(),
            cseq: 2,
            method: "REGISTER".into(),
            max_forwards: Some(70),
            routes: 0,
        },
        "bye" => Summary {
            branch: s("z9hG4bKc5e5f1a6b1d0e2a9"),
            from_tag: s("4f9d1e0a7c3b2d86"),
            to_tag: s("as5d3e71b2"),
            call_id: "61d1c7e0a93b5f2c".into(),
            cseq: 42817,
            method: "BYE".into(),
            max_forwards: Some(70),
            routes: 2,
        },
        "subscribe20" => Summary {
            branch: s("z9hG4bK9c1d.52a4e0b7f8c3d6a1e2b9.0"),
            from_tag: s("1980572238"),
            to_tag: None,
            call_id: "0_2936611584@192.168.1.50".into(),
            cseq: 1,
            method: "SUBSCRIBE".into(),
            max_forwards: Some(69),
            routes: 1,
        },
        other => panic!("no expectation for message {other}"),
    }
}

#[test]
fn every_parser_reads_the_same_values() {
    for sample in messages::ALL {
        let want = expected(sample.name);
        for parser in Parser::ALL {
            let got = parser
                .summarize(&sample.buf())
                .unwrap_or_else(|e| panic!("{} on {}: {e}", parser.name(), sample.name));
            assert_eq!(got, want, "{} on {}", parser.name(), sample.name);
        }
    }
}

#[test]
fn messages_are_crlf_with_exact_content_length() {
    for sample in messages::ALL {
        let text = std::str::from_utf8(sample.bytes).expect("messages are UTF-8");
        let (head, body) = text
            .split_once("\r\n\r\n")
            .expect("head ends with CRLF CRLF");
        assert!(
            !head.replace("\r\n", "").contains('\n'),
            "{}: bare LF in the head (were the CRLFs lost?)",
            sample.name
        );
        let declared: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .expect("every message declares Content-Length")
            .trim()
            .parse()
            .expect("Content-Length is a number");
        assert_eq!(declared, body.len(), "{}", sample.name);
    }
}

#[test]
fn the_20_header_message_has_20_headers() {
    let msg = sip_core::Message::parse(messages::ALL[4].buf()).expect("parses");
    assert_eq!(messages::ALL[4].name, "subscribe20");
    assert_eq!(msg.header_count(), 20);
}
