//! `switchboard user …` and `switchboard location`: provisioning users and looking at
//! registrations from the command line, in the database `serve` uses.
//!
//! They read the same `--config FILE` as `serve` (the defaults when it is not given) and
//! work whether `serve` is running or not: the SQLite file is in WAL mode, so a second
//! process can read and write beside it, waiting briefly if `serve` holds the write lock.
//! Passwords are hashed here (HA1 per digest algorithm, for the realm = `[sip] domain`) and
//! never stored.

use crate::config::Config;
use crate::registrar::http_date;
use crate::user_ops;
use clap::{Args, Subcommand};
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};
use store::{
    Backend, Binding, Durability, LocationStore, SqliteLocationStore, SqliteUserStore, StoreError,
};
use store::{Forwarding, User, UserStore};

/// What `switchboard user` does.
#[derive(Subcommand, Debug)]
pub enum UserAction {
    /// Add a user who may register as NAME@domain, and be called by name or extension.
    Add {
        /// The user name: the user part of the address and the digest username.
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
        /// The user's extension number (1 to 16 digits): callers may dial it instead of
        /// the name (sip:201@domain). Unique, and never another user's name.
        #[arg(long, value_name = "NUMBER")]
        extension: Option<String>,
    },
    /// Set or remove a user's extension number.
    ///
    /// Examples:
    ///   switchboard user extension alice 201       alice answers sip:201@domain too
    ///   switchboard user extension alice --remove  only by name again
    Extension {
        /// The user name.
        name: String,
        /// The new extension (1 to 16 digits).
        #[arg(required_unless_present = "remove", conflicts_with = "remove")]
        number: Option<String>,
        /// Take the user's extension away.
        #[arg(long)]
        remove: bool,
    },
    /// Forward a user's calls: always, when busy, when not answered in time, or when
    /// their phones cannot be reached. Options combine; each replaces that kind only.
    ///
    /// A TARGET is an extension number, a user name, or a number the dial plan routes
    /// as if the user dialled it (an outside number through a trunk, voicemail, a ring
    /// group's number). It is checked now: a target nobody has and the plan does not
    /// route, or the user themself, is refused. The B2BUA follows forwarding, several
    /// hops if need be; a loop (alice to bob to alice) ends the call with 482. `user show
    /// NAME` shows it.
    #[command(after_help = "Examples:
  switchboard user forward alice --no-answer 202 --after 15   ring 15 s, then 202
  switchboard user forward alice --busy bob --unreachable 0612345678
  switchboard user forward alice --always 200    every call to 200, no ringing
  switchboard user forward alice --off busy      stop forwarding on busy
  switchboard user forward alice --off           stop all forwarding")]
    #[command(group(
        clap::ArgGroup::new("forwarding")
            .required(true)
            .multiple(true)
            .args(["always", "busy", "no_answer", "unreachable", "off"])
    ))]
    Forward {
        /// The user name.
        name: String,
        /// Forward every call, without ringing the user's phones.
        #[arg(long, value_name = "TARGET")]
        always: Option<String>,
        /// Forward when the phones answer busy (486, 600).
        #[arg(long, value_name = "TARGET")]
        busy: Option<String>,
        /// Forward when nobody answers within --after seconds.
        #[arg(long, value_name = "TARGET")]
        no_answer: Option<String>,
        /// Seconds the phones ring before --no-answer forwards (1 to 600; 20 by default).
        #[arg(long, value_name = "SECS", requires = "no_answer")]
        after: Option<u32>,
        /// Forward when no phone can be reached (none registered, or no response).
        #[arg(long, value_name = "TARGET")]
        unreachable: Option<String>,
        /// Stop forwarding: every kind, or only KIND.
        #[arg(
            long,
            value_name = "KIND",
            num_args = 0..=1,
            default_missing_value = "all",
            conflicts_with_all = ["always", "busy", "no_answer", "unreachable"]
        )]
        off: Option<ForwardOff>,
    },
    /// Show one user: address, extension, realm, when added, and call forwarding.
    Show {
        /// The user name.
        name: String,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// List the users (name, extension, forwarding, realm, when added).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a user. Their current registrations stay until they expire.
    Remove {
        /// The user name.
        name: String,
    },
    /// Set a user's password.
    Passwd {
        /// The user name.
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Add or update many users from a file of `name,password` lines, in one transaction:
    /// all of them or, if any line is wrong, none. Blank lines and lines starting with `#`
    /// are skipped; the password is everything after the first comma.
    Import {
        /// The file, or `-` for standard input.
        file: PathBuf,
    },
}

/// Which forwarding `user forward --off` stops.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardOff {
    /// Every kind.
    All,
    /// Unconditional forwarding.
    Always,
    /// Forwarding on busy.
    Busy,
    /// Forwarding on no answer.
    NoAnswer,
    /// Forwarding on unreachable.
    Unreachable,
}

