//! The control server's admin endpoint: `/nodes` (JSON: what each node was sent, ACKed and
//! NACKed), `/metrics` (Prometheus text), `/ready`, `/live`.

use super::ControlError;
use super::state::ControlState;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

pub async fn serve(addr: SocketAddr, state: Arc<ControlState>) -> Result<SocketAddr, ControlError> {
    let err = |source| ControlError::Listen {
        what: "admin",
        addr,
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(err)?;
    let bound = listener.local_addr().map_err(err)?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(respond(&state, req.uri().path())) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn respond(state: &ControlState, path: &str) -> hyper::Response<Full<Bytes>> {
    let (ct, body) = match path {
        "/nodes" => {
            let nodes = state.nodes.snapshot();
            let last_error = state.last_error.lock().ok().and_then(|e| e.clone());
            let generation = state.generation.lock().map(|g| *g).unwrap_or(0);
            (
                "application/json",
                serde_json::json!({"generation": generation, "last_error": last_error, "nodes": nodes}).to_string(),
            )
        }
        "/metrics" => ("text/plain; version=0.0.4", metrics(state)),
        // Ready: the specs were compiled (a control server does not start without them)
        // and ADS listens. Live: this answers.
        "/ready" => ("text/plain", "ready\n".to_owned()),
        "/live" => ("text/plain", "live\n".to_owned()),
        _ => (
            "text/plain",
            "admin endpoints: /nodes /metrics /ready /live\n".to_owned(),
        ),
    };
    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
    if let Ok(v) = ct.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// A label value as the Prometheus text format needs it: `\\`, `"` and newlines escaped.
/// Node ids are checked before they get here (`node_id`), so this is the second guard.
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn metrics(state: &ControlState) -> String {
    let nodes = state.nodes.snapshot();
    let changed_at = state.changed_at.lock().map(|t| *t).ok();
    let mut out = String::new();
    let connected = nodes.values().filter(|n| n.streams > 0).count();
    let _ = writeln!(
        out,
        "# HELP membrane_control_connected_nodes Gateways with an open ADS stream"
    );
    let _ = writeln!(out, "# TYPE membrane_control_connected_nodes gauge");
    let _ = writeln!(out, "membrane_control_connected_nodes {connected}");
    let _ = writeln!(
        out,
        "# HELP membrane_control_pushes_total Responses sent, by node"
    );
    let _ = writeln!(out, "# TYPE membrane_control_pushes_total counter");
    for (id, n) in &nodes {
        let pushes: u64 = n.types.values().map(|t| t.pushes).sum();
        let _ = writeln!(
            out,
            "membrane_control_pushes_total{{node=\"{}\"}} {pushes}",
            label(id)
        );
    }
    let _ = writeln!(
        out,
        "# HELP membrane_control_nacks_total NACKs received, by node"
    );
    let _ = writeln!(out, "# TYPE membrane_control_nacks_total counter");
    for (id, n) in &nodes {
        let nacks: u64 = n.types.values().map(|t| t.nacks).sum();
        let _ = writeln!(
            out,
            "membrane_control_nacks_total{{node=\"{}\"}} {nacks}",
            label(id)
        );
    }
    // 1 while the last spec change (or reading the store) was refused: the last good
    // resources are being served and changes do not reach gateways.
    let refused = state
        .last_error
        .lock()
        .map(|e| e.is_some())
        .unwrap_or(false);
    let _ = writeln!(
        out,
        "# HELP membrane_control_specs_refused Whether the last spec change (or reading the spec store) was refused: 1 while the last good resources are served instead"
    );
    let _ = writeln!(out, "# TYPE membrane_control_specs_refused gauge");
    let _ = writeln!(out, "membrane_control_specs_refused {}", u8::from(refused));
    state.refused_streams.render(
        "membrane_control_refused_streams_total",
        "Control channel connections and ADS streams refused before being served, by reason",
        &mut out,
    );
    if let Some(ca) = state.ca.lock().ok().and_then(|c| c.clone()) {
        let _ = writeln!(
            out,
            "# HELP membrane_control_certificates_issued_total Certificates issued to gateways"
        );
        let _ = writeln!(
            out,
            "# TYPE membrane_control_certificates_issued_total counter"
        );
        let _ = writeln!(
            out,
            "membrane_control_certificates_issued_total {}",
            ca.issued.load(std::sync::atomic::Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP membrane_control_certificates_active Gateways (node ids) whose last issued certificate has not expired"
        );
        let _ = writeln!(out, "# TYPE membrane_control_certificates_active gauge");
        let _ = writeln!(out, "membrane_control_certificates_active {}", ca.active());
        ca.refused.render(
            "membrane_control_certificate_refusals_total",
            "Certificate requests refused, by reason",
            &mut out,
        );
    }
    if let Some(now) = &state.ca_now {
        let _ = writeln!(
            out,
            "# HELP membrane_control_ca_rollover_phase The CA roll-over's step: idle, published (the next root trusted, the current CA signing) or retiring (the next CA signing, the old root trusted until its last certificate expires)"
        );
        let _ = writeln!(out, "# TYPE membrane_control_ca_rollover_phase gauge");
        let phase = now.phase();
        for p in ["idle", "published", "retiring"] {
            let _ = writeln!(
                out,
                "membrane_control_ca_rollover_phase{{phase=\"{p}\"}} {}",
                u8::from(p == phase)
            );
        }
    }
    // From the last change to the last ACK that followed it, across nodes; described even
    // before there is one, so that dashboards and rules find the family.
    let _ = writeln!(
        out,
        "# HELP membrane_control_change_to_last_ack_seconds From the last spec change to the last ACK after it (no sample until a gateway has ACKed one)"
    );
    let _ = writeln!(
        out,
        "# TYPE membrane_control_change_to_last_ack_seconds gauge"
    );
    if let Some(changed) = changed_at {
        let last = nodes
            .values()
            .flat_map(|n| n.types.values())
            .filter_map(|t| t.acked_at)
            .filter(|a| *a >= changed)
            .max();
        if let Some(last) = last {
            let _ = writeln!(
                out,
                "membrane_control_change_to_last_ack_seconds {}",
                (last - changed).as_secs_f64()
            );
        }
    }
    membrane_telemetry::process::write(&mut out, true);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::label("a\"} 1\nx{b=\"\\"), "a\\\"} 1\\nx{b=\\\"\\\\");
    }
}
