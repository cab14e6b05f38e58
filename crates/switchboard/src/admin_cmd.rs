//! `switchboard admin …`: the accounts of the HTTP admin API, in the database `serve`
//! uses. Passwords are kept as argon2id hashes, tokens as SHA-256 digests: a token is
//! shown once, when made, and cannot be read back.

use crate::registrar::http_date;
use crate::user_cmd::{self, Database, PasswordArgs, emit, fail, load_config, now};
use clap::Subcommand;
use std::path::Path;
use std::process::ExitCode;
use store::{SqliteAdminStore, StoreError};

/// What `switchboard admin` does.
#[derive(Subcommand, Debug)]
pub enum AdminAction {
    /// Add an administrator, who may log in to the admin API (`POST /api/login`).
    Add {
        /// The login name.
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Set an administrator's password.
    Passwd {
        /// The login name.
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// List the administrators (name, tokens held, when added).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove an administrator and their tokens.
    Remove {
        /// The login name.
        name: String,
    },
    /// Make an API token for an administrator and print it, once: scripts send it as
    /// `Authorization: Bearer TOKEN`. Only its digest is stored.
    #[command(after_help = "Example:
  TOKEN=$(switchboard admin token ops)
  curl -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:8080/api/registrations")]
    Token {
        /// The login name.
        name: String,
        /// Remove every token of NAME instead of making one.
        #[arg(long)]
        revoke: bool,
    },
}

/// Runs `switchboard admin ACTION`.
pub fn run(config_path: Option<&Path>, action: AdminAction) -> ExitCode {
    match admin(config_path, action) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn admin(config_path: Option<&Path>, action: AdminAction) -> Result<(), String> {
    let config = load_config(config_path)?;
    let db = Database::of(&config, config_path)?;
    let mut admins = if matches!(action, AdminAction::Add { .. }) {
        let existed = db.path.exists();
        let store = SqliteAdminStore::open(&db.path).map_err(|e| e.to_string())?;
        if !existed {
            eprintln!(
                "note: created a new database {} ({})",
                db.path.display(),
                db.origin
            );
        }
        store
    } else {
        SqliteAdminStore::open_existing(&db.path).map_err(|e| match e {
            StoreError::Missing { .. } => db.missing(),
            e => e.to_string(),
        })?
    };
    match action {
        AdminAction::Add { name, password } => {
            let pw = user_cmd::read_password(&password)?;
            let hash = admin::accounts::hash_password(&pw)?;
            admins.add(&name, &hash, now()).map_err(|e| e.to_string())?;
            emit(format_args!(
                "added administrator {name} to {}",
                db.path.display()
            ));
        }
        AdminAction::Passwd { name, password } => {
            let pw = user_cmd::read_password(&password)?;
            let hash = admin::accounts::hash_password(&pw)?;
            admins
                .set_password(&name, &hash)
                .map_err(|e| e.to_string())?;
            emit(format_args!("changed the password of administrator {name}"));
        }
        AdminAction::List { json } => {
            let list = admins.list().map_err(|e| e.to_string())?;
            if json {
                let v: Vec<serde_json::Value> = list
                    .iter()
                    .map(|a| {
                        serde_json::json!({
                            "name": a.name,
                            "tokens": a.tokens,
                            "created_at": a.created_at,
                        })
                    })
                    .collect();
                emit(serde_json::Value::Array(v));
            } else if list.is_empty() {
                emit(format_args!(
                    "no administrators in {}; add one with switchboard admin add NAME",
                    db.path.display()
                ));
            } else {
                let rows: Vec<[String; 3]> = list
                    .iter()
                    .map(|a| {
                        [
                            a.name.clone(),
                            a.tokens.to_string(),
                            http_date(a.created_at),
                        ]
                    })
                    .collect();
                user_cmd::print_table(&["NAME", "TOKENS", "CREATED"], &rows);
            }
        }
        AdminAction::Remove { name } => {
            admins.remove(&name).map_err(|e| e.to_string())?;
            emit(format_args!(
                "removed administrator {name} and their tokens"
            ));
        }
        AdminAction::Token { name, revoke: true } => {
            let n = admins.revoke_tokens(&name).map_err(|e| e.to_string())?;
            emit(format_args!("revoked {n} token(s) of {name}"));
        }
        AdminAction::Token {
            name,
            revoke: false,
        } => {
            let (token, digest) = admin::accounts::new_token()?;
            admins
                .add_token(&name, &digest, now())
                .map_err(|e| e.to_string())?;
            // Alone on standard output, for $(...); the advice goes to standard error.
            emit(&token);
            eprintln!(
                "a token for {name}: send it as 'Authorization: Bearer TOKEN'. It is shown only \
                 this once; 'switchboard admin token {name} --revoke' removes every token of {name}."
            );
        }
    }
    Ok(())
}