/// Where the password comes from: exactly one of the two.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct PasswordArgs {
    /// The password (visible to other local users in the process list; prefer
    /// --password-stdin on shared machines).
    #[arg(long)]
    password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes to standard output, ignoring a closed pipe (`switchboard user list | head`):
/// the reader has what it wanted, and that is no reason to panic.
pub(crate) fn emit(text: impl std::fmt::Display) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// Prints `error: …` and returns exit code 1.
pub(crate) fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

pub(crate) fn load_config(path: Option<&Path>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None => Ok(Config::default()),
    }
}

/// The SQLite file a command works on, and where that choice came from, so that an
/// admin who ran it in the wrong folder or with the wrong `--config` sees which file was
/// meant.
pub(crate) struct Database {
    /// The file, absolute.
    pub(crate) path: PathBuf,
    /// Where the setting came from, for messages.
    pub(crate) origin: String,
}

impl Database {
    /// The SQLite file the configuration names; the CLI only manages SQLite databases.
    pub(crate) fn of(config: &Config, config_path: Option<&Path>) -> Result<Database, String> {
        let setting = &config.storage.database;
        let Backend::Sqlite(file) = Backend::parse(setting).map_err(|e| e.to_string())? else {
            return Err(format!(
                "[storage] database = \"{setting}\" keeps nothing on disk; there are no users to manage"
            ));
        };
        let path = std::path::absolute(&file).unwrap_or_else(|_| file.clone());
        let relative = if file.is_relative() {
            ", relative to the working directory"
        } else {
            ""
        };
        let origin = match config_path {
            Some(c) => format!(
                "[storage] database = \"{setting}\" in {}{relative}",
                std::path::absolute(c)
                    .unwrap_or_else(|_| c.to_owned())
                    .display()
            ),
            None => {
                format!("the default database \"{setting}\"{relative}, as no --config was given")
            }
        };
        Ok(Database { path, origin })
    }

    /// Says that the file is not there, and how to name the right one.
    pub(crate) fn missing(&self) -> String {
        format!(
            "no database at {} ({}); run this in the folder `serve` runs in, or pass the \
             configuration `serve` uses with --config FILE",
            self.path.display(),
            self.origin
        )
    }

    /// Opens the call records of an existing database only.
    pub(crate) fn existing_cdrs(&self) -> Result<store::CdrStore, String> {
        store::CdrStore::open_existing(&self.path).map_err(|e| match e {
            StoreError::Missing { .. } => self.missing(),
            e => e.to_string(),
        })
    }

    /// Opens the users of an existing database only.
    pub(crate) fn existing_users(&self) -> Result<SqliteUserStore, String> {
        SqliteUserStore::open_existing(&self.path).map_err(|e| match e {
            StoreError::Missing { .. } => self.missing(),
            e => e.to_string(),
        })
    }
}

