//! A provider's key set, its verified-token cache and its metrics, kept across config
//! generations while the key source stays the same; and, for a remote key set, the
//! background fetcher.
//!
//! Remote key sets are fetched over HTTPS by a thread of their own (a small current-thread
//! runtime), at start, every `refresh` (sooner when the server's `Cache-Control: max-age`
//! runs out first: at 90% of it), and when a token names an unknown `kid`. Those
//! refetches are single-flight by construction (one fetcher per provider, woken through a
//! `Notify`) and at least `min_refetch` apart, so a flood of tokens with made-up kids causes
//! at most one fetch per interval. A failed fetch keeps the last good key set. The thread
//! ends when the provider is dropped from the config.

use super::metrics::ProviderMetrics;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use membrane_policy::jwt::{KeySet, TokenCache};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Verified tokens remembered per provider, and for at most this long.
const CACHE_ENTRIES: usize = 64 * 1024;
const CACHE_MAX_AGE: u64 = 300;
/// Largest key set document accepted.
const MAX_JWKS_BYTES: usize = 512 * 1024;

pub struct ProviderKeys {
    keys: ArcSwap<KeySet>,
    pub cache: TokenCache,
    pub metrics: ProviderMetrics,
    /// Identifies the key source, so a reload with the same source keeps this state.
    pub source: String,
    /// Unix seconds of the last key set loaded (0: none yet).
    loaded_at: AtomicU64,
    /// A hash of a static key set's text, to tell a changed file from an unchanged one.
    content: AtomicU64,
    remote: Option<Arc<tokio::sync::Notify>>,
}

pub struct RemoteSpec {
    pub url: http::Uri,
    pub tls: Arc<rustls::ClientConfig>,
    pub refresh: Duration,
    pub min_refetch: Duration,
    pub timeout: Duration,
}

impl ProviderKeys {
    /// Keys known now (a static set, or an empty one until a remote set arrives).
    pub fn new(source: String, keys: KeySet, metrics: ProviderMetrics, remote: bool) -> Arc<Self> {
        // A static set is installed by `replace_if_changed`; `keys` seeds a remote one's
        // first state (empty until the first fetch).
        let p = Arc::new(Self {
            loaded_at: AtomicU64::new(0),
            content: AtomicU64::new(0),
            keys: ArcSwap::from_pointee(KeySet::default()),
            cache: TokenCache::new(CACHE_ENTRIES, CACHE_MAX_AGE),
            metrics,
            source,
            remote: remote.then(|| Arc::new(tokio::sync::Notify::new())),
        });
        if !keys.keys.is_empty() {
            p.replace(keys);
        }
        p
    }

