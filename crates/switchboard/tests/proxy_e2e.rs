//! End-to-end tests of the stateful proxy (issue 5) against the real `switchboard serve`
//! on loopback, with SIPp as the phones (`tests/sipp/proxy_*.xml`). Callees register
//! with digest auth first (`proxy_register.xml`), then answer on the port they
//! registered; alice calls through the proxy and answers its 407. Every scenario checks
//! the exact responses that arrive:
//!
//! - a basic call: 407, 180, 200 with our Record-Route, ACK, a re-INVITE and a BYE
//!   along the route set (the callee checks they come through the proxy);
//! - an instant message (MESSAGE, RFC 3428);
//! - two devices of one user: both ring, one answers, the other gets CANCEL;
//! - serial forking by q: the q=1.0 device is busy (486) and only then is the q=0.5
//!   one tried (had both been tried at once, the busy one would have got a CANCEL);
//! - caller CANCEL (200, then 487); callee busy (486); no answer (Timer C: 408, and
//!   the callee gets CANCEL); unknown user (404) and no binding (480); Max-Forwards 0
//!   (483); a loop (482: bob's contact is the proxy itself);
//! - Proxy-Require with option tags we lack (420 with Unsupported);
//! - two devices that challenge (401 and 407): the caller gets one 401 with both;
//! - a 302 to another local user is followed (the caller talks to carol), or passed
//!   on with `max_recursions = 0`;
//! - a caller over TCP and a callee over UDP: two Record-Route values.
//! - a callee registered over TCP whose connection closed: reached at its Contact
//!   over a new connection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{Server, ServerOptions, free_port, sipp};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(15);
/// Any one Record-Route of ours.
const ONE_RR: &str =
    r"Record-Route: &lt;sip:127\.0\.0\.1:[0-9]+;transport=(udp|tcp);lr;sbd=[0-9a-f]+&gt;";

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// A scenario with `@KEY@` markers replaced, written beside the server's files.
fn scenario_with(server: &Server, name: &str, subs: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(scenario(name)).unwrap();
    for (k, v) in subs {
        text = text.replace(k, v);
    }
    let out = server.dir.path().join(format!("{}-{name}", free_port()));
    std::fs::write(&out, text).unwrap();
    out
}

fn start(extra_toml: &str) -> Server {
    Server::start(ServerOptions {
        users: vec![
            ("alice".into(), "alice-pw".into()),
            ("bob".into(), "bob-pw".into()),
            ("carol".into(), "carol-pw".into()),
        ],
        // SIPp answers only the first challenge, and only MD5.
        extra_toml: format!("[registrar]\ndigest_algorithms = [\"MD5\"]\n{extra_toml}"),
        ..ServerOptions::default()
    })
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn run(server: &Server, scenario: &Path, args: &[&str]) -> (i32, String) {
    sipp(scenario, server.port, args, TIMEOUT)
}

fn must_pass(server: &Server, what: &str, (code, out): (i32, String)) {
    assert_eq!(
        code,
        0,
        "{what} failed: {out}\nserver log:\n{}",
        server.log()
    );
}

/// Registers `user` (password `USER-pw`) with `contact` and q, from SIPp on `port`.
fn register(server: &Server, user: &str, port: u16, contact: &str, q: &str, transport: &str) {
    let pw = format!("{user}-pw");
    let port = port.to_string();
    let result = run(
        server,
        &scenario("proxy_register.xml"),
        &[
            "-m",
            "1",
            "-p",
            &port,
            "-t",
            transport,
            "-key",
            "user",
            user,
            "-au",
            user,
            "-ap",
            &pw,
            "-key",
            "contact",
            contact,
            "-key",
            "q",
            q,
            "-auth_uri",
            "example.test",
        ],
    );
    must_pass(server, &format!("registering {user}"), result);
}

/// Starts a SIPp callee running `file` on `port` in the background.
fn callee(server: &Server, file: PathBuf, port: u16, extra: &[&str]) -> JoinHandle<(i32, String)> {
    let mut args = owned(&["-m", "1", "-p", &port.to_string()]);
    args.extend(owned(extra));
    let server_port = server.port;
    let handle = std::thread::spawn(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        sipp(&file, server_port, &refs, TIMEOUT)
    });
    // Let it bind its port before anything is sent to it.
    std::thread::sleep(Duration::from_millis(400));
    handle
}

/// alice's SIPp, calling `callee` with `file`.
fn call(server: &Server, file: &Path, callee: &str, extra: &[&str]) -> (i32, String) {
    let auth_uri = format!("{callee}@example.test");
    let port = free_port().to_string();
    let mut args = vec![
        "-m",
        "1",
        "-p",
        &port,
        "-key",
        "callee",
        callee,
        "-au",
        "alice",
        "-ap",
        "alice-pw",
        "-auth_uri",
        &auth_uri,
    ];
    args.extend_from_slice(extra);
    run(server, file, &args)
}

/// Registers `user` with a UDP contact on `port`, with q, from SIPp on that port.
fn register_udp(server: &Server, user: &str, port: u16, q: &str) {
    let contact = format!("sip:{user}@127.0.0.1:{port}");
    register(server, user, port, &contact, q, "u1");
}

