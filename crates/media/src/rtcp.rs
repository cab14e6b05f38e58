//! RTCP sender and receiver reports (RFC 3550 §6.4) built and parsed with `rtcp-types`,
//! in plain structs the session keeps, plus the NTP clock arithmetic for LSR/DLSR and RTT.

use rtcp_types::prelude::*;
use rtcp_types::{
    Compound, Packet, ReceiverReport, ReportBlock, ReportBlockBuilder, SdesChunk, SdesItem,
    SenderReport,
};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A 64-bit NTP timestamp (32.32 fixed point seconds since 1900) of a wall-clock time.
pub fn ntp_timestamp(time: SystemTime) -> u64 {
    let since_unix = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let seconds = since_unix.as_secs() + NTP_UNIX_OFFSET;
    let fraction = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

/// The middle 32 bits of an NTP timestamp (16.16 seconds): the LSR and DLSR unit.
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// A duration in 1/65536 s, saturating: the DLSR unit.
pub fn to_ntp_short(d: Duration) -> u32 {
    u32::try_from(d.as_nanos() * 65536 / 1_000_000_000).unwrap_or(u32::MAX)
}

/// The sender-info part of a sender report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// Wall clock of the report, NTP format.
    pub ntp_timestamp: u64,
    /// The RTP timestamp of the same instant.
    pub rtp_timestamp: u32,
    /// Packets sent since the start.
    pub packet_count: u32,
    /// Payload octets sent since the start.
    pub octet_count: u32,
}

/// One reception report block: what a receiver says about one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceptionReport {
    /// The source reported on.
    pub ssrc: u32,
    /// Fraction lost since the previous report, out of 256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed on the wire).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub extended_highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received from the source (0: none).
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

impl ReceptionReport {
    /// The round-trip time this block implies when it arrived at `arrival_ntp` (RFC 3550
    /// §6.4.1): arrival - LSR - DLSR; `None` when the receiver had no SR from us.
    pub fn round_trip(&self, arrival_ntp: u64) -> Option<Duration> {
        if self.last_sr == 0 {
            return None;
        }
        let rtt = ntp_middle(arrival_ntp)
            .wrapping_sub(self.last_sr)
            .wrapping_sub(self.delay_since_last_sr);
        // A "negative" result (clock step) shows up as a huge value: ignore it.
        (rtt < 0x8000_0000).then(|| Duration::from_nanos(u64::from(rtt) * 1_000_000_000 / 65536))
    }
}

/// A report as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// SR: the sender's counters and what it received.
    Sender {
        /// The sender.
        ssrc: u32,
        /// Its sender info.
        info: SenderInfo,
        /// Its reception reports.
        blocks: Vec<ReceptionReport>,
    },
    /// RR: what a non-sending participant received.
    Receiver {
        /// The reporter.
        ssrc: u32,
        /// Its reception reports.
        blocks: Vec<ReceptionReport>,
    },
    /// BYE: these sources left.
    Bye,
}

/// Why an RTCP datagram was not understood or could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RtcpError {
    /// Malformed compound packet.
    #[error("malformed RTCP: {0}")]
    Parse(#[from] rtcp_types::RtcpParseError),
    /// The report could not be written (too many blocks).
    #[error("cannot build RTCP: {0}")]
    Write(#[from] rtcp_types::RtcpWriteError),
}

/// The 24-bit two's complement of a cumulative loss, clamped to its range.
fn lost_to_wire(lost: i32) -> u32 {
    (lost.clamp(-0x80_0000, 0x7F_FFFF) as u32) & 0xFF_FFFF
}

fn lost_from_wire(wire: u32) -> i32 {
    // Sign-extend 24 bits.
    ((wire << 8) as i32) >> 8
}

fn block_builder(r: &ReceptionReport) -> ReportBlockBuilder {
    ReportBlock::builder(r.ssrc)
        .fraction_lost(r.fraction_lost)
        .cumulative_lost(lost_to_wire(r.cumulative_lost))
        .extended_sequence_number(r.extended_highest_seq)
        .interarrival_jitter(r.jitter)
        .last_sender_report_timestamp(r.last_sr)
        .delay_since_last_sender_report_timestamp(r.delay_since_last_sr)
}

fn block_from(b: &ReportBlock<'_>) -> ReceptionReport {
    ReceptionReport {
        ssrc: b.ssrc(),
        fraction_lost: b.fraction_lost(),
        cumulative_lost: lost_from_wire(b.cumulative_lost()),
        extended_highest_seq: b.extended_sequence_number(),
        jitter: b.interarrival_jitter(),
        last_sr: b.last_sender_report_timestamp(),
        delay_since_last_sr: b.delay_since_last_sender_report_timestamp(),
    }
}

/// A compound report from `ssrc`: an SR when `sender` is given (we sent media since the
/// last report), else an RR, with `blocks`, then an SDES with the CNAME (RFC 3550 §6.1
/// requires both in every compound packet).
pub fn build_report(
    ssrc: u32,
    sender: Option<SenderInfo>,
    blocks: &[ReceptionReport],
    cname: &str,
) -> Result<Vec<u8>, RtcpError> {
    build(ssrc, sender, blocks, cname, false)
}

/// Like [`build_report`], followed by a BYE for `ssrc`: the last packet of a session.
pub fn build_goodbye(
    ssrc: u32,
    sender: Option<SenderInfo>,
    blocks: &[ReceptionReport],
    cname: &str,
) -> Result<Vec<u8>, RtcpError> {
    build(ssrc, sender, blocks, cname, true)
}

/// Whether a datagram on a multiplexed RTP port is RTCP (RFC 5761 §4: packet types
/// 192-223 fall where RTP payload types 64-95 with the marker bit would, which are unused).
pub fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.len() >= 8 && datagram[0] >> 6 == 2 && (192..=223).contains(&datagram[1])
}