    /// True for a key set fetched over HTTPS.
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    pub fn current(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Installs a new key set; tokens verified with the old one are forgotten.
    pub fn replace(&self, keys: KeySet) {
        self.metrics.keys.set(keys.keys.len() as i64);
        self.keys.store(Arc::new(keys));
        self.cache.clear();
        self.loaded_at.store(super::unix_now(), Ordering::Relaxed);
    }

    /// Installs a static key set read from text whose hash is `content`, unless that text
    /// is what is loaded already (then verified tokens stay cached).
    pub fn replace_if_changed(&self, content: u64, keys: KeySet) {
        if self.content.swap(content, Ordering::Relaxed) != content {
            self.replace(keys);
        }
    }

    /// Seconds since the key set was loaded (`None` before the first one).
    pub fn age(&self, now: u64) -> Option<u64> {
        match self.loaded_at.load(Ordering::Relaxed) {
            0 => None,
            t => Some(now.saturating_sub(t)),
        }
    }

    /// A token named a key that is not in the set: ask the fetcher for a new set.
    pub fn unknown_kid(&self) {
        if let Some(n) = &self.remote {
            n.notify_one();
        }
    }

    /// Starts the fetcher thread for a remote key set.
    pub fn spawn_fetcher(self: &Arc<Self>, spec: RemoteSpec) -> std::io::Result<()> {
        let weak = Arc::downgrade(self);
        let Some(notify) = self.remote.clone() else {
            return Ok(());
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("membrane-jwks".into())
            .spawn(move || rt.block_on(fetch_loop(weak, notify, spec)))?;
        Ok(())
    }
}

async fn fetch_loop(weak: Weak<ProviderKeys>, notify: Arc<tokio::sync::Notify>, spec: RemoteSpec) {
    let mut last_fetch: Option<Instant> = None;
    let mut failures = 0u32;
    // The server's `Cache-Control: max-age`, when it gave one: the set is fetched again
    // before it runs out (at 90% of it), never sooner than `min_refetch`.
    let mut max_age: Option<Duration> = None;
    loop {
        // Wait for the next scheduled fetch or a refetch request, whichever comes first;
        // a request is held back until `min_refetch` has passed since the last fetch.
        if let Some(last) = last_fetch {
            let next = if failures > 0 {
                // Retry sooner after a failure, backing off up to the refresh interval.
                (spec.min_refetch * 2u32.saturating_pow(failures - 1)).min(spec.refresh)
            } else {
                match max_age {
                    Some(age) => spec.refresh.min(age.mul_f64(0.9)).max(spec.min_refetch),
                    None => spec.refresh,
                }
            };
            let scheduled = tokio::time::sleep_until((last + next).into());
            tokio::select! {
                () = scheduled => {}
                () = notify.notified() => {
                    let allowed = last + spec.min_refetch;
                    tokio::time::sleep_until(allowed.into()).await;
                }
            }
        }
        let Some(keys) = weak.upgrade() else { return };
        last_fetch = Some(Instant::now());
        match tokio::time::timeout(spec.timeout, fetch(&spec)).await {
            Ok(Ok((set, age))) => {
                failures = 0;
                max_age = age;
                keys.metrics.fetch_ok.inc();
                keys.replace(set);
            }
            Ok(Err(e)) => {
                failures += 1;
                keys.metrics.fetch_failed.inc();
                tracing::warn!(url = %spec.url, error = %e, "JWKS fetch failed; the last good key set stays");
            }
            Err(_) => {
                failures += 1;
                keys.metrics.fetch_failed.inc();
                tracing::warn!(url = %spec.url, "JWKS fetch timed out; the last good key set stays");
            }
        }
        drop(keys);
    }
}

/// Why a key set fetch failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("the URL has no host")]
    NoHost,
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("server name: {0}")]
    ServerName(#[from] rustls_pki_types::InvalidDnsNameError),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] http::Error),
    #[error("status {0}")]
    Status(http::StatusCode),
    #[error("body: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
    #[error("the body is not UTF-8")]
    NotUtf8,
    #[error(transparent)]
    KeySet(#[from] membrane_policy::jwt::JwkError),
    #[error("no usable signing key in the set")]
    NoKey,
}

/// The key set, and how long the server says it stays fresh.
async fn fetch(spec: &RemoteSpec) -> Result<(KeySet, Option<Duration>), FetchError> {
    let host = spec.url.host().ok_or(FetchError::NoHost)?.to_owned();
    let port = spec.url.port_u16().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(FetchError::Connect)?;
    let name = rustls_pki_types::ServerName::try_from(host.clone())?;
    let tls = tokio_rustls::TlsConnector::from(spec.tls.clone())
        .connect(name, tcp)
        .await
        .map_err(FetchError::Tls)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let path = spec
        .url
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let req = http::Request::get(path)
        .header(
            http::header::HOST,
            spec.url.authority().map_or(host.as_str(), |a| a.as_str()),
        )
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    if !resp.status().is_success() {
        return Err(FetchError::Status(resp.status()));
    }
    let max_age = resp
        .headers()
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|n| n.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = http_body_util::Limited::new(resp.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(FetchError::Body)?
        .to_bytes();
    let text = std::str::from_utf8(&body).map_err(|_| FetchError::NotUtf8)?;
    let (set, skipped) = KeySet::from_json(text)?;
    for (i, why) in skipped {
        tracing::debug!(url = %spec.url, key = i, reason = %why, "JWKS key skipped");
    }
    if set.keys.is_empty() {
        return Err(FetchError::NoKey);
    }
    Ok((set, max_age))
}
