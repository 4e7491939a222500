//! The gateway's end of the control channel: `https://` is TLS (the control server's chain
//! checked against the CA bundle the gateway was given, then its SPIFFE ID), and the
//! gateway's own certificate is shown once it has one. `http://` is plaintext and is
//! accepted only when the operator said so (`--insecure-xds`); nothing is ever downgraded.

use membrane_identity::channel::{self, ChannelError, Rotating};
use membrane_identity::verify::Expect;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tonic::codegen::Service;
use tonic::transport::{Channel, Endpoint, Uri};

/// The path of the control server's SPIFFE ID (`membrane control` names itself so).
pub use membrane_identity::CONTROL_PATH;

/// How a gateway reaches its control server.
#[derive(Debug, Clone)]
pub enum Security {
    /// `https://`: verify the control server against these roots and `expect`.
    Tls { bundle_pem: String, expect: Expect },
    /// `http://` with `--insecure-xds`.
    Plaintext,
}

/// Why the control channel could not be set up (not: why a connection failed).
#[derive(Debug, thiserror::Error)]
pub enum ChannelSetupError {
    #[error(
        "`{0}` is plaintext: the control channel would carry the gateway's policy unauthenticated. Use https:// (with --xds-ca), or pass --insecure-xds to accept that"
    )]
    PlaintextRefused(String),
    #[error("`{0}` is https://: give the CA bundle that signs the control server (--xds-ca)")]
    NoBundle(String),
    #[error("--insecure-xds is for http:// only; `{0}` asks for TLS")]
    InsecureHttps(String),
    #[error("`{url}` is not a control server URL: {why}")]
    Url { url: String, why: String },
    #[error("control channel TLS: {0}")]
    Tls(#[from] ChannelError),
}

/// Checks a URL against the security asked for: `https` needs a bundle, `http` needs
/// `--insecure-xds`, and the two never mix.
pub fn security(
    url: &str,
    bundle_pem: Option<String>,
    expect: Option<Expect>,
    insecure: bool,
) -> Result<Security, ChannelSetupError> {
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| ChannelSetupError::Url {
            url: url.to_owned(),
            why: e.to_string(),
        })?;
    match (uri.scheme_str(), insecure, bundle_pem) {
        (Some("https"), true, _) => Err(ChannelSetupError::InsecureHttps(url.to_owned())),
        (Some("https"), false, Some(bundle_pem)) => Ok(Security::Tls {
            bundle_pem,
            expect: expect.unwrap_or_else(|| Expect::Path(CONTROL_PATH.to_owned())),
        }),
        (Some("https"), false, None) => Err(ChannelSetupError::NoBundle(url.to_owned())),
        (Some("http"), true, _) => Ok(Security::Plaintext),
        (Some("http"), false, _) => Err(ChannelSetupError::PlaintextRefused(url.to_owned())),
        (other, _, _) => Err(ChannelSetupError::Url {
            url: url.to_owned(),
            why: format!(
                "the scheme is {}; use https:// (or http:// with --insecure-xds)",
                other.unwrap_or("missing")
            ),
        }),
    }
}

/// A gRPC channel to `url`, showing `own` when given and the channel is TLS.
pub async fn connect(
    url: &str,
    security: &Security,
    own: Option<Arc<Rotating>>,
) -> Result<Channel, ConnectError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(ConnectError::Transport)?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    match security {
        Security::Plaintext => endpoint.connect().await.map_err(ConnectError::Transport),
        Security::Tls { bundle_pem, expect } => {
            let roots = channel::roots(bundle_pem)?;
            let config = channel::client_config(roots, expect.clone(), own)?;
            endpoint
                .connect_with_connector(TlsConnector(Arc::new(config)))
                .await
                .map_err(ConnectError::Transport)
        }
    }
}

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Transport(tonic::transport::Error),
    #[error("control channel TLS: {0}")]
    Tls(#[from] ChannelError),
}

impl ConnectError {
    /// The innermost cause, for a log line that says what went wrong (tonic's own message
    /// is only "transport error").
    pub fn detail(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            out.push_str(": ");
            out.push_str(&s.to_string());
            source = s.source();
        }
        out
    }
}

#[derive(Clone)]
struct TlsConnector(Arc<ClientConfig>);

type Connected = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl Service<Uri> for TlsConnector {
    type Response = Connected;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Connected>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.0.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            // The name is not what is verified (the SPIFFE ID is); it is sent as SNI.
            let name = ServerName::try_from(host)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}
