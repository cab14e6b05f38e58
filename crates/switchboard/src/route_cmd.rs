//! `switchboard route NUMBER --from USER`: what the dial plan would do with a call,
//! without placing it: the rule that applies (and its line), the rewritten number, the
//! action, the caller ID, and what `serve` does with it today.

use crate::pbx_directory::PbxDirectory;
use crate::user_cmd::{Database, load_config};
use clap::Args;
use pbx::hunt::Directory;
use pbx::{Action, Caller, Decision, Plan, RingGroup};
use std::path::PathBuf;
use std::process::ExitCode;
use store::UserStore;

/// The arguments of `switchboard route`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  switchboard route 201 --from alice
  switchboard route 0044207946 --from bob --at 2026-12-07T22:30
  switchboard route 0 --from alice --plan new-plan.toml --json

Exit codes: 0 the call is routed; 3 the plan rejects it (a reject rule, or no rule
applies); 2 the dial plan has faults (all of them are printed, with file:line: key);
1 anything else (a bad --at, an unreadable configuration or database).")]
pub struct RouteArgs {
    /// The number (or name) dialled: the user part of the Request-URI.
    number: String,
    /// The calling user: their class and extension come from the plan and the database.
    #[arg(long, value_name = "USER")]
    from: String,
    /// The configuration `serve` uses: its `[pbx] dial_plan` and its database.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A dial plan file to try instead of the configured one.
    #[arg(long, value_name = "FILE")]
    plan: Option<PathBuf>,
    /// When the call is made: `2026-12-07T22:30` (in the plan's time zone) or with an
    /// offset (`2026-12-07T22:30:00+01:00`, `…Z`). Now by default.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Print JSON instead of lines.
    #[arg(long)]
    json: bool,
}