/// alice's call scenario, expecting one Record-Route of ours.
fn uac_call(server: &Server) -> PathBuf {
    scenario_with(server, "proxy_uac_call.xml", &[("@RR@", ONE_RR)])
}

/// alice's scenario for a call that ends with the final response `code`.
fn uac_final(server: &Server, code: &str) -> PathBuf {
    scenario_with(server, "proxy_uac_final.xml", &[("@CODE@", code)])
}

/// alice calls `callee` with `uac`; her SIPp run must pass.
fn caller_passes(server: &Server, uac: &Path, callee: &str) {
    must_pass(server, "caller", call(server, uac, callee, &[]));
}

/// bob registers one phone over UDP, running `uas` (with `uas_args`); alice calls it
/// with `uac` (and `uac_args`); both SIPp runs must pass.
fn call_one_phone(server: &Server, uas: &str, uas_args: &[&str], uac: &Path, uac_args: &[&str]) {
    let bob = free_port();
    register_udp(server, "bob", bob, "1.0");
    let phone = callee(server, scenario(uas), bob, uas_args);
    must_pass(server, "caller", call(server, uac, "bob", uac_args));
    must_pass(server, "callee", phone.join().unwrap());
}

#[test]
fn basic_call_with_reinvite_and_bye_through_the_record_route() {
    let server = start("");
    let uac = uac_call(&server);
    call_one_phone(&server, "proxy_uas_answer.xml", &["-d", "200"], &uac, &[]);
}

#[test]
fn instant_message_reaches_the_callee() {
    let server = start("");
    let uac = scenario("proxy_uac_message.xml");
    call_one_phone(&server, "proxy_uas_message.xml", &[], &uac, &[]);
}

#[test]
fn two_devices_ring_one_answers_the_other_is_cancelled() {
    let server = start("");
    let (desk, mobile) = (free_port(), free_port());
    register_udp(&server, "bob", desk, "1.0");
    register_udp(&server, "bob", mobile, "1.0");
    // The desk phone answers after 500 ms; by then both ring.
    let answers = callee(
        &server,
        scenario("proxy_uas_answer.xml"),
        desk,
        &["-d", "500"],
    );
    let cancelled = callee(&server, scenario("proxy_uas_cancelled.xml"), mobile, &[]);
    let uac = uac_call(&server);
    caller_passes(&server, &uac, "bob");
    must_pass(&server, "answering device", answers.join().unwrap());
    must_pass(&server, "cancelled device", cancelled.join().unwrap());
}

#[test]
fn serial_forking_tries_lower_q_after_the_higher_fails() {
    let server = start("");
    let (first, second) = (free_port(), free_port());
    register_udp(&server, "bob", first, "1.0");
    register_udp(&server, "bob", second, "0.5");
    // Busy after 1 s: in parallel, the q=0.5 phone (answering at 200 ms) would have
    // won and the busy one got a CANCEL, which its scenario refuses.
    let busy = callee(
        &server,
        scenario("proxy_uas_busy.xml"),
        first,
        &["-d", "1000"],
    );
    let answers = callee(
        &server,
        scenario("proxy_uas_answer.xml"),
        second,
        &["-d", "200"],
    );
    let uac = uac_call(&server);
    caller_passes(&server, &uac, "bob");
    must_pass(&server, "busy device (q=1.0)", busy.join().unwrap());
    must_pass(&server, "answering device (q=0.5)", answers.join().unwrap());
}

#[test]
fn caller_cancel_reaches_the_callee_and_gets_487() {
    let server = start("");
    let uac = scenario("proxy_uac_cancel.xml");
    call_one_phone(&server, "proxy_uas_cancelled.xml", &[], &uac, &[]);
}

#[test]
fn busy_callee_486_reaches_the_caller() {
    let server = start("");
    let uac = uac_final(&server, "486");
    call_one_phone(&server, "proxy_uas_busy.xml", &["-d", "100"], &uac, &[]);
}

#[test]
fn no_answer_ends_with_408_and_cancel_after_timer_c() {
    let server = start("[proxy]\ntimer_c_secs = 2\n");
    let uac = uac_final(&server, "408");
    call_one_phone(&server, "proxy_uas_cancelled.xml", &[], &uac, &[]);
}

#[test]
fn unknown_user_404_and_unregistered_user_480() {
    let server = start("");
    let uac = uac_final(&server, "404");
    must_pass(&server, "unknown user", call(&server, &uac, "nobody", &[]));
    let uac = uac_final(&server, "480");
    must_pass(
        &server,
        "carol, not registered",
        call(&server, &uac, "carol", &[]),
    );
}

/// alice's SIPp sends `file` to bob without credentials: a request refused before
/// any challenge.
fn refused_at_once(file: &str) {
    let server = start("");
    let port = free_port().to_string();
    must_pass(
        &server,
        "caller",
        run(
            &server,
            &scenario(file),
            &["-m", "1", "-p", &port, "-key", "callee", "bob"],
        ),
    );
}

