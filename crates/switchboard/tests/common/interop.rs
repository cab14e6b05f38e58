//! The interop matrix's harness (issue 12): a `switchboard serve` on its defaults (only
//! the ports, the database path and the users a test needs are set), listening on the
//! wildcard address or on 127.0.0.1; `switchboard phone` as the far end that plays,
//! records and reports what it sees; a report that names each cell of the matrix
//! (client × transport × listen mode × feature) and whether it passed.
//!
//! Included by the `interop_*` tests with `#[path = "common/interop.rs"] mod interop;`
//! beside `mod common;` and the media crate's `media_common` (audio comparison).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::baresip::Proc;
use crate::common::binary;
use crate::media_common::{best_correlation, write_test_wav};
use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The password every matrix user has. Digest is always on (serve's default): real
/// phones authenticate.
pub const PASSWORD: &str = "s3cret-pw";

/// Where `serve` listens: its default wildcard address, or one specific address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// `0.0.0.0`, serve's default: every address of the host is the server's.
    Wildcard,
    /// `127.0.0.1` only.
    Specific,
}

impl Listen {
    pub fn ip(self) -> &'static str {
        match self {
            Listen::Wildcard => "0.0.0.0",
            Listen::Specific => "127.0.0.1",
        }
    }
}

/// The transport a client uses to reach serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// A port free for UDP and TCP on every address (serve may listen on 0.0.0.0).
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
}

