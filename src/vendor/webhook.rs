//! The `webhook` vendor kind: POSTs each slice as JSON to an in-house endpoint.

use futures_util::future::BoxFuture;
use serde::Deserialize;

use super::{http_client, retry_after, Accepted, Capabilities, ErrorClass, SubmitRequest, VendorApi, VendorError};
use crate::config::{Secret, VendorConfig};

pub struct Webhook {
    client: reqwest::Client,
    endpoint: String,
    token: Secret,
}

impl Webhook {
    pub fn new(c: &VendorConfig) -> anyhow::Result<Self> {
        Ok(Webhook { client: http_client(c.timeout)?, endpoint: c.endpoint.clone(), token: c.secret.clone() })
    }
}

#[derive(Deserialize)]
struct Reply {
    task_id: Option<serde_json::Value>,
}

impl VendorApi for Webhook {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            preload: true,
            refresh_file: true,
            refresh_dir: true,
            task_status: false,
            quota: false,
            task_list: false,
        }
    }

    fn submit<'a>(&'a self, req: SubmitRequest<'a>) -> BoxFuture<'a, Result<Accepted, VendorError>> {
        Box::pin(async move {
            let body = serde_json::json!({
                "task_type": req.task_type.as_str(),
                "urls": req.urls,
                "job": req.job,
                "plan": req.plan_id,
                "slice": req.slice_id,
            });
            let mut rb = self.client.post(&self.endpoint).json(&body);
            if !self.token.is_empty() {
                rb = rb.bearer_auth(self.token.expose());
            }
            let resp = rb.send().await.map_err(VendorError::from_reqwest)?;
            let status = resp.status();
            if status.is_success() {
                let bytes = resp.bytes().await.map_err(VendorError::from_reqwest)?;
                let task_ids = serde_json::from_slice::<Reply>(&bytes)
                    .ok()
                    .and_then(|r| r.task_id)
                    .map(|v| match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    })
                    .into_iter()
                    .collect();
                return Ok(Accepted::tasks(task_ids));
            }
            let after = retry_after(resp.headers());
            let text = resp.text().await.unwrap_or_default();
            let class = if status.as_u16() == 429 || status.is_server_error() || status.as_u16() == 408 {
                ErrorClass::Retryable
            } else {
                ErrorClass::Fatal
            };
            let mut e =
                VendorError::new(class, format!("HTTP{}", status.as_u16()), text.chars().take(200).collect::<String>());
            e.retry_after = after;
            Err(e)
        })
    }
}
