//! Issue 14, the parts that need no B2BUA, with the real binary on loopback: users with
//! extensions, `switchboard phone` dialling 201 to reach alice through `serve` and its
//! dial plan, plan rules that reject or need the B2BUA (480 and a log line), reloading
//! the plan (file change, SIGHUP, an invalid plan keeping the old one), and
//! `switchboard route` with its output and exit codes.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, ServerOptions, binary, free_port};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// A plan where 2XX are extensions, 0044… is refused, 00… goes to a trunk, and names
/// reach users.
const PLAN: &str = r#"timezone = "UTC"

[[rule]]
name = "extensions"
pattern = "_2XX"
action = "extension"

[[rule]]
name = "no UK"
prefix = "0044"
action = "reject"
code = 403
reason = "Not to the UK"

[[rule]]
name = "abroad"
prefix = "00"
action = "trunk"
trunk = "carrier1"

[[rule]]
name = "reception"
exact = "0"
action = "ring_group"
group = "reception"

[[rule]]
name = "names"
pattern = "_!"
action = "extension"

[ring_group.reception]
strategy = "sequential"
members = ["201", "carol", "209"]
ring_seconds = 15
fallback = { action = "voicemail", mailbox = "201" }
"#;

/// A `switchboard phone` whose output goes to a file, killed when dropped.
struct Phone {
    child: Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Phone {
    fn start(args: &[&str]) -> Phone {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.txt");
        let child = Command::new(binary())
            .arg("phone")
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(dir.path().join("err.txt")).unwrap())
            .spawn()
            .unwrap();
        Phone {
            child,
            out,
            _dir: dir,
        }
    }

    fn printed(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn expect(&self, what: &str) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.printed().contains(what) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the phone did not print {what:?}:\n{}", self.printed());
    }

    fn exit_code(&mut self) -> i32 {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the phone did not exit:\n{}", self.printed());
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn account<'a>(server: &'a str, user: &'a str) -> [&'a str; 8] {
    [
        "--user",
        user,
        "--password",
        "pw",
        "--server",
        server,
        "--domain",
        "example.test",
    ]
}

/// A server with the plan `plan` at `dialplan.toml`, alice (extension 201) and bob.
fn server(plan: &str) -> (Server, PathBuf) {
    let mut server = Server::start_stopped(ServerOptions::default());
    let path = server.dir.path().join("dialplan.toml");
    std::fs::write(&path, plan).unwrap();
    let config = server.config();
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&format!("[pbx]\ndial_plan = \"{}\"\n", path.display()));
    std::fs::write(&config, toml).unwrap();
    let ok = |out: Output| assert!(out.status.success(), "{out:?}");
    ok(server.cli(&[
        "user",
        "add",
        "alice",
        "--password",
        "pw",
        "--extension",
        "201",
    ]));
    ok(server.cli(&["user", "add", "bob", "--password", "pw"]));
    server.spawn();
    (server, path)
}

/// alice, registered and listening.
fn alice(srv: &str) -> Phone {
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let args = [
        &account(srv, "alice")[..],
        &["--listen", &listen, "answer", "--auto"],
    ]
    .concat();
    let alice = Phone::start(&args);
    alice.expect("registered: sip:alice@example.test");
    alice
}

/// bob sends a MESSAGE to `target`; its exit code.
fn message_from_bob(srv: &str, target: &str, text: &str) -> i32 {
    let args = [&account(srv, "bob")[..], &["message", target, text]].concat();
    Phone::start(&args).exit_code()
}

/// Replaces the plan file as editors do: a new file renamed over the old one.
fn write_plan(path: &Path, text: impl AsRef<[u8]>) {
    let new = path.with_extension("new");
    std::fs::write(&new, text).unwrap();
    std::fs::rename(&new, path).unwrap();
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool, log: impl Fn() -> String) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not happen; log:\n{}", log());
}

