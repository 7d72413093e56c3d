//! The `http_warm` vendor kind: preloads by fetching each URL itself — a GET per URL (per edge IP
//! when `resolve` pins the requests to chosen edge nodes), `concurrency` at a time, with the
//! configured headers and timeout, reading the whole body so the edge caches it.
//!
//! There is no status API: the work is done inside the submit call, so each URL's outcome comes
//! back with the answer ([`Accepted::outcomes`]): 2xx and 3xx are `done`, anything else (or no
//! answer) `failed`, and the detail keeps the status code, the bytes read and the cache headers
//! (`X-Cache`, `CF-Cache-Status`, `Age`, ...) per edge. Purge is not supported (refused at config
//! check, see [`crate::config::supports`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::{Accepted, Capabilities, SubmitRequest, UrlReport, VendorApi, VendorError};
use crate::config::VendorConfig;
use crate::model::{TaskType, UrlStatus};

/// The response headers that tell whether an edge served from cache, as the CDNs name them.
const CACHE_HEADERS: &[&str] =
    &["x-cache", "x-cache-status", "x-cache-lookup", "cf-cache-status", "cdn-cache", "x-swift-cachetime", "age"];

/// Resolves every host name to one edge IP: the client that pins requests to that edge. The
/// port is left 0 so the connector uses the URL's port.
struct Pinned(IpAddr);

impl reqwest::dns::Resolve for Pinned {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addr = SocketAddr::new(self.0, 0);
        Box::pin(async move { Ok(Box::new(std::iter::once(addr)) as reqwest::dns::Addrs) })
    }
}

pub struct HttpWarm {
    /// One client per edge IP, or one with ordinary DNS when `resolve` is empty.
    clients: Vec<(Option<IpAddr>, reqwest::Client)>,
    headers: HeaderMap,
    concurrency: usize,
    /// `concurrency` GETs in flight for the whole account, however many subtasks run at once.
    slots: tokio::sync::Semaphore,
}

/// What one GET of one URL from one edge showed.
struct Probe {
    edge: Option<IpAddr>,
    status: Option<u16>,
    bytes: u64,
    cache: Vec<String>,
    error: Option<String>,
}

impl Probe {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..400).contains(&s)) && self.error.is_none()
    }

    /// `[edge ]200, 1234 bytes, x-cache: HIT, age: 30` or `[edge ]error: ...`.
    fn describe(&self) -> String {
        let mut out = self.edge.map(|ip| format!("{ip} ")).unwrap_or_default();
        if let Some(s) = self.status {
            out.push_str(&format!("{s}, {} bytes", self.bytes));
            for c in &self.cache {
                out.push_str(", ");
                out.push_str(c);
            }
        }
        if let Some(e) = &self.error {
            if self.status.is_some() {
                out.push_str(", ");
            }
            out.push_str("error: ");
            out.push_str(e);
        }
        out
    }
}

fn client_builder(c: &VendorConfig) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(c.timeout)
        .connect_timeout(c.timeout.min(Duration::from_secs(5)))
        // A 3xx is an answer worth recording, not something to chase.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("preloadd/", env!("CARGO_PKG_VERSION"), " (cache warming)"))
}

impl HttpWarm {
    pub fn new(c: &VendorConfig) -> anyhow::Result<Self> {
        let clients = if c.options.resolve.is_empty() {
            vec![(None, client_builder(c).build()?)]
        } else {
            c.options
                .resolve
                .iter()
                .map(|ip| Ok((Some(*ip), client_builder(c).dns_resolver(Arc::new(Pinned(*ip))).build()?)))
                .collect::<anyhow::Result<_>>()?
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &c.options.headers {
            headers.insert(HeaderName::from_bytes(name.as_bytes())?, HeaderValue::from_str(value)?);
        }
        let concurrency = c.concurrency.max(1) as usize;
        Ok(HttpWarm { clients, headers, concurrency, slots: tokio::sync::Semaphore::new(concurrency) })
    }

    async fn fetch(&self, edge: Option<IpAddr>, client: &reqwest::Client, url: &str) -> Probe {
        let mut probe = Probe { edge, status: None, bytes: 0, cache: Vec::new(), error: None };
        let mut resp = match client.get(url).headers(self.headers.clone()).send().await {
            Ok(r) => r,
            Err(e) => {
                probe.error = Some(VendorError::from_reqwest(e).message);
                return probe;
            }
        };
        probe.status = Some(resp.status().as_u16());
        for name in CACHE_HEADERS {
            if let Some(v) = resp.headers().get(*name).and_then(|v| v.to_str().ok()) {
                probe.cache.push(format!("{name}: {v}"));
            }
        }
        // The whole body is read (and dropped): an edge caches what was fetched to the end.
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => probe.bytes += chunk.len() as u64,
                Ok(None) => break,
                Err(e) => {
                    probe.error = Some(VendorError::from_reqwest(e).message);
                    break;
                }
            }
        }
        probe
    }

    async fn warm(&self, url: &str) -> UrlReport {
        let _slot = self.slots.acquire().await.expect("semaphore never closed");
        let mut probes = Vec::with_capacity(self.clients.len());
        for (edge, client) in &self.clients {
            probes.push(self.fetch(*edge, client, url).await);
        }
        let status = if probes.iter().all(Probe::ok) { UrlStatus::Done } else { UrlStatus::Failed };
        let detail = probes.iter().map(Probe::describe).collect::<Vec<_>>().join("; ");
        UrlReport { url: url.to_string(), status, detail }
    }
}

impl VendorApi for HttpWarm {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            preload: true,
            refresh_file: false,
            refresh_dir: false,
            task_status: false,
            quota: false,
            task_list: false,
        }
    }

    /// Each GET has its own `timeout`; this outer bound only catches a hang. The slots are
    /// shared with the account's other submits, so in the worst case every GET of this one waits
    /// a full round: one timeout per URL and edge.
    fn submit_budget(&self, timeout: Duration, urls: usize) -> Duration {
        let gets = (urls * self.clients.len()).max(1);
        timeout.saturating_mul(u32::try_from(gets).unwrap_or(u32::MAX))
    }

    fn submit<'a>(&'a self, req: SubmitRequest<'a>) -> BoxFuture<'a, Result<Accepted, VendorError>> {
        Box::pin(async move {
            if req.task_type != TaskType::Preload {
                return Err(VendorError::unsupported(&format!("{} (http_warm only preloads)", req.task_type)));
            }
            // Each URL's edges are fetched one after another, so `concurrency` bounds the
            // connections open at once whatever the number of edges.
            let mut urls = req.urls.iter();
            let mut running = futures_util::stream::FuturesOrdered::new();
            for u in urls.by_ref().take(self.concurrency) {
                running.push_back(self.warm(u));
            }
            let mut outcomes = Vec::with_capacity(req.urls.len());
            while let Some(report) = running.next().await {
                outcomes.push(report);
                if let Some(u) = urls.next() {
                    running.push_back(self.warm(u));
                }
            }
            Ok(Accepted { task_ids: Vec::new(), outcomes })
        })
    }
}
