//! `preloadd check-config` on good and bad configs: exit codes and messages naming file, line
//! and key; and `serve` refusing a bad config without writing anything.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_preloadd");

fn good(dir: &Path) -> String {
    std::fs::write(dir.join("list.txt"), "# list\nhttps://a.example/1.js\r\nhttps://a.example/2.js\nnot a url\n")
        .unwrap();
    crate::common::write_secret(&dir.join("secret"), "s3cr3t-value\n");
    format!(
        r#"[daemon]
state_dir = "{state}"

[api]
listen = "127.0.0.1:0"

[[vendor]]
name = "hook"
kind = "webhook"
endpoint = "http://127.0.0.1:9/hook"
token_file = "secret"

[[job]]
name = "home"
task_type = "preload"
vendors = ["hook"]
urls_file = "list.txt"

[[job.plan]]
start_time = "2026-11-24T02:00:00+08:00"
end_time = "2026-11-24T04:00:00+08:00"
interval = 60
slice_len = 100
"#,
        state = dir.join("state").display()
    )
}

fn check(dir: &Path, text: &str) -> (i32, String, String) {
    let path = dir.join("preloadd.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN).args(["check-config", "--config"]).arg(&path).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn a_good_config_prints_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = check(dir.path(), &good(dir.path()));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("vendors (1)"), "{out}");
    assert!(out.contains("hook"), "{out}");
    assert!(out.contains("2 URLs (1 lines rejected"), "{out}");
    assert!(out.contains("rejected line 4:"), "{out}");
    assert!(out.contains("plan 2026-11-23T18:00:00.000Z"), "{out}");
    assert!(!out.contains("s3cr3t"), "secrets are never printed");
    assert!(!dir.path().join("state").exists(), "check-config writes nothing");
}

#[test]
fn every_config_error_names_file_line_and_key_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let base = good(dir.path());
    let cases: Vec<(String, usize, &str)> = vec![
        (base.replace("slice_len = 100", "slice_len = 100\ncolour = \"red\""), 24, "colour"),
        (base.replace("vendors = [\"hook\"]", "vendors = [\"nope\"]"), 16, "vendors"),
        (base.replace("end_time = \"2026-11-24T04", "end_time = \"2026-11-24T02"), 21, "end_time"),
        (base.replace("interval = 60", "interval = 0"), 22, "interval"),
        (base.replace("slice_len = 100", "slice_len = 0"), 23, "slice_len"),
        (base.replace("token_file = \"secret\"", "token_file = \"missing-secret\""), 11, "token_file"),
        (base.replace("interval = 60", "interval = \"sometimes\""), 22, "interval"),
        (base.replace("start_time = \"2026-11-24T02:00:00+08:00\"", "start_time = \"tomorrow\""), 20, "start_time"),
        (format!("{base}\n[[vendor]]\nname = \"hook\"\nkind = \"webhook\"\nendpoint = \"http://x\"\n"), 26, "name"),
        (base.replace("kind = \"webhook\"", "kind = \"akamai\""), 9, "kind"),
        (base.replace("task_type = \"preload\"", "task_type = \"warm\""), 15, "task_type"),
        (base.replace("urls_file = \"list.txt\"", "urls_file = \"nowhere.txt\""), 17, "urls_file"),
    ];
    for (text, line, key) in cases {
        let (code, _, err) = check(dir.path(), &text);
        assert_eq!(code, 78, "{key}: {err}");
        let want = format!("preloadd.toml:{line}: `{key}`");
        assert!(err.contains(&want), "wanted {want:?} in {err:?}");
    }
    // Duplicate job names.
    let dup = format!("{base}\n[[job]]\nname = \"home\"\ntask_type = \"preload\"\nvendors = [\"hook\"]\nurls = [\"https://a.example/x\"]\n");
    let (code, _, err) = check(dir.path(), &dup);
    assert_eq!(code, 78);
    assert!(err.contains("duplicate job name `home`"), "{err}");
    // A list with no valid URL is MissingUrlList.
    std::fs::write(dir.path().join("list.txt"), "junk\nftp://x/y\n").unwrap();
    let (code, _, err) = check(dir.path(), &base);
    assert_eq!(code, 78);
    assert!(err.contains("MissingUrlList"), "{err}");
    // Not UTF-8.
    std::fs::write(dir.path().join("preloadd.toml"), b"[daemon]\nstate_dir = \"\xff\"\n").unwrap();
    let out =
        Command::new(BIN).args(["check-config", "--config"]).arg(dir.path().join("preloadd.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains(":2:"));
    assert!(!dir.path().join("state").exists(), "nothing written");
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(BIN).arg("no-such-command").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn serve_refuses_an_unwritable_state_dir_clearly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("afile"), "x").unwrap();
    let text = good(dir.path()).replace(
        &dir.path().join("state").display().to_string(),
        &dir.path().join("afile/state").display().to_string(),
    );
    let path = dir.path().join("preloadd.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("afile/state") && err.contains("cannot create it"), "{err}");
}

#[test]
fn demo_runs_end_to_end_against_the_emulator() {
    let out = Command::new(BIN).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("summary after"), "{stdout}");
    for vendor in ["ali-cdn", "ali-esa"] {
        let line = stdout.lines().find(|l| l.trim_start().starts_with(vendor) && !l.contains('[')).unwrap();
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[1], "400", "every URL submitted to {vendor}: {line}");
        let done: i64 = cols[2].parse().unwrap();
        let failed: i64 = cols[3].parse().unwrap();
        assert_eq!(done + failed, 400, "every URL tracked to an outcome at {vendor}: {line}");
    }
}