#[test]
fn max_forwards_zero_gets_483() {
    refused_at_once("proxy_uac_maxforwards.xml");
}

#[test]
fn a_loop_gets_482() {
    let server = start("");
    // bob's phone is said to be the proxy itself: the INVITE comes back, spirals once
    // (new Request-URI) and then loops.
    let contact = format!("sip:bob@127.0.0.1:{}", server.port);
    register(&server, "bob", free_port(), &contact, "1.0", "u1");
    let uac = uac_final(&server, "482");
    caller_passes(&server, &uac, "bob");
}

#[test]
fn tcp_caller_to_udp_callee_gets_a_double_record_route() {
    let server = start("");
    // The callee's side first (topmost), then the caller's.
    let double = r"Record-Route: &lt;sip:127\.0\.0\.1:[0-9]+;transport=udp;lr;sbd=[0-9a-f]+&gt;(,[[:space:]]*|[[:space:]]+Record-Route:[[:space:]]*)&lt;sip:127\.0\.0\.1:[0-9]+;transport=tcp;lr;sbd=[0-9a-f]+&gt;";
    let uac = scenario_with(&server, "proxy_uac_call.xml", &[("@RR@", double)]);
    // The caller over TCP, the callee over UDP.
    call_one_phone(
        &server,
        "proxy_uas_answer.xml",
        &["-d", "200"],
        &uac,
        &["-t", "t1"],
    );
}

#[test]
fn unsupported_proxy_require_gets_420_with_unsupported() {
    refused_at_once("proxy_uac_proxyrequire.xml");
}

#[test]
fn challenges_of_every_device_reach_the_caller_in_one_response() {
    let server = start("");
    let (desk, mobile) = (free_port(), free_port());
    register_udp(&server, "bob", desk, "1.0");
    register_udp(&server, "bob", mobile, "1.0");
    let desk_uas = scenario_with(
        &server,
        "proxy_uas_challenge.xml",
        &[
            ("@CODE@", "401"),
            ("@HEADER@", "WWW-Authenticate"),
            ("@REALM@", "desk.test"),
        ],
    );
    let mobile_uas = scenario_with(
        &server,
        "proxy_uas_challenge.xml",
        &[
            ("@CODE@", "407"),
            ("@HEADER@", "Proxy-Authenticate"),
            ("@REALM@", "mobile.test"),
        ],
    );
    // The 401 comes first, so it is the one forwarded (both are 4xx); it must carry
    // the 407's challenge too.
    let desk_phone = callee(&server, desk_uas, desk, &["-d", "100"]);
    let mobile_phone = callee(&server, mobile_uas, mobile, &["-d", "400"]);
    let uac = scenario("proxy_uac_challenged.xml");
    caller_passes(&server, &uac, "bob");
    must_pass(&server, "desk (401)", desk_phone.join().unwrap());
    must_pass(&server, "mobile (407)", mobile_phone.join().unwrap());
}

#[test]
fn a_redirect_to_another_local_user_is_followed() {
    let server = start("");
    let (bob, carol) = (free_port(), free_port());
    register_udp(&server, "bob", bob, "1.0");
    register_udp(&server, "carol", carol, "1.0");
    let redirect = scenario_with(
        &server,
        "proxy_uas_redirect.xml",
        &[("@CONTACT@", "<sip:carol@example.test>")],
    );
    let bob_phone = callee(&server, redirect, bob, &["-d", "100"]);
    let carol_phone = callee(
        &server,
        scenario("proxy_uas_answer.xml"),
        carol,
        &["-d", "200"],
    );
    // alice calls bob and talks to carol: the 302 never reaches her.
    let uac = uac_call(&server);
    caller_passes(&server, &uac, "bob");
    must_pass(&server, "bob (302)", bob_phone.join().unwrap());
    must_pass(&server, "carol (answers)", carol_phone.join().unwrap());
}

#[test]
fn a_redirect_is_passed_on_when_recursion_is_off() {
    let server = start("[proxy]\nmax_recursions = 0\n");
    let redirect = scenario_with(
        &server,
        "proxy_uas_redirect.xml",
        &[("@CONTACT@", "<sip:carol@example.test>")],
    );
    let uac = uac_final(&server, "302");
    call_one_phone(
        &server,
        redirect.to_str().unwrap(),
        &["-d", "100"],
        &uac,
        &[],
    );
}

#[test]
fn a_tcp_callee_whose_registration_connection_closed_is_reached_at_its_contact() {
    let server = start("");
    let bob = free_port();
    // SIPp registers over TCP from another port than its Contact's and exits: the
    // connection the binding came over closes, and nothing listens at its source.
    let contact = format!("sip:bob@127.0.0.1:{bob};transport=tcp");
    register(&server, "bob", free_port(), &contact, "1.0", "t1");
    // The phone listens on its Contact's port, over TCP.
    let phone = callee(
        &server,
        scenario("proxy_uas_answer.xml"),
        bob,
        &["-d", "200", "-t", "t1"],
    );
    let uac = uac_call(&server);
    caller_passes(&server, &uac, "bob");
    must_pass(&server, "callee over TCP", phone.join().unwrap());
}