pub(crate) fn read_password(args: &PasswordArgs) -> Result<String, String> {
    let pw = match &args.password {
        Some(p) => p.clone(),
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if pw.is_empty() {
        return Err("the password is empty".into());
    }
    Ok(pw)
}

/// Runs `switchboard user ACTION`.
pub fn run_user(config: Option<&Path>, action: UserAction) -> ExitCode {
    match user(config, action) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn user(config_path: Option<&Path>, action: UserAction) -> Result<(), String> {
    let config = load_config(config_path)?;
    let db = Database::of(&config, config_path)?;
    let realm = config.sip.domain.as_str();
    // Adding users may start a database; anything else works on one that exists, and
    // never leaves an empty file where it was run by mistake.
    let creates = matches!(action, UserAction::Add { .. } | UserAction::Import { .. });
    let mut users = if creates {
        let existed = db.path.exists();
        let users = SqliteUserStore::open(&db.path).map_err(|e| e.to_string())?;
        if !existed {
            eprintln!(
                "note: created a new database {} ({})",
                db.path.display(),
                db.origin
            );
        }
        users
    } else {
        db.existing_users()?
    };
    let file = db.path.display();
    match action {
        UserAction::Add {
            name,
            password,
            extension,
        } => {
            let pw = read_password(&password)?;
            user_ops::add(&mut users, realm, &name, &pw, extension.as_deref(), now())
                .map_err(|e| e.message)?;
            match extension {
                Some(ext) => emit(format_args!(
                    "added user {name} (sip:{name}@{realm}, extension {ext}) to {file}"
                )),
                None => emit(format_args!(
                    "added user {name} (sip:{name}@{realm}) to {file}"
                )),
            }
        }
        UserAction::Extension { name, number, .. } => {
            user_ops::set_extension(&mut users, &name, number.as_deref()).map_err(|e| e.message)?;
            match number {
                Some(ext) => emit(format_args!(
                    "{name} has extension {ext} (sip:{ext}@{realm})"
                )),
                None => emit(format_args!("{name} has no extension now")),
            }
        }
        UserAction::Forward {
            name,
            always,
            busy,
            no_answer,
            after,
            unreachable,
            off,
        } => {
            let user = users
                .get(&name)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no user \"{name}\" in {file}"))?;
            let mut f = user.forwarding.clone();
            match off {
                Some(ForwardOff::All) => f = Forwarding::default(),
                Some(ForwardOff::Always) => f.always = None,
                Some(ForwardOff::Busy) => f.busy = None,
                Some(ForwardOff::NoAnswer) => {
                    f.no_answer = None;
                    f.no_answer_secs = Forwarding::DEFAULT_NO_ANSWER_SECS;
                }
                Some(ForwardOff::Unreachable) => f.unreachable = None,
                None => {}
            }
            let plan = forward_plan(&config)?;
            for (target, set) in [
                (always, &mut f.always),
                (busy, &mut f.busy),
                (no_answer, &mut f.no_answer),
                (unreachable, &mut f.unreachable),
            ] {
                if let Some(target) = target {
                    check_target(&users, &plan, &user, &target)?;
                    *set = Some(target);
                }
            }
            if let Some(secs) = after {
                f.no_answer_secs = secs;
            }
            users.set_forwarding(&name, &f).map_err(|e| e.to_string())?;
            match crate::pbx_directory::hunt_forwarding(&f).describe() {
                Some(d) => emit(format_args!("{name}: forwarded {d}")),
                None => emit(format_args!("{name}: no forwarding")),
            }
        }
        UserAction::Show { name, json } => {
            let user = users
                .get(&name)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no user \"{name}\" in {file}"))?;
            if json {
                emit(user_json(&user));
            } else {
                let f = &user.forwarding;
                let secs = format!("after {} s", f.no_answer_secs);
                let lines = [
                    ("name", user.name.clone()),
                    ("address", format!("sip:{}@{realm}", user.name)),
                    (
                        "extension",
                        user.extension.clone().unwrap_or_else(|| "-".into()),
                    ),
                    ("realm", user.realm.clone()),
                    ("created", http_date(user.created_at)),
                    ("always", f.always.clone().unwrap_or_else(|| "-".into())),
                    ("busy", f.busy.clone().unwrap_or_else(|| "-".into())),
                    (
                        "no answer",
                        f.no_answer
                            .as_ref()
                            .map_or_else(|| "-".into(), |t| format!("{t} ({secs})")),
                    ),
                    (
                        "unreachable",
                        f.unreachable.clone().unwrap_or_else(|| "-".into()),
                    ),
                ];
                for (k, v) in lines {
                    emit(format_args!("{k:<12} {v}"));
                }
            }
        }
        UserAction::List { json } => {
            let list = users.list().map_err(|e| e.to_string())?;
            if list.is_empty() && !json {
                emit(format_args!("no users in {file}"));
            } else {
                print_users(&list, realm, json);
            }
        }
        UserAction::Remove { name } => {
            user_ops::remove(&mut users, &name).map_err(|e| e.message)?;
            emit(format_args!("removed user {name}"));
        }
        UserAction::Passwd { name, password } => {
            let pw = read_password(&password)?;
            user_ops::set_password(&mut users, realm, &name, &pw).map_err(|e| e.message)?;
            emit(format_args!("changed the password of {name}"));
        }
        UserAction::Import { file: source } => {
            let list = read_import(&source, realm, now())?;
            let report = users.import(&list).map_err(|e| e.to_string())?;
            emit(format_args!(
                "imported {} users ({} added, {} updated) into {file}",
                list.len(),
                report.added,
                report.updated,
            ));
        }
    }
    Ok(())
}

