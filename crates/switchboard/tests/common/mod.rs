//! Shared harness for the end-to-end tests: runs the real `switchboard serve` binary on
//! loopback with a temporary configuration and database, and stops it when dropped.
#![allow(dead_code, clippy::unwrap_used)]

pub mod baresip;

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_switchboard")
}

/// The project's shared folder (`../shared` beside the repository).
pub fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

/// A port free on 127.0.0.1 for both UDP and TCP at the time of asking.
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// What `serve` logs once it listens.
const READY: &str = "switchboard serve is ready";

/// A running `switchboard serve`.
pub struct Server {
    child: Option<Child>,
    /// The temporary directory holding config, database and log.
    pub dir: tempfile::TempDir,
    /// The SIP port (UDP and TCP).
    pub port: u16,
    /// Extra listeners by transport name (`tls`, `ws`, `wss`) and port.
    pub extra: Vec<(String, u16)>,
}

/// How to start a server.
#[derive(Default)]
pub struct ServerOptions {
    /// Extra transports to listen on besides UDP and TCP (`tls`, `ws`, `wss`).
    pub extra_transports: Vec<&'static str>,
    /// Extra TOML appended to the configuration.
    pub extra_toml: String,
    /// Users to create before start: (name, password).
    pub users: Vec<(String, String)>,
}

impl Server {
    /// Starts a server with UDP and TCP on one free port, domain `example.test`.
    pub fn start(opts: ServerOptions) -> Server {
        Server::start_on("127.0.0.1", opts)
    }

    /// [`Server::start`] with UDP and TCP listening on `ip` ("0.0.0.0": the default
    /// wildcard address) and a free loopback port.
    pub fn start_on(ip: &str, opts: ServerOptions) -> Server {
        let mut server = Server::start_stopped_on(ip, opts);
        server.spawn();
        server
    }

    /// Prepares a server (configuration, database, users) without starting it: for
    /// set-up through the CLI first; [`Server::spawn`] starts it.
    pub fn start_stopped(opts: ServerOptions) -> Server {
        Server::start_stopped_on("127.0.0.1", opts)
    }

    /// [`Server::start_stopped`] listening on `ip`.
    pub fn start_stopped_on(ip: &str, opts: ServerOptions) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut listen = vec![
            format!("\"udp:{ip}:{port}\""),
            format!("\"tcp:{ip}:{port}\""),
        ];
        let mut extra = Vec::new();
        for t in &opts.extra_transports {
            let p = free_port();
            listen.push(format!("\"{t}:127.0.0.1:{p}\""));
            extra.push((t.to_string(), p));
        }
        // The admin API's default port is fixed (8080): tests that want it say where.
        let admin = if opts.extra_toml.contains("[admin]") {
            ""
        } else {
            "[admin]\nenabled = false\n"
        };
        let config = format!(
            "[sip]\nlisten = [{}]\ndomain = \"example.test\"\n[storage]\ndatabase = \"{}\"\n{admin}{}\n",
            listen.join(", "),
            dir.path().join("sb.db").display(),
            opts.extra_toml
        );
        std::fs::write(dir.path().join("sb.toml"), config).unwrap();
        let server = Server {
            child: None,
            dir,
            port,
            extra,
        };
        for (name, password) in &opts.users {
            let out = server.cli(&["user", "add", name, "--password", password]);
            assert!(out.status.success(), "user add: {out:?}");
        }
        server
    }

    /// The process id while it runs (for signals such as SIGHUP).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The configuration file.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("sb.toml")
    }

    /// The server's log (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// Runs a CLI subcommand with this server's configuration.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary())
            .args(args)
            .arg("--config")
            .arg(self.config())
            .output()
            .unwrap()
    }

    /// Starts (or restarts) the process and waits until it answers on UDP.
    pub fn spawn(&mut self) {
        // The log is appended to across restarts: ready is a new "ready" line.
        let ready_before = self.log().matches(READY).count();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.log"))
            .unwrap();
        let child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(self.config())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready(ready_before);
    }

    fn wait_ready(&self, ready_before: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.log().matches(READY).count() > ready_before {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("serve did not start; log:\n{}", self.log());
    }

    /// Stops the process with SIGKILL (kill -9), as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the process with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs SIPp (from Debian's `sip-tester`) with a time bound; returns (exit code, output).
/// SIPp exits 0 when every call succeeded.
pub fn sipp(scenario: &Path, server_port: u16, args: &[&str], timeout: Duration) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("sipp");
    cmd.current_dir(dir.path())
        .arg("-sf")
        .arg(scenario)
        .arg(format!("127.0.0.1:{server_port}"))
        .args(["-i", "127.0.0.1", "-nostdin", "-trace_err", "-timeout"])
        .arg(format!("{}s", timeout.as_secs()))
        .arg("-timeout_error")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd
        .output()
        .expect("sipp is installed (scripts/test installs sip-tester)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
        if entry.file_name().to_string_lossy().ends_with("errors.log") {
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    (out.status.code().unwrap_or(-1), text)
}

/// A TCP listener on loopback that never accepts and whose accept queue is full: new
/// connection attempts to it get no SYN-ACK.
pub fn black_hole() -> (
    socket2::Socket,
    Vec<std::net::TcpStream>,
    std::net::SocketAddr,
) {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    // Fill the accept queue until a connect no longer completes.
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => fillers.push(s),
            Err(_) => return (sock, fillers, addr),
        }
    }
    panic!("the listener kept accepting connections: cannot make a black hole");
}
