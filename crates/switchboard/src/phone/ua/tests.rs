//! Unit tests of the sans-IO [`Core`]: built SIP messages and a fake clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

#[test]
fn final_statuses_map_to_exit_codes() {
    assert_eq!(exit_for_status(200), exit::OK);
    assert_eq!(exit_for_status(486), exit::BUSY);
    assert_eq!(exit_for_status(600), exit::BUSY);
    assert_eq!(exit_for_status(480), exit::NO_ANSWER);
    assert_eq!(exit_for_status(408), exit::NO_ANSWER);
    assert_eq!(exit_for_status(404), exit::REJECTED);
    assert_eq!(exit_for_status(603), exit::REJECTED);
}

#[test]
fn codecs_by_sdp_name() {
    assert_eq!(codec_of("pcmu"), Some(Codec::Pcmu));
    assert_eq!(codec_of("PCMA"), Some(Codec::Pcma));
    assert_eq!(codec_of("G729"), None);
}