/// Reads and checks a whole import file before anything is written.
fn read_import(file: &Path, realm: &str, now: u64) -> Result<Vec<User>, String> {
    let name = file.display().to_string();
    let mut text = String::new();
    if file == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
    } else {
        text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {name}: {e}"))?;
    }
    let mut users = Vec::new();
    let mut errors = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let at = format!("{name}:{}", i + 1);
        let Some((user, password)) = line.split_once(',') else {
            errors.push(format!("{at}: expected name,password"));
            continue;
        };
        let user = user.trim();
        if password.is_empty() {
            errors.push(format!("{at}: the password of {user} is empty"));
            continue;
        }
        if !seen.insert(user.to_owned()) {
            errors.push(format!("{at}: {user} appears twice"));
            continue;
        }
        match User::new(user, realm, password, now) {
            Ok(u) => users.push(u),
            Err(e) => errors.push(format!("{at}: {e}")),
        }
    }
    if !errors.is_empty() {
        let shown = errors.len().min(10);
        let mut msg = errors[..shown].join("\n  ");
        if errors.len() > shown {
            msg.push_str(&format!("\n  … and {} more", errors.len() - shown));
        }
        return Err(format!(
            "nothing imported; {} bad line(s):\n  {msg}",
            errors.len()
        ));
    }
    Ok(users)
}

/// The dial plan forward targets are checked against: the configured one, or the
/// built-in plan.
fn forward_plan(config: &Config) -> Result<pbx::Plan, String> {
    match &config.pbx.dial_plan {
        Some(path) => pbx::Plan::load(path).map_err(|errors| {
            format!("the dial plan cannot be used to check the target:\n{errors}")
        }),
        None => Ok(pbx::Plan::builtin()),
    }
}

/// Refuses a forward target that leads nowhere: not a user's extension or name, and
/// not a number the dial plan routes when `user` dials it (now).
fn check_target(
    users: &SqliteUserStore,
    plan: &pbx::Plan,
    user: &User,
    target: &str,
) -> Result<(), String> {
    store::check_forward_target(target).map_err(|e| e.to_string())?;
    let known = |t: &str| -> Result<bool, String> {
        Ok(users.by_extension(t).map_err(|e| e.to_string())?.is_some()
            || users.get(t).map_err(|e| e.to_string())?.is_some())
    };
    if known(target)? {
        return Ok(());
    }
    let caller = pbx::Caller {
        name: user.name.clone(),
        extension: user.extension.clone(),
    };
    let decision = plan.route(target, &caller, jiff::Timestamp::now());
    match &decision.action {
        pbx::Action::Extension { target: t } if !known(t)? => Err(format!(
            "cannot forward to \"{target}\": no user has that extension or name, and the dial plan ({}) sends it to extension {t}, which nobody has",
            plan.source()
        )),
        pbx::Action::Reject { code, reason } => Err(format!(
            "cannot forward to \"{target}\": it is no user's extension or name, and the dial plan ({}) refuses it when {} dials it: {code}{}",
            plan.source(),
            user.name,
            reason
                .as_ref()
                .map_or_else(String::new, |r| format!(" {r}"))
        )),
        _ => Ok(()),
    }
}

