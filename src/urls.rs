//! URL lists: the validation rule for one URL and a streaming reader for lists of them.
//!
//! A list is read line by line with a bounded buffer, so a 10-million-line file costs the same
//! memory as a ten-line one. Invalid lines are reported with their line number and reason and
//! skipped; the caller decides what to keep (de-duplication happens in the store).

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The longest URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// How many rejected lines a job keeps word for word; the rest are only counted.
pub const MAX_REJECTED_KEPT: usize = 100;

/// Checks that `url` is an absolute http(s) URL with a host, without whitespace or control
/// characters, at most [`MAX_URL_BYTES`] long. Returns the reason when it is not.
pub fn validate(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_BYTES {
        return Err(format!("longer than {MAX_URL_BYTES} bytes ({} bytes)", url.len()));
    }
    if let Some(c) = url.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("contains whitespace or a control character ({:?})", c));
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("not an absolute URL: {e}"))?;
    match parsed.scheme() {
        "http" | "https" => {}
        other => return Err(format!("scheme `{other}` is not http or https")),
    }
    match parsed.host_str() {
        Some(h) if !h.is_empty() => Ok(()),
        _ => Err("has no host".to_string()),
    }
}

/// The host of a valid URL, lower-cased, as vendors and the task filter `domain` see it.
pub fn domain_of(url: &str) -> String {
    url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase)).unwrap_or_default()
}

/// One line of a list, classified.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// Blank or a `#` comment.
    Skip,
    Url(String),
    Rejected(String),
}

/// Classifies one raw line (without its `\n`; a trailing `\r` is accepted).
pub fn classify(raw: &[u8]) -> Line {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let text = match std::str::from_utf8(raw) {
        Ok(t) => t,
        Err(_) => return Line::Rejected("not valid UTF-8".to_string()),
    };
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Line::Skip;
    }
    match validate(trimmed) {
        Ok(()) => Line::Url(trimmed.to_string()),
        Err(reason) => Line::Rejected(reason),
    }
}

/// A rejected line of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub line: u64,
    pub reason: String,
}

/// What was rejected while reading a list: the count and the first few lines word for word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RejectReport {
    pub count: u64,
    pub first: Vec<Rejection>,
}

impl RejectReport {
    pub fn push(&mut self, line: u64, reason: String) {
        self.count += 1;
        if self.first.len() < MAX_REJECTED_KEPT {
            self.first.push(Rejection { line, reason });
        }
    }

    /// One "line N: reason" a line, then how many more were not kept.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for r in &self.first {
            out.push_str(&format!("line {}: {}\n", r.line, r.reason));
        }
        let more = self.count - self.first.len() as u64;
        if more > 0 {
            out.push_str(&format!("... and {more} more rejected lines\n"));
        }
        out
    }
}

/// Reads a list from any async byte stream, one line at a time, with a line buffer capped a
/// little above [`MAX_URL_BYTES`]: longer lines are consumed and rejected, never held whole.
pub struct ListReader<R> {
    inner: R,
    line_no: u64,
    buf: Vec<u8>,
}

/// A line longer than this (without its `\n`) is rejected without being kept in memory.
pub const LINE_CAP: usize = MAX_URL_BYTES + 16;

impl<R: AsyncBufRead + Unpin> ListReader<R> {
    pub fn new(inner: R) -> Self {
        ListReader { inner, line_no: 0, buf: Vec::with_capacity(256) }
    }

    /// The next URL or rejection, skipping blanks and comments; `None` at the end.
    pub async fn next(&mut self) -> std::io::Result<Option<Result<String, Rejection>>> {
        loop {
            let Some(overlong) = self.read_line().await? else {
                return Ok(None);
            };
            let line = self.line_no;
            if overlong {
                return Ok(Some(Err(Rejection { line, reason: format!("longer than {MAX_URL_BYTES} bytes") })));
            }
            match classify(&self.buf) {
                Line::Skip => continue,
                Line::Url(u) => return Ok(Some(Ok(u))),
                Line::Rejected(reason) => return Ok(Some(Err(Rejection { line, reason }))),
            }
        }
    }

    /// Fills `buf` with the next line; returns whether it was cut for being too long, or
    /// `None` at the end of the stream.
    async fn read_line(&mut self) -> std::io::Result<Option<bool>> {
        self.buf.clear();
        let mut overlong = false;
        let mut any = false;
        loop {
            let chunk = self.inner.fill_buf().await?;
            if chunk.is_empty() {
                if !any {
                    return Ok(None);
                }
                break;
            }
            any = true;
            let (part, used, end) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], i + 1, true),
                None => (chunk, chunk.len(), false),
            };
            if !overlong {
                if self.buf.len() + part.len() > LINE_CAP {
                    overlong = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(part);
                }
            }
            self.inner.consume(used);
            if end {
                break;
            }
        }
        self.line_no += 1;
        Ok(Some(overlong))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_accepts_and_rejects() {
        assert!(validate("https://example.com/a.js").is_ok());
        assert!(validate("http://EXAMPLE.com:8080/a?b=c").is_ok());
        assert!(validate("ftp://example.com/a").unwrap_err().contains("scheme"));
        assert!(validate("/relative/path").unwrap_err().contains("absolute"));
        assert!(validate("https://exa mple.com/").unwrap_err().contains("whitespace"));
        assert!(validate("https://example.com/\u{7}").unwrap_err().contains("control"));
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert!(validate(&long).unwrap_err().contains("longer"));
        assert!(validate("file:///etc/passwd").is_err());
    }

    #[tokio::test]
    async fn reader_numbers_lines_and_skips_comments() {
        let text = b"# header\r\nhttps://a.example/1\r\n\r\nnot a url\nhttps://a.example/2".to_vec();
        let mut r = ListReader::new(&text[..]);
        let mut got = Vec::new();
        while let Some(item) = r.next().await.unwrap() {
            got.push(item);
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Ok("https://a.example/1".to_string()));
        assert_eq!(got[1].as_ref().unwrap_err().line, 4);
        assert_eq!(got[2], Ok("https://a.example/2".to_string()));
    }

    #[tokio::test]
    async fn reader_rejects_overlong_and_binary_lines_without_holding_them() {
        let mut text = b"https://a.example/1\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', 100_000));
        text.extend(b"\n\xff\xfe\x00junk\nhttps://a.example/2\n");
        let mut r = ListReader::new(tokio::io::BufReader::with_capacity(1024, &text[..]));
        let mut got = Vec::new();
        while let Some(item) = r.next().await.unwrap() {
            got.push(item);
            assert!(r.buf.capacity() < 64 * 1024);
        }
        assert_eq!(got.len(), 4);
        assert_eq!(got[1].as_ref().unwrap_err().line, 2);
        assert_eq!(got[2].as_ref().unwrap_err().reason, "not valid UTF-8");
        assert_eq!(got[3], Ok("https://a.example/2".to_string()));
    }
}
