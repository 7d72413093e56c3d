//! Slow clients against the real daemon over TCP on 127.0.0.1: a request head trickled a byte at
//! a time, a body that stalls or crawls, hundreds of such sockets at once, the connection cap.
//! Each is cut off (closed, or 408 `RequestTimeout` when an answer is still possible) while
//! everyone else keeps being served. Timeouts are configured short; every wait has a generous
//! deadline and nothing asserts how fast anything went.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::api::Api;

/// How long any one slow client may take to be cut off here (the configured limits are 1–3 s).
const CUT_OFF: Duration = Duration::from_secs(60);

fn addr(api: &Api) -> String {
    api.base.trim_start_matches("http://").to_string()
}

/// Whether the server has closed `s` (FIN or RST seen), without waiting.
fn closed_by_server(s: &TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an answer (e.g. a 408) before the close
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Reads until the server closes the connection; what it sent, or the error that ended it.
pub(crate) async fn read_to_close(s: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(CUT_OFF, s.read(&mut buf)).await {
            Err(_) => panic!("the server kept the slow connection open past {CUT_OFF:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// The status and JSON body of a raw HTTP/1.1 answer.
pub(crate) fn parse_answer(raw: &[u8]) -> (u16, Value, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let head = text.split_once("\r\n\r\n").map(|(h, _)| h.to_ascii_lowercase()).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null), head)
}

async fn connect(api: &Api) -> TcpStream {
    TcpStream::connect(addr(api)).await.unwrap()
}

/// One API call on a fresh connection: `header_timeout` is also how long an idle keep-alive
/// connection lives, and it is short here, so a pooled one could be closed as it is reused.
async fn call(api: &Api, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let http = reqwest::Client::builder().timeout(CUT_OFF).pool_max_idle_per_host(0).build().unwrap();
    let mut rb = http.request(method, format!("{}{path}", api.base)).bearer_auth("test-token");
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Proves the daemon answers: a token-checked read and the job list.
async fn served(api: &Api, what: &str) {
    let (st, b) = call(api, Method::GET, "/v1/jobs", None).await;
    assert_eq!(st, 200, "{what}: {b}");
}

async fn create_job(api: &Api, name: &str) {
    let job =
        serde_json::json!({"name": name, "task_type": "preload", "vendors": ["hook"], "urls": ["https://a.example/1"]});
    let (st, b) = call(api, Method::POST, "/v1/jobs", Some(job)).await;
    assert_eq!(st, 201, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_request_head_is_cut_off_while_others_are_served() {
    let api = Api::start_with("requests_per_second = 1000\nheader_timeout = \"1s\"").await;
    let mut slow = connect(&api).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let (mut rd, mut wr) = slow.into_split();
    // One byte a second, for far longer than the header timeout, until the server hangs up.
    let trickle = tokio::spawn(async move {
        for b in b"X-Slow: ".iter().chain([b'a'; 600].iter()) {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
    });
    served(&api, "during a trickled head").await;
    let got = read_to_close(&mut rd).await;
    assert!(!String::from_utf8_lossy(&got).contains(" 200 "), "the trickled request was never answered as if whole");
    trickle.abort();
    served(&api, "after the cut-off").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_slow_clients_at_once_do_not_stop_the_api() {
    // Limits long enough that all of them are still hanging on while we check.
    let api = Api::start_with(
        "requests_per_second = 1000\nheader_timeout = \"120s\"\nbody_idle_timeout = \"120s\"\nmax_connections = 300",
    )
    .await;
    let mut slow = Vec::new();
    for i in 0..200 {
        let mut s = connect(&api).await;
        if i % 2 == 0 {
            s.write_all(format!("POST /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Slow-{i}: ").as_bytes()).await.unwrap();
        } else {
            // A whole head, then a JSON body that stops early.
            let head = "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-token\r\n\
                        Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"name\": ";
            s.write_all(head.as_bytes()).await.unwrap();
        }
        slow.push(s);
    }
    for round in 0..5 {
        served(&api, &format!("round {round} with 200 slow clients open")).await;
    }
    create_job(&api, "busy").await;
    let still_open = slow.iter().filter(|s| !closed_by_server(s)).count();
    assert_eq!(still_open, 200, "the slow clients were hanging on while the others were served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_newcomers_wait_until_a_slow_client_is_cut_off() {
    let api = Api::start_with("requests_per_second = 1000\nheader_timeout = \"3s\"\nmax_connections = 4").await;
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut s = connect(&api).await;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        slow.push(s);
    }
    // The fifth connection completes its TCP handshake (the backlog) but is served only once
    // a slot frees: when it is answered, a slow client must have been closed.
    let mut s = connect(&api).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let answer = read_to_close(&mut s).await;
    let (st, body, _) = parse_answer(&answer);
    assert_eq!((st, body["status"].as_str()), (200, Some("alive")), "{}", String::from_utf8_lossy(&answer));
    assert!(slow.iter().any(closed_by_server), "the newcomer was served only after a slow client was cut off");
    for mut s in slow {
        read_to_close(&mut s).await;
    }
    served(&api, "after the slow clients are gone").await;
}

/// A text/plain job upload whose head is whole, with `sent` of a `len`-byte body.
async fn upload_head(api: &Api, name: &str, len: usize, sent: &[u8]) -> TcpStream {
    let mut s = connect(api).await;
    let head = format!(
        "POST /v1/jobs?name={name}&task_type=preload&vendors=hook HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer test-token\r\nContent-Type: text/plain\r\nContent-Length: {len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(sent).await.unwrap();
    s
}

async fn job_count(api: &Api, name: &str) -> u64 {
    let (st, b) = call(api, Method::GET, &format!("/v1/jobs?name={name}"), None).await;
    assert_eq!(st, 200, "{b}");
    b["pagination"]["total"].as_u64().unwrap()
}

fn assert_request_timeout(answer: &[u8]) {
    let (st, body, head) = parse_answer(answer);
    assert_eq!(st, 408, "{}", String::from_utf8_lossy(answer));
    assert_eq!(body["code"], "RequestTimeout", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("too slowly")), "{body}");
    assert!(body["request_id"].is_string(), "{body}");
    assert!(head.contains("connection: close"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_or_crawling_upload_gets_408_and_writes_nothing() {
    let api = Api::start_with(
        "requests_per_second = 1000\nheader_timeout = \"5s\"\nbody_idle_timeout = \"2s\"\nbody_min_rate = 1000",
    )
    .await;

    // Stalled: a few lines, then silence. The upload holds the job's write transaction, so
    // the cut-off is also what lets the next writer in.
    let mut stalled = upload_head(&api, "stalled", 100_000, b"https://a.example/1\nhttps://a.example/2\n").await;
    served(&api, "while an upload stalls").await;
    assert_request_timeout(&read_to_close(&mut stalled).await);

    // Crawling: a byte every 100 ms never stops being "active", but is far below the minimum
    // rate; it is cut off once the grace is used up.
    let first = b"https://a.example/1\n";
    let (mut rd, mut wr) = upload_head(&api, "crawling", 100_000, first).await.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..3_000 {
            if wr.write_all(b"a").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    served(&api, "while an upload crawls").await;
    assert_request_timeout(&read_to_close(&mut rd).await);
    trickle.abort();

    // A JSON body that stops half way.
    let mut s = connect(&api).await;
    let body = br#"{"name": "half", "task_type": "preload", "vendors": ["hook"], "urls": ["https://a.example/1"]}"#;
    let head = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-token\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body[..30]).await.unwrap();
    assert_request_timeout(&read_to_close(&mut s).await);

    // Nothing of them was written, and writers get through again.
    for name in ["stalled", "crawling", "half"] {
        assert_eq!(job_count(&api, name).await, 0, "no partial job `{name}`");
    }
    create_job(&api, "after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_on_a_fast_link_outlasts_the_body_timeouts() {
    // The same short limits: a big list takes far longer than body_idle_timeout to load, but
    // the client is never what the server waits on for long.
    let api = Api::start_with(
        "requests_per_second = 1000\nheader_timeout = \"5s\"\nbody_idle_timeout = \"2s\"\nbody_min_rate = 1000",
    )
    .await;
    let n = 200_000;
    let list: String = (0..n).map(|i| format!("https://cdn.example.com/big/{i}.js\n")).collect();
    let len = list.len();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(600)).build().unwrap();
    let r = http
        .post(format!("{}/v1/jobs?name=big&task_type=preload&vendors=hook", api.base))
        .bearer_auth("test-token")
        .header("content-type", "text/plain")
        .body(list)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let b: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{b}");
    assert_eq!((b["added"].as_u64(), b["url_count"].as_u64()), (Some(n), Some(n)), "{len} bytes: {b}");
}
