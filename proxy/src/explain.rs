//! `membrane explain`: what the proxy would do with one request, without sending anything.
//! It compiles the config as the proxy does and runs the same routing and policy phases
//! (`http::phases::check`), then describes the action instead of taking it.

use crate::config;
use crate::http::error::ProxyError;
use crate::http::phases::{self, PolicyNote};
use crate::http::service::ConnContext;
use crate::metrics::Metrics;
use crate::route::RequestView;
use crate::snapshot::{self, Action, Snapshot};
use crate::tls::peer::PeerTls;
use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use membrane_policy::identity::{PeerIdentity, SpiffeId};
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub struct Question {
    /// `GET https://host/path`
    pub request: String,
    pub peer: Option<String>,
    pub jwt: Option<String>,
    pub headers: Vec<String>,
    pub listener: Option<String>,
    pub source: IpAddr,
}

/// The report, and whether the request would be let through to its action.
pub struct Answer {
    pub text: String,
    pub allowed: bool,
}

pub fn explain(config_path: &Path, q: &Question) -> Result<Answer, String> {
    let (cfg, text) = config::read_file(config_path).map_err(|e| e.to_string())?;
    let metrics = Metrics::new();
    let snap =
        snapshot::compile(config_path, &text, cfg, 1, None, &metrics).map_err(|e| e.to_string())?;
    let state = Arc::new(ArcSwap::from_pointee(snap));
    let snap = state.load_full();
    // A remote key set is fetched in the background: give it a moment.
    for p in snap.providers.values() {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while p.keys.age(crate::enforce::unix_now()).is_none()
            && p.keys.current().keys.is_empty()
            && std::time::Instant::now() < deadline
            && p.keys.source.starts_with("url:")
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let (method, target) = q
        .request
        .trim()
        .split_once(' ')
        .ok_or("--request is `METHOD URL`, e.g. 'GET https://api.example.com/orders'")?;
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| format!("`{method}` is not a method"))?;
    let uri: Uri = target.parse().map_err(|e| format!("`{target}`: {e}"))?;
    let host = uri
        .host()
        .ok_or("the URL needs a host: https://host/path")?
        .to_ascii_lowercase();
    let https = uri.scheme_str() == Some("https");
    let mut headers = HeaderMap::new();
    for h in &q.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| format!("--header `{h}` is not `name: value`"))?;
        let name = HeaderName::from_bytes(k.trim().as_bytes())
            .map_err(|_| format!("`{k}` is not a header name"))?;
        let value =
            HeaderValue::from_str(v.trim()).map_err(|_| format!("`{v}` is not a header value"))?;
        headers.append(name, value);
    }
    if let Some(t) = &q.jwt {
        let v =
            HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| "--jwt is not a token")?;
        headers.insert(http::header::AUTHORIZATION, v);
    }
    let listener = pick_listener(&snap, q.listener.as_deref(), https, uri.port_u16())?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "listener  {} ({}{})",
        listener.name,
        listener.address,
        if listener.tls.is_some() { ", TLS" } else { "" }
    );

    let mut ctx = ConnContext::new(listener.name.clone(), state, SocketAddr::new(q.source, 0));
    if let Some(p) = &q.peer {
        let id = SpiffeId::parse(p).map_err(|e| format!("--peer {p}: {e}"))?;
        ctx.set_tls(PeerTls {
            identity: PeerIdentity {
                spiffe: Some(id),
                cert_sha256: None,
            },
            xfcc: None,
            sni: None,
        });
        let _ = writeln!(out, "peer      {p}");
    }
    let view = RequestView {
        host: &host,
        path: uri.path(),
        method: &method,
        headers: &headers,
    };
    let Some(route) = listener.routes.find(&view) else {
        let _ = writeln!(
            out,
            "route     none matches host `{host}` and path `{}`: 404 no_route",
            uri.path()
        );
        return Ok(Answer {
            text: out,
            allowed: false,
        });
    };
    let entry = &route.action;
    let _ = writeln!(out, "route     {}", entry.name);
    match &entry.jwt {
        None => {
            let _ = writeln!(out, "authn     none required");
        }
        Some(j) => {
            let _ = writeln!(
                out,
                "authn     JWT from provider `{}`{}",
                j.provider.name,
                if j.required { "" } else { " (optional)" }
            );
        }
    }
    let mut note = PolicyNote::default();
    let result = phases::check(&ctx, listener, entry, &view, None, &mut note);
    if let Some(sub) = &note.subject {
        let _ = writeln!(out, "          valid token, sub `{sub}`");
    }
    match (&listener.authz, &note.decision) {
        (None, _) => {
            let _ = writeln!(out, "authz     no policy on this listener: allowed");
        }
        (Some(az), Some((word, rule))) => {
            let _ = writeln!(
                out,
                "authz     {word} by rule `{rule}` of policy `{}`",
                az.policy.name
            );
        }
        (Some(_), None) => {
            let _ = writeln!(out, "authz     not reached");
        }
    }
    if let Some(rl) = &entry.rate_limit {
        let l = rl.buckets.limit();
        let key = match &rl.key {
            crate::config::RateKeyConfig::ClientIp => "client address".to_owned(),
            crate::config::RateKeyConfig::Peer => "peer SPIFFE ID".to_owned(),
            crate::config::RateKeyConfig::Claim(c) => format!("claim `{c}`"),
        };
        let _ = writeln!(
            out,
            "rate      {} per {}s, burst {}, by {key}",
            l.requests, l.period_secs, l.burst
        );
    }
    if let Err(e) = result {
        let (status, code) = e.status_and_code();
        let _ = writeln!(out, "result    {} {code}: {e}", status.as_u16());
        let allowed = matches!(e, ProxyError::RateLimited(_));
        return Ok(Answer { text: out, allowed });
    }
    let action = match &entry.action {
        Action::Forward {
            cluster, timeout, ..
        } => {
            let eps: Vec<String> = cluster
                .endpoints
                .iter()
                .map(|e| e.addr.to_string())
                .collect();
            format!(
                "forward to cluster `{}` [{}]{}, timeout {timeout:?}",
                cluster.name,
                eps.join(", "),
                if cluster.tls.is_some() {
                    " over TLS"
                } else {
                    ""
                }
            )
        }
        Action::Redirect { status, .. } => format!("redirect ({})", status.as_u16()),
        Action::Direct { status, .. } => format!("direct response {}", status.as_u16()),
    };
    let _ = writeln!(out, "action    {action}");
    Ok(Answer {
        text: out,
        allowed: true,
    })
}

fn pick_listener<'a>(
    snap: &'a Snapshot,
    name: Option<&str>,
    https: bool,
    port: Option<u16>,
) -> Result<&'a crate::snapshot::Listener, String> {
    if let Some(n) = name {
        return snap
            .listeners
            .get(n)
            .map(|l| &**l)
            .ok_or_else(|| format!("no listener is named `{n}`"));
    }
    let mut all: Vec<_> = snap.listeners.values().collect();
    all.sort_by_key(|l| l.name.clone());
    all.iter()
        .find(|l| port == Some(l.address.port()))
        .or_else(|| all.iter().find(|l| l.tls.is_some() == https))
        .or_else(|| all.first())
        .map(|l| &***l)
        .ok_or_else(|| "the config has no listener".into())
}
