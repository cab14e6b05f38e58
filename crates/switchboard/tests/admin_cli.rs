//! What a new admin runs into, with the real binary: stopping and restarting `serve`,
//! `user` and `location` run from the wrong folder, and configuration mistakes.
#![allow(clippy::unwrap_used)]

mod common;
use common::{Server, ServerOptions};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// A TCP port that takes no connection: its accept queue is full and nobody accepts,
/// so a connect to it waits (the SYN is dropped) as one to a vanished host does.
struct StuckListener {
    addr: SocketAddr,
    _listener: TcpListener,
    _queued: Vec<TcpStream>,
}

impl StuckListener {
    fn new() -> StuckListener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut queued = Vec::new();
        // The kernel's accept queue holds the backlog (128 for std) plus one.
        while queued.len() < 1000 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(s) => queued.push(s),
                Err(_) => break,
            }
        }
        assert!(queued.len() < 1000, "the accept queue never filled");
        StuckListener {
            addr,
            _listener: listener,
            _queued: queued,
        }
    }
}

/// Sends one request over UDP and returns the first response line, if any came.
fn udp_request(sock: &UdpSocket, server: u16, text: &str) -> Option<String> {
    sock.send_to(text.as_bytes(), ("127.0.0.1", server))
        .unwrap();
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .map(str::to_owned)
}

/// `kill -TERM` while the server is waiting for a TCP connect to a phone that does not
/// answer: it exits at once, and a server started right after binds the same ports.
/// (The signal used to be seen only once the connect gave up, 5 s later, and a restart
/// meanwhile failed with "address in use".)
#[test]
fn sigterm_exits_at_once_and_the_ports_can_be_bound_again() {
    let mut server = Server::start(ServerOptions {
        users: vec![("bob".into(), "pw".into())],
        extra_toml: "[registrar]\nrequire_auth = false\n[proxy]\nrequire_auth = false\n".into(),
        ..ServerOptions::default()
    });
    let stuck = StuckListener::new();
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = phone.local_addr().unwrap();
    let register = format!(
        "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKstop1\r\n\
         From: <sip:bob@example.test>;tag=r1\r\nTo: <sip:bob@example.test>\r\n\
         Call-ID: stop-reg\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n\
         Contact: <sip:bob@{};transport=tcp>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n",
        stuck.addr
    );
    let status = udp_request(&phone, server.port, &register);
    assert_eq!(
        status.as_deref(),
        Some("SIP/2.0 200 OK"),
        "{}",
        server.log()
    );
    // A MESSAGE for bob: the proxy connects to his TCP contact, and waits.
    let message = format!(
        "MESSAGE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKstop2\r\n\
         From: <sip:bob@example.test>;tag=m1\r\nTo: <sip:bob@example.test>\r\n\
         Call-ID: stop-msg\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n\
         Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
    );
    phone
        .send_to(message.as_bytes(), ("127.0.0.1", server.port))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let asked = Instant::now();
    let status = server.stop().expect("serve was running");
    let took = asked.elapsed();
    assert!(status.success(), "SIGTERM exit: {status:?}");
    assert!(
        took < Duration::from_millis(1500),
        "serve took {took:?} to exit after SIGTERM; log:\n{}",
        server.log()
    );
    // The same UDP and TCP ports, at once.
    server.spawn();
    let options = format!(
        "OPTIONS sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKstop3\r\n\
         From: <sip:bob@example.test>;tag=o1\r\nTo: <sip:example.test>\r\n\
         Call-ID: stop-opt\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    // Skip whatever the first server still sent to us (a 100 Trying, say).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut answered = false;
    while Instant::now() < deadline && !answered {
        answered = udp_request(&phone, server.port, &options).as_deref() == Some("SIP/2.0 200 OK");
    }
    assert!(
        answered,
        "the restarted server answers; log:\n{}",
        server.log()
    );
    TcpStream::connect(("127.0.0.1", server.port)).expect("and listens on TCP");
}

/// A value of the wrong type names the file, the line and the key, for `serve` and for
/// the commands that share its configuration.
#[test]
fn a_wrong_value_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchboard.toml");
    std::fs::write(
        &config,
        "[registrar]\nrequire_auth = true\nmin_expires = \"sixty\"\n",
    )
    .unwrap();
    let expected = format!(
        "error: {}:3: min_expires: invalid type: string \"sixty\", \
         expected a whole number from 0 to 4294967295\n",
        config.display()
    );
    for (args, code) in [
        (&["serve"][..], 2),
        (&["user", "list"][..], 1),
        (&["location"][..], 1),
    ] {
        let out = std::process::Command::new(common::binary())
            .args(args)
            .arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), expected, "{args:?}");
    }
    assert!(
        !dir.path().join("switchboard.db").exists(),
        "nothing was created"
    );
}

