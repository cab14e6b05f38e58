//! `switchboard user …` and `switchboard location` run as an admin runs them: the real
//! binary, a configuration file in a temporary directory, the SQLite file beside it.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use store::{Binding, Durability, LocationStore, SqliteLocationStore, Transport};

struct Env {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sb.toml");
        // A relative database path is relative to the working directory, which `run` sets
        // to the temporary directory.
        std::fs::write(
            &config,
            "[sip]\ndomain = \"example.test\"\n[storage]\ndatabase = \"sb.db\"\n",
        )
        .unwrap();
        Env { dir, config }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("sb.db")
    }

    /// Runs `switchboard ARGS --config sb.toml`; returns (exit code, stdout, stderr).
    fn run(&self, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (code, out, err) = self.run(args, stdin);
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    }

    fn names(&self) -> Vec<String> {
        let out = self.ok(&["user", "list", "--json"], None);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|u| u["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn file_contains(path: &Path, needle: &str) -> bool {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn add_list_passwd_remove() {
    let env = Env::new();
    assert_eq!(
        env.ok(&["user", "add", "alice", "--password", "Secret-One"], None),
        format!(
            "added user alice (sip:alice@example.test) to {}\n",
            env.db().display()
        )
    );
    env.ok(
        &["user", "add", "bob", "--password-stdin"],
        Some("Secret-Two\n"),
    );
    let (code, _, err) = env.run(&["user", "add", "alice", "--password", "x"], None);
    assert_eq!(
        (code, err.as_str()),
        (1, "error: user \"alice\" already exists\n")
    );
    let (code, _, err) = env.run(&["user", "add", "carol"], None);
    assert_eq!(code, 2, "clap refuses a missing password: {err}");
    let (code, _, err) = env.run(&["user", "add", "bad name", "--password", "x"], None);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: invalid user name \"bad name\""),
        "{err}"
    );

    let table = env.ok(&["user", "list"], None);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("NAME   EXTENSION  FORWARDING  REALM         CREATED"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("alice  -          -           example.test  "),
        "{table}"
    );
    assert_eq!(env.names(), ["alice", "bob"]);

    env.ok(
        &["user", "passwd", "alice", "--password", "Secret-Three"],
        None,
    );
    let (code, _, err) = env.run(&["user", "passwd", "zed", "--password", "x"], None);
    assert_eq!((code, err.as_str()), (1, "error: no user \"zed\"\n"));

    // The hashes are the digest HA1 of the current password, and no password is stored.
    let users = store::SqliteUserStore::open(&env.db()).unwrap();
    use store::UserStore;
    let alice = users.get("alice").unwrap().unwrap();
    assert_eq!(
        alice.ha1,
        store::Ha1Set::compute("alice", "example.test", "Secret-Three")
    );
    drop(users);
    for f in ["sb.db", "sb.db-wal"] {
        for pw in ["Secret-One", "Secret-Two", "Secret-Three"] {
            assert!(!file_contains(&env.dir.path().join(f), pw), "{pw} in {f}");
        }
    }

    assert_eq!(
        env.ok(&["user", "remove", "bob"], None),
        "removed user bob\n"
    );
    let (code, _, _) = env.run(&["user", "remove", "bob"], None);
    assert_eq!(code, 1);
    assert_eq!(env.names(), ["alice"]);
}

#[test]
fn import_1000_users_in_one_go() {
    let env = Env::new();
    env.ok(&["user", "add", "u7", "--password", "old"], None);
    let mut csv = String::from("# name,password\n\n");
    for i in 0..1000 {
        csv.push_str(&format!("u{i},pw,{i}\r\n"));
    }
    let file = env.dir.path().join("users.csv");
    std::fs::write(&file, &csv).unwrap();
    let out = env.ok(&["user", "import", file.to_str().unwrap()], None);
    assert_eq!(
        out,
        format!(
            "imported 1000 users (999 added, 1 updated) into {}\n",
            env.db().display()
        )
    );
    assert_eq!(env.names().len(), 1000);
    let users = store::SqliteUserStore::open(&env.db()).unwrap();
    use store::UserStore;
    assert_eq!(
        users.get("u7").unwrap().unwrap().ha1,
        store::Ha1Set::compute("u7", "example.test", "pw,7"),
        "the password is everything after the first comma"
    );
    drop(users);

    // One bad line and nothing is imported.
    let out = env.run(
        &["user", "import", "-"],
        Some("new1,a\nnot a line\nnew2,b\nnew1,c\n"),
    );
    assert_eq!(out.0, 1);
    assert_eq!(
        out.2,
        "error: nothing imported; 2 bad line(s):\n  -:2: expected name,password\n  -:4: new1 appears twice\n"
    );
    assert_eq!(env.names().len(), 1000);
}

