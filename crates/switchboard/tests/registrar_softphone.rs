//! A real softphone against the real `switchboard serve` (issue 4): Debian's baresip
//! (`baresip-core`, installed by `scripts/test`), headless on loopback, registers alice
//! with her password through digest authentication, shows up in `switchboard location`
//! with its User-Agent, and unregisters when it is stopped.
//!
//! The server offers MD5 only here: baresip 1.0.0 (Debian 12, libre 1.1) gives up with
//! "Register: Function not implemented" (ENOSYS) as soon as a 401 holds any challenge
//! whose algorithm is not MD5, even when an MD5 challenge follows, so the default
//! `digest_algorithms = ["SHA-256", "MD5"]` locks it out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{Server, ServerOptions, free_port};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running baresip, killed when dropped.
struct Baresip {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Everything it printed so far.
    out: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Baresip {
    /// Starts baresip with one account, `account`, listening on 127.0.0.1 only. It quits
    /// by itself after 30 s should the test not stop it.
    fn start(account: &str) -> Baresip {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "poll_method\t\tpoll\n\
             module_path\t\t/usr/lib/baresip/modules\n\
             sip_listen\t\t127.0.0.1:{}\n\
             net_interface\t\t127.0.0.1\n\
             module_tmp\t\taccount.so\n",
            free_port()
        );
        std::fs::write(dir.path().join("config"), config).unwrap();
        std::fs::write(dir.path().join("accounts"), format!("{account}\n")).unwrap();
        let mut child = Command::new("baresip")
            .arg("-f")
            .arg(dir.path())
            .args(["-t", "30"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("baresip is installed (scripts/test installs baresip-core)");
        let (tx, lines) = mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Baresip {
            child,
            lines,
            out: Vec::new(),
            _dir: dir,
        }
    }

    /// Waits for a line containing `what`; panics with the output after `within`.
    fn expect_line(&mut self, what: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.out.push(line.clone());
                    if line.contains(what) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "baresip did not print {what:?} within {within:?}; it printed:\n{}",
                    self.out.join("\n")
                ),
            }
        }
    }

    /// Stops it with SIGTERM (it unregisters on the way out) and waits for it to exit.
    fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("baresip did not exit within 10 s of SIGTERM");
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn location(server: &Server) -> Vec<Value> {
    let out = server.cli(&["location", "--json"]);
    assert!(out.status.success(), "location --json: {out:?}");
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(v) => v,
        other => panic!("location --json printed {other}"),
    }
}

#[test]
fn baresip_registers_with_a_password_and_unregisters_on_exit() {
    let server = Server::start(ServerOptions {
        users: vec![("alice".into(), "alice-pw".into())],
        extra_toml: "[registrar]\ndigest_algorithms = [\"MD5\"]\n".into(),
        ..Default::default()
    });
    let mut phone = Baresip::start(&format!(
        "<sip:alice@example.test>;auth_pass=alice-pw;outbound=\"sip:127.0.0.1:{}\";regint=600",
        server.port
    ));
    // e.g. "alice@example.test: {0/UDP/v4} 200 OK (Switchboard/0.1.0) [1 binding]"
    let line = phone.expect_line("alice@example.test: ", Duration::from_secs(10));
    assert!(
        line.contains("200 OK (Switchboard/") && line.contains("[1 binding]"),
        "baresip: {line}\nserver log:\n{}",
        server.log()
    );

    let b = location(&server);
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["aor"], "sip:alice@example.test");
    assert_eq!(b[0]["transport"], "udp");
    let contact = b[0]["contact"].as_str().unwrap();
    assert!(
        contact.starts_with("sip:alice-") && contact.contains("@127.0.0.1:"),
        "{contact}"
    );
    let ua = b[0]["user_agent"].as_str().unwrap();
    assert!(ua.starts_with("baresip v"), "{ua}");
    let expires_in = b[0]["expires_in"].as_u64().unwrap();
    assert!((590..=600).contains(&expires_in), "{expires_in}");

    let status = phone.stop();
    assert!(status.success(), "baresip exit: {status:?}");
    assert_eq!(
        location(&server),
        Vec::<Value>::new(),
        "baresip unregisters when it quits; it printed:\n{}",
        phone.out.join("\n")
    );
}
