//! The client commands (`preloadd job|plan|task|vendor|watch`): talk to the daemon's API, print a
//! table for people or the JSON for scripts (`--json`). Exit codes: 0 ok, 1 failure, 3 not found.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::cli::{EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE};

/// How to reach the daemon.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// The daemon's API.
    #[arg(long, global = true, env = "PRELOADD_SERVER", default_value = "http://127.0.0.1:8790")]
    pub server: String,
    /// A file holding the API token (or set PRELOADD_TOKEN).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Create a job from URLs, a list file (streamed), a list URL or a sitemap.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "preload")]
        task_type: String,
        /// Vendor account; repeat for fan-out.
        #[arg(long = "vendor", required = true)]
        vendors: Vec<String>,
        #[arg(long = "url")]
        urls: Vec<String>,
        #[arg(long)]
        urls_file: Option<PathBuf>,
        #[arg(long)]
        urls_url: Option<String>,
        #[arg(long)]
        sitemap_url: Option<String>,
        #[arg(long)]
        catch_up: Option<String>,
    },
    List {
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value_t = 1)]
        page_num: u32,
        #[arg(long, default_value_t = 20)]
        page_size: u32,
    },
    Show {
        job: String,
    },
    Delete {
        job: String,
    },
    Reset {
        job: String,
    },
    /// A new plan over exactly the URLs that failed, per vendor.
    RetryFailed {
        job: String,
        #[arg(long)]
        start: Option<String>,
        #[arg(long)]
        end: Option<String>,
        #[arg(long)]
        interval: Option<String>,
        #[arg(long)]
        slice_len: Option<i64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PlanCommand {
    /// Add a window to a job (`--dry-run` shows the timetable and creates nothing).
    Create {
        job: String,
        #[arg(long)]
        start: String,
        #[arg(long)]
        end: String,
        #[arg(long)]
        interval: String,
        #[arg(long)]
        slice_len: i64,
        #[arg(long)]
        dry_run: bool,
    },
    List {
        job: String,
    },
    Show {
        plan: i64,
    },
    /// Change a plan; every field optional.
    Update {
        plan: i64,
        #[arg(long)]
        start: Option<String>,
        #[arg(long)]
        end: Option<String>,
        #[arg(long)]
        interval: Option<String>,
        #[arg(long)]
        slice_len: Option<i64>,
    },
    Start {
        plan: i64,
    },
    Stop {
        plan: i64,
    },
    Delete {
        plan: i64,
    },
}

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// Tasks (slices) with their per-vendor subtasks; default: the past 24 hours.
    List {
        #[arg(long)]
        task_id: Option<i64>,
        #[arg(long)]
        task_type: Option<String>,
        /// Unix seconds.
        #[arg(long)]
        start_time: Option<i64>,
        #[arg(long)]
        end_time: Option<i64>,
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        url: Option<String>,
        /// executing | done
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 1)]
        page_num: u32,
        #[arg(long, default_value_t = 10)]
        page_size: u32,
    },
}