#[test]
fn location_empty_and_with_a_binding() {
    let env = Env::new();
    // `serve` makes the database; here, the store does.
    drop(SqliteLocationStore::open(&env.db(), Durability::Process).unwrap());
    assert_eq!(
        env.ok(&["location"], None),
        format!("no current registrations in {}\n", env.db().display())
    );
    assert_eq!(env.ok(&["location", "--json"], None), "[]\n");

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut loc = SqliteLocationStore::open(&env.db(), Durability::Process).unwrap();
    loc.upsert(Binding {
        aor: "sip:alice@example.test".into(),
        contact: "sip:alice@192.0.2.7:5062;transport=tcp".into(),
        expires_at: now + 3000,
        q: Some(500),
        call_id: "abc".into(),
        cseq: 3,
        transport: Transport::Tcp,
        source: "192.0.2.7:5062".parse().unwrap(),
        path: vec![],
        instance_id: None,
        reg_id: None,
        user_agent: Some("Phone/2.1".into()),
        registered_at: now,
    })
    .unwrap();
    // `serve` keeps its connection open meanwhile: the CLI works beside it.
    let table = env.ok(&["location"], None);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[0].starts_with("AOR                     CONTACT"),
        "{table}"
    );
    for cell in [
        "sip:alice@example.test",
        "sip:alice@192.0.2.7:5062;transport=tcp",
        "tcp",
        "192.0.2.7:5062",
        "Phone/2.1",
    ] {
        assert!(lines[1].contains(cell), "{cell}: {table}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["location", "--json"], None)).unwrap();
    let b = &v[0];
    assert_eq!(b["aor"], "sip:alice@example.test");
    assert_eq!(b["q"], 0.5);
    assert!(b["expires_in"].as_u64().unwrap() <= 3000);
    drop(loc);
}

#[test]
fn config_errors_are_reported() {
    let env = Env::new();
    let (code, _, err) = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["location", "--config", "/nonexistent/sb.toml"])
        .output()
        .map(|o| {
            (
                o.status.code().unwrap_or(-1),
                String::new(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: cannot read the configuration /nonexistent/sb.toml: "),
        "{err}"
    );
    std::fs::write(
        &env.config,
        "[storage]\ndatabase = \"redis://127.0.0.1/\"\n",
    )
    .unwrap();
    let (code, _, err) = env.run(&["user", "list"], None);
    assert_eq!(code, 1);
    assert!(
        err.contains("the redis backend is not built in yet"),
        "{err}"
    );
}

#[test]
fn extensions_are_set_changed_removed_and_never_shared() {
    let env = Env::new();
    assert_eq!(
        env.ok(
            &[
                "user",
                "add",
                "alice",
                "--password",
                "pw",
                "--extension",
                "201"
            ],
            None
        ),
        format!(
            "added user alice (sip:alice@example.test, extension 201) to {}\n",
            env.db().display()
        )
    );
    env.ok(&["user", "add", "bob", "--password", "pw"], None);
    // A duplicate is refused, and nothing is added.
    let (code, _, err) = env.run(
        &[
            "user",
            "add",
            "carol",
            "--password",
            "pw",
            "--extension",
            "201",
        ],
        None,
    );
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "error: extension \"201\" is already taken by user \"alice\"\n"
        )
    );
    assert_eq!(env.names(), ["alice", "bob"]);
    let (code, _, err) = env.run(&["user", "extension", "bob", "201"], None);
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "error: extension \"201\" is already taken by user \"alice\"\n"
        )
    );
    let (code, _, err) = env.run(&["user", "add", "201", "--password", "pw"], None);
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "error: name \"201\" is already taken by user \"alice\"\n"
        )
    );
    let (code, _, err) = env.run(&["user", "extension", "bob", "2O2"], None);
    assert_eq!(
        (code, err.as_str()),
        (1, "error: invalid extension \"2O2\": use digits only\n")
    );
    assert_eq!(
        env.ok(&["user", "extension", "bob", "202"], None),
        "bob has extension 202 (sip:202@example.test)\n"
    );
    assert_eq!(
        env.ok(&["user", "extension", "alice", "--remove"], None),
        "alice has no extension now\n"
    );
    let (code, _, _) = env.run(&["user", "extension", "alice"], None);
    assert_eq!(code, 2, "a number or --remove");
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["user", "list", "--json"], None)).unwrap();
    assert_eq!(v[0]["extension"], serde_json::Value::Null);
    assert_eq!(v[1]["extension"], "202");
}

