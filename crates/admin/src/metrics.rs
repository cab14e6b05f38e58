//! `GET /metrics`: the SIP side's figures and the process's, in the Prometheus text
//! format. The SIP loop keeps plain counters; a scrape reads them once
//! ([`crate::Operations::sip_figures`]) and writes them out through a registry made for
//! that scrape, so counting costs the SIP side nothing more than an addition.

use crate::ops::SipFigures;
use prometheus::core::Collector;
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// The content type of the text format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn counter(registry: &Registry, name: &str, help: &str, value: u64) -> Result<(), String> {
    let c = IntCounter::new(name, help).map_err(|e| e.to_string())?;
    c.inc_by(value);
    register(registry, c)
}

fn gauge(registry: &Registry, name: &str, help: &str, value: u64) -> Result<(), String> {
    let g = IntGauge::new(name, help).map_err(|e| e.to_string())?;
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    register(registry, g)
}

fn register(registry: &Registry, c: impl Collector + 'static) -> Result<(), String> {
    registry.register(Box::new(c)).map_err(|e| e.to_string())
}

/// The text of one scrape.
pub(crate) fn render(sip: &SipFigures, admin_login_failures: u64) -> Result<String, String> {
    let r = Registry::new();
    gauge(
        &r,
        "switchboard_registrations",
        "Registrations (contact bindings) held by the registrar.",
        sip.registrations,
    )?;
    gauge(
        &r,
        "switchboard_registered_aors",
        "Addresses-of-record with at least one registration.",
        sip.registered_aors,
    )?;
    let requests = IntCounterVec::new(
        Opts::new(
            "switchboard_sip_requests_received_total",
            "SIP requests received, by method.",
        ),
        &["method"],
    )
    .map_err(|e| e.to_string())?;
    for (method, n) in &sip.requests_received {
        requests.with_label_values(&[method.as_str()]).inc_by(*n);
    }
    register(&r, requests)?;
    let responses = IntCounterVec::new(
        Opts::new(
            "switchboard_sip_responses_sent_total",
            "SIP responses sent (relayed or our own, retransmissions included), by status code.",
        ),
        &["code"],
    )
    .map_err(|e| e.to_string())?;
    for (code, n) in &sip.responses_sent {
        responses
            .with_label_values(&[code.to_string().as_str()])
            .inc_by(*n);
    }
    register(&r, responses)?;
    gauge(
        &r,
        "switchboard_sip_transactions",
        "SIP transactions live.",
        sip.transactions,
    )?;
    counter(
        &r,
        "switchboard_calls_routed_total",
        "Calls (out-of-dialog INVITEs) the proxy routed to at least one phone.",
        sip.calls_routed,
    )?;
    gauge(
        &r,
        "switchboard_calls_in_progress",
        "Calls whose INVITE the proxy is handling now.",
        sip.calls_in_progress,
    )?;
    counter(
        &r,
        "switchboard_requests_forwarded_total",
        "Requests the proxy forwarded (every branch, in-dialog requests and ACKs).",
        sip.requests_forwarded,
    )?;
    gauge(
        &r,
        "switchboard_pbx_calls_in_progress",
        "Calls the PBX (back-to-back user agent) has under way.",
        sip.pbx_calls_in_progress,
    )?;
    counter(
        &r,
        "switchboard_pbx_calls_total",
        "Calls the PBX (back-to-back user agent) took since the start.",
        sip.pbx_calls_started,
    )?;
    counter(
        &r,
        "switchboard_register_requests_total",
        "REGISTER requests handled.",
        sip.register_requests,
    )?;
    counter(
        &r,
        "switchboard_auth_challenges_total",
        "Digest challenges sent (401 and 407).",
        sip.challenges,
    )?;
    counter(
        &r,
        "switchboard_auth_failures_total",
        "Failed digest authentications (unknown user, wrong password, replay).",
        sip.auth_failures,
    )?;
    counter(
        &r,
        "switchboard_auth_bans_total",
        "Source addresses banned after repeated failed authentications.",
        sip.bans,
    )?;
    counter(
        &r,
        "switchboard_banned_requests_total",
        "Requests refused because their source was banned.",
        sip.refused_banned,
    )?;
    counter(
        &r,
        "switchboard_store_errors_total",
        "Storage failures (answered 500).",
        sip.store_errors,
    )?;
    counter(
        &r,
        "switchboard_call_records_written_total",
        "Call detail records stored.",
        sip.call_records_written,
    )?;
    counter(
        &r,
        "switchboard_call_records_dropped_total",
        "Call detail records lost: the database failed, or the writer's queue was full.",
        sip.call_records_dropped,
    )?;
    counter(
        &r,
        "switchboard_calls_unrecorded_total",
        "Calls left without a record because [cdr] max_calls were followed already.",
        sip.calls_unrecorded,
    )?;
    counter(
        &r,
        "switchboard_admin_auth_failures_total",
        "Failed admin API logins and unknown API tokens.",
        admin_login_failures,
    )?;
    // CPU seconds, memory, open files, threads, start time: from /proc.
    register(
        &r,
        prometheus::process_collector::ProcessCollector::for_self(),
    )?;
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&r.gather(), &mut out)
        .map_err(|e| e.to_string())?;
    String::from_utf8(out).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn figures_come_out_named_and_labelled() {
        let sip = SipFigures {
            registrations: 3,
            requests_received: vec![("INVITE".into(), 7), ("REGISTER".into(), 9)],
            responses_sent: vec![(200, 5), (407, 2)],
            call_records_dropped: 4,
            ..SipFigures::default()
        };
        let text = render(&sip, 1).unwrap();
        assert!(text.contains("switchboard_registrations 3\n"), "{text}");
        assert!(text.contains("switchboard_sip_requests_received_total{method=\"INVITE\"} 7\n"));
        assert!(text.contains("switchboard_sip_responses_sent_total{code=\"407\"} 2\n"));
        assert!(text.contains("# TYPE switchboard_auth_failures_total counter\n"));
        assert!(text.contains("switchboard_admin_auth_failures_total 1\n"));
        assert!(
            text.contains("switchboard_call_records_dropped_total 4\n"),
            "{text}"
        );
        assert!(text.contains("process_cpu_seconds_total"), "{text}");
    }
}