#[test]
fn dialling_201_reaches_alice_by_number_and_rules_answer_the_rest() {
    let (server, _) = server(PLAN);
    let srv = format!("127.0.0.1:{}", server.port);
    let alice = alice(&srv);

    // A call to her number: her phone rings and answers, and bob hangs up.
    let args = [
        &account(&srv, "bob")[..],
        &["call", "sip:201@example.test", "--hangup-after", "1"],
    ]
    .concat();
    let mut bob = Phone::start(&args);
    assert_eq!(
        bob.exit_code(),
        0,
        "bob:\n{}\nlog:\n{}",
        bob.printed(),
        server.log()
    );
    assert!(bob.printed().contains("answered"), "{}", bob.printed());
    alice.expect("incoming: ");

    // A message to her number and to her name.
    assert_eq!(
        message_from_bob(&srv, "sip:201@example.test", "by number"),
        0
    );
    alice.expect("by number");
    assert_eq!(
        message_from_bob(&srv, "sip:alice@example.test", "by name"),
        0
    );
    alice.expect("by name");

    // An extension nobody has: 404 (exit 5); a reject rule: its 403 (exit 5); a trunk,
    // which needs the B2BUA: 480 (exit 4) and a log line that says so.
    assert_eq!(message_from_bob(&srv, "sip:299@example.test", "x"), 5);
    assert_eq!(message_from_bob(&srv, "sip:00441234@example.test", "x"), 5);
    assert_eq!(message_from_bob(&srv, "sip:00331234@example.test", "x"), 4);
    let log = server.log();
    assert!(
        log.contains(
            "dial plan: trunk carrier1 is not served yet (it needs the B2BUA); answered 480"
        ),
        "{log}"
    );
    assert!(log.contains("rejected with 403"), "{log}");
}

#[test]
fn a_stranger_learns_nothing_from_extensions() {
    let (server, _) = server(PLAN);
    let srv = format!("127.0.0.1:{}", server.port);
    let _alice = alice(&srv);
    // Without credentials every number, real or not, rejected or not, gets the same
    // challenge: the phone with a wrong password gives up the same way for each.
    let mut codes = Vec::new();
    for target in [
        "sip:201@example.test",
        "sip:299@example.test",
        "sip:00441234@example.test",
    ] {
        let args = [
            "--user",
            "bob",
            "--password",
            "wrong",
            "--server",
            &srv,
            "--domain",
            "example.test",
            "message",
            target,
            "x",
        ];
        codes.push(Phone::start(&args).exit_code());
    }
    assert!(codes.iter().all(|c| *c == codes[0]), "{codes:?}");
    assert!(!server.log().contains("dial plan: "), "{}", server.log());
}

#[test]
fn the_plan_is_reloaded_on_change_and_sighup_and_a_bad_one_is_refused() {
    let (server, path) = server(PLAN);
    let srv = format!("127.0.0.1:{}", server.port);
    let alice = alice(&srv);
    assert_eq!(message_from_bob(&srv, "sip:201@example.test", "one"), 0);
    alice.expect("one");

    // The file changes: 201 is refused from now on.
    let closed = PLAN.replacen(
        "pattern = \"_2XX\"\naction = \"extension\"",
        "pattern = \"_2XX\"\naction = \"reject\"\ncode = 403",
        1,
    );
    write_plan(&path, &closed);
    wait_for(
        "the reload on change",
        || server.log().contains("toml reloaded (the file changed)"),
        || server.log(),
    );
    assert_eq!(message_from_bob(&srv, "sip:201@example.test", "two"), 5);

    // A plan with faults: named with file, line and key, and the last good plan stays.
    write_plan(&path, closed.replacen("code = 403", "code = 200", 1));
    wait_for(
        "the refused reload",
        || server.log().contains("not reloaded"),
        || server.log(),
    );
    let log = server.log();
    let want = format!(
        "{}:7: rule 1 \"extensions\": code: 200 is out of range",
        path.display()
    );
    assert!(log.contains(&want), "{want}\n{log}");
    assert_eq!(message_from_bob(&srv, "sip:201@example.test", "three"), 5);

    // The good plan back, and SIGHUP reloads it too.
    write_plan(&path, PLAN);
    wait_for(
        "the second reload",
        || {
            server
                .log()
                .matches("toml reloaded (the file changed)")
                .count()
                == 2
        },
        || server.log(),
    );
    let code = message_from_bob(&srv, "sip:201@example.test", "four");
    assert_eq!(code, 0, "{}", server.log());
    alice.expect("four");
    let pid = server.pid().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_for(
        "the reload on SIGHUP",
        || server.log().contains("reloaded (SIGHUP)"),
        || server.log(),
    );
    assert_eq!(message_from_bob(&srv, "sip:201@example.test", "five"), 0);
}

fn route(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary())
        .arg("route")
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

