//! What the cloud clients share: reading vendor JSON (numbers sent as strings or numbers), the
//! rows of a vendor's task list, and the two questions asked of it — which outcome each URL has
//! ([`reports`]) and whether the list proves a request was received ([`proof`]).

use std::collections::HashSet;

use serde_json::Value;

use super::UrlReport;
use crate::model::UrlStatus;

/// One URL of one vendor task, as a task list shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct TaskRow {
    pub url: String,
    pub task_id: String,
    /// The vendor's own word: `Complete`, `complete`, `done`, `fail`, `Refreshing`, ...
    pub status: String,
    pub description: String,
}

impl TaskRow {
    /// A row from a JSON task whose URL is under `url_field` and id under `id_field`.
    pub fn from_json(t: &Value, url_field: &str, id_field: &str) -> TaskRow {
        TaskRow {
            url: text(&t[url_field]).unwrap_or_default(),
            task_id: text(&t[id_field]).unwrap_or_default(),
            status: text(&t["Status"]).unwrap_or_default(),
            description: text(&t["Description"]).unwrap_or_default(),
        }
    }

    /// The vendors' status words mapped to outcomes; anything still running is pending.
    pub fn outcome(&self) -> UrlStatus {
        match self.status.to_ascii_lowercase().as_str() {
            "complete" | "completed" | "done" => UrlStatus::Done,
            // Tencent's `invalid`: a push the vendor refused after accepting the request.
            "failed" | "fail" | "invalid" => UrlStatus::Failed,
            _ => UrlStatus::Pending,
        }
    }
}

/// A JSON value as text: the APIs send some numbers as strings and some as numbers.
pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(super) fn number(v: &Value) -> Option<u64> {
    text(v).and_then(|s| s.trim().parse::<f64>().ok()).map(|f| f.max(0.0) as u64)
}

/// The distinct domains of `urls`, in order of first appearance.
pub(super) fn domains(urls: &[String]) -> Vec<String> {
    let mut seen = Vec::new();
    for u in urls {
        let d = crate::urls::domain_of(u);
        if !seen.contains(&d) {
            seen.push(d);
        }
    }
    seen
}

/// Task ids proving every URL was submitted, or `None` if one is missing.
pub(super) fn proof(urls: &[String], tasks: &[TaskRow]) -> Option<Vec<String>> {
    let mut ids = Vec::new();
    for u in urls {
        let row = tasks.iter().find(|t| &t.url == u)?;
        if !ids.contains(&row.task_id) {
            ids.push(row.task_id.clone());
        }
    }
    Some(ids)
}

/// The outcome of each URL found under one of `ids` (any task when `ids` is empty).
pub(super) fn reports(urls: &[String], tasks: &[TaskRow], ids: &HashSet<&String>) -> Vec<UrlReport> {
    urls.iter()
        .filter_map(|u| {
            tasks.iter().find(|t| &t.url == u && (ids.is_empty() || ids.contains(&t.task_id))).map(|t| UrlReport {
                url: u.clone(),
                status: t.outcome(),
                detail: t.description.clone(),
            })
        })
        .collect()
}

/// `host[:port]` of an endpoint, as signed in the `Host` header.
pub(super) fn endpoint_host(name: &str, endpoint: &str) -> anyhow::Result<String> {
    let url = url::Url::parse(endpoint)?;
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => Ok(format!("{h}:{p}")),
        (Some(h), None) => Ok(h.to_string()),
        _ => anyhow::bail!("vendor `{name}`: endpoint has no host"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(url: &str, id: &str, status: &str) -> TaskRow {
        TaskRow { url: url.into(), task_id: id.into(), status: status.into(), description: String::new() }
    }

    #[test]
    fn proof_needs_every_url_and_reports_map_statuses() {
        let urls = vec!["a".to_string(), "b".to_string()];
        let tasks = vec![row("a", "1", "Complete"), row("b", "2", "fail"), row("b", "3", "running")];
        assert_eq!(proof(&urls, &tasks), Some(vec!["1".to_string(), "2".to_string()]));
        assert_eq!(proof(&["c".to_string()], &tasks), None);
        let three = "3".to_string();
        let r = reports(&urls, &tasks, &HashSet::from([&three]));
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].url.as_str(), r[0].status), ("b", UrlStatus::Pending));
        let all = reports(&urls, &tasks, &HashSet::new());
        assert_eq!(all.iter().map(|r| r.status).collect::<Vec<_>>(), [UrlStatus::Done, UrlStatus::Failed]);
        assert_eq!(endpoint_host("v", "http://127.0.0.1:9900").unwrap(), "127.0.0.1:9900");
        assert_eq!(endpoint_host("v", "https://cdn.tencentcloudapi.com/").unwrap(), "cdn.tencentcloudapi.com");
    }
}