/// Runs the binary in `dir` with `args`; returns (exit code, stdout, stderr).
fn run_in(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(common::binary())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `user` and `location` run in a folder with no database: those that read say which
/// file they looked at and create nothing; those that add users say which file they
/// wrote.
#[test]
fn commands_run_in_the_wrong_folder_create_no_database() {
    let elsewhere = tempfile::tempdir().unwrap();
    let db = elsewhere.path().join("switchboard.db");
    let hint = format!(
        "error: no database at {} (the default database \"switchboard.db\", relative to the \
         working directory, as no --config was given); run this in the folder `serve` runs \
         in, or pass the configuration `serve` uses with --config FILE\n",
        db.display()
    );
    for args in [
        &["location"][..],
        &["location", "--json"],
        &["user", "list"],
        &["user", "list", "--json"],
        &["user", "remove", "alice"],
        &["user", "passwd", "alice", "--password", "pw"],
    ] {
        let (code, out, err) = run_in(elsewhere.path(), args);
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (1, "", hint.as_str()),
            "{args:?}"
        );
        let left: Vec<_> = std::fs::read_dir(elsewhere.path()).unwrap().collect();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }

    // With a configuration, the message names it.
    let config = elsewhere.path().join("conf").join("sb.toml");
    std::fs::create_dir(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "[storage]\ndatabase = \"sb.db\"\n").unwrap();
    let (code, _, err) = run_in(
        elsewhere.path(),
        &["location", "--config", config.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!(
            "error: no database at {} ([storage] database = \"sb.db\" in {}, relative to the \
             working directory); ",
            elsewhere.path().join("sb.db").display(),
            config.display()
        )),
        "{err}"
    );

    // Adding a user starts a database, and says where.
    let (code, out, err) = run_in(
        elsewhere.path(),
        &["user", "add", "alice", "--password", "pw"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!(
            "added user alice (sip:alice@localhost) to {}\n",
            db.display()
        )
    );
    assert!(
        err.starts_with(&format!("note: created a new database {}", db.display())),
        "{err}"
    );
    assert!(db.exists());
    let (code, out, _) = run_in(elsewhere.path(), &["location"]);
    assert_eq!(
        (code, out),
        (0, format!("no current registrations in {}\n", db.display()))
    );
    let (code, out, err) = run_in(
        elsewhere.path(),
        &["user", "add", "bob", "--password", "pw"],
    );
    assert_eq!(code, 0);
    assert!(out.starts_with("added user bob"), "{out}");
    assert_eq!(err, "", "no note for a database that was there");
}

/// A `--config` that is not there names the file it looked for, absolute, and nothing
/// is created.
#[test]
fn a_missing_config_file_is_named_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let expected = format!(
        "error: cannot read the configuration {}: No such file or directory (os error 2)\n",
        dir.path().join("switchboard.toml").display()
    );
    for (args, code) in [
        (&["serve", "--config", "switchboard.toml"][..], 2),
        (&["user", "list", "--config", "switchboard.toml"], 1),
        (
            &[
                "user",
                "add",
                "a",
                "--password",
                "p",
                "--config",
                "switchboard.toml",
            ],
            1,
        ),
        (&["location", "--config", "switchboard.toml"], 1),
    ] {
        let (got, out, err) = run_in(dir.path(), args);
        assert_eq!(
            (got, out.as_str(), err.as_str()),
            (code, "", expected.as_str()),
            "{args:?}"
        );
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
