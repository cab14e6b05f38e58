//! The dial plan `serve` routes calls with: a handle the proxy reads on every call and
//! the reloader swaps, and the reloader itself (SIGHUP, or the file changing), which
//! keeps the old plan when the new one does not load.

use pbx::Plan;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// The plan in force, shared between the protocol loop (reads) and the reloader
/// (swaps). Reading costs a lock and a reference count; a swap never waits for a call.
#[derive(Debug, Clone)]
pub struct DialPlan(Arc<RwLock<Arc<Plan>>>);

impl DialPlan {
    /// A handle holding `plan`.
    pub fn new(plan: Plan) -> DialPlan {
        DialPlan(Arc::new(RwLock::new(Arc::new(plan))))
    }

    /// The plan in force now.
    pub fn current(&self) -> Arc<Plan> {
        match self.0.read() {
            Ok(p) => p.clone(),
            // A writer that panicked left a whole plan behind: the swap is one store.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `plan` in force.
    pub fn replace(&self, plan: Plan) {
        let plan = Arc::new(plan);
        match self.0.write() {
            Ok(mut p) => *p = plan,
            Err(poisoned) => *poisoned.into_inner() = plan,
        }
    }
}

impl Default for DialPlan {
    fn default() -> DialPlan {
        DialPlan::new(Plan::builtin())
    }
}

/// What identifies a version of the file: a change of any of them is a new version
/// (an editor that writes a new file and renames it changes the inode).
fn stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// How often the file is looked at for changes.
const WATCH_EVERY: Duration = Duration::from_millis(500);
/// How long a changed file must stay unchanged before it is read.
const SETTLE: Duration = Duration::from_millis(200);

/// Loads `path` into `plan` again, logging what happened; the old plan stays when the
/// new one has faults.
fn reload(path: &Path, plan: &DialPlan, why: &str) {
    match Plan::load(path) {
        Ok(new) => {
            tracing::info!(
                "dial plan {} reloaded ({why}): {} rules",
                path.display(),
                new.len()
            );
            plan.replace(new);
        }
        Err(errors) => {
            tracing::error!(
                "dial plan {} not reloaded ({why}), the previous plan stays in force:\n{errors}",
                path.display()
            );
        }
    }
}

/// Watches `path` for SIGHUP and for changes to the file, reloading it into `plan`, for
/// as long as the returned task runs.
pub fn spawn_reloader(
    path: PathBuf,
    plan: DialPlan,
) -> Result<tokio::task::JoinHandle<()>, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup =
        signal(SignalKind::hangup()).map_err(|e| format!("cannot watch SIGHUP: {e}"))?;
    Ok(tokio::spawn(async move {
        let mut seen = stamp(&path);
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                _ = hangup.recv() => "SIGHUP",
                _ = tick.tick() => {
                    let now = stamp(&path);
                    if now == seen || now.is_none() {
                        // Unchanged, or gone for a moment while an editor replaces it.
                        continue;
                    }
                    // A file written in place is read once it has stopped changing,
                    // not half written.
                    let mut last = now;
                    loop {
                        tokio::time::sleep(SETTLE).await;
                        let again = stamp(&path);
                        if again == last {
                            break;
                        }
                        last = again;
                    }
                    "the file changed"
                }
            };
            seen = stamp(&path);
            // The file is small; it is read off the protocol loop's thread all the same.
            let (p, handle) = (path.clone(), plan.clone());
            let _ = tokio::task::spawn_blocking(move || reload(&p, &handle, why)).await;
        }
    }))
}

/// Swallows SIGHUP, for a server with no plan file to reload.
pub fn ignore_hangup() -> Result<tokio::task::JoinHandle<()>, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup =
        signal(SignalKind::hangup()).map_err(|e| format!("cannot watch SIGHUP: {e}"))?;
    Ok(tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: no [pbx] dial_plan file to reload");
        }
    }))
}