/// Where a report goes and what it holds (shared by create and update).
#[derive(clap::Args, Debug, Default)]
pub struct ReportArgs {
    /// A report id (1 summary, 2 failed URLs, 3 quota use, 4 unfinished plans); repeatable.
    #[arg(long = "report")]
    reports: Vec<u32>,
    /// A domain to report on; repeatable (none = every domain).
    #[arg(long = "domain")]
    domains: Vec<String>,
    /// Deliver by email to this address; repeatable.
    #[arg(long = "email-to")]
    email_to: Vec<String>,
    #[arg(long)]
    subject: Option<String>,
    /// Deliver to this webhook URL instead of email.
    #[arg(long)]
    webhook: Option<String>,
    /// generic | dingtalk | feishu | wecom | slack
    #[arg(long)]
    format: Option<String>,
    /// A file holding the webhook's signing secret.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Cron rule of the deliveries, e.g. "0 0 8 * * ?".
    #[arg(long)]
    crontab: Option<String>,
    /// The period each delivery covers: h | d | w.
    #[arg(long)]
    frequency: Option<String>,
    #[arg(long)]
    timezone: Option<String>,
    /// enable | disable
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    effective_from: Option<String>,
    #[arg(long)]
    effective_end: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ReportCommand {
    /// Subscribe to reports delivered on a schedule (by email or webhook).
    Create {
        name: String,
        #[command(flatten)]
        args: ReportArgs,
    },
    List,
    /// A subscription (by id or name) and its latest deliveries.
    Show {
        subscription: String,
    },
    /// Change a subscription; every field optional.
    Update {
        subscription: String,
        #[arg(long)]
        rename: Option<String>,
        #[command(flatten)]
        args: ReportArgs,
    },
    Delete {
        subscription: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum VendorCommand {
    List,
}

/// A failed API call: the code and message from the daemon, or why it could not be reached.
#[derive(Debug)]
pub struct ClientError {
    pub status: u16,
    pub message: String,
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(conn: &Conn) -> Result<Client, ClientError> {
        let token = match (&conn.token_file, std::env::var("PRELOADD_TOKEN")) {
            (Some(f), _) => std::fs::read_to_string(f)
                .map_err(|e| ClientError { status: 0, message: format!("cannot read {}: {e}", f.display()) })?
                .trim()
                .to_string(),
            (None, Ok(t)) => t,
            (None, Err(_)) => String::new(),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            // Below the daemon's default `header_timeout` (10 s), which also closes idle
            // keep-alive connections: never reuse one the daemon is about to close.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClientError { status: 0, message: e.to_string() })?;
        Ok(Client { http, base: conn.server.trim_end_matches('/').to_string(), token })
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let resp = rb.bearer_auth(&self.token).send().await.map_err(|e| ClientError {
            status: 0,
            message: format!("cannot reach the daemon at {}: {}", self.base, e.without_url()),
        })?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status >= 400 {
            let message = format!(
                "{}: {}",
                body["code"].as_str().unwrap_or("Error"),
                body["message"].as_str().unwrap_or("the daemon refused the request")
            );
            return Err(ClientError { status, message });
        }
        Ok(body)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, ClientError> {
        let mut rb = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        self.send(rb).await
    }

    async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// A job by id or by exact name.
    async fn job_id(&self, job: &str) -> Result<i64, ClientError> {
        if let Ok(id) = job.parse() {
            return Ok(id);
        }
        let list = self.get(&format!("/v1/jobs?name={}&page_size=100", urlencode(job))).await?;
        list["jobs"]
            .as_array()
            .and_then(|a| a.iter().find(|j| j["name"] == job))
            .and_then(|j| j["id"].as_i64())
            .ok_or(ClientError { status: 404, message: format!("InvalidJob.NotFound: no job named `{job}`") })
    }
}

impl Client {
    /// A report subscription by id or by exact name.
    async fn subscription_id(&self, sub: &str) -> Result<i64, ClientError> {
        if let Ok(id) = sub.parse() {
            return Ok(id);
        }
        let mut page = 1;
        loop {
            let list = self.get(&format!("/v1/report-subscriptions?page_num={page}&page_size=100")).await?;
            let items = list["report_subscriptions"].as_array().cloned().unwrap_or_default();
            if let Some(id) = items.iter().find(|s| s["name"] == sub).and_then(|s| s["id"].as_i64()) {
                return Ok(id);
            }
            if items.len() < 100 {
                return Err(ClientError {
                    status: 404,
                    message: format!("SubscriptionNotFound: no report subscription named `{sub}`"),
                });
            }
            page += 1;
        }
    }
}

/// The API body of `report create|update` from the flags that were given.
fn report_body(a: &ReportArgs) -> Result<Value, ClientError> {
    let mut b = json!({});
    if !a.reports.is_empty() {
        b["reports"] = json!(a.reports.iter().map(|id| json!({"report_id": id})).collect::<Vec<_>>());
    }
    if !a.domains.is_empty() {
        b["domain_names"] = json!(a.domains);
    }
    match (&a.webhook, a.email_to.is_empty()) {
        (Some(_), false) => {
            return Err(ClientError { status: 0, message: "give --email-to or --webhook, not both".into() })
        }
        (Some(url), true) => {
            let mut w = json!({"url": url, "format": a.format.clone().unwrap_or_else(|| "generic".into())});
            if let Some(f) = &a.secret_file {
                let secret = std::fs::read_to_string(f)
                    .map_err(|e| ClientError { status: 0, message: format!("cannot read {}: {e}", f.display()) })?;
                w["secret"] = json!(secret.trim_end_matches(['\r', '\n']));
            }
            b["deliver"] = json!({"webhook": w});
        }
        (None, false) => {
            b["deliver"] = json!({"email": {"subject": a.subject.clone().unwrap_or_default(), "to": a.email_to}})
        }
        (None, true) => {}
    }
    let mut sched = serde_json::Map::new();
    for (k, v) in [
        ("crontab", &a.crontab),
        ("frequency", &a.frequency),
        ("timezone", &a.timezone),
        ("status", &a.status),
        ("effective_from", &a.effective_from),
        ("effective_end", &a.effective_end),
    ] {
        if let Some(v) = v {
            sched.insert(k.into(), json!(v));
        }
    }
    if !sched.is_empty() {
        b["schedule"] = Value::Object(sched);
    }
    Ok(b)
}

fn reports_table(v: &Value) -> String {
    let rows = v["report_subscriptions"].as_array().map(|a| a.iter().map(report_row).collect()).unwrap_or_default();
    table(&["ID", "NAME", "REPORTS", "DELIVER", "CRONTAB", "FREQ", "STATUS", "NEXT RUN"], rows)
}

fn report_row(r: &Value) -> Vec<String> {
    let reports: Vec<String> =
        r["reports"].as_array().map(|a| a.iter().map(|x| s(&x["report_id"])).collect()).unwrap_or_default();
    let deliver = if let Some(e) = r["deliver"].get("email") {
        format!(
            "email {}",
            e["to"].as_array().map(|a| a.iter().map(s).collect::<Vec<_>>().join(",")).unwrap_or_default()
        )
    } else {
        format!("webhook {}", s(&r["deliver"]["webhook"]["format"]))
    };
    vec![
        s(&r["id"]),
        s(&r["name"]),
        reports.join(","),
        deliver,
        s(&r["schedule"]["crontab"]),
        s(&r["schedule"]["frequency"]),
        s(&r["schedule"]["status"]),
        s(&r["next_run"]),
    ]
}

fn report_detail(r: &Value) -> String {
    let mut out = reports_table(&json!({"report_subscriptions": [r]}));
    if let Some(d) = r["deliveries"].as_array().filter(|d| !d.is_empty()) {
        out.push('\n');
        out.push_str(&table(
            &["PERIOD START", "PERIOD END", "STATUS", "ATTEMPTS", "ERROR"],
            d.iter()
                .map(|x| {
                    vec![s(&x["period_start"]), s(&x["period_end"]), s(&x["status"]), s(&x["attempts"]), s(&x["error"])]
                })
                .collect(),
        ));
    }
    out
}

pub async fn report(conn: &Conn, cmd: &ReportCommand) -> i32 {
    let c = match Client::new(conn) {
        Ok(c) => c,
        Err(e) => return exit_for(&e),
    };
    let one = |v: &Value| reports_table(&json!({"report_subscriptions": [v]}));
    let result = async {
        match cmd {
            ReportCommand::Create { name, args } => {
                let mut b = report_body(args)?;
                b["name"] = json!(name);
                let v = c.call(reqwest::Method::POST, "/v1/report-subscriptions", Some(b)).await?;
                print(conn, &v, one);
            }
            ReportCommand::List => {
                let v = c.get("/v1/report-subscriptions?page_size=100").await?;
                print(conn, &v, reports_table);
            }
            ReportCommand::Show { subscription } => {
                let id = c.subscription_id(subscription).await?;
                let v = c.get(&format!("/v1/report-subscriptions/{id}")).await?;
                print(conn, &v, report_detail);
            }
            ReportCommand::Update { subscription, rename, args } => {
                let id = c.subscription_id(subscription).await?;
                let mut b = report_body(args)?;
                if let Some(n) = rename {
                    b["name"] = json!(n);
                }
                let v = c.call(reqwest::Method::PATCH, &format!("/v1/report-subscriptions/{id}"), Some(b)).await?;
                print(conn, &v, one);
            }
            ReportCommand::Delete { subscription } => {
                let id = c.subscription_id(subscription).await?;
                let v = c.call(reqwest::Method::DELETE, &format!("/v1/report-subscriptions/{id}"), None).await?;
                print(conn, &v, |_| format!("deleted report subscription {subscription}\n"));
            }
        }
        Ok::<(), ClientError>(())
    }
    .await;
    match result {
        Ok(()) => EXIT_OK,
        // The seed answers an unknown subscription with 400; for the exit code it is "not found".
        Err(mut e) => {
            if e.message.starts_with("SubscriptionNotFound") {
                e.status = 404;
            }
            exit_for(&e)
        }
    }
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    q.finish()
}

/// A duration as the API takes it: seconds (`90`) or a humantime string (`"90s"`).
fn seconds(s: &str) -> Value {
    s.parse::<f64>().map(|n| json!(n)).unwrap_or_else(|_| json!(s))
}

fn exit_for(e: &ClientError) -> i32 {
    eprintln!("preloadd: {}", e.message);
    match e.status {
        404 => EXIT_NOT_FOUND,
        _ => EXIT_FAILURE,
    }
}

fn print(conn: &Conn, v: &Value, table: impl FnOnce(&Value) -> String) {
    if conn.json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        print!("{}", table(v));
    }
}

fn row(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (c, w) in cells.iter().zip(widths) {
        line.push_str(&format!("{c:<w$}  "));
    }
    format!("{}\n", line.trim_end())
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = row(&headers.iter().map(|h| h.to_string()).collect::<Vec<_>>(), &widths);
    for r in rows {
        out.push_str(&row(&r, &widths));
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn jobs_table(v: &Value) -> String {
    let rows = v["jobs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|j| {
                    vec![
                        s(&j["id"]),
                        s(&j["name"]),
                        s(&j["task_type"]),
                        j["vendors"]
                            .as_array()
                            .map(|v| v.iter().map(s).collect::<Vec<_>>().join(","))
                            .unwrap_or_default(),
                        s(&j["url_count"]),
                        s(&j["cursor"]),
                        s(&j["source"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = table(&["ID", "NAME", "TYPE", "VENDORS", "URLS", "CURSOR", "SOURCE"], rows);
    if let Some(p) = v.get("pagination") {
        out.push_str(&format!(
            "page {} of size {}, {} in all\n",
            s(&p["page_num"]),
            s(&p["page_size"]),
            s(&p["total"])
        ));
    }
    out
}

fn plans_table(plans: &Value) -> String {
    let rows = plans
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    vec![
                        s(&p["id"]),
                        s(&p["status"]),
                        s(&p["start_time"]),
                        s(&p["end_time"]),
                        s(&p["interval"]),
                        s(&p["slice_len"]),
                        s(&p["urls_sent"]),
                        s(&p["error_info"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["ID", "STATUS", "START", "END", "INTERVAL", "SLICE", "SENT", "ERROR"], rows)
}

fn job_detail(j: &Value) -> String {
    let mut out = format!(
        "job {} `{}`: {} to {} ({}), {} URLs, cursor {}, {} rejected lines\n",
        s(&j["id"]),
        s(&j["name"]),
        s(&j["task_type"]),
        j["vendors"].as_array().map(|v| v.iter().map(s).collect::<Vec<_>>().join(", ")).unwrap_or_default(),
        s(&j["source"]),
        s(&j["url_count"]),
        s(&j["cursor"]),
        s(&j["rejected_count"]),
    );
    if let Some(plans) = j.get("plans") {
        out.push_str(&plans_table(plans));
    }
    if let Some(progress) = j["vendors_progress"].as_array() {
        let rows = progress
            .iter()
            .map(|p| {
                vec![
                    s(&p["vendor"]),
                    s(&p["urls_accepted"]),
                    s(&p["done"]),
                    s(&p["failed"]),
                    s(&p["unknown"]),
                    s(&p["pending"]),
                    s(&p["waiting"]),
                ]
            })
            .collect();
        out.push_str(&table(&["VENDOR", "SUBMITTED", "DONE", "FAILED", "UNKNOWN", "PENDING", "WAITING"], rows));
    }
    out
}

pub async fn job(conn: &Conn, cmd: &JobCommand) -> i32 {
    let c = match Client::new(conn) {
        Ok(c) => c,
        Err(e) => return exit_for(&e),
    };
    let result = match cmd {
        JobCommand::Create { name, task_type, vendors, urls, urls_file, urls_url, sitemap_url, catch_up } => {
            let sources = usize::from(!urls.is_empty())
                + usize::from(urls_file.is_some())
                + usize::from(urls_url.is_some())
                + usize::from(sitemap_url.is_some());
            if sources != 1 {
                eprintln!("preloadd: give exactly one of --url, --urls-file, --urls-url, --sitemap-url");
                return EXIT_USAGE;
            }
            match urls_file {
                Some(path) => {
                    // Streamed: the file never has to fit in memory, here or in the daemon.
                    let file = match tokio::fs::File::open(path).await {
                        Ok(f) => f,
                        Err(e) => {
                            eprintln!("preloadd: cannot open {}: {e}", path.display());
                            return EXIT_FAILURE;
                        }
                    };
                    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
                    let q = query(&[
                        ("name", Some(name.clone())),
                        ("task_type", Some(task_type.clone())),
                        ("vendors", Some(vendors.join(","))),
                        ("catch_up", catch_up.clone()),
                    ]);
                    let rb =
                        c.http.post(format!("{}/v1/jobs?{q}", c.base)).header("content-type", "text/plain").body(body);
                    c.send(rb).await
                }
                None => {
                    let mut b = json!({"name": name, "task_type": task_type, "vendors": vendors});
                    if !urls.is_empty() {
                        b["urls"] = json!(urls);
                    }
                    if let Some(u) = urls_url {
                        b["urls_url"] = json!(u);
                    }
                    if let Some(u) = sitemap_url {
                        b["sitemap_url"] = json!(u);
                    }
                    if let Some(cu) = catch_up {
                        b["catch_up"] = json!(cu);
                    }
                    c.call(reqwest::Method::POST, "/v1/jobs", Some(b)).await
                }
            }
            .map(|v| {
                print(conn, &v, |v| {
                    format!(
                        "created job {} `{}`: {} URLs, {} lines rejected\n{}",
                        s(&v["id"]),
                        s(&v["name"]),
                        s(&v["url_count"]),
                        s(&v["rejected"]),
                        v["rejected_lines"].as_str().unwrap_or("")
                    )
                })
            })
        }
        JobCommand::List { name, page_num, page_size } => {
            let q = query(&[
                ("name", name.clone()),
                ("page_num", Some(page_num.to_string())),
                ("page_size", Some(page_size.to_string())),
            ]);
            c.get(&format!("/v1/jobs?{q}")).await.map(|v| print(conn, &v, jobs_table))
        }
        JobCommand::Show { job } => match c.job_id(job).await {
            Ok(id) => c.get(&format!("/v1/jobs/{id}")).await.map(|v| print(conn, &v, job_detail)),
            Err(e) => Err(e),
        },
        JobCommand::Delete { job } => match c.job_id(job).await {
            Ok(id) => c
                .call(reqwest::Method::DELETE, &format!("/v1/jobs/{id}"), None)
                .await
                .map(|v| print(conn, &v, |_| format!("deleted job {id}\n"))),
            Err(e) => Err(e),
        },
        JobCommand::Reset { job } => match c.job_id(job).await {
            Ok(id) => c
                .call(reqwest::Method::POST, &format!("/v1/jobs/{id}/reset"), None)
                .await
                .map(|v| print(conn, &v, |_| format!("job {id}: cursor back to the first URL\n"))),
            Err(e) => Err(e),
        },
        JobCommand::RetryFailed { job, start, end, interval, slice_len } => match c.job_id(job).await {
            Ok(id) => {
                let mut b = json!({});
                if let Some(v) = start {
                    b["start_time"] = json!(v);
                }
                if let Some(v) = end {
                    b["end_time"] = json!(v);
                }
                if let Some(v) = interval {
                    b["interval"] = seconds(v);
                }
                if let Some(v) = slice_len {
                    b["slice_len"] = json!(v);
                }
                c.call(reqwest::Method::POST, &format!("/v1/jobs/{id}/retry-failed"), Some(b))
                    .await
                    .map(|v| print(conn, &v, jobs_table))
            }
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => exit_for(&e),
    }
}

pub async fn plan(conn: &Conn, cmd: &PlanCommand) -> i32 {
    let c = match Client::new(conn) {
        Ok(c) => c,
        Err(e) => return exit_for(&e),
    };
    let one = |v: &Value| plans_table(&json!([v]));
    let result = match cmd {
        PlanCommand::Create { job, start, end, interval, slice_len, dry_run } => match c.job_id(job).await {
            Ok(id) => {
                let b = json!({"plans": [{"start_time": start, "end_time": end, "interval": seconds(interval), "slice_len": slice_len}]});
                let path = format!("/v1/jobs/{id}/plans{}", if *dry_run { "?dry_run=true" } else { "" });
                c.call(reqwest::Method::POST, &path, Some(b)).await.map(|v| {
                    if *dry_run {
                        print(conn, &v, dry_run_text)
                    } else {
                        print(conn, &v, |v| plans_table(&v["plans"]))
                    }
                })
            }
            Err(e) => Err(e),
        },
        PlanCommand::List { job } => match c.job_id(job).await {
            Ok(id) => {
                c.get(&format!("/v1/jobs/{id}/plans")).await.map(|v| print(conn, &v, |v| plans_table(&v["plans"])))
            }
            Err(e) => Err(e),
        },
        PlanCommand::Show { plan } => c.get(&format!("/v1/plans/{plan}")).await.map(|v| print(conn, &v, one)),
        PlanCommand::Update { plan, start, end, interval, slice_len } => {
            let mut b = json!({});
            if let Some(v) = start {
                b["start_time"] = json!(v);
            }
            if let Some(v) = end {
                b["end_time"] = json!(v);
            }
            if let Some(v) = interval {
                b["interval"] = seconds(v);
            }
            if let Some(v) = slice_len {
                b["slice_len"] = json!(v);
            }
            c.call(reqwest::Method::PATCH, &format!("/v1/plans/{plan}"), Some(b)).await.map(|v| print(conn, &v, one))
        }
        PlanCommand::Start { plan } => {
            c.call(reqwest::Method::POST, &format!("/v1/plans/{plan}/start"), None).await.map(|v| print(conn, &v, one))
        }
        PlanCommand::Stop { plan } => {
            c.call(reqwest::Method::POST, &format!("/v1/plans/{plan}/stop"), None).await.map(|v| print(conn, &v, one))
        }
        PlanCommand::Delete { plan } => c
            .call(reqwest::Method::DELETE, &format!("/v1/plans/{plan}"), None)
            .await
            .map(|v| print(conn, &v, |_| format!("deleted plan {plan}\n"))),
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => exit_for(&e),
    }
}

fn dry_run_text(v: &Value) -> String {
    let mut out = String::new();
    for p in v["plans"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "plan {} to {}: {} slices, {} URLs, {} left after ({})\n",
            s(&p["start_time"]),
            s(&p["end_time"]),
            s(&p["slices"]),
            s(&p["urls"]),
            s(&p["urls_left_after"]),
            if p["window_fits_list"] == true { "the window fits the list" } else { "the window closes first" }
        ));
        for vend in p["vendors"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  {}: {} requests ({} per slice){}\n",
                s(&vend["vendor"]),
                s(&vend["requests"]),
                s(&vend["requests_per_slice"]),
                vend["quota_note"].as_str().map(|n| format!("; {n}")).unwrap_or_default()
            ));
        }
        for t in p["timetable"].as_array().into_iter().flatten().take(10) {
            out.push_str(&format!("  slice {} at {}: {} URLs\n", s(&t["slice"]), s(&t["due"]), s(&t["urls"])));
        }
    }
    out
}

pub async fn task(conn: &Conn, cmd: &TaskCommand) -> i32 {
    let c = match Client::new(conn) {
        Ok(c) => c,
        Err(e) => return exit_for(&e),
    };
    let TaskCommand::List { task_id, task_type, start_time, end_time, domain, url, status, page_num, page_size } = cmd;
    let q = query(&[
        ("task_id", task_id.map(|v| v.to_string())),
        ("task_type", task_type.clone()),
        ("start_time", start_time.map(|v| v.to_string())),
        ("end_time", end_time.map(|v| v.to_string())),
        ("domain", domain.clone()),
        ("url", url.clone()),
        ("status", status.clone()),
        ("page_num", Some(page_num.to_string())),
        ("page_size", Some(page_size.to_string())),
    ]);
    match c.get(&format!("/v1/tasks?{q}")).await {
        Ok(v) => {
            print(conn, &v, |v| {
                let mut rows = Vec::new();
                for t in v["tasks"].as_array().into_iter().flatten() {
                    for st in t["subtasks"].as_array().into_iter().flatten() {
                        rows.push(vec![
                            s(&t["task_id"]),
                            s(&t["task_type"]),
                            s(&t["task_status"]),
                            s(&st["account"]),
                            s(&st["submit_status"]),
                            st["urls"].as_array().map_or(0, |a| a.len()).to_string(),
                            st["vendor_task_ids"]
                                .as_array()
                                .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                                .unwrap_or_default(),
                            s(&st["description"]),
                        ]);
                    }
                }
                let mut out =
                    table(&["TASK", "TYPE", "STATUS", "VENDOR", "SUBMIT", "URLS", "VENDOR TASKS", "DESCRIPTION"], rows);
                out.push_str(&format!("{} tasks in all\n", s(&v["pagination"]["total"])));
                out
            });
            EXIT_OK
        }
        Err(e) => exit_for(&e),
    }
}

pub async fn vendor(conn: &Conn, _cmd: &VendorCommand) -> i32 {
    let c = match Client::new(conn) {
        Ok(c) => c,
        Err(e) => return exit_for(&e),
    };
    match c.get("/v1/vendors").await {
        Ok(v) => {
            print(conn, &v, |v| {
                let rows = v["vendors"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        vec![
                            s(&a["name"]),
                            s(&a["kind"]),
                            s(&a["requests_per_second"]),
                            s(&a["max_urls_per_request"]),
                            s(&a["daily_quota"]),
                            s(&a["capabilities"]["task_status"]),
                            s(&a["health"]["calls"]),
                            s(&a["health"]["errors"]),
                        ]
                    })
                    .collect();
                table(&["NAME", "KIND", "REQ/S", "URLS/REQ", "QUOTA/DAY", "STATUS API", "CALLS", "ERRORS"], rows)
            });
            EXIT_OK
        }
        Err(e) => exit_for(&e),
    }
}

/// Live progress of a job per vendor until every plan is over and every subtask final; plain
/// lines when the output is not a terminal.
pub async fn watch(conn: &Conn, job: &str) -> i32 {
    let c = match Client::new(conn) {
        Ok(c) => c,
        Err(e) => return exit_for(&e),
    };
    let id = match c.job_id(job).await {
        Ok(id) => id,
        Err(e) => return exit_for(&e),
    };
    let tty = std::io::stdout().is_terminal() && !conn.json;
    loop {
        let v = match c.get(&format!("/v1/jobs/{id}")).await {
            Ok(v) => v,
            Err(e) => return exit_for(&e),
        };
        let total = v["url_count"].as_i64().unwrap_or(0).max(1);
        let progress = v["vendors_progress"].as_array().cloned().unwrap_or_default();
        let plans = v["plans"].as_array().cloned().unwrap_or_default();
        let open = plans.iter().any(|p| matches!(p["status"].as_str(), Some("waiting" | "running")));
        let settled = progress.iter().all(|p| p["pending"].as_i64() == Some(0));
        if conn.json {
            println!("{}", serde_json::to_string(&json!({"plans": plans, "vendors": progress})).unwrap_or_default());
        } else {
            let mut lines = Vec::new();
            for p in &plans {
                lines.push(format!("plan {} {}: {} URLs sent", s(&p["id"]), s(&p["status"]), s(&p["urls_sent"])));
            }
            for p in &progress {
                let sent = p["urls_accepted"].as_i64().unwrap_or(0);
                let filled = (sent * 30 / total).clamp(0, 30) as usize;
                lines.push(format!(
                    "{:<16} [{}{}] {sent}/{total} submitted, {} done, {} failed{}",
                    s(&p["vendor"]),
                    "#".repeat(filled),
                    "-".repeat(30 - filled),
                    s(&p["done"]),
                    s(&p["failed"]),
                    p["waiting"].as_str().filter(|w| !w.is_empty()).map(|w| format!(" ({w})")).unwrap_or_default()
                ));
            }
            if tty {
                println!("\x1b[2J\x1b[H{}", lines.join("\n"));
            } else {
                println!("{}", lines.join(" | "));
            }
        }
        if !open && settled && !plans.is_empty() {
            return EXIT_OK;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
