//! The client commands against a running daemon: tables, `--json`, exit codes, streaming.

use std::process::Command;

use serde_json::Value;

use crate::api::Api;

const BIN: &str = env!("CARGO_BIN_EXE_preloadd");

fn run(api: &Api, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--server", &api.base])
        .env("PRELOADD_TOKEN", "test-token")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_drive_the_daemon() {
    let api = Api::start().await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("big.txt");
    let text: String =
        (0..5000).map(|i| format!("https://cdn.example.com/cli/{i}.css\n")).collect::<String>() + "junk line\n";
    std::fs::write(&list, text).unwrap();
    let list = list.display().to_string();
    let api2 = &api;
    let (code, out, err) = tokio::task::block_in_place(|| {
        run(api2, &["job", "create", "--name", "cli", "--vendor", "hook", "--urls-file", &list])
    });
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("5000 URLs, 1 lines rejected"), "{out}");
    assert!(out.contains("line 5001:"), "{out}");

    let (code, out, _) = tokio::task::block_in_place(|| run(api2, &["job", "list"]));
    assert_eq!(code, 0);
    assert!(out.starts_with("ID") && out.contains("cli"), "{out}");
    let (code, out, _) = tokio::task::block_in_place(|| run(api2, &["job", "show", "cli", "--json"]));
    assert_eq!(code, 0);
    let job: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(job["url_count"], 5000);

    let (code, out, err) = tokio::task::block_in_place(|| {
        run(
            api2,
            &[
                "plan",
                "create",
                "cli",
                "--start",
                "2030-01-01T00:00:00Z",
                "--end",
                "2030-01-01T01:00:00Z",
                "--interval",
                "60",
                "--slice-len",
                "100",
                "--dry-run",
            ],
        )
    });
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("50 slices, 5000 URLs, 0 left after"), "{out}");
    let (code, out, _) = tokio::task::block_in_place(|| run(api2, &["plan", "list", "cli", "--json"]));
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["plans"].as_array().unwrap().len(),
        0,
        "dry run created nothing"
    );
    let (code, out, err) = tokio::task::block_in_place(|| {
        run(
            api2,
            &[
                "plan",
                "create",
                "cli",
                "--start",
                "2030-01-01T00:00:00Z",
                "--end",
                "2030-01-01T01:00:00Z",
                "--interval",
                "90s",
                "--slice-len",
                "100",
                "--json",
            ],
        )
    });
    assert_eq!(code, 0, "{err}");
    let pid = serde_json::from_str::<Value>(&out).unwrap()["plans"][0]["id"].as_i64().unwrap().to_string();
    let (code, out, _) = tokio::task::block_in_place(|| run(api2, &["plan", "update", &pid, "--slice-len", "50"]));
    assert_eq!(code, 0);
    assert!(out.contains("waiting") && out.contains("50"), "{out}");
    let (code, _, err) =
        tokio::task::block_in_place(|| run(api2, &["plan", "update", &pid, "--end", "2029-01-01T00:00:00Z"]));
    assert_eq!(code, 1);
    assert!(err.contains("InvalidEndTime.Mismatch"), "{err}");
    let (code, _, err) = tokio::task::block_in_place(|| run(api2, &["plan", "show", "99999"]));
    assert_eq!(code, 3, "not found exits 3: {err}");
    let (code, _, _) = tokio::task::block_in_place(|| run(api2, &["job", "show", "no-such-job"]));
    assert_eq!(code, 3);
    let (code, out, _) = tokio::task::block_in_place(|| run(api2, &["vendor", "list"]));
    assert_eq!(code, 0);
    assert!(out.contains("hook") && out.contains("webhook"), "{out}");
    let (code, out, _) = tokio::task::block_in_place(|| run(api2, &["task", "list"]));
    assert_eq!(code, 0);
    assert!(out.contains("0 tasks in all"), "{out}");

    // A wrong token is a clear failure.
    let out =
        Command::new(BIN).args(["job", "list", "--server", &api.base]).env("PRELOADD_TOKEN", "nope").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthorized"));

    // watch: plain lines when not a terminal, until the job is done.
    let now = chrono::Utc::now();
    let (code, _, err) = tokio::task::block_in_place(|| {
        run(
            api2,
            &[
                "job",
                "create",
                "--name",
                "w",
                "--vendor",
                "hook",
                "--url",
                "https://a.example/1",
                "--url",
                "https://a.example/2",
            ],
        )
    });
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = tokio::task::block_in_place(|| {
        run(
            api2,
            &[
                "plan",
                "create",
                "w",
                "--start",
                &now.to_rfc3339(),
                "--end",
                &(now + chrono::Duration::hours(1)).to_rfc3339(),
                "--interval",
                "1",
                "--slice-len",
                "1",
            ],
        )
    });
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = tokio::task::block_in_place(|| run(api2, &["watch", "w"]));
    assert_eq!(code, 0, "{err}");
    let last = out.lines().last().unwrap();
    assert!(last.contains("finished") && last.contains("2/2 submitted"), "{out}");
}
