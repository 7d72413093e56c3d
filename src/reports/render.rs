//! Reports as people and machines read them: CSV (one file per report), an HTML mail body with
//! a plain-text alternative, a Markdown message for chat tools, and JSON for generic webhooks.

use serde_json::{json, Value};

use super::SubscriptionSpec;
use crate::clock::rfc3339;
use crate::store::Report;

/// Rows shown inline in a mail or chat message; the CSV has them all.
const INLINE_ROWS: usize = 20;

/// Everything one delivery sends.
#[derive(Debug, Clone)]
pub struct Document {
    pub name: String,
    pub subject: String,
    pub period_start: i64,
    pub period_end: i64,
    pub reports: Vec<Report>,
}

impl Document {
    pub fn new(spec: &SubscriptionSpec, period_start: i64, period_end: i64, reports: Vec<Report>) -> Self {
        let subject = match &spec.deliver {
            super::Deliver::Email(e) if !e.subject.trim().is_empty() => e.subject.trim().to_string(),
            _ => format!("preloadd report {}", spec.name),
        };
        Document { name: spec.name.clone(), subject, period_start, period_end, reports }
    }

    pub fn period(&self) -> String {
        format!("{} – {}", rfc3339(self.period_start), rfc3339(self.period_end))
    }

    /// `report-<id>-<slug>.csv`.
    pub fn csv_name(r: &Report) -> String {
        let slug: String = r
            .title
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect::<String>()
            .split('-')
            .filter(|s| !s.is_empty())
            .take(4)
            .collect::<Vec<_>>()
            .join("-");
        format!("report-{}-{slug}.csv", r.report_id)
    }

    /// RFC 4180 CSV with a header line, CRLF line ends.
    pub fn csv(r: &Report) -> String {
        let mut out = String::new();
        let line = |cells: &mut dyn Iterator<Item = &str>, out: &mut String| {
            let cells: Vec<String> = cells.map(csv_cell).collect();
            out.push_str(&cells.join(","));
            out.push_str("\r\n");
        };
        line(&mut r.columns.iter().copied(), &mut out);
        for row in &r.rows {
            line(&mut row.iter().map(String::as_str), &mut out);
        }
        out
    }

    pub fn text(&self) -> String {
        let mut out = format!("{}\nPeriod: {}\n", self.subject, self.period());
        for r in &self.reports {
            out.push_str(&format!(
                "\n{} ({} rows{})\n",
                r.title,
                r.rows.len(),
                if r.truncated { ", truncated" } else { "" }
            ));
            out.push_str(&r.columns.join("\t"));
            out.push('\n');
            for row in r.rows.iter().take(INLINE_ROWS) {
                out.push_str(&row.join("\t"));
                out.push('\n');
            }
            if r.rows.len() > INLINE_ROWS {
                out.push_str(&format!("… {} more rows in {}\n", r.rows.len() - INLINE_ROWS, Self::csv_name(r)));
            }
        }
        out
    }

    pub fn html(&self) -> String {
        let mut out = format!(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{t}</title></head><body>\
             <h1>{t}</h1><p>Period: {p}</p>",
            t = esc(&self.subject),
            p = esc(&self.period())
        );
        for r in &self.reports {
            out.push_str(&format!("<h2>{}</h2><p>{} rows", esc(&r.title), r.rows.len()));
            if r.truncated {
                out.push_str(" (truncated)");
            }
            out.push_str(&format!("; all in the attachment {}.</p>", esc(&Self::csv_name(r))));
            out.push_str("<table border=\"1\" cellspacing=\"0\" cellpadding=\"4\"><tr>");
            for c in &r.columns {
                out.push_str(&format!("<th>{}</th>", esc(c)));
            }
            out.push_str("</tr>");
            for row in r.rows.iter().take(INLINE_ROWS) {
                out.push_str("<tr>");
                for cell in row {
                    out.push_str(&format!("<td>{}</td>", esc(cell)));
                }
                out.push_str("</tr>");
            }
            out.push_str("</table>");
        }
        out.push_str("</body></html>");
        out
    }

    /// A short Markdown message (DingTalk, WeCom, Slack): the title, period and first rows.
    pub fn markdown(&self) -> String {
        let mut out = format!("### {}\nPeriod: {}\n", self.subject, self.period());
        for r in &self.reports {
            out.push_str(&format!("\n**{}** ({} rows)\n", r.title, r.rows.len()));
            for row in r.rows.iter().take(10) {
                out.push_str("- ");
                out.push_str(&row.join(" | "));
                out.push('\n');
            }
        }
        out
    }

    /// The generic webhook's JSON: every report with columns and rows.
    pub fn json(&self) -> Value {
        json!({
            "subscription": self.name,
            "subject": self.subject,
            "period_start": rfc3339(self.period_start),
            "period_end": rfc3339(self.period_end),
            "reports": self.reports.iter().map(|r| json!({
                "report_id": r.report_id, "title": r.title, "columns": r.columns, "rows": r.rows,
                "truncated": r.truncated,
            })).collect::<Vec<_>>(),
        })
    }
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it() {
        let r = Report {
            report_id: 2,
            title: "Failed URLs".into(),
            columns: vec!["url", "error_message"],
            rows: vec![vec!["https://a/x".into(), "bad, \"very\"".into()]],
            truncated: false,
        };
        assert_eq!(Document::csv(&r), "url,error_message\r\nhttps://a/x,\"bad, \"\"very\"\"\"\r\n");
        assert_eq!(Document::csv_name(&r), "report-2-failed-urls.csv");
    }
}
