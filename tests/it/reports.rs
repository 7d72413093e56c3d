//! Report subscriptions: reports computed from a real run, delivered to a real SMTP server
//! (aiosmtpd, in .venv) and to webhook receivers on loopback, signatures checked independently;
//! at most one delivery per period across restarts; the API and its seed error codes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use preloadd::config::{parse_time, SmtpConfig, SmtpSecurity};
use preloadd::reports::{
    Condition, Deliver, EmailDeliver, Frequency, ReportSchedule, ReportSelection, Reporter, ReporterSettings,
    SubscriptionSpec, WebhookDeliver, WebhookFormat,
};
use preloadd::store::Store;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::io::AsyncBufReadExt;
use tokio::sync::Notify;

use crate::common::{Fixture, T0};

/// 2026-11-30T08:00:00+08:00: the first daily firing after the run (covers 11-29, empty).
fn first_firing() -> i64 {
    parse_time("2026-11-30T08:00:00+08:00").unwrap()
}
/// 2026-12-01T08:00:00+08:00: covers 2026-11-30, the day of the run.
fn second_firing() -> i64 {
    parse_time("2026-12-01T08:00:00+08:00").unwrap()
}

fn settings() -> ReporterSettings {
    ReporterSettings {
        retry_base: Duration::from_secs(60),
        retry_cap: Duration::from_secs(600),
        max_attempts: 4,
        timeout: Duration::from_secs(5),
    }
}

fn daily() -> ReportSchedule {
    ReportSchedule {
        sched_name: "daily".into(),
        description: "yesterday's results".into(),
        crontab: "0 0 8 * * ?".into(),
        frequency: Frequency::Day,
        enabled: true,
        timezone: "Asia/Shanghai".into(),
        effective_from: None,
        effective_end: None,
    }
}

fn all_reports() -> Vec<ReportSelection> {
    (1..=4).map(|id| ReportSelection { report_id: id, conditions: vec![] }).collect()
}

/// A run on 2026-11-30 (Shanghai): job `site` (cdn.example.com) sends 2 URLs that are done,
/// then 2 that the vendor refuses with HTTP 400 (the plan fails with 2 URLs left); job `img`
/// (img.example.com) sends its 3 URLs, all done.
async fn run_day() -> Fixture {
    let f = Fixture::new(100).await;
    let site = f.job("site", 6).await;
    let text: String = (0..3).map(|i| format!("https://img.example.com/p/{i}.png\n")).collect();
    let new = preloadd::store::NewJob {
        name: "img".into(),
        task_type: preloadd::model::TaskType::Preload,
        vendors: vec!["hook".into()],
        source: preloadd::model::JobSource::Api,
        catch_up: preloadd::model::CatchUp::Skip,
    };
    let img = preloadd::ingest::create_job(&f.store, &new, text.as_bytes(), f.clock_now()).await.unwrap().0;
    f.plan(site, T0, T0 + 3_600_000, 60, 2).await;
    f.plan(img, T0 + 30 * 60_000, T0 + 40 * 60_000, 60, 3).await;
    f.at(T0).await;
    f.recv.script(&[(400, None)]);
    f.at(T0 + 60_000).await;
    f.at(T0 + 30 * 60_000).await;
    f.at(T0 + 2 * 3_600_000).await; // windows closed
    f
}

/// Per (domain, vendor): (URL outcomes, done, failed), straight from the database.
async fn outcomes_by_domain(store: &Store) -> BTreeMap<(String, String), (i64, i64, i64)> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT u.url, st.vendor, o.status FROM url_outcomes o JOIN subtasks st ON st.id = o.subtask_id \
         JOIN slices s ON s.id = st.slice_id JOIN urls u ON u.job_id = s.job_id AND u.seq = o.seq",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let mut out = BTreeMap::new();
    for (url, vendor, status) in rows {
        let domain = url.split('/').nth(2).unwrap().to_string();
        let e = out.entry((domain, vendor)).or_insert((0, 0, 0));
        e.0 += 1;
        if status == "done" {
            e.1 += 1;
        }
        if status == "failed" {
            e.2 += 1;
        }
    }
    out
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').map(String::from).collect())
        .collect()
}

// ---- SMTP ------------------------------------------------------------------------------------

