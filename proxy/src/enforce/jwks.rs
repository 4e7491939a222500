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
use std::time::Duration;
use tokio::time::Instant;

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

/// How long after the last fetch the next one is due: sooner after a failure (backing off
/// from `min_refetch` up to `refresh`), at 90% of the server's `max-age` when that comes
/// first, never sooner than `min_refetch`.
fn next_fetch(
    refresh: Duration,
    min_refetch: Duration,
    failures: u32,
    max_age: Option<Duration>,
) -> Duration {
    if failures > 0 {
        return (min_refetch * 2u32.saturating_pow(failures - 1)).min(refresh);
    }
    match max_age {
        Some(age) => refresh.min(age.mul_f64(0.9)).max(min_refetch),
        None => refresh,
    }
}

async fn fetch_loop(weak: Weak<ProviderKeys>, notify: Arc<tokio::sync::Notify>, spec: RemoteSpec) {
    schedule(weak, notify, &spec, || fetch(&spec)).await;
}

/// The fetcher's loop over any fetch function (the network one, or a test's).
async fn schedule<F, Fut>(
    weak: Weak<ProviderKeys>,
    notify: Arc<tokio::sync::Notify>,
    spec: &RemoteSpec,
    fetch: F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Fetched, FetchError>>,
{
    let mut last_fetch: Option<Instant> = None;
    let mut failures = 0u32;
    // The server's `Cache-Control: max-age`, when it gave one.
    let mut max_age: Option<Duration> = None;
    loop {
        // Wait for the next scheduled fetch or a refetch request, whichever comes first;
        // a request is held back until `min_refetch` has passed since the last fetch.
        if let Some(last) = last_fetch {
            let next = next_fetch(spec.refresh, spec.min_refetch, failures, max_age);
            let scheduled = tokio::time::sleep_until(last + next);
            tokio::select! {
                () = scheduled => {}
                () = notify.notified() => {
                    let allowed = last + spec.min_refetch;
                    tokio::time::sleep_until(allowed).await;
                }
            }
        }
        let Some(keys) = weak.upgrade() else { return };
        // Wake-ups that came before this fetch are answered by it: only a token that
        // arrives after it starts (and may name a key published since) asks for another.
        tokio::select! {
            biased;
            () = notify.notified() => {}
            () = std::future::ready(()) => {}
        }
        last_fetch = Some(Instant::now());
        match tokio::time::timeout(spec.timeout, fetch()).await {
            Ok(Ok(fetched)) => {
                failures = 0;
                max_age = fetched.max_age;
                keys.metrics.fetch_ok.inc();
                keys.replace(fetched.keys);
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

/// A key set, and how long the server says it stays fresh.
struct Fetched {
    keys: KeySet,
    max_age: Option<Duration>,
}

async fn fetch(spec: &RemoteSpec) -> Result<Fetched, FetchError> {
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
    Ok(Fetched { keys: set, max_age })
}

#[cfg(test)]
mod tests {
    //! The fetcher's schedule on tokio's paused clock: exact counts, no waiting.
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn spec(refresh: u64, min_refetch: u64) -> RemoteSpec {
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("{e}"))
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        RemoteSpec {
            url: http::Uri::from_static("https://idp.test/jwks"),
            tls: Arc::new(tls),
            refresh: Duration::from_secs(refresh),
            min_refetch: Duration::from_secs(min_refetch),
            timeout: Duration::from_secs(5),
        }
    }

    /// Runs the schedule with a fetch that answers `answer` at once; returns the keys (the
    /// loop ends when they are dropped), the wake-up, and the count of fetches.
    fn run(
        spec: RemoteSpec,
        answer: fn() -> Result<Fetched, FetchError>,
    ) -> (
        Arc<ProviderKeys>,
        Arc<tokio::sync::Notify>,
        Arc<AtomicUsize>,
    ) {
        let metrics = crate::metrics::Metrics::new();
        let keys = ProviderKeys::new(
            "url:test".into(),
            KeySet::default(),
            metrics.provider("p"),
            true,
        );
        let notify = keys.remote.clone().unwrap_or_default();
        let count = Arc::new(AtomicUsize::new(0));
        let (weak, n, c) = (Arc::downgrade(&keys), notify.clone(), count.clone());
        tokio::spawn(async move {
            schedule(weak, n, &spec, || {
                c.fetch_add(1, Ordering::Relaxed);
                async move { answer() }
            })
            .await;
        });
        (keys, notify, count)
    }

    fn ok(max_age: Option<Duration>) -> Result<Fetched, FetchError> {
        Ok(Fetched {
            keys: KeySet::default(),
            max_age,
        })
    }

    fn fetched(count: &AtomicUsize) -> usize {
        count.load(Ordering::Relaxed)
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_unknown_kids_fetches_once_per_min_refetch() {
        let (_keys, notify, count) = run(spec(3600, 1), || ok(None));
        // Unknown-kid wake-ups every millisecond for 1.5 s: the first fetch, then one at 1 s.
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(1500) {
            notify.notify_one();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(fetched(&count), 2);
        // The wake-ups after it are one more, at 2 s; then nothing until `refresh`.
        tokio::time::sleep(Duration::from_secs(3000)).await;
        assert_eq!(fetched(&count), 3);
        tokio::time::sleep(Duration::from_secs(700)).await;
        assert_eq!(fetched(&count), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_max_age_brings_fetches_forward_but_not_below_min_refetch() {
        // max-age=1: 90% of it is 0.9 s, held to min_refetch (1 s).
        let (_keys, _, count) = run(spec(3600, 1), || ok(Some(Duration::from_secs(1))));
        tokio::time::sleep(Duration::from_millis(10_500)).await;
        assert_eq!(fetched(&count), 11, "at 0, 1, ..., 10 s");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_up_to_refresh_and_the_loop_ends_with_its_provider() {
        let (keys, _, count) = run(spec(8, 1), || Err(FetchError::NoKey));
        // At 0, 1, 3, 7, 15 and 23 s: 1, 2, 4, then 8 (refresh) apart.
        tokio::time::sleep(Duration::from_millis(23_500)).await;
        assert_eq!(fetched(&count), 6);
        drop(keys);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(fetched(&count), 6, "fetched for a provider that is gone");
    }

    #[test]
    fn next_fetch_is_refresh_max_age_or_backoff() {
        let s = Duration::from_secs;
        assert_eq!(next_fetch(s(600), s(30), 0, None), s(600));
        assert_eq!(next_fetch(s(600), s(30), 0, Some(s(100))), s(90));
        assert_eq!(next_fetch(s(600), s(30), 0, Some(s(10))), s(30));
        assert_eq!(next_fetch(s(600), s(30), 0, Some(s(6000))), s(600));
        assert_eq!(next_fetch(s(600), s(30), 1, None), s(30));
        assert_eq!(next_fetch(s(600), s(30), 3, None), s(120));
        assert_eq!(next_fetch(s(600), s(30), 40, None), s(600));
    }
}