#[test]
fn forwarding_is_set_shown_checked_and_turned_off() {
    let env = Env::new();
    // A plan that routes 9… out through a trunk and refuses 00….
    std::fs::write(
        env.dir.path().join("plan.toml"),
        "[[rule]]\nprefix = \"9\"\naction = \"trunk\"\ntrunk = \"carrier1\"\n\n\
         [[rule]]\nprefix = \"00\"\naction = \"reject\"\ncode = 403\nreason = \"Not abroad\"\n\n\
         [[rule]]\npattern = \"_!\"\naction = \"extension\"\n",
    )
    .unwrap();
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config.push_str("[pbx]\ndial_plan = \"plan.toml\"\n");
    std::fs::write(&env.config, config).unwrap();
    env.ok(
        &[
            "user",
            "add",
            "alice",
            "--password",
            "pw",
            "--extension",
            "201",
        ],
        None,
    );
    env.ok(
        &[
            "user",
            "add",
            "bob",
            "--password",
            "pw",
            "--extension",
            "202",
        ],
        None,
    );

    let out = env.ok(
        &[
            "user",
            "forward",
            "alice",
            "--busy",
            "bob",
            "--no-answer",
            "202",
            "--after",
            "15",
            "--unreachable",
            "90612345678",
        ],
        None,
    );
    assert_eq!(
        out.trim(),
        "alice: forwarded on busy to bob, on no answer after 15 s to 202, on unreachable to 90612345678"
    );
    let show = env.ok(&["user", "show", "alice"], None);
    for line in [
        "extension    201",
        "always       -",
        "busy         bob",
        "no answer    202 (after 15 s)",
        "unreachable  90612345678",
    ] {
        assert!(show.contains(line), "{line}\n{show}");
    }
    let table = env.ok(&["user", "list"], None);
    assert!(
        table.contains("busy>bob no_answer(15s)>202 unreachable>90612345678"),
        "{table}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["user", "show", "alice", "--json"], None)).unwrap();
    assert_eq!(v["forwarding"]["no_answer"], "202");
    assert_eq!(v["forwarding"]["no_answer_secs"], 15);
    assert!(v["forwarding"]["always"].is_null());

    // Faults, each said plainly; nothing changes.
    for (args, want) in [
        (
            vec!["user", "forward", "zed", "--busy", "bob"],
            "error: no user \"zed\"",
        ),
        (
            vec!["user", "forward", "alice", "--busy", "carol"],
            "error: cannot forward to \"carol\": no user has that extension or name, and the dial plan (plan.toml) sends it to extension carol, which nobody has",
        ),
        (
            vec!["user", "forward", "alice", "--always", "0044207"],
            "error: cannot forward to \"0044207\": it is no user's extension or name, and the dial plan (plan.toml) refuses it when alice dials it: 403 Not abroad",
        ),
        (
            vec!["user", "forward", "alice", "--always", "201"],
            "error: invalid forwarding \"201\": that is the user themself",
        ),
        (
            vec!["user", "forward", "alice", "--busy", "bob@example.test"],
            "error: invalid forwarding \"bob@example.test\"",
        ),
        (
            vec![
                "user",
                "forward",
                "alice",
                "--no-answer",
                "bob",
                "--after",
                "0",
            ],
            "error: invalid forwarding \"bob\": the no-answer time must be 1 to 600 seconds",
        ),
    ] {
        let (code, _, err) = env.run(&args, None);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.starts_with(want), "{args:?}:\n{err}");
    }
    // clap refuses what makes no sense, with exit code 2.
    for args in [
        vec!["user", "forward", "alice"],
        vec!["user", "forward", "alice", "--after", "10"],
        vec!["user", "forward", "alice", "--off", "--busy", "bob"],
    ] {
        let (code, _, err) = env.run(&args, None);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    let (_, help, _) = env.run(&["user", "forward", "--help"], None);
    assert!(
        help.contains("switchboard user forward alice --no-answer 202 --after 15"),
        "{help}"
    );
    assert!(
        help.contains("- no-answer:   Forwarding on no answer"),
        "{help}"
    );

    let out = env.ok(&["user", "forward", "alice", "--off", "busy"], None);
    assert_eq!(
        out.trim(),
        "alice: forwarded on no answer after 15 s to 202, on unreachable to 90612345678"
    );
    let out = env.ok(&["user", "forward", "alice", "--always", "bob"], None);
    assert!(
        out.trim()
            .starts_with("alice: forwarded always to bob, on no answer"),
        "{out}"
    );
    let out = env.ok(&["user", "forward", "alice", "--off"], None);
    assert_eq!(out.trim(), "alice: no forwarding");
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["user", "list", "--json"], None)).unwrap();
    assert!(v[0]["forwarding"]["no_answer"].is_null());
    assert_eq!(v[0]["forwarding"]["no_answer_secs"], 20);
}