#[test]
fn route_prints_the_decision_with_exit_codes() {
    let mut server = Server::start_stopped(ServerOptions::default());
    let dir = server.dir.path().to_owned();
    std::fs::write(dir.join("dialplan.toml"), PLAN).unwrap();
    let mut toml = std::fs::read_to_string(server.config()).unwrap();
    toml.push_str("[pbx]\ndial_plan = \"dialplan.toml\"\n");
    std::fs::write(server.config(), toml).unwrap();
    let config = server.config().display().to_string();
    let out = server.cli(&[
        "user",
        "add",
        "alice",
        "--password",
        "pw",
        "--extension",
        "201",
    ]);
    assert!(out.status.success());

    let (code, out, err) = route(&dir, &["201", "--from", "bob", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("no user \"bob\""), "{err}");
    for line in [
        "dialled    201",
        "rule       1 \"extensions\", line 3 of dialplan.toml (pattern _2XX)",
        "number     201",
        "action     extension 201 (user alice)",
        "caller id  \"bob\" <bob>",
        "serve      rings the phones alice registered",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
    // A ring group: its strategy and members, each with the user it reaches.
    let out = server.cli(&["user", "add", "carol", "--password", "pw"]);
    assert!(out.status.success());
    let (code, out, err) = route(&dir, &["0", "--from", "alice", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    for line in [
        "action     ring group reception",
        "group      reception sequential: 201 (alice), carol, 209 (no such user) (15 s each), then voicemail of 201",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
    // The callee's forwarding, which the B2BUA follows.
    // (in the server's folder: the plan's path is relative to it, as for `route`)
    let out = Command::new(binary())
        .args([
            "user",
            "forward",
            "alice",
            "--no-answer",
            "carol",
            "--busy",
            "0033612",
        ])
        .args(["--config", &config])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, out, err) = route(&dir, &["201", "--from", "bob", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("action     extension 201 (user alice), forwarded on busy to 0033612, on no answer after 20 s to carol\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "serve      the B2BUA rings the phones alice registered, following the forwarding"
        ),
        "{out}"
    );
    let (code, out, _) = route(
        &dir,
        &["0", "--from", "alice", "--config", &config, "--json"],
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ring_group"]["strategy"], "sequential");
    assert_eq!(v["ring_group"]["members"][1], "carol");
    assert_eq!(v["ring_group"]["fallback"]["kind"], "voicemail");

    let (code, out, _) = route(&dir, &["0044123", "--from", "alice", "--config", &config]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("action     reject 403 Not to the UK"), "{out}");
    let (code, out, _) = route(
        &dir,
        &[
            "0033123",
            "--from",
            "alice",
            "--config",
            &config,
            "--json",
            "--at",
            "2026-12-07T10:00",
        ],
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["action"]["kind"], "trunk");
    assert_eq!(v["action"]["trunks"][0], "carrier1");
    assert_eq!(v["rule"]["line"], 15);
    assert_eq!(v["caller_id"]["number"], "201");
    assert!(
        v["serve"].as_str().unwrap().starts_with("answers 480"),
        "{v}"
    );
    assert!(
        v["at"]
            .as_str()
            .unwrap()
            .starts_with("2026-12-07T10:00:00+00:00"),
        "{v}"
    );

    // A plan with faults: every one, with file, line and key; exit 2; serve refuses it.
    std::fs::write(
        dir.join("bad.toml"),
        "[[rule]]\npattern = \"_2X[\"\naction = \"extension\"\n\n[[rule]]\nexact = \"1\"\naction = \"ring_group\"\n\n[[rule]]\nexact = \"2\"\naction = \"ring_group\"\ngroup = \"sales\"\n",
    )
    .unwrap();
    let (code, _, err) = route(&dir, &["1", "--from", "alice", "--plan", "bad.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.toml:2: rule 1: pattern: \"_2X[\": '[' is not closed by ']'"),
        "{err}"
    );
    assert!(
        err.contains("bad.toml:7: rule 2: group: action = \"ring_group\" needs group"),
        "{err}"
    );
    assert!(
        err.contains("bad.toml:12: rule 3: group: no [ring_group.sales] in the plan (the plan has no ring groups)"),
        "{err}"
    );
    let (code, _, err) = route(&dir, &["1", "--from", "alice", "--at", "soon"]);
    assert_eq!(code, 1, "{err}");

    let mut toml = std::fs::read_to_string(server.config()).unwrap();
    toml = toml.replace("dialplan.toml", &dir.join("bad.toml").display().to_string());
    std::fs::write(server.config(), toml).unwrap();
    let out = Command::new(binary())
        .args(["serve", "--config", &config])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:2: rule 1: pattern:"), "{err}");
    server.kill9();
}
