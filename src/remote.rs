//! Remote URL lists (`urls_url`, `sitemap_url`): fetched with a timeout and a size cap, http(s)
//! only, gzip understood, and by default refused when the host resolves to a loopback, private,
//! link-local or otherwise internal address (server-side request forgery).
//!
//! The address that passed the check is the one connected to (the client is pinned to it), so a
//! second DNS answer cannot swap in an internal address; redirects are not followed.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The largest list fetched (ESA accepts URL files up to 10 MB).
pub const MAX_LIST_BYTES: usize = 32 << 20;
/// Child sitemaps followed from a sitemap index.
const MAX_CHILD_SITEMAPS: usize = 50;
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{0}")]
    Refused(String),
    #[error("fetching {url} failed: {reason}")]
    Fetch { url: String, reason: String },
}

/// Whether an address is internal: loopback, private, link-local, CGNAT, unique-local,
/// unspecified, multicast, documentation or benchmarking ranges.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Checks scheme and host, resolves it, and refuses internal addresses unless allowed.
async fn vet(url: &str, allow_private: bool) -> Result<(url::Url, SocketAddr), RemoteError> {
    let parsed = url::Url::parse(url).map_err(|e| RemoteError::Refused(format!("`{url}` is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(RemoteError::Refused(format!("`{url}`: only http and https lists are fetched")));
    }
    let host = parsed.host_str().ok_or_else(|| RemoteError::Refused(format!("`{url}` has no host")))?.to_string();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let host_for_lookup = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host_for_lookup.as_str(), port))
        .await
        .map_err(|e| RemoteError::Fetch { url: url.to_string(), reason: format!("cannot resolve {host}: {e}") })?
        .collect();
    let Some(first) = addrs.first().copied() else {
        return Err(RemoteError::Fetch { url: url.to_string(), reason: format!("{host} has no address") });
    };
    if !allow_private {
        if let Some(bad) = addrs.iter().find(|a| is_internal(a.ip())) {
            return Err(RemoteError::Refused(format!(
                "`{url}`: {host} resolves to the internal address {}; set `allow_private_lists = true` in [api] to allow it",
                bad.ip()
            )));
        }
    }
    Ok((parsed, first))
}

/// Fetches one document (decompressing gzip), capped at [`MAX_LIST_BYTES`].
pub async fn fetch(url: &str, allow_private: bool) -> Result<Vec<u8>, RemoteError> {
    let (parsed, addr) = vet(url, allow_private).await?;
    let fail = |reason: String| RemoteError::Fetch { url: url.to_string(), reason };
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .resolve(parsed.host_str().unwrap_or_default(), addr)
        .user_agent(concat!("preloadd/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let mut resp = client.get(parsed.as_str()).send().await.map_err(|e| fail(e.without_url().to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP {}", resp.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| fail(e.without_url().to_string()))? {
        if body.len() + chunk.len() > MAX_LIST_BYTES {
            return Err(fail(format!("the list is larger than {} MiB", MAX_LIST_BYTES >> 20)));
        }
        body.extend_from_slice(&chunk);
    }
    if body.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .take(MAX_LIST_BYTES as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| fail(format!("bad gzip: {e}")))?;
        if out.len() > MAX_LIST_BYTES {
            return Err(fail(format!("the list is larger than {} MiB once decompressed", MAX_LIST_BYTES >> 20)));
        }
        body = out;
    }
    Ok(body)
}

/// The `<loc>` values of a sitemap, XML entities decoded.
pub fn sitemap_locs(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<loc>") {
        let after = &rest[start + 5..];
        let Some(end) = after.find("</loc>") else { break };
        let raw = after[..end].trim();
        let raw = raw.strip_prefix("<![CDATA[").and_then(|r| r.strip_suffix("]]>")).unwrap_or(raw);
        out.push(
            raw.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        );
        rest = &after[end + 6..];
    }
    out
}

/// Fetches a sitemap (or a sitemap index, one level deep) and returns its URLs as a list text,
/// one a line.
pub async fn fetch_sitemap(url: &str, allow_private: bool) -> Result<Vec<u8>, RemoteError> {
    let body = fetch(url, allow_private).await?;
    let xml = String::from_utf8_lossy(&body);
    let locs = sitemap_locs(&xml);
    let mut text = Vec::new();
    if xml.contains("<sitemapindex") {
        for child in locs.iter().take(MAX_CHILD_SITEMAPS) {
            let body = fetch(child, allow_private).await?;
            for loc in sitemap_locs(&String::from_utf8_lossy(&body)) {
                text.extend_from_slice(loc.as_bytes());
                text.push(b'\n');
            }
            if text.len() > MAX_LIST_BYTES {
                return Err(RemoteError::Fetch {
                    url: url.to_string(),
                    reason: "the sitemaps list too many URLs".into(),
                });
            }
        }
    } else {
        for loc in locs {
            text.extend_from_slice(loc.as_bytes());
            text.push(b'\n');
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn sitemap_locs_are_extracted_and_unescaped() {
        let xml = "<urlset><url><loc> https://a.example/1?x=1&amp;y=2 </loc></url><url><loc><![CDATA[https://a.example/2]]></loc></url></urlset>";
        assert_eq!(sitemap_locs(xml), vec!["https://a.example/1?x=1&y=2", "https://a.example/2"]);
    }

    #[tokio::test]
    async fn loopback_and_bad_schemes_are_refused() {
        for url in ["http://127.0.0.1:9/list.txt", "http://localhost:9/x", "file:///etc/passwd", "ftp://a.example/x"] {
            assert!(matches!(fetch(url, false).await, Err(RemoteError::Refused(_))), "{url}");
        }
    }
}
