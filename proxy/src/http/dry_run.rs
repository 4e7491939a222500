//! What the request path would do with a request, without sending it (`membrane explain`).

use super::body::RequestBody;
use super::decide::{Decision, canonical, decide, request_host};
use super::error::ProxyError;
use super::headers::RequestId;
use super::phases::PolicyNote;
use crate::context::ConnContext;
use crate::snapshot::Listener;
use crate::upstream::Cluster;
use http::{Request, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// What the request path decides for a request, without sending it: `membrane explain`.
pub struct DryRun<'a> {
    /// The matched route's name (empty when none matched).
    pub route: &'a str,
    /// The request as normalized: method, target and host, when it could be.
    pub normalized: Option<(String, String)>,
    pub result: Result<Planned<'a>, ProxyError>,
}

/// The action a request that passed every phase would get.
pub enum Planned<'a> {
    /// Answered by the gateway: a direct response or a redirect.
    Answer(StatusCode),
    /// Sent to `cluster` with this target.
    Forward {
        cluster: &'a Arc<Cluster>,
        target: String,
        timeout: Duration,
    },
}

/// Runs the same normalization, routing, policy and rewrite as a served request
/// (`serve`), and stops before anything is sent.
pub fn dry_run<'a>(
    ctx: &'a ConnContext,
    listener: &'a Listener,
    mut req: Request<RequestBody>,
    request_id: &'a RequestId,
    note: &mut PolicyNote,
) -> DryRun<'a> {
    let n = match canonical(ctx, listener, &mut req) {
        Ok(n) => n,
        Err(e) => {
            return DryRun {
                route: "",
                normalized: None,
                result: Err(e),
            };
        }
    };
    let target = req.uri().to_string();
    let normalized = Some((target, request_host(&req, n.host_len).to_owned()));
    let (result, m) = match decide(ctx, listener, req, n, request_id, note) {
        Ok((Decision::Answer(resp), m)) => (Ok(Planned::Answer(resp.status())), m),
        Ok((Decision::Forward { cluster, out, .. }, m)) => (
            Ok(Planned::Forward {
                cluster,
                target: out.parts.get().uri.to_string(),
                timeout: out.timeout,
            }),
            m,
        ),
        Err((e, m)) => (Err(e), m),
    };
    DryRun {
        route: &m.route,
        normalized,
        result,
    }
}
