//! The URL-list parser (`urls::ListReader`, the path every list takes into a job): it never
//! panics, whatever the bytes and however they are split into reads; what it yields is exactly
//! what classifying each line on its own gives; every URL it accepts is a valid http(s) URL.

#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use preloadd::urls::{self, Line, ListReader, Rejection, LINE_CAP, MAX_URL_BYTES};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size, so lines cross buffer boundaries everywhere.
    let Some((&cap, text)) = data.split_first() else { return };
    let cap = 1 + cap as usize;
    let got = read_all(text, cap);
    assert_eq!(got, expected(text), "the streaming reader agrees with line-by-line classification");
    let lines = text.split(|&b| b == b'\n').count() as u64;
    let mut last = 0;
    for item in &got {
        match item {
            Ok(url) => check_accepted(url),
            Err(r) => {
                assert!(r.line > last && r.line <= lines, "line numbers increase and stay in the input: {r:?}");
                assert!(!r.reason.is_empty());
                last = r.line;
            }
        }
    }
});

/// Everything the reader yields, read through a `cap`-byte buffer.
fn read_all(text: &[u8], cap: usize) -> Vec<Result<String, Rejection>> {
    let mut reader = ListReader::new(tokio::io::BufReader::with_capacity(cap, text));
    let mut out = Vec::new();
    while let Some(item) = ready(reader.next()).expect("reading from memory cannot fail") {
        out.push(item);
    }
    out
}

/// The reference: split on `\n` (a final line without one counts), cap the length, classify.
fn expected(text: &[u8]) -> Vec<Result<String, Rejection>> {
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let mut out = Vec::new();
    for (i, raw) in lines.into_iter().enumerate() {
        let line = i as u64 + 1;
        if raw.len() > LINE_CAP {
            out.push(Err(Rejection { line, reason: format!("longer than {MAX_URL_BYTES} bytes") }));
            continue;
        }
        match urls::classify(raw) {
            Line::Skip => {}
            Line::Url(u) => out.push(Ok(u)),
            Line::Rejected(reason) => out.push(Err(Rejection { line, reason })),
        }
    }
    out
}

fn check_accepted(u: &str) {
    assert!(urls::validate(u).is_ok(), "an accepted URL validates: {u:?}");
    assert!(u.len() <= MAX_URL_BYTES, "{u:?}");
    assert!(!u.is_empty() && u.trim() == u && !u.starts_with('#'), "{u:?}");
    assert!(!u.chars().any(|c| c.is_whitespace() || c.is_control()), "{u:?}");
    let parsed = url::Url::parse(u).expect("an accepted URL parses");
    assert!(matches!(parsed.scheme(), "http" | "https"), "{u:?}");
    assert!(parsed.host_str().is_some_and(|h| !h.is_empty()), "{u:?}");
    assert!(!urls::domain_of(u).is_empty(), "an accepted URL has a domain: {u:?}");
    // What vendors and the task filter see is the parsed form: it must be a fixed point.
    let again = url::Url::parse(parsed.as_str()).expect("the normalised URL parses again");
    assert_eq!(again, parsed, "the normalised form re-parses to itself");
    assert_eq!(urls::domain_of(parsed.as_str()), urls::domain_of(u), "normalising keeps the domain");
}

/// Polls a future over an in-memory reader to completion: it never waits on anything.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an in-memory read never waits"),
    }
}
