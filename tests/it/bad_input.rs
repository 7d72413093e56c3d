//! The bad-input corpus: configs with every key given a wrong value, hostile URL lists, broken
//! API bodies. Each gets a clear error (never a panic) and nothing is written.

use std::process::Command;

use serde_json::{json, Value};

use crate::api::Api;

const BIN: &str = env!("CARGO_BIN_EXE_preloadd");

#[test]
fn every_key_with_a_wrong_value_is_a_clear_config_error() {
    let dir = tempfile::tempdir().unwrap();
    crate::common::write_secret(&dir.path().join("secret"), "s");
    std::fs::write(dir.path().join("list.txt"), "https://a.example/1\n").unwrap();
    let good = format!(
        r#"[daemon]
state_dir = "{}"
shutdown_timeout = "5s"
log_format = "json"
[api]
listen = "127.0.0.1:0"
token_file = "secret"
requests_per_second = 10
[[vendor]]
name = "ali"
kind = "aliyun_cdn"
endpoint = "http://127.0.0.1:9"
access_key_id = "ak"
access_key_secret_file = "secret"
requests_per_second = 5
max_urls_per_request = 100
daily_quota = 1000
timeout = "5s"
[[job]]
name = "j"
task_type = "preload"
vendors = ["ali"]
urls_file = "list.txt"
catch_up = "skip"
[[job.plan]]
start_time = "2030-01-01T00:00:00Z"
end_time = "2030-01-01T01:00:00Z"
interval = 60
slice_len = 10
"#,
        dir.path().join("state").display()
    );
    let path = dir.path().join("preloadd.toml");
    let check = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN).args(["check-config", "--config"]).arg(&path).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(check(&good).0, Some(0), "the base config is good");
    let wrong = ["[1, 2]", "{ a = 1 }", "true", "-5", "99999999999999999999", "\"\"", "1.5", "\"🙂\"", "0"];
    let mut cases = 0;
    for (i, line) in good.lines().enumerate() {
        let Some((key, _)) = line.split_once(" = ") else { continue };
        for value in wrong {
            let mut lines: Vec<String> = good.lines().map(String::from).collect();
            lines[i] = format!("{key} = {value}");
            let (code, err) = check(&lines.join("\n"));
            cases += 1;
            match code {
                Some(78) => assert!(
                    err.contains("preloadd.toml:") && !err.contains("panicked"),
                    "{key} = {value}: the error names the file and line: {err}"
                ),
                // Some values are legitimately fine (e.g. a number of seconds for a duration).
                Some(0) => {}
                other => panic!("{key} = {value}: exit {other:?}, {err}"),
            }
        }
    }
    assert!(cases > 150, "{cases} cases");
    // A huge value where a count is expected, and an enormous file of junk.
    let (code, err) = check(&good.replace("slice_len = 10", "slice_len = 9223372036854775807"));
    assert_eq!(code, Some(78), "{err}");
    let (code, err) = check(&good.replace("interval = 60", "interval = 9223372036854775807"));
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("at most a year"), "{err}");
    let (code, err) = check(&"\u{7f}garbage = [[[\n".repeat(10_000));
    assert_eq!(code, Some(78), "{err}");
    assert!(!dir.path().join("state").exists(), "check-config wrote nothing");
}

#[tokio::test]
async fn hostile_url_lists_are_rejected_line_by_line_and_the_good_lines_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = preloadd::store::Store::open_dir(dir.path()).await.unwrap();
    let mut text: Vec<u8> = Vec::new();
    text.extend(b"https://xn--bcher-kva.example/a\n"); // IDN, punycode
    text.extend("https://bücher.example/b\n".as_bytes()); // IDN, Unicode
    text.extend(b"https://a.example/%E4%BD%A0%E5%A5%BD?q=%20\n"); // percent-encoding
    text.extend((0..4096).map(|i| (i * 7 % 256) as u8)); // binary junk
    text.push(b'\n');
    text.extend(std::iter::repeat_n(b'a', 100_000)); // a 100 kB line
    text.push(b'\n');
    for _ in 0..100_000 {
        text.extend(b"https://a.example/dup\n");
    }
    let new = preloadd::store::NewJob {
        name: "hostile".into(),
        task_type: preloadd::model::TaskType::Preload,
        vendors: vec!["v".into()],
        source: preloadd::model::JobSource::Api,
        catch_up: preloadd::model::CatchUp::Skip,
    };
    let (id, report) = preloadd::ingest::create_job(&store, &new, &text[..], 0).await.unwrap();
    assert_eq!(report.added, 4, "IDN x2, percent-encoded, one of the duplicates");
    assert_eq!(report.valid, 3 + 100_000);
    assert!(report.rejected.count >= 2, "{:?}", report.rejected);
    let urls: Vec<String> = store.job_urls(id, 0, 10).await.unwrap().into_iter().map(|(_, u)| u).collect();
    assert_eq!(urls[1], "https://bücher.example/b", "kept as written");
    assert_eq!(urls[3], "https://a.example/dup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_api_bodies_get_json_errors_and_write_nothing() {
    let api = Api::start().await;
    let http = reqwest::Client::new();
    let post = |path: &str, body: Vec<u8>| {
        http.post(format!("{}{path}", api.base))
            .bearer_auth("test-token")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    let huge = format!(
        "{{\"name\":\"h\",\"task_type\":\"preload\",\"vendors\":[\"hook\"],\"urls\":[\"{}\"]}}",
        "x".repeat(20 << 20)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("/v1/jobs", b"{\"name\": \"t\", \"task_type\": \"prel".to_vec()),
        ("/v1/jobs", br#"{"name": 5, "task_type": "preload", "vendors": ["hook"], "urls": ["https://a.example/1"]}"#.to_vec()),
        ("/v1/jobs", br#"{"name": "t", "task_type": "preload", "vendors": "hook", "urls": ["https://a.example/1"]}"#.to_vec()),
        ("/v1/jobs", br#"{"name": "t", "task_type": "preload", "vendors": ["hook"], "urls": ["https://a.example/1"], "extra": 1}"#.to_vec()),
        ("/v1/jobs", deep.clone().into_bytes()),
        ("/v1/jobs", huge.into_bytes()),
        ("/v1/jobs", vec![0xff, 0xfe, 0x00]),
        ("/v1/jobs/1/plans", br#"{"plans": [{"start_time": 5}]}"#.to_vec()),
        ("/v1/jobs/abc/plans", b"{}".to_vec()),
        ("/v1/jobs/1/plans", deep.into_bytes()),
    ];
    for (path, body) in cases {
        let r = post(path, body).await.unwrap();
        let status = r.status().as_u16();
        let b: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 400, "{path}: {b}");
        assert_eq!(b["code"], "InvalidParameter", "{path}: {b}");
        assert!(b["request_id"].is_string() && b["message"].is_string(), "{path}: {b}");
    }
    let r = http.get(format!("{}/v1/jobs?page_num=lots", api.base)).bearer_auth("test-token").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let (_, jobs) = api.call(reqwest::Method::GET, "/v1/jobs", None).await;
    assert_eq!(jobs["pagination"]["total"], json!(1), "only the declarative job: nothing was written");
}