/// Runs `switchboard route`.
pub fn run(args: RouteArgs) -> ExitCode {
    match route(&args) {
        Ok(code) => code,
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

fn route(args: &RouteArgs) -> Result<ExitCode, (u8, String)> {
    let fail = |m: String| (1u8, m);
    let config = load_config(args.config.as_deref()).map_err(fail)?;
    let plan_path = args.plan.clone().or(config.pbx.dial_plan.clone());
    let plan = match &plan_path {
        Some(p) => Plan::load(p)
            .map_err(|errors| (2, format!("the dial plan cannot be used:\n{errors}")))?,
        None => Plan::builtin(),
    };
    let now = at(args.at.as_deref(), &plan).map_err(fail)?;

    // The caller's extension, and who an extension reaches, are in the database; a plan
    // can be tried without one.
    let users = Database::of(&config, args.config.as_deref())
        .and_then(|db| db.existing_users())
        .map_err(|e| eprintln!("note: {e}; extensions are not looked up"))
        .ok();
    let caller_user = users
        .as_ref()
        .and_then(|u| u.get(&args.from).ok().flatten());
    if users.is_some() && caller_user.is_none() {
        eprintln!(
            "note: no user \"{}\" in the database: routed as a caller with no extension",
            args.from
        );
    }
    let caller = Caller {
        name: args.from.clone(),
        extension: caller_user.and_then(|u| u.extension),
    };
    let decision = plan.route(&args.number, &caller, now);
    let reaches = match &decision.action {
        Action::Extension { target } => users.as_ref().map(|u| {
            u.by_extension(target)
                .ok()
                .flatten()
                .or_else(|| u.get(target).ok().flatten())
                .map(|u| u.name)
        }),
        _ => None,
    };
    // The callee's forwarding, which the B2BUA follows, as its engine reads it.
    let forwarding = match (&reaches, users.as_ref()) {
        (Some(Some(name)), Some(u)) => {
            let directory = PbxDirectory {
                plan: &plan,
                users: u,
                rotation: None,
                now,
            };
            directory.user(name).and_then(|u| u.forwarding.describe())
        }
        _ => None,
    };
    let group = match &decision.action {
        Action::RingGroup { group } => plan.ring_group(group),
        _ => None,
    };
    // Each member as the database knows it: `201 (alice)`, `carol`, `209 (no such user)`.
    let members: Vec<String> = group
        .map(|g| {
            g.members
                .iter()
                .map(|m| member_line(m, users.as_ref()))
                .collect()
        })
        .unwrap_or_default();
    let served = served(&decision, reaches.as_ref(), forwarding.is_some());
    let zoned = now.to_zoned(plan.time_zone().clone());
    if args.json {
        let mut v = serde_json::to_value(&decision).map_err(|e| fail(e.to_string()))?;
        if let Some(o) = v.as_object_mut() {
            o.insert("plan".into(), plan.source().into());
            o.insert("at".into(), zoned.to_string().into());
            o.insert("caller".into(), args.from.clone().into());
            if let Some(r) = &reaches {
                o.insert("reaches_user".into(), r.clone().into());
            }
            if let Some(f) = &forwarding {
                o.insert("forwarded".into(), f.clone().into());
            }
            if let Some(g) = group {
                let mut gv = serde_json::to_value(g).map_err(|e| fail(e.to_string()))?;
                if let Some(go) = gv.as_object_mut() {
                    go.insert("members_shown".into(), members.clone().into());
                }
                o.insert("ring_group".into(), gv);
            }
            o.insert("serve".into(), served.clone().into());
        }
        println!("{v}");
    } else {
        let group_line = group.map(|g| {
            let shown = RingGroup {
                members: members.clone(),
                ..g.clone()
            };
            format!("{} {}", g.name, shown.describe())
        });
        print_lines(
            &plan,
            &decision,
            &caller,
            &zoned,
            (reaches.as_ref(), forwarding.as_deref()),
            group_line,
            &served,
        );
    }
    Ok(match decision.action {
        Action::Reject { .. } => ExitCode::from(3),
        _ => ExitCode::SUCCESS,
    })
}

/// `--at`, or now.
fn at(text: Option<&str>, plan: &Plan) -> Result<jiff::Timestamp, String> {
    let Some(text) = text else {
        return Ok(jiff::Timestamp::now());
    };
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    text.parse::<jiff::civil::DateTime>()
        .ok()
        .and_then(|dt| dt.to_zoned(plan.time_zone().clone()).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| {
            format!(
                "--at \"{text}\": expected a date and time like 2026-12-07T22:30 (in the plan's time zone, {}) or 2026-12-07T22:30:00Z",
                plan.time_zone_name()
            )
        })
}

/// A group member as people read it: with the user an extension belongs to, or a note
/// when nobody has that extension or name.
fn member_line(member: &str, users: Option<&store::SqliteUserStore>) -> String {
    let Some(users) = users else {
        return member.to_owned();
    };
    if let Ok(Some(u)) = users.by_extension(member) {
        return format!("{member} ({})", u.name);
    }
    match users.get(member) {
        Ok(Some(_)) => member.to_owned(),
        _ => format!("{member} (no such user)"),
    }
}

/// What `serve` does with the decision today.
fn served(decision: &Decision, reaches: Option<&Option<String>>, forwards: bool) -> String {
    match &decision.action {
        Action::Extension { target } => match reaches {
            Some(Some(user)) if forwards => {
                format!("the B2BUA rings the phones {user} registered, following the forwarding")
            }
            Some(Some(user)) if decision.pbx => {
                format!("the B2BUA rings the phones {user} registered (pbx = true)")
            }
            Some(Some(user)) => format!("rings the phones {user} registered"),
            Some(None) => format!("404: no user has extension or name \"{target}\""),
            None => "rings the user with that extension or name".into(),
        },
        Action::Reject { code, .. } => format!("answers {code}"),
        Action::RingGroup { group } => {
            format!("the B2BUA rings ring group {group} (calls; messages answer 480)")
        }
        other => format!(
            "answers 480: {} is not served yet (it needs the B2BUA)",
            other.describe()
        ),
    }
}

fn print_lines(
    plan: &Plan,
    d: &Decision,
    caller: &Caller,
    at: &jiff::Zoned,
    (reaches, forwarding): (Option<&Option<String>>, Option<&str>),
    group: Option<String>,
    served: &str,
) {
    let ext = caller
        .extension
        .as_ref()
        .map_or_else(String::new, |e| format!("extension {e}, "));
    let rule = match &d.rule {
        Some(r) if r.line > 0 => format!(
            "{} \"{}\", line {} of {} ({})",
            r.index,
            r.name,
            r.line,
            plan.source(),
            r.pattern
        ),
        Some(r) => format!(
            "{} \"{}\" of the {} ({})",
            r.index,
            r.name,
            plan.source(),
            r.pattern
        ),
        None => format!(
            "none of the {} rules of {} applies",
            plan.len(),
            plan.source()
        ),
    };
    let mut action = d.action.describe();
    if let Some(Some(user)) = reaches {
        action.push_str(&format!(" (user {user})"));
    }
    if let Some(f) = forwarding {
        action.push_str(&format!(", forwarded {f}"));
    }
    let mut lines = vec![
        ("dialled", d.dialled.clone()),
        (
            "caller",
            format!("{} ({ext}class {})", caller.name, d.caller_class),
        ),
        ("at", at.strftime("%Y-%m-%d %H:%M:%S %Z (%A)").to_string()),
        ("rule", rule),
        ("number", d.number.clone()),
        ("action", action),
    ];
    if let Some(g) = group {
        lines.push(("group", g));
    }
    lines.extend([
        (
            "caller id",
            format!("\"{}\" <{}>", d.caller_id.name, d.caller_id.number),
        ),
        ("serve", served.to_owned()),
    ]);
    for (k, v) in lines {
        println!("{k:<10} {v}");
    }
}
