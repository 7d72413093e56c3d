//! Sending a rendered report: by SMTP (lettre) or as a webhook (generic JSON, DingTalk, Feishu,
//! WeCom, Slack). Errors are plain messages for the delivery record; they never carry a URL
//! (chat webhook URLs hold access tokens) or a secret.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{json, Value};
use sha2::Sha256;

use super::render::Document;
use super::{EmailDeliver, WebhookDeliver, WebhookFormat};
use crate::config::{SmtpConfig, SmtpSecurity};

/// The header a generic webhook's signature travels in: `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Preloadd-Signature";

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// DingTalk's signed robot: `sign = base64(HMAC-SHA256(secret, "<timestamp ms>\n<secret>"))`.
pub fn dingtalk_sign(timestamp_ms: i64, secret: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(hmac_sha256(secret.as_bytes(), format!("{timestamp_ms}\n{secret}").as_bytes()))
}

/// Feishu's signed bot: `sign = base64(HMAC-SHA256(key = "<timestamp s>\n<secret>", message = ""))`.
pub fn feishu_sign(timestamp_s: i64, secret: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(hmac_sha256(format!("{timestamp_s}\n{secret}").as_bytes(), b""))
}

/// The generic webhook's signature header value for `body`.
pub fn generic_signature(body: &[u8], secret: &str) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(secret.as_bytes(), body)))
}

/// Sends the document by email: HTML with a plain-text alternative, one CSV per report.
pub async fn email(smtp: &SmtpConfig, to: &EmailDeliver, doc: &Document) -> Result<(), String> {
    let from: Mailbox = smtp.from.parse().map_err(|e| format!("[smtp] from `{}`: {e}", smtp.from))?;
    let mut builder = Message::builder().from(from).subject(doc.subject.clone());
    for a in &to.to {
        builder = builder.to(a.parse::<Mailbox>().map_err(|e| format!("recipient `{a}`: {e}"))?);
    }
    let csv = ContentType::parse("text/csv; charset=utf-8").map_err(|e| e.to_string())?;
    let mut body = MultiPart::mixed().multipart(MultiPart::alternative_plain_html(doc.text(), doc.html()));
    for r in &doc.reports {
        body = body.singlepart(Attachment::new(Document::csv_name(r)).body(Document::csv(r), csv.clone()));
    }
    let message = builder.multipart(body).map_err(|e| format!("building the mail: {e}"))?;
    let transport = match smtp.security {
        SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host),
        SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host),
        SmtpSecurity::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)),
    }
    .map_err(|e| format!("SMTP {}: {e}", smtp.host))?
    .port(smtp.port)
    .timeout(Some(smtp.timeout));
    let transport = match (&smtp.user, &smtp.password) {
        (Some(user), Some(pw)) => transport.credentials(Credentials::new(user.clone(), pw.expose().to_string())),
        _ => transport,
    }
    .build();
    transport.send(message).await.map_err(|e| format!("SMTP {}:{}: {e}", smtp.host, smtp.port))?;
    Ok(())
}

/// Posts the document to a webhook in its format; `now_ms` stamps the chat tools' signatures.
pub async fn webhook(http: &reqwest::Client, w: &WebhookDeliver, doc: &Document, now_ms: i64) -> Result<(), String> {
    let mut url = url::Url::parse(&w.url).map_err(|e| format!("webhook url: {e}"))?;
    let secret = w.secret.as_deref().filter(|s| !s.is_empty());
    let body: Value = match w.format {
        WebhookFormat::Generic => doc.json(),
        WebhookFormat::Dingtalk => {
            if let Some(secret) = secret {
                let sign = dingtalk_sign(now_ms, secret);
                url.query_pairs_mut().append_pair("timestamp", &now_ms.to_string()).append_pair("sign", &sign);
            }
            json!({"msgtype": "markdown", "markdown": {"title": doc.subject, "text": doc.markdown()}})
        }
        WebhookFormat::Feishu => {
            let mut b = json!({"msg_type": "text", "content": {"text": doc.markdown()}});
            if let Some(secret) = secret {
                let ts = now_ms.div_euclid(1000);
                b["timestamp"] = json!(ts.to_string());
                b["sign"] = json!(feishu_sign(ts, secret));
            }
            b
        }
        WebhookFormat::Wecom => json!({"msgtype": "markdown", "markdown": {"content": doc.markdown()}}),
        WebhookFormat::Slack => json!({"text": doc.markdown()}),
    };
    let bytes = serde_json::to_vec(&body).expect("JSON serializes");
    let mut req = http.post(url).header(reqwest::header::CONTENT_TYPE, "application/json");
    if let (WebhookFormat::Generic, Some(secret)) = (w.format, secret) {
        req = req.header(SIGNATURE_HEADER, generic_signature(&bytes, secret));
    }
    let resp = req.body(bytes).send().await.map_err(|e| format!("webhook: {}", e.without_url()))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(format!("webhook answered HTTP {status}: {}", text.chars().take(200).collect::<String>()));
    }
    // The chat tools answer 200 with an error code in the body.
    if w.format != WebhookFormat::Generic {
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            let code =
                v.get("errcode").or_else(|| v.get("code")).or_else(|| v.get("StatusCode")).and_then(Value::as_i64);
            if let Some(code) = code.filter(|c| *c != 0) {
                let msg = v.get("errmsg").or_else(|| v.get("msg")).and_then(Value::as_str).unwrap_or("");
                return Err(format!("webhook refused the message: code {code}: {msg}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_reference_values() {
        // Reference values computed independently with Python's hmac, hashlib and base64.
        assert_eq!(dingtalk_sign(1_700_000_000_000, "SECxyz"), "0PUR1j8g85Xg3vlFV/UrEcxXfF5HpCAGzcjrNfyJoyg=");
        assert_eq!(feishu_sign(1_700_000_000, "SECxyz"), "GnU9dobz1WousiKlH0LX6FYP8yrWNCgoJOvRhpMc8HY=");
        assert_eq!(
            generic_signature(b"{}", "k"),
            "sha256=add853b103fbcc936a194f9eb15e29c4ff08af6e47d5d1bca4f20218e31e4fff"
        );
    }
}