/// The first of `n` consecutive ports free for UDP on 127.0.0.1 (RTP ranges), even.
pub fn free_port_range(n: u16) -> u16 {
    loop {
        let base = free_port() & !1;
        if !(1024..=65000).contains(&base) {
            continue;
        }
        let held: Vec<_> = (base..base + n)
            .filter_map(|p| UdpSocket::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == usize::from(n) {
            return base;
        }
    }
}

/// SIP's default port (RFC 3261 §19.1.2), serve's default for UDP and TCP: the port a
/// URI without one names.
pub const SIP_PORT: u16 = 5060;

/// Held by the serve of this test binary that listens on [`SIP_PORT`]: tests run in
/// parallel, and only one of them can have it.
static SIP_PORT_TAKEN: Mutex<()> = Mutex::new(());

/// How long a test waits for [`SIP_PORT`] to be free (another program, another test
/// binary of another checkout) before it skips.
const SIP_PORT_WAIT: Duration = Duration::from_secs(90);

/// A `switchboard serve` with the default configuration but for its listen addresses
/// (one port for UDP and TCP, another for TLS when asked) and its database path; the
/// users are added with `switchboard user add`. Killed when dropped.
pub struct Serve {
    child: Option<Child>,
    /// While this serve is on [`SIP_PORT`]: no other test of this binary takes it.
    _sip_port: Option<MutexGuard<'static, ()>>,
    /// Holds the configuration, the database, the log and (when serve writes it) the
    /// TLS certificate.
    pub dir: tempfile::TempDir,
    /// The UDP and TCP port.
    pub port: u16,
    /// The TLS port, when started with TLS.
    pub tls_port: Option<u16>,
    pub listen: Listen,
}

impl Serve {
    /// Starts serve listening on `listen`'s address (UDP and TCP, and TLS when `tls`),
    /// with `users` (each with [`PASSWORD`]).
    pub fn start(listen: Listen, tls: bool, users: &[&str]) -> Serve {
        Serve::start_on(listen, free_port(), tls, users).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts serve as [`Serve::start`] does, but on SIP's default port for UDP and TCP,
    /// as an admin who changes nothing has it: then a URI without a port
    /// (`sip:bob@127.0.0.1`) names this server, as it does in real use. Tests that ask
    /// for it take turns; when something else holds the port for longer than
    /// [`SIP_PORT_WAIT`], returns why (for the test to report as skipped).
    pub fn start_on_sip_port(listen: Listen, tls: bool, users: &[&str]) -> Result<Serve, String> {
        let guard = SIP_PORT_TAKEN
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let deadline = Instant::now() + SIP_PORT_WAIT;
        loop {
            // The port may be held for a moment by another checkout's tests (SIPp,
            // the torture test bind it): wait for it.
            let free = UdpSocket::bind((listen.ip(), SIP_PORT)).is_ok()
                && TcpListener::bind((listen.ip(), SIP_PORT)).is_ok();
            if free {
                match Serve::start_on(listen, SIP_PORT, tls, users) {
                    Ok(mut serve) => {
                        serve._sip_port = Some(guard);
                        return Ok(serve);
                    }
                    Err(e) if Instant::now() >= deadline => return Err(e),
                    // Taken between the check and serve's bind: wait again.
                    Err(_) => {}
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{}:{SIP_PORT} (UDP or TCP) is held by another program for more than \
                     {SIP_PORT_WAIT:?}; this test needs serve on its default port",
                    listen.ip()
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Starts serve with UDP and TCP on `port`; returns why when it does not start.
    fn start_on(listen: Listen, port: u16, tls: bool, users: &[&str]) -> Result<Serve, String> {
        let dir = tempfile::tempdir().unwrap();
        let ip = listen.ip();
        let mut listeners = vec![
            format!("\"udp:{ip}:{port}\""),
            format!("\"tcp:{ip}:{port}\""),
        ];
        let tls_port = tls.then(free_port);
        if let Some(p) = tls_port {
            listeners.push(format!("\"tls:{ip}:{p}\""));
        }
        // Nothing else: the domain, the digest algorithms, the aliases, authentication
        // are serve's defaults, the ones a new admin gets.
        let config = format!(
            "[sip]\nlisten = [{}]\n[storage]\ndatabase = \"{}\"\n",
            listeners.join(", "),
            dir.path().join("switchboard.db").display(),
        );
        std::fs::write(dir.path().join("switchboard.toml"), config).unwrap();
        let mut serve = Serve {
            child: None,
            _sip_port: None,
            dir,
            port,
            tls_port,
            listen,
        };
        for user in users {
            let out = serve.cli(&["user", "add", user, "--password", PASSWORD]);
            assert!(out.status.success(), "user add {user}: {out:?}");
        }
        let log = std::fs::File::create(serve.dir.path().join("serve.log")).unwrap();
        serve.child = Some(
            Command::new(binary())
                .args(["serve", "--config"])
                .arg(serve.config())
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while !serve.log().contains("switchboard serve is ready") {
            let exited = serve
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || Instant::now() >= deadline {
                return Err(format!("serve did not start:\n{}", serve.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(serve)
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("switchboard.toml")
    }

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

    /// Where clients send to for `transport`: 127.0.0.1 and the port of the transport
    /// (on the wildcard too: that is one of the host's addresses).
    pub fn addr(&self, transport: Transport) -> String {
        match transport {
            Transport::Tls => format!("127.0.0.1:{}", self.tls_port.expect("started with TLS")),
            _ => format!("127.0.0.1:{}", self.port),
        }
    }

    /// bob's address as the clients call it: the server's address, and its port unless
    /// it is SIP's default (on another port `sip:bob@127.0.0.1` would name another
    /// server; the port makes it this one, as the domain without a port would).
    pub fn bob(&self) -> String {
        if self.port == SIP_PORT {
            "sip:bob@127.0.0.1".into()
        } else {
            format!("sip:bob@127.0.0.1:{}", self.port)
        }
    }

    /// The self-signed certificate serve made for TLS, written beside the database for
    /// admins to hand to phones (issue 12, defect 11). Panics when it is not there.
    pub fn certificate(&self) -> PathBuf {
        let path = self.dir.path().join("switchboard-tls.crt");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !path.exists() {
            assert!(
                Instant::now() < deadline,
                "serve wrote no certificate at {} (issue 12 defect 11: the self-signed \
                 certificate is never written where a phone can be given it)",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        path
    }

    /// The registered contacts, from `switchboard location --json`.
    pub fn location(&self) -> String {
        let out = self.cli(&["location", "--json"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `switchboard phone` with `args` after `phone`; killed when dropped.
pub fn phone(args: &[&str]) -> Proc {
    let mut cmd = Command::new(binary());
    cmd.arg("phone").args(args).env("RUST_LOG", "warn");
    Proc::spawn(cmd)
}

/// Files of the far end: what it plays and what it records.
pub struct Audio {
    /// What the far end (`switchboard phone`) plays.
    pub phone_plays: PathBuf,
    /// What the phone recorded of the client.
    pub phone_records: PathBuf,
    /// What the client plays: a tone, then silence long enough for the rest of the
    /// call (clients such as baresip hang up when their file ends).
    pub client_plays: PathBuf,
    /// The tone alone, as the reference for the phone's recording of the client.
    pub client_tone: PathBuf,
}

impl Audio {
    /// Writes a 3 s test signal for each side (different ones), the client's followed
    /// by `client_silence` seconds of silence.
    pub fn new(dir: &Path, client_silence: f64) -> Audio {
        let audio = Audio {
            phone_plays: dir.join("phone-plays.wav"),
            phone_records: dir.join("phone-records.wav"),
            client_plays: dir.join("client-plays.wav"),
            client_tone: dir.join("client-tone.wav"),
        };
        write_test_wav(&audio.phone_plays, 8000, 3.0, 500.0);
        write_test_wav(&audio.client_tone, 8000, 3.0, 300.0);
        let mut samples: Vec<i16> = hound::WavReader::open(&audio.client_tone)
            .unwrap()
            .samples::<i16>()
            .map(Result::unwrap)
            .collect();
        samples.extend(std::iter::repeat_n(0, (client_silence * 8000.0) as usize));
        write_wav(&audio.client_plays, &samples);
        audio
    }
}

/// Writes 8 kHz 16-bit mono samples.
pub fn write_wav(path: &Path, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in samples {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();
}

/// Asserts that `recording` holds `reference`: its first stretch of sound (from the
/// first sample above -40 dBFS to the first 200 ms under it) has the duration of
/// `reference` within 5%, and four in five of its eighths of a second correlate with
/// `reference` above 0.9, each at its best alignment. A
/// recording starts when the call does; a sender keeps sending silence (or the low
/// noise some add to it) once its file is over, and may send more later (linphonec
/// plays its file again as music on hold).
pub fn assert_holds(what: &str, reference: &Path, recording: &Path) {
    let reference = media::audio::read_wav_8k_mono(reference).unwrap();
    let recorded = media::audio::read_wav_8k_mono(recording)
        .unwrap_or_else(|e| panic!("{what}: cannot read {}: {e}", recording.display()));
    // The test signals stay far above -40 dBFS but for instants (zero crossings, their
    // very start, which the alignment absorbs); G.711 silence decodes to 0 or ±8.
    let loud = |s: &i16| s.unsigned_abs() > 330;
    let start = recorded.iter().position(loud);
    let Some(start) = start else {
        panic!("{what}: the recording is silent");
    };
    let mut end = start;
    let mut quiet = 0;
    for (i, s) in recorded.iter().enumerate().skip(start) {
        if loud(s) {
            end = i + 1;
            quiet = 0;
        } else {
            quiet += 1;
            if quiet >= 1600 {
                break;
            }
        }
    }
    let recorded = &recorded[start..end];
    let ratio = recorded.len() as f64 / reference.len() as f64;
    // An eighth of a second at a time, each aligned on its own around where the last
    // one was: a receiver's jitter buffer may shift its playout a little now and then
    // (linphonec's does), which a single alignment of the whole would count as a
    // mismatch.
    const BLOCK: usize = 1000;
    const SLACK: usize = 400;
    let (mut offset, mut matched, mut blocks, mut worst) = (0isize, 0, 0, f64::MAX);
    for (k, block) in reference.chunks_exact(BLOCK).enumerate() {
        let at = (k * BLOCK) as isize + offset - SLACK as isize;
        let from = at.clamp(0, recorded.len() as isize) as usize;
        let to = (from + BLOCK + 2 * SLACK).min(recorded.len());
        let (correlation, lag) = best_correlation(block, &recorded[from..to], (2 * SLACK) as isize);
        blocks += 1;
        worst = worst.min(correlation);
        if correlation > 0.9 {
            matched += 1;
            offset = from as isize + lag - (k * BLOCK) as isize;
        }
    }
    eprintln!(
        "{what}: {matched} of {blocks} eighths of a second match (worst correlation {worst:.3}), \
         duration ratio {ratio:.3}"
    );
    // Four in five: a jitter buffer that stretches or shrinks its playout to adapt
    // garbles the piece where it does.
    assert!(
        matched * 5 >= blocks * 4,
        "{what}: only {matched} of {blocks} eighths of a second match"
    );
    assert!((ratio - 1.0).abs() < 0.05, "{what}: duration ratio {ratio}");
}

/// A copy of the WAV file at `path` whose RIFF and data chunk sizes are those of the
/// file: linphonec 5.1 writes the whole file's length as the data chunk's, 44 bytes
/// more than there are.
pub fn wav_with_true_sizes(path: &Path) -> PathBuf {
    let mut bytes = std::fs::read(path).unwrap();
    let data = bytes
        .windows(4)
        .position(|w| w == b"data")
        .expect("a data chunk");
    let riff = u32::try_from(bytes.len() - 8).unwrap();
    let samples = u32::try_from(bytes.len() - data - 8).unwrap();
    bytes[4..8].copy_from_slice(&riff.to_le_bytes());
    bytes[data + 4..data + 8].copy_from_slice(&samples.to_le_bytes());
    let fixed = path.with_extension("sizes-fixed.wav");
    std::fs::write(&fixed, bytes).unwrap();
    fixed
}

/// Waits until `path` exists and has stopped growing (a recorder closing its file).
pub fn wait_for_file(path: &Path, within: Duration) {
    let deadline = Instant::now() + within;
    let mut last = None;
    loop {
        let len = std::fs::metadata(path).ok().map(|m| m.len());
        if len.is_some() && len == last {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} was not written within {within:?}",
            path.display()
        );
        last = len;
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Writes to the terminal even under the test harness's output capture, so that a
/// skipped test says why in a plain `cargo test` run.
pub fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// The outcome of one cell.
enum Outcome {
    Passed,
    Failed(String),
    NotReached(String),
}

/// The cells of one row of the matrix (client × transport × listen mode), each step
/// run and reported on its own so that a failure names its cell.
pub struct Row {
    name: String,
    cells: Vec<(String, Outcome)>,
}

impl Row {
    pub fn new(client: &str, transport: Transport, listen: Listen) -> Row {
        Row {
            name: format!(
                "{client} over {} to serve on {}",
                transport.name(),
                listen.ip()
            ),
            cells: Vec::new(),
        }
    }

    /// Runs the check of `cell`; a panic in it fails the cell (and is reported at the
    /// end), not the row. Returns the check's value when it passed.
    pub fn check<T>(&mut self, cell: &str, check: impl FnOnce() -> T) -> Option<T> {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check));
        match result {
            Ok(v) => {
                say(&format!("[{}] {cell}: passed", self.name));
                self.cells.push((cell.into(), Outcome::Passed));
                Some(v)
            }
            Err(e) => {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".into());
                let short: String = why.chars().take(600).collect();
                say(&format!("[{}] {cell}: FAILED: {short}", self.name));
                self.cells.push((cell.into(), Outcome::Failed(short)));
                None
            }
        }
    }

    /// Records that `cell` could not be checked because `why` (an earlier cell failed).
    pub fn not_reached(&mut self, cell: &str, why: &str) {
        say(&format!("[{}] {cell}: not reached: {why}", self.name));
        self.cells
            .push((cell.into(), Outcome::NotReached(why.into())));
    }

    /// Whether a cell of that name passed.
    pub fn passed(&self, cell: &str) -> bool {
        self.cells
            .iter()
            .any(|(c, o)| c == cell && matches!(o, Outcome::Passed))
    }

    /// Fails the test, naming every cell that did not pass, if any did not.
    pub fn finish(self, diagnostics: &str) {
        let failed: Vec<String> = self
            .cells
            .iter()
            .filter_map(|(cell, o)| match o {
                Outcome::Passed => None,
                Outcome::Failed(why) => Some(format!("  {cell}: FAILED: {why}")),
                Outcome::NotReached(why) => Some(format!("  {cell}: not reached ({why})")),
            })
            .collect();
        if !failed.is_empty() {
            panic!(
                "{}:\n{}\n--- diagnostics:\n{diagnostics}",
                self.name,
                failed.join("\n")
            );
        }
    }
}

/// The phone that answers the client's calls: `bob`, registered to serve over
/// `transport`, auto-answering, playing [`Audio::phone_plays`] and recording to
/// [`Audio::phone_records`]. Waits for its registration.
pub fn answering_phone(serve: &Serve, transport: Transport, audio: &Audio) -> Proc {
    let server = serve.addr(transport);
    let mut args = vec![
        "--user".to_owned(),
        "bob".into(),
        "--password".into(),
        PASSWORD.into(),
        "--server".into(),
        server,
        "--transport".into(),
        transport.name().into(),
    ];
    if transport == Transport::Tls {
        args.push("--ca".into());
        args.push(serve.certificate().display().to_string());
    }
    args.extend([
        "answer".into(),
        "--auto".into(),
        "--play".into(),
        audio.phone_plays.display().to_string(),
        "--record".into(),
        audio.phone_records.display().to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut bob = phone(&args);
    bob.expect("registered: ", Duration::from_secs(10));
    bob
}

/// Whether `program` can be run (installed by `scripts/test`).
pub fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--help")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}
