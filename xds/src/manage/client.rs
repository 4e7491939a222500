//! The control API's client, as `membrane apply|get|delete|diff|audit|promote` use it: one
//! HTTP/1.1 request per call, over TLS that checks the control server's SPIFFE ID
//! (`/membrane/control` under the org CA given with `--ca-file`), or in plaintext to an
//! `http://` address (a server run with `--insecure`).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use membrane_identity::channel;
use membrane_identity::verify::Expect;
use std::sync::Arc;
use std::time::Duration;

/// Where the control API is and how to reach it.
pub struct Client {
    host: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`{0}`: give https://host:port (or http://host:port for a server run with --insecure)")]
    Url(String),
    #[error(
        "an https:// server needs --ca-file (the org CA, PEM, that signed the control server's certificate)"
    )]
    NoCa,
    #[error("the CA file: {0}")]
    Ca(String),
    #[error("cannot reach the control API at {host}: {reason}")]
    Connect { host: String, reason: String },
    #[error("the control API's answer is not JSON ({status}): {text}")]
    Answer { status: u16, text: String },
}

impl Client {
    /// `server` is `https://host:port` or `http://host:port`; `ca_pem` the org CA's PEM.
    pub fn new(server: &str, ca_pem: Option<&str>, token: &str) -> Result<Self, ClientError> {
        let bad = || ClientError::Url(server.to_owned());
        let (tls, rest) = if let Some(r) = server.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = server.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(bad());
        }
        let tls = if tls {
            let pem = ca_pem.ok_or(ClientError::NoCa)?;
            let roots = channel::roots(pem).map_err(|e| ClientError::Ca(e.to_string()))?;
            let mut c = channel::client_config(
                roots,
                Expect::Path(membrane_identity::CONTROL_PATH.to_owned()),
                None,
            )
            .map_err(|e| ClientError::Ca(e.to_string()))?;
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(Arc::new(c))
        } else {
            None
        };
        Ok(Self {
            host: host.to_owned(),
            tls,
            token: token.to_owned(),
        })
    }

    /// POSTs `body` to `path`: the HTTP status and the JSON answer.
    pub async fn call(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(u16, serde_json::Value), ClientError> {
        let fail = |reason: String| ClientError::Connect {
            host: self.host.clone(),
            reason,
        };
        let req = hyper::Request::post(path)
            .header(hyper::header::HOST, &self.host)
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| fail(e.to_string()))?;
        let tcp = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(&self.host),
        )
        .await
        .map_err(|_| fail("connecting timed out".into()))?
        .map_err(|e| fail(e.to_string()))?;
        let answer = match &self.tls {
            None => send(TokioIo::new(tcp), req).await,
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from("membrane-control")
                    .map_err(|e| fail(e.to_string()))?;
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| fail(format!("TLS: {e}")))?;
                send(TokioIo::new(stream), req).await
            }
        }
        .map_err(fail)?;
        let (status, bytes) = answer;
        let value = serde_json::from_slice(&bytes).map_err(|_| ClientError::Answer {
            status,
            text: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
        })?;
        Ok((status, value))
    }
}

async fn send<I>(io: I, req: hyper::Request<Full<Bytes>>) -> Result<(u16, Bytes), String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let exchange = async {
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| "no answer within 30 s".to_owned())?
}
