//! Fetching a feed over HTTPS (ureq, rustls): conditional requests so an unchanged list
//! costs a 304, a size limit, a timeout, and an optional CA of the site's own.

use std::time::Duration;

use crate::config::Feed;

/// What the server answered.
#[derive(Debug)]
pub enum Fetched {
    /// 304: the list the last good fetch saw is still current.
    NotModified,
    Body {
        bytes: Vec<u8>,
        etag: Option<String>,
        last_modified: Option<String>,
    },
}

/// How long one fetch may take, connection to last byte.
const TIMEOUT: Duration = Duration::from_secs(30);

/// GETs the feed's URL, with `If-None-Match` / `If-Modified-Since` from the last good fetch.
pub fn fetch(
    feed: &Feed,
    etag: Option<&str>,
    last_modified: Option<&str>,
) -> Result<Fetched, String> {
    get(feed, &feed.url, etag, last_modified)
}

/// Microsoft 365's version service: the `latest` of `{"instance": ..., "latest": ...}`.
pub fn m365_version(feed: &Feed, url: &str) -> Result<String, String> {
    let Fetched::Body { bytes, .. } = get(feed, url, None, None)? else {
        return Err(format!("{url} answered 304 to an unconditional request"));
    };
    #[derive(serde::Deserialize)]
    struct Version {
        latest: String,
    }
    serde_json::from_slice::<Version>(&bytes)
        .map(|v| v.latest)
        .map_err(|e| format!("{url}: not Microsoft 365's version answer ({e})"))
}

fn get(
    feed: &Feed,
    url: &str,
    etag: Option<&str>,
    last_modified: Option<&str>,
) -> Result<Fetched, String> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(ca) = &feed.ca_file {
        let pem =
            std::fs::read(ca).map_err(|e| format!("reading ca_file {}: {e}", ca.display()))?;
        let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(format!("ca_file {} holds no PEM certificate", ca.display()));
        }
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls.build())
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent
        .get(url)
        .header("User-Agent", concat!("fwd/", env!("CARGO_PKG_VERSION")));
    if let Some(e) = etag {
        request = request.header("If-None-Match", e);
    }
    if let Some(m) = last_modified {
        request = request.header("If-Modified-Since", m);
    }
    let response = request.call().map_err(|e| e.to_string())?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    match response.status().as_u16() {
        304 => Ok(Fetched::NotModified),
        200 => {
            let etag = header("etag");
            let last_modified = header("last-modified");
            let bytes = response
                .into_body()
                .with_config()
                .limit(feed.max_bytes)
                .read_to_vec()
                .map_err(|e| match e {
                    ureq::Error::BodyExceedsLimit(limit) => format!(
                        "the list is larger than max_bytes ({limit} bytes); raise it if the vendor's list really grew"
                    ),
                    other => format!("reading the list: {other}"),
                })?;
            Ok(Fetched::Body {
                bytes,
                etag,
                last_modified,
            })
        }
        status => Err(format!("HTTP {status} from {url}")),
    }
}