/// aiosmtpd on a free loopback port, writing each parsed message to a directory as JSON.
struct SmtpSink {
    port: u16,
    dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

impl SmtpSink {
    async fn start(fail_first: u32) -> SmtpSink {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let python = root.join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/python-env.sh to create the venv with aiosmtpd (the SMTP test server)",
            python.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(&python)
            .arg(root.join("tests/smtp/sink.py"))
            .arg(dir.path())
            .arg("--fail")
            .arg(fail_first.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(30), tokio::io::BufReader::new(stdout).read_line(&mut line))
            .await
            .expect("the SMTP sink did not start within 30 s (is aiosmtpd installed? run scripts/python-env.sh)")
            .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!("the SMTP sink printed `{line}` instead of its port (run scripts/python-env.sh to install aiosmtpd)")
        });
        SmtpSink { port, dir, _child: child }
    }

    fn config(&self) -> SmtpConfig {
        SmtpConfig {
            host: "127.0.0.1".into(),
            port: self.port,
            security: SmtpSecurity::None,
            user: None,
            password: None,
            from: "preloadd <reports@preloadd.test>".into(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Messages received so far (the sink writes each file atomically before answering 250).
    fn messages(&self) -> Vec<Value> {
        let mut names: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names.iter().map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_report_reaches_a_real_smtp_server_and_matches_the_database() {
    let sink = SmtpSink::start(1).await;
    let f = run_day().await;
    let spec = SubscriptionSpec {
        name: "ops-daily".into(),
        reports: all_reports(),
        domain_names: vec![],
        deliver: Deliver::Email(EmailDeliver {
            subject: "CDN preload report".into(),
            to: vec!["ops@example.test".into(), "lead@example.test".into()],
        }),
        schedule: daily(),
    };
    f.store.insert_subscription(&spec, "api", 100, f.clock_now()).await.unwrap();
    let reporter = Reporter::new(f.store.clone(), Arc::new(f.clock.clone()), Some(sink.config()), settings());

    // The firing for 11-29 (nothing happened): delivered, empty tables.
    f.clock.set(first_firing());
    let pass = reporter.deliver_due().await.unwrap();
    assert_eq!((pass.queued, pass.sent, pass.failed), (1, 0, 1), "the sink refuses the first message");
    assert!(sink.messages().is_empty());
    f.clock.set(first_firing() + 60_000); // the first retry is due after retry_base
    let pass = reporter.deliver_due().await.unwrap();
    assert_eq!((pass.queued, pass.sent), (0, 1));

    // The firing for 11-30, the day of the run.
    f.clock.set(second_firing());
    let pass = reporter.deliver_due().await.unwrap();
    assert_eq!((pass.queued, pass.sent, pass.failed), (1, 1, 0));
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    let m = &msgs[1];
    assert_eq!(m["subject"], "CDN preload report");
    assert_eq!(m["rcpt_tos"], json!(["ops@example.test", "lead@example.test"]));
    assert_eq!(m["mail_from"], "reports@preloadd.test");
    assert_eq!(m["content_type"], "multipart/mixed");
    assert!(m["html"].as_str().unwrap().contains("<table"), "HTML body");
    assert!(m["text"].as_str().unwrap().contains("Period: 2026-11-29T16:00:00.000Z"), "{}", m["text"]);
    let atts: BTreeMap<String, String> = m["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["content_type"], "text/csv");
            (a["filename"].as_str().unwrap().to_string(), a["content"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(atts.len(), 4, "one CSV per report: {:?}", atts.keys());

    // Report 1 against the database.
    let summary = csv_rows(atts.iter().find(|(k, _)| k.starts_with("report-1-")).unwrap().1);
    assert_eq!(summary[0][..6], ["domain", "vendor", "task_type", "urls_submitted", "urls_done", "urls_failed"]);
    let db = outcomes_by_domain(&f.store).await;
    assert_eq!(summary.len() - 1, db.len());
    for row in &summary[1..] {
        let (n, done, failed) = db[&(row[0].clone(), row[1].clone())];
        assert_eq!(
            (row[3].parse::<i64>().unwrap(), row[4].parse().unwrap(), row[5].parse().unwrap()),
            (n, done, failed)
        );
    }
    assert_eq!(db[&("cdn.example.com".into(), "hook".into())], (4, 2, 2));
    assert_eq!(db[&("img.example.com".into(), "hook".into())], (3, 3, 0));
    let cdn = summary.iter().find(|r| r[0] == "cdn.example.com").unwrap();
    assert_eq!(cdn[6], "50.0");

    // Report 2: the two refused URLs with the vendor's code.
    let failed = csv_rows(atts.iter().find(|(k, _)| k.starts_with("report-2-")).unwrap().1);
    let urls: Vec<&str> = failed[1..].iter().map(|r| r[2].as_str()).collect();
    assert_eq!(urls, ["https://cdn.example.com/site/2.js", "https://cdn.example.com/site/3.js"]);
    assert!(failed[1..].iter().all(|r| r[6] == "HTTP400"), "{failed:?}");

    // Report 4: the failed plan of `site`, with 2 URLs left and 2 failed.
    let plans = csv_rows(atts.iter().find(|(k, _)| k.starts_with("report-4-")).unwrap().1);
    assert_eq!(plans.len(), 2, "{plans:?}");
    assert_eq!((plans[1][1].as_str(), plans[1][8].as_str(), plans[1][9].as_str()), ("site", "2", "2"));

    // The same period again, or a restart: nothing more is sent.
    let again = Reporter::new(f.store.clone(), Arc::new(f.clock.clone()), Some(sink.config()), settings());
    assert_eq!(again.recover().await.unwrap(), 0);
    assert_eq!(again.deliver_due().await.unwrap(), Default::default());
    assert_eq!(sink.messages().len(), 2);
}

// ---- webhooks --------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Call {
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Hooks {
    calls: Arc<Mutex<Vec<Call>>>,
    /// Statuses to answer first.
    script: Arc<Mutex<Vec<u16>>>,
    /// While set, requests are recorded and then never answered.
    hang: Arc<Mutex<bool>>,
    never: Arc<Notify>,
}

async fn hook(
    State(h): State<Hooks>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    h.calls.lock().unwrap().push(Call { query, headers, body });
    if *h.hang.lock().unwrap() {
        h.never.notified().await;
    }
    let status = {
        let mut s = h.script.lock().unwrap();
        if s.is_empty() {
            200
        } else {
            s.remove(0)
        }
    };
    (StatusCode::from_u16(status).unwrap(), r#"{"errcode":0,"code":0}"#.into())
}

impl Hooks {
    async fn start() -> (Hooks, String) {
        let h = Hooks::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().route("/{*path}", post(hook)).with_state(h.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (h, base)
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

fn hmac256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

fn webhook_spec(name: &str, url: String, format: WebhookFormat, secret: Option<&str>) -> SubscriptionSpec {
    SubscriptionSpec {
        name: name.into(),
        reports: all_reports(),
        domain_names: vec![],
        deliver: Deliver::Webhook(WebhookDeliver { url, secret: secret.map(String::from), format }),
        schedule: daily(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_carry_the_reports_and_valid_signatures() {
    let f = run_day().await;
    let (hooks, base) = Hooks::start().await;
    let now = f.clock_now();
    for (name, format) in
        [("generic", WebhookFormat::Generic), ("ding", WebhookFormat::Dingtalk), ("feishu", WebhookFormat::Feishu)]
    {
        let spec = webhook_spec(name, format!("{base}/{name}?access_token=tok"), format, Some("s3cret"));
        f.store.insert_subscription(&spec, "api", 100, now).await.unwrap();
    }
    let unsigned = webhook_spec("plain", format!("{base}/plain"), WebhookFormat::Generic, None);
    f.store.insert_subscription(&unsigned, "api", 100, now).await.unwrap();
    for (name, format) in [("wecom", WebhookFormat::Wecom), ("slack", WebhookFormat::Slack)] {
        let spec = webhook_spec(name, format!("{base}/{name}"), format, None);
        f.store.insert_subscription(&spec, "api", 100, now).await.unwrap();
    }
    let reporter = Reporter::new(f.store.clone(), Arc::new(f.clock.clone()), None, settings());
    f.clock.set(first_firing());
    reporter.deliver_due().await.unwrap();
    hooks.calls.lock().unwrap().clear();
    f.clock.set(second_firing());
    let pass = reporter.deliver_due().await.unwrap();
    assert_eq!((pass.queued, pass.sent, pass.failed), (6, 6, 0));
    let calls = hooks.calls();
    assert_eq!(calls.len(), 6);
    let bodies: Vec<Value> = calls.iter().map(|c| serde_json::from_slice(&c.body).unwrap()).collect();
    let wecom = bodies.iter().find(|b| b["msgtype"] == "markdown" && b["markdown"].get("content").is_some()).unwrap();
    assert!(wecom["markdown"]["content"].as_str().unwrap().contains("img.example.com"), "{wecom}");
    let slack = bodies.iter().find(|b| b.as_object().is_some_and(|o| o.len() == 1 && o.contains_key("text"))).unwrap();
    assert!(slack["text"].as_str().unwrap().contains("Failed URLs"), "{slack}");

    // Generic: the reports as JSON, signed over the exact body.
    let generic: Vec<&Call> = calls.iter().filter(|c| c.headers.get("x-preloadd-signature").is_some()).collect();
    assert_eq!(generic.len(), 1, "only the generic webhook with a secret is signed by header");
    let g = generic[0];
    let sig = g.headers["x-preloadd-signature"].to_str().unwrap();
    assert_eq!(sig, format!("sha256={}", hex::encode(hmac256(b"s3cret", &g.body))));
    let v: Value = serde_json::from_slice(&g.body).unwrap();
    assert_eq!(v["subscription"], "generic");
    assert_eq!(v["period_start"], "2026-11-29T16:00:00.000Z");
    assert_eq!(v["period_end"], "2026-11-30T16:00:00.000Z");
    let r1 = &v["reports"][0];
    assert_eq!(r1["report_id"], 1);
    let rows = r1["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][0], "cdn.example.com");
    assert_eq!((rows[0][3].as_str(), rows[0][4].as_str(), rows[0][5].as_str()), (Some("4"), Some("2"), Some("2")));
    assert_eq!(v["reports"][1]["rows"].as_array().unwrap().len(), 2, "two failed URLs");

    // DingTalk: timestamp and sign in the query, over "timestamp\nsecret".
    let ding = calls.iter().find(|c| c.query.as_deref().is_some_and(|q| q.contains("sign="))).unwrap();
    let q: BTreeMap<String, String> =
        url::form_urlencoded::parse(ding.query.as_deref().unwrap().as_bytes()).into_owned().collect();
    assert_eq!(q["access_token"], "tok", "the robot's own query is kept");
    let ts = &q["timestamp"];
    assert_eq!(ts, &second_firing().to_string(), "milliseconds on the injected clock");
    let want = base64::engine::general_purpose::STANDARD.encode(hmac256(b"s3cret", format!("{ts}\ns3cret").as_bytes()));
    assert_eq!(q["sign"], want);
    let body: Value = serde_json::from_slice(&ding.body).unwrap();
    assert_eq!(body["msgtype"], "markdown");
    assert!(body["markdown"]["text"].as_str().unwrap().contains("cdn.example.com"));

    // Feishu: timestamp (seconds) and sign in the body; the key is "timestamp\nsecret".
    let feishu = calls
        .iter()
        .map(|c| serde_json::from_slice::<Value>(&c.body).unwrap())
        .find(|b| b["msg_type"] == "text")
        .unwrap();
    let ts = feishu["timestamp"].as_str().unwrap();
    assert_eq!(ts, (second_firing() / 1000).to_string());
    let want = base64::engine::general_purpose::STANDARD.encode(hmac256(format!("{ts}\ns3cret").as_bytes(), b""));
    assert_eq!(feishu["sign"], want);

    // Unsigned generic: no signature header at all.
    let plain =
        calls.iter().find(|c| serde_json::from_slice::<Value>(&c.body).unwrap()["subscription"] == "plain").unwrap();
    assert!(plain.headers.get("x-preloadd-signature").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_and_domains_filter_the_reports() {
    let f = run_day().await;
    let (hooks, base) = Hooks::start().await;
    let cond = |field: &str, op: &str, value: &[&str]| Condition {
        field: field.into(),
        op: op.into(),
        value: value.iter().map(|s| s.to_string()).collect(),
    };
    let mut spec = webhook_spec("filtered", format!("{base}/f"), WebhookFormat::Generic, None);
    spec.reports = vec![
        ReportSelection { report_id: 1, conditions: vec![cond("domain", "in", &["img.example.com"])] },
        ReportSelection { report_id: 2, conditions: vec![cond("vendor", "not_in", &["hook"])] },
        ReportSelection { report_id: 4, conditions: vec![cond("status", "eq", &["finished"])] },
    ];
    f.store.insert_subscription(&spec, "api", 100, f.clock_now()).await.unwrap();
    let mut only_cdn = webhook_spec("cdn-only", format!("{base}/c"), WebhookFormat::Generic, None);
    only_cdn.domain_names = vec!["cdn.example.com".into()];
    only_cdn.reports = vec![
        ReportSelection { report_id: 1, conditions: vec![] },
        ReportSelection { report_id: 2, conditions: vec![cond("task_type", "eq", &["preload"])] },
    ];
    f.store.insert_subscription(&only_cdn, "api", 100, f.clock_now()).await.unwrap();
    let reporter = Reporter::new(f.store.clone(), Arc::new(f.clock.clone()), None, settings());
    f.clock.set(second_firing() - 1);
    reporter.deliver_due().await.unwrap(); // the 11-29 period
    hooks.calls.lock().unwrap().clear();
    f.clock.set(second_firing());
    assert_eq!(reporter.deliver_due().await.unwrap().sent, 2);
    let bodies: BTreeMap<String, Value> = hooks
        .calls()
        .iter()
        .map(|c| {
            let v: Value = serde_json::from_slice(&c.body).unwrap();
            (v["subscription"].as_str().unwrap().to_string(), v)
        })
        .collect();
    let filtered = &bodies["filtered"]["reports"];
    let r1 = filtered[0]["rows"].as_array().unwrap();
    assert_eq!(r1.len(), 1);
    assert_eq!(r1[0][0], "img.example.com");
    assert!(filtered[1]["rows"].as_array().unwrap().is_empty(), "not_in [hook] leaves no failed URL");
    assert!(filtered[2]["rows"].as_array().unwrap().is_empty(), "the site plan failed, it did not finish");
    let cdn = &bodies["cdn-only"]["reports"];
    let r1 = cdn[0]["rows"].as_array().unwrap();
    assert_eq!(r1.len(), 1);
    assert_eq!(r1[0][0], "cdn.example.com");
    assert_eq!(cdn[1]["rows"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_back_off_and_no_period_is_sent_twice_across_restarts() {
    let f = Fixture::new(100).await;
    let (hooks, base) = Hooks::start().await;
    let spec = webhook_spec("retry", format!("{base}/r"), WebhookFormat::Generic, Some("k"));
    let sub = f.store.insert_subscription(&spec, "api", 100, f.clock_now()).await.unwrap();
    assert_eq!(sub.next_run, Some(first_firing()));
    *hooks.script.lock().unwrap() = vec![500, 502];
    let clock = Arc::new(f.clock.clone());
    let r = Reporter::new(f.store.clone(), clock.clone(), None, settings());
    f.clock.set(first_firing());
    assert_eq!(r.deliver_due().await.unwrap().failed, 1);
    assert_eq!(r.deliver_due().await.unwrap(), Default::default(), "not before the backoff");
    // A restart while a retry is pending keeps the retry.
    let r = Reporter::new(f.store.clone(), clock.clone(), None, settings());
    assert_eq!(r.recover().await.unwrap(), 0);
    f.clock.set(first_firing() + 59_000);
    assert_eq!(r.deliver_due().await.unwrap(), Default::default());
    f.clock.set(first_firing() + 60_000);
    assert_eq!(r.deliver_due().await.unwrap().failed, 1);
    f.clock.set(first_firing() + 60_000 + 119_000);
    assert_eq!(r.deliver_due().await.unwrap(), Default::default(), "the second delay doubles");
    f.clock.set(first_firing() + 60_000 + 120_000);
    assert_eq!(r.deliver_due().await.unwrap().sent, 1);
    assert_eq!(hooks.calls().len(), 3);
    let d = f.store.deliveries(sub.id, 10).await.unwrap();
    assert_eq!((d.len(), d[0].status.as_str(), d[0].attempts), (1, "sent", 3));

    // Down over several firings: one delivery for the latest missed one, not one per firing.
    f.clock.set(first_firing() + 3 * 86_400_000 + 3_600_000);
    let r = Reporter::new(f.store.clone(), clock.clone(), None, settings());
    let pass = r.deliver_due().await.unwrap();
    assert_eq!((pass.queued, pass.sent), (1, 1));
    assert_eq!(hooks.calls().len(), 4);

    // A crash in the middle of a send: the attempt was recorded before the request left, so
    // after the restart the period is recorded as failed and not sent a second time.
    *hooks.hang.lock().unwrap() = true;
    let next = first_firing() + 4 * 86_400_000;
    f.clock.set(next);
    let sending = r.deliver_due();
    assert!(tokio::time::timeout(Duration::from_secs(1), sending).await.is_err(), "the receiver hangs");
    assert_eq!(hooks.calls().len(), 5, "the request reached the receiver");
    *hooks.hang.lock().unwrap() = false;
    hooks.never.notify_waiters();
    let restarted = Reporter::new(f.store.clone(), clock.clone(), None, settings());
    assert_eq!(restarted.recover().await.unwrap(), 1);
    f.clock.set(next + 3_600_000);
    assert_eq!(restarted.deliver_due().await.unwrap(), Default::default());
    assert_eq!(hooks.calls().len(), 5, "never twice for one period");
    let d = f.store.deliveries(sub.id, 10).await.unwrap();
    assert_eq!(d[0].status, "failed");
    assert!(d[0].error.contains("interrupted"), "{}", d[0].error);
    // The next period goes out as usual.
    f.clock.set(next + 86_400_000);
    assert_eq!(restarted.deliver_due().await.unwrap().sent, 1);
}

// ---- API -------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_routes_and_seed_error_codes() {
    use reqwest::Method;
    let api = crate::api::Api::start_with(
        "requests_per_second = 1000\nmax_report_subscriptions = 3\n\
         [[report]]\nname = \"declared\"\ndomain_names = [\"cdn.example.com\"]\n\
         [report.deliver.webhook]\nurl = \"http://127.0.0.1:9/hook\"\nformat = \"wecom\"\n\
         [report.schedule]\ncrontab = \"0 0 8 * * ?\"\nfrequency = \"d\"\n\
         [[report.reports]]\nreport_id = 1\n",
    )
    .await;
    let body = json!({
        "name": "daily",
        "reports": [{"report_id": 1, "conditions": [{"field": "domain", "op": "in", "value": ["a.example.com"]}]}, {"report_id": 2}],
        "domain_names": ["a.example.com"],
        "deliver": {"email": {"subject": "Daily", "to": ["ops@example.test"]}},
        "schedule": {"sched_name": "d", "crontab": "0 0 8 * * ?", "frequency": "d", "status": "enable",
                     "effective_from": "2026-01-01T00:00:00Z", "effective_end": "2030-01-01T00:00:00Z"},
    });
    let (st, created) = api.call(Method::POST, "/v1/report-subscriptions", Some(body.clone())).await;
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["schedule"]["timezone"], "Asia/Shanghai");
    assert!(created["next_run"].as_str().unwrap().ends_with("T00:00:00.000Z"), "08:00 Shanghai: {created}");
    assert!(created["request_id"].is_string());

    let (st, b) = api.call(Method::POST, "/v1/report-subscriptions", Some(body.clone())).await;
    assert_eq!((st, b["code"].as_str()), (400, Some("NameAlreadyExists")));

    // The seed's own encoding: JSON-escaped strings, camelCase, comma-separated domains.
    let seed = json!({
        "Name": "seed-style",
        "Reports": "[{\"reportId\":1,\"conditions\":[{\"field\":\"vendor\",\"op\":\"in\",\"value\":[\"hook\"]}]}]",
        "DomainName": "www.example.com,img.example.com",
        "Deliver": "{\"email\":{\"subject\":\"s\",\"to\":[\"a@example.test\",\"b@example.test\"]}}",
        "Schedule": "{\"schedName\":\"n\",\"description\":\"d\",\"crontab\":\"0 0 0 * * ?\",\"frequency\":\"d\",\"status\":\"enable\",\"effectiveFrom\":\"2020-09-17T00:00:00Z\",\"effectiveEnd\":\"2030-11-17T00:00:00Z\"}",
    });
    let (st, b) = api.call(Method::POST, "/v1/report-subscriptions", Some(seed)).await;
    assert_eq!(st, 201, "{b}");
    assert_eq!(b["domain_names"], json!(["www.example.com", "img.example.com"]));
    let seed_id = b["id"].as_i64().unwrap();

    // Limit: the declared one counts too (3 = declared + 2).
    let mut third = body.clone();
    third["name"] = json!("third");
    let (st, b) = api.call(Method::POST, "/v1/report-subscriptions", Some(third)).await;
    assert_eq!((st, b["code"].as_str()), (400, Some("DeliverExceedLimit")), "{b}");

    // Bad times, unknown ids, bad fields.
    let mut bad_time = body.clone();
    bad_time["name"] = json!("t");
    bad_time["schedule"]["effective_from"] = json!("tomorrow");
    let (_, b) = api.call(Method::POST, "/v1/report-subscriptions", Some(bad_time)).await;
    assert_eq!(b["code"], "TimeParseFailed", "{b}");
    let (st, b) = api
        .call(
            Method::PATCH,
            &format!("/v1/report-subscriptions/{id}"),
            Some(json!({"schedule": {"effective_end": "2025-01-01T00:00:00Z"}})),
        )
        .await;
    assert_eq!((st, b["code"].as_str()), (400, Some("TimeParseFailed")), "end before start: {b}");
    for path in ["/v1/report-subscriptions/9999"] {
        for m in [Method::GET, Method::DELETE] {
            let (st, b) = api.call(m, path, None).await;
            assert_eq!((st, b["code"].as_str()), (400, Some("SubscriptionNotFound")));
        }
        let (st, b) = api.call(Method::PATCH, path, Some(json!({"name": "x"}))).await;
        assert_eq!((st, b["code"].as_str()), (400, Some("SubscriptionNotFound")));
    }
    for bad in [
        json!({"reports": [{"report_id": 9}]}),
        json!({"reports": [{"report_id": 1, "conditions": [{"field": "prov", "op": "in", "value": ["x"]}]}]}),
        json!({"reports": [{"report_id": 1, "conditions": [{"field": "domain", "op": "eq", "value": ["a", "b"]}]}]}),
        json!({"deliver": {"email": {"subject": "s", "to": ["not an address"]}}}),
        json!({"schedule": {"crontab": "61 * * * * *"}}),
        json!({"schedule": {"frequency": "m"}}),
        json!({"domain_names": (0..501).map(|i| format!("d{i}.example.com")).collect::<Vec<_>>()}),
        json!({"bogus": 1}),
    ] {
        let (st, b) = api.call(Method::PATCH, &format!("/v1/report-subscriptions/{id}"), Some(bad.clone())).await;
        assert_eq!((st, b["code"].as_str()), (400, Some("InvalidParameter")), "{bad}: {b}");
    }
    let (st, b) =
        api.call(Method::PATCH, &format!("/v1/report-subscriptions/{id}"), Some(json!({"name": "seed-style"}))).await;
    assert_eq!((st, b["code"].as_str()), (400, Some("NameAlreadyExists")));

    // PATCH: every field optional; schedule fields merge.
    let (st, b) = api
        .call(
            Method::PATCH,
            &format!("/v1/report-subscriptions/{id}"),
            Some(json!({"schedule": {"status": "disable"}, "deliver": {"webhook": {"url": "https://hooks.example.test/x", "secret": "k", "format": "slack"}}})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["schedule"]["status"], "disable");
    assert_eq!(b["schedule"]["crontab"], "0 0 8 * * ?");
    assert_eq!(b["next_run"], Value::Null, "disabled: no next run");
    assert_eq!(b["deliver"]["webhook"]["secret_set"], true);
    assert!(b["deliver"]["webhook"].get("secret").is_none(), "secrets are write-only");
    assert_eq!(b["name"], "daily");

    let (st, b) = api.call(Method::GET, "/v1/report-subscriptions?page_size=2", None).await;
    assert_eq!(st, 200);
    assert_eq!(b["pagination"]["total"], 3);
    assert_eq!(b["report_subscriptions"].as_array().unwrap().len(), 2);
    let declared = &b["report_subscriptions"][0];
    assert_eq!((declared["name"].as_str(), declared["declarative"].as_bool()), (Some("declared"), Some(true)));
    let declared_id = declared["id"].as_i64().unwrap();
    let (st, b) = api.call(Method::DELETE, &format!("/v1/report-subscriptions/{declared_id}"), None).await;
    assert_eq!((st, b["code"].as_str()), (400, Some("InvalidParameter")), "declared in the config");

    let (st, b) = api.call(Method::GET, &format!("/v1/report-subscriptions/{seed_id}"), None).await;
    assert_eq!(st, 200);
    assert_eq!(b["deliveries"], json!([]));
    let (st, _) = api.call(Method::DELETE, &format!("/v1/report-subscriptions/{seed_id}"), None).await;
    assert_eq!(st, 200);
    let (st, b) = api.call(Method::GET, &format!("/v1/report-subscriptions/{seed_id}"), None).await;
    assert_eq!((st, b["code"].as_str()), (400, Some("SubscriptionNotFound")));
}

/// The daemon's own loop on the real clock: a `[[report]]` firing every second reaches its
/// webhook without anyone calling the step function.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_delivers_declared_reports_on_its_own() {
    let (hooks, base) = Hooks::start().await;
    let _api = crate::api::Api::start_with(&format!(
        "requests_per_second = 1000\n\
         [[report]]\nname = \"every-second\"\n\
         [report.deliver.webhook]\nurl = \"{base}/loop\"\n\
         [report.schedule]\ncrontab = \"* * * * * *\"\nfrequency = \"h\"\n\
         [[report.reports]]\nreport_id = 3\n"
    ))
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(c) = hooks.calls().first() {
            let v: Value = serde_json::from_slice(&c.body).unwrap();
            assert_eq!(v["subscription"], "every-second");
            assert_eq!(v["reports"][0]["report_id"], 3);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no delivery within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `preloadd report create|list|show|update|delete` against a running daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_report_commands() {
    let api = crate::api::Api::start().await;
    let run = |args: &[&str]| -> (i32, String, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_preloadd"))
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
    };
    let (code, out, err) = tokio::task::block_in_place(|| {
        run(&[
            "report",
            "create",
            "nightly",
            "--report",
            "1",
            "--report",
            "2",
            "--email-to",
            "ops@example.test",
            "--subject",
            "Nightly",
            "--crontab",
            "0 0 8 * * ?",
            "--frequency",
            "d",
        ])
    });
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("nightly") && out.contains("email ops@example.test"), "{out}");
    let (code, out, _) = tokio::task::block_in_place(|| run(&["report", "list", "--json"]));
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["report_subscriptions"][0]["reports"],
        json!([{"report_id": 1, "conditions": []}, {"report_id": 2, "conditions": []}])
    );
    let (code, out, err) = tokio::task::block_in_place(|| run(&["report", "update", "nightly", "--status", "disable"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("disable"), "{out}");
    let (code, _, err) = tokio::task::block_in_place(|| {
        run(&[
            "report",
            "create",
            "nightly",
            "--report",
            "1",
            "--email-to",
            "a@example.test",
            "--crontab",
            "0 0 8 * * ?",
            "--frequency",
            "d",
        ])
    });
    assert_eq!(code, 1);
    assert!(err.contains("NameAlreadyExists"), "{err}");
    let (code, _, _) = tokio::task::block_in_place(|| run(&["report", "delete", "nightly"]));
    assert_eq!(code, 0);
    let (code, _, err) = tokio::task::block_in_place(|| run(&["report", "show", "nightly"]));
    assert_eq!(code, 3, "not found: {err}");
    let (code, _, err) = tokio::task::block_in_place(|| run(&["report", "show", "12345"]));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("SubscriptionNotFound"), "{err}");
}

/// Report 3 reads the quota counters of the vendor days inside the period; conditions apply.
#[tokio::test]
async fn quota_report_counts_the_vendor_days_of_the_period() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).await.unwrap();
    for (vendor, bucket, day, used) in [
        ("ali", "preload", "2026-11-30", 120),
        ("ali", "refresh_file", "2026-11-30", 7),
        ("esa", "preload:overseas", "2026-11-30", 40),
        ("ali", "preload", "2026-11-29", 999), // outside the period
    ] {
        store.open_quota_day(vendor, bucket, day, 1000, 1000).await.unwrap();
        store.reserve_quota(vendor, bucket, day, used).await.unwrap();
    }
    let (start, end) =
        (parse_time("2026-11-30T00:00:00+08:00").unwrap(), parse_time("2026-12-01T00:00:00+08:00").unwrap());
    let all = ReportSelection { report_id: 3, conditions: vec![] };
    let r = store.compute_report(&all, &[], start, end).await.unwrap();
    assert_eq!(r.columns, ["vendor", "bucket", "day", "quota", "used", "remaining", "use_rate_percent"]);
    assert_eq!(
        r.rows,
        [
            ["ali", "preload", "2026-11-30", "1000", "120", "880", "12.0"],
            ["ali", "refresh_file", "2026-11-30", "1000", "7", "993", "0.7"],
            ["esa", "preload:overseas", "2026-11-30", "1000", "40", "960", "4.0"],
        ]
    );
    let preload_only = ReportSelection {
        report_id: 3,
        conditions: vec![Condition { field: "task_type".into(), op: "eq".into(), value: vec!["preload".into()] }],
    };
    let r = store.compute_report(&preload_only, &[], start, end).await.unwrap();
    let vendors: Vec<&str> = r.rows.iter().map(|row| row[0].as_str()).collect();
    assert_eq!(vendors, ["ali", "esa"], "the area suffix does not hide the task type");
    let not_esa = ReportSelection {
        report_id: 3,
        conditions: vec![Condition { field: "vendor".into(), op: "not_in".into(), value: vec!["esa".into()] }],
    };
    assert_eq!(store.compute_report(&not_esa, &[], start, end).await.unwrap().rows.len(), 2);
}
