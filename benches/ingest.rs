//! Ingest benchmark: URLs per second to load a list file into a job, and peak memory (VmHWM).
//!
//! `cargo bench --bench ingest -- 1000000 10000000` measures the given list sizes. Under
//! `cargo test` (no `--bench` flag) it runs one small size as a smoke test.

use std::io::Write;
use std::time::Instant;

use preloadd::model::{CatchUp, JobSource, TaskType};
use preloadd::store::{NewJob, Store};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.to_string()))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// The practical limit: the same rows into the same table (with its unique index) with rusqlite
/// prepared statements in one transaction, reading the same file line by line.
fn baseline(list: &std::path::Path, db: &std::path::Path) -> f64 {
    use std::io::BufRead;
    let mut conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE urls (job_id INTEGER NOT NULL, seq INTEGER NOT NULL, url TEXT NOT NULL, PRIMARY KEY (job_id, seq)) WITHOUT ROWID;
         CREATE UNIQUE INDEX urls_job_url ON urls (job_id, url);",
    )
    .unwrap();
    let started = Instant::now();
    let tx = conn.transaction().unwrap();
    let mut n = 0u64;
    {
        let mut stmt = tx.prepare("INSERT OR IGNORE INTO urls (job_id, seq, url) VALUES (1, ?1, ?2)").unwrap();
        let reader = std::io::BufReader::with_capacity(64 * 1024, std::fs::File::open(list).unwrap());
        for line in reader.lines() {
            stmt.execute(rusqlite::params![n as i64, line.unwrap()]).unwrap();
            n += 1;
        }
    }
    tx.commit().unwrap();
    n as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let sizes: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    // `dupN`: a list of N lines that are ten URLs over and over (the bad-input corpus's
    // "10 million duplicates"): the job keeps ten, memory stays flat.
    for n in args.iter().filter_map(|a| a.strip_prefix("dup")?.parse::<u64>().ok()) {
        duplicates(n).await;
    }
    if sizes.is_empty() && args.iter().any(|a| a.starts_with("dup")) {
        return;
    }
    let sizes = match (bench, sizes.is_empty()) {
        (false, _) => vec![1_000],
        (true, true) => vec![1_000_000],
        (true, false) => sizes,
    };
    for n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list.txt");
        let (secs, report) =
            ingest(&list, n, |i| format!("https://cdn{}.example.com/assets/{i:010}/app.bundle.js?v=3", i % 7)).await;
        assert_eq!(report.added, n);
        let rate = n as f64 / secs;
        let base = baseline(&list, &dir.path().join("baseline.db"));
        println!(
            "ingest: {n} URLs in {secs:.2} s = {rate:.0} URLs/s; baseline (rusqlite, one prepared INSERT per row, one \
             transaction, same table and unique index) {base:.0} URLs/s; ratio {:.2}; peak RSS so far {} MiB",
            rate / base,
            peak_rss_kib() / 1024
        );
    }
}

/// Writes a list of `n` lines (`line(i)`) to `list`, then loads it into a new job in a store
/// beside it: the seconds the load took, and its report.
async fn ingest(list: &std::path::Path, n: u64, line: impl Fn(u64) -> String) -> (f64, preloadd::ingest::IngestReport) {
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(list).unwrap());
        for i in 0..n {
            writeln!(f, "{}", line(i)).unwrap();
        }
    }
    let store = Store::open_dir(&list.with_extension("state")).await.unwrap();
    let new = NewJob {
        name: "bench".into(),
        task_type: TaskType::Preload,
        vendors: vec!["v".into()],
        source: JobSource::Api,
        catch_up: CatchUp::Skip,
    };
    let file = tokio::io::BufReader::with_capacity(64 * 1024, tokio::fs::File::open(list).await.unwrap());
    let started = Instant::now();
    let (_, report) = preloadd::ingest::create_job(&store, &new, file, 0).await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    store.close().await;
    (secs, report)
}

async fn duplicates(n: u64) {
    let dir = tempfile::tempdir().unwrap();
    let (secs, report) =
        ingest(&dir.path().join("dups.txt"), n, |i| format!("https://cdn.example.com/assets/{}.js", i % 10)).await;
    assert_eq!((report.valid, report.added), (n, 10));
    println!(
        "ingest duplicates: {n} lines of 10 distinct URLs in {secs:.2} s = {:.0} lines/s; 10 kept; peak RSS so far {} MiB",
        n as f64 / secs,
        peak_rss_kib() / 1024
    );
}