fn build(
    ssrc: u32,
    sender: Option<SenderInfo>,
    blocks: &[ReceptionReport],
    cname: &str,
    goodbye: bool,
) -> Result<Vec<u8>, RtcpError> {
    let sdes = rtcp_types::Sdes::builder()
        .add_chunk(SdesChunk::builder(ssrc).add_item(SdesItem::builder(SdesItem::CNAME, cname)));
    let mut compound = match sender {
        Some(info) => {
            let mut sr = SenderReport::builder(ssrc)
                .ntp_timestamp(info.ntp_timestamp)
                .rtp_timestamp(info.rtp_timestamp)
                .packet_count(info.packet_count)
                .octet_count(info.octet_count);
            for b in blocks {
                sr = sr.add_report_block(block_builder(b));
            }
            Compound::builder().add_packet(sr).add_packet(sdes)
        }
        None => {
            let mut rr = ReceiverReport::builder(ssrc);
            for b in blocks {
                rr = rr.add_report_block(block_builder(b));
            }
            Compound::builder().add_packet(rr).add_packet(sdes)
        }
    };
    if goodbye {
        compound = compound.add_packet(rtcp_types::Bye::builder().add_source(ssrc));
    }
    let mut buf = vec![0; compound.calculate_size()?];
    let len = compound.write_into(&mut buf)?;
    buf.truncate(len);
    Ok(buf)
}

/// The reports of a received compound packet; other packet types (SDES, APP, feedback) are
/// skipped.
pub fn parse_reports(data: &[u8]) -> Result<Vec<Report>, RtcpError> {
    let mut reports = Vec::new();
    for packet in Compound::parse(data)? {
        match packet? {
            Packet::Sr(sr) => reports.push(Report::Sender {
                ssrc: sr.ssrc(),
                info: SenderInfo {
                    ntp_timestamp: sr.ntp_timestamp(),
                    rtp_timestamp: sr.rtp_timestamp(),
                    packet_count: sr.packet_count(),
                    octet_count: sr.octet_count(),
                },
                blocks: sr.report_blocks().map(|b| block_from(&b)).collect(),
            }),
            Packet::Rr(rr) => reports.push(Report::Receiver {
                ssrc: rr.ssrc(),
                blocks: rr.report_blocks().map(|b| block_from(&b)).collect(),
            }),
            Packet::Bye(_) => reports.push(Report::Bye),
            _ => {}
        }
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn block() -> ReceptionReport {
        ReceptionReport {
            ssrc: 0xAABBCCDD,
            fraction_lost: 25,
            cumulative_lost: -3,
            extended_highest_seq: 0x0001_0005,
            jitter: 40,
            last_sr: 0x1234_5678,
            delay_since_last_sr: 65536,
        }
    }

    #[test]
    fn sender_report_round_trips() {
        let info = SenderInfo {
            ntp_timestamp: 0xE000_0001_8000_0000,
            rtp_timestamp: 160_000,
            packet_count: 1000,
            octet_count: 160_000,
        };
        let bytes = build_report(0x01020304, Some(info), &[block()], "alice@host").unwrap();
        // SR header: V=2, RC=1, PT=200, length 12 words (7 + one 6-word block) - 1.
        assert_eq!(&bytes[..8], &[0x81, 200, 0x00, 0x0C, 1, 2, 3, 4]);
        // The cumulative loss is 24-bit two's complement.
        assert_eq!(&bytes[33..36], &[0xFF, 0xFF, 0xFD]);
        let reports = parse_reports(&bytes).unwrap();
        assert_eq!(
            reports,
            vec![Report::Sender {
                ssrc: 0x01020304,
                info,
                blocks: vec![block()]
            }]
        );
    }

    #[test]
    fn receiver_report_round_trips_and_garbage_is_an_error() {
        let bytes = build_report(9, None, &[block()], "bob").unwrap();
        assert_eq!(bytes[1], 201);
        assert_eq!(
            parse_reports(&bytes).unwrap(),
            vec![Report::Receiver {
                ssrc: 9,
                blocks: vec![block()]
            }]
        );
        assert!(parse_reports(&[0x80, 200, 0, 0x10, 1]).is_err());
        assert!(parse_reports(b"not rtcp at all").is_err());
    }

    #[test]
    fn goodbye_ends_with_a_bye_and_rtcp_is_told_from_rtp() {
        let bytes = build_goodbye(9, None, &[], "bob").unwrap();
        assert_eq!(
            parse_reports(&bytes).unwrap(),
            vec![
                Report::Receiver {
                    ssrc: 9,
                    blocks: vec![]
                },
                Report::Bye
            ]
        );
        assert!(is_rtcp(&bytes));
        // An RTP packet, PT 0, and one with the marker bit and PT 101 (= 229).
        assert!(!is_rtcp(&[0x80, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]));
        assert!(!is_rtcp(&[0x80, 0xE5, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn round_trip_time_from_lsr_and_dlsr() {
        let sent = ntp_timestamp(UNIX_EPOCH + Duration::from_secs(1_000_000));
        let arrival = ntp_timestamp(UNIX_EPOCH + Duration::from_millis(1_000_001_250));
        // The far side held our SR for 1 s: the round trip is the remaining 250 ms.
        let report = ReceptionReport {
            last_sr: ntp_middle(sent),
            delay_since_last_sr: to_ntp_short(Duration::from_secs(1)),
            ..block()
        };
        let rtt = report.round_trip(arrival).unwrap();
        assert!((rtt.as_secs_f64() - 0.25).abs() < 0.001, "{rtt:?}");
        assert_eq!(
            ReceptionReport {
                last_sr: 0,
                ..report
            }
            .round_trip(arrival),
            None
        );
    }
}
