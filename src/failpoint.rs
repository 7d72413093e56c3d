//! Crash points for recovery tests: the `fail` crate behind the `failpoints` cargo feature.
//!
//! [`failpoint!`] marks a place where a crash is worth testing. Without the feature it compiles
//! to nothing. With it, `FAILPOINTS=NAME=return preloadd serve` makes the daemon abort at that
//! place: one line on stderr (`failpoint NAME: crashing`), then `std::process::abort()` — like
//! `kill -9`, no destructor, no graceful shutdown, no final commit. The count form
//! `NAME=1*off->return` crashes at the second pass instead of the first; several points are
//! separated by `;` (the `fail` crate's syntax, see `fail::cfg`).
//!
//! Each point has one recovery path, tested in `tests/it/failpoints.rs` against the real daemon
//! and listed in ARCHITECTURE.md ("Failpoints"). [`POINTS`] is the list of names: arming a name
//! that is not on it is refused, so a typo cannot make a test pass without crashing.

/// Every failpoint, with where it sits and what the next start does about a crash there.
pub const POINTS: &[(&str, &str)] = &[
    (
        "engine::after_submitting",
        "the subtask is committed `submitting`, the vendor request not sent: reconciliation asks the \
         vendor's task list, does not find the request, and sends it again (once)",
    ),
    (
        "engine::before_accept",
        "the vendor accepted the request, `record_accepted` has not run: reconciliation finds the \
         request in the vendor's task list and records it as accepted without sending it again",
    ),
    (
        "store::record_accepted::before_commit",
        "inside `record_accepted`'s transaction, after its writes: the transaction rolls back, the \
         subtask is still `submitting`; then as `engine::before_accept`",
    ),
    (
        "engine::poll::before_record",
        "the vendor answered a status poll, `record_poll` has not run: the poll is still due and is \
         simply asked again; the outcomes are recorded once",
    ),
    (
        "store::fire_schedule::before_commit",
        "inside `fire_schedule`'s transaction, after the firing row and the plan: nothing of the \
         firing survives; the schedule is still due and fires once at the next start",
    ),
    (
        "reports::after_claim",
        "the delivery is committed `sending`, nothing sent: at the next start it is recorded as \
         failed (interrupted) and not sent (a period is delivered at most once)",
    ),
    (
        "reports::after_send",
        "the report was sent, `finish_delivery` has not run: at the next start it is recorded as \
         failed (interrupted) and not sent again (at most once)",
    ),
];

/// Marks a crash point named `$name` (one of [`POINTS`]); nothing without the `failpoints` feature.
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        $crate::failpoint::eval($name);
    };
}
pub(crate) use failpoint;

/// Arms the points named in `$FAILPOINTS` (`NAME=ACTIONS;...`). An error names the bad entry.
#[cfg(feature = "failpoints")]
pub fn arm_from_env() -> Result<(), String> {
    match std::env::var("FAILPOINTS") {
        Ok(spec) => arm(&spec),
        Err(std::env::VarError::NotPresent) => Ok(()),
        Err(e) => Err(format!("FAILPOINTS: {e}")),
    }
}

/// Without the feature there is nothing to arm: a set `$FAILPOINTS` only earns a warning (a
/// production daemon must not refuse to start over a stray variable).
#[cfg(not(feature = "failpoints"))]
pub fn arm_from_env() -> Result<(), String> {
    if std::env::var_os("FAILPOINTS").is_some() {
        tracing::warn!("FAILPOINTS is set, but this build has no failpoints (build with `--features failpoints`)");
    }
    Ok(())
}

/// `fail::FailScenario::setup`'s syntax, with errors instead of panics and known names only.
#[cfg(feature = "failpoints")]
fn arm(spec: &str) -> Result<(), String> {
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, actions) =
            entry.split_once('=').ok_or_else(|| format!("FAILPOINTS: `{entry}` is not NAME=ACTIONS"))?;
        let name = name.trim();
        if !POINTS.iter().any(|(n, _)| *n == name) {
            let known: Vec<&str> = POINTS.iter().map(|(n, _)| *n).collect();
            return Err(format!("FAILPOINTS: unknown failpoint `{name}` (known: {})", known.join(", ")));
        }
        fail::cfg(name, actions.trim()).map_err(|e| format!("FAILPOINTS: `{entry}`: {e}"))?;
    }
    Ok(())
}

/// The body of [`failpoint!`]: a `return` action crashes the process.
#[cfg(feature = "failpoints")]
pub fn eval(name: &str) {
    fail::fail_point!(name, |_| crash(name));
}

#[cfg(feature = "failpoints")]
fn crash(name: &str) -> ! {
    eprintln!("failpoint {name}: crashing");
    std::process::abort()
}

#[cfg(all(test, feature = "failpoints"))]
mod tests {
    use super::*;

    #[test]
    fn arming_refuses_unknown_names_and_bad_syntax() {
        assert!(arm("engine::after_submiting=return").unwrap_err().contains("unknown failpoint"));
        assert!(arm("engine::after_submitting").unwrap_err().contains("NAME=ACTIONS"));
        assert!(arm("engine::after_submitting=explode").is_err());
        // A valid entry that cannot fire here: `off` arms nothing.
        assert_eq!(arm(" engine::after_submitting=off ; "), Ok(()));
        eval("engine::after_submitting");
        fail::remove("engine::after_submitting");
    }
}