#[test]
fn schedules_are_validated_and_their_next_firings_printed() {
    let dir = tempfile::tempdir().unwrap();
    let base = good(dir.path());
    let with = |s: &str| format!("{base}\n[job.schedule]\n{s}\n");
    let ok =
        with("cron = \"0 0 2 * * ?\"\ntimezone = \"Asia/Shanghai\"\nwindow = \"2h\"\ninterval = 60\nslice_len = 100");
    let (code, out, err) = check(dir.path(), &ok);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("next firing").count(), 3, "{out}");
    assert!(out.contains("T02:00:00+08:00"), "{out}");
    for (text, key) in [
        ("cron = \"0 0 25 * * *\"\nwindow = \"2h\"\ninterval = 60\nslice_len = 1", "cron"),
        (
            "cron = \"0 0 2 * * *\"\ntimezone = \"Mars/Olympus\"\nwindow = \"2h\"\ninterval = 60\nslice_len = 1",
            "timezone",
        ),
        ("cron = \"0 0 2 * * *\"\nwindow = 0\ninterval = 60\nslice_len = 1", "window"),
        ("cron = \"0 0 2 * * *\"\nwindow = \"2h\"\ninterval = 60\nslice_len = 1\nmissed = \"sometimes\"", "missed"),
    ] {
        let (code, _, err) = check(dir.path(), &with(text));
        assert_eq!(code, 78, "{key}: {err}");
        assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
    }
}

#[test]
fn secret_files_readable_by_others_are_refused_unless_allowed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let base = good(dir.path());
    std::fs::set_permissions(dir.path().join("secret"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = check(dir.path(), &base);
    assert_eq!(code, 78);
    assert!(err.contains("`token_file`") && err.contains("chmod 600") && err.contains("644"), "{err}");
    let allowed = base.replace("[daemon]\n", "[daemon]\nallow_insecure_secret_files = true\n");
    let (code, _, err) = check(dir.path(), &allowed);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_secret_file_far_larger_than_a_secret_is_refused_without_reading_it_whole() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let base = good(dir.path());
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "x".repeat(64 * 1024 + 1)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, _, err) = check(dir.path(), &base);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("`token_file`") && err.contains("larger than 64 KiB"), "{err}");
    // A device that never ends (a path typed wrong) is refused the same way, not read forever.
    let endless = base.replace("token_file = \"secret\"", "token_file = \"/dev/zero\"");
    assert_ne!(endless, base, "the config names its secret file");
    let (code, _, err) =
        check(dir.path(), &endless.replace("[daemon]\n", "[daemon]\nallow_insecure_secret_files = true\n"));
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("/dev/zero") && err.contains("larger than 64 KiB"), "{err}");
}

#[test]
fn a_corrupted_database_is_refused_with_recovery_steps_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let text = good(dir.path());
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let junk: Vec<u8> = (0..8192u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(state.join("preloadd.db"), &junk).unwrap();
    let path = dir.path().join("preloadd.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("damaged") && err.contains("preloadd backup"), "{err}");
    assert_eq!(std::fs::read(state.join("preloadd.db")).unwrap(), junk, "the damaged file is not overwritten");
}

#[test]
fn a_database_locked_by_another_process_is_waited_for_not_failed() {
    // Another process holds an exclusive lock for a moment: start-up waits (busy_timeout)
    // instead of failing, then serves.
    let dir = tempfile::tempdir().unwrap();
    let text = good(dir.path());
    let path = dir.path().join("preloadd.toml");
    std::fs::write(&path, &text).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let db = state.join("preloadd.db");
    let holder = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1], isolation_level=None); \
             c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(2); c.execute('COMMIT')",
        ])
        .arg(&db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut holder = holder;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "locked");
    let out =
        Command::new(BIN).args(["backup"]).arg(dir.path().join("copy.db")).arg("--config").arg(&path).output().unwrap();
    holder.wait().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}