fn user_json(u: &User) -> serde_json::Value {
    let f = &u.forwarding;
    serde_json::json!({
        "name": u.name,
        "extension": u.extension,
        "realm": u.realm,
        "created_at": u.created_at,
        "forwarding": {
            "always": f.always,
            "busy": f.busy,
            "no_answer": f.no_answer,
            "no_answer_secs": f.no_answer_secs,
            "unreachable": f.unreachable,
        },
    })
}

fn print_users(list: &[User], realm: &str, json: bool) {
    if json {
        let v: Vec<serde_json::Value> = list.iter().map(user_json).collect();
        emit(format_args!("{}", serde_json::Value::Array(v)));
        return;
    }
    let rows: Vec<[String; 5]> = list
        .iter()
        .map(|u| {
            let mut r = u.realm.clone();
            if u.realm != realm {
                // The hashes cover the realm: after a domain change they no longer verify.
                r.push_str(" (not the domain: set the password again)");
            }
            [
                u.name.clone(),
                u.extension.clone().unwrap_or_else(|| "-".into()),
                short_forwarding(&u.forwarding),
                r,
                http_date(u.created_at),
            ]
        })
        .collect();
    print_table(
        &["NAME", "EXTENSION", "FORWARDING", "REALM", "CREATED"],
        &rows,
    );
}

/// Forwarding in a table cell: `busy>bob no_answer(15s)>202`, or `-`.
fn short_forwarding(f: &Forwarding) -> String {
    let parts: Vec<String> = f
        .targets()
        .map(|(kind, target)| match kind {
            "no_answer" => format!("no_answer({}s)>{target}", f.no_answer_secs),
            _ => format!("{kind}>{target}"),
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

/// Runs `switchboard location`.
pub fn run_location(config_path: Option<&Path>, json: bool) -> ExitCode {
    let result = (|| {
        let config = load_config(config_path)?;
        let db = Database::of(&config, config_path)?;
        let store = SqliteLocationStore::open_existing(&db.path, Durability::Process).map_err(
            |e| match e {
                StoreError::Missing { .. } => db.missing(),
                e => e.to_string(),
            },
        )?;
        let now = now();
        let bindings = store.list_all(now).map_err(|e| e.to_string())?;
        if bindings.is_empty() && !json {
            emit(format_args!(
                "no current registrations in {}",
                db.path.display()
            ));
        } else {
            print_bindings(&bindings, now, json);
        }
        Ok::<(), String>(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn print_bindings(bindings: &[Binding], now: u64, json: bool) {
    if json {
        let v: Vec<serde_json::Value> = bindings
            .iter()
            .map(|b| {
                serde_json::json!({
                    "aor": b.aor,
                    "contact": b.contact,
                    "expires_in": b.expires_in(now),
                    "expires_at": b.expires_at,
                    "q": b.q.map(|q| f64::from(q) / 1000.0),
                    "transport": b.transport.name(),
                    "source": b.source.to_string(),
                    "user_agent": b.user_agent,
                    "path": b.path,
                    "instance_id": b.instance_id,
                    "reg_id": b.reg_id,
                    "call_id": b.call_id,
                    "cseq": b.cseq,
                    "registered_at": b.registered_at,
                })
            })
            .collect();
        emit(format_args!("{}", serde_json::Value::Array(v)));
        return;
    }
    let rows: Vec<[String; 6]> = bindings
        .iter()
        .map(|b| {
            [
                b.aor.clone(),
                b.contact.clone(),
                format!("{}s", b.expires_in(now)),
                b.transport.name().to_owned(),
                b.source.to_string(),
                b.user_agent.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &[
            "AOR",
            "CONTACT",
            "EXPIRES IN",
            "TRANSPORT",
            "SOURCE",
            "USER AGENT",
        ],
        &rows,
    );
}

/// Left-aligned columns, two spaces apart, the last one unpadded.
pub(crate) fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut width = header.map(|h| h.chars().count());
    for r in rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            if i + 1 == N {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        emit(format_args!("{}", s.trim_end()));
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}
