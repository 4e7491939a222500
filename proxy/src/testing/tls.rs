//! TLS fixtures: a PKI made on the spot (root, intermediate, leaves of every kind a test
//! needs), a TLS upstream that can demand client certificates, and a TLS client.

use super::respond;
use crate::tls::devca::{DevCa, Issued, LeafSpec};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;

/// A root CA, an intermediate under it, and a directory to write PEM files into.
pub struct Pki {
    pub dir: PathBuf,
    pub root: DevCa,
    pub intermediate: DevCa,
}

impl Pki {
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let root = DevCa::new("test root", Duration::from_secs(86_400 * 30)).unwrap();
        let intermediate = root
            .intermediate("test intermediate", Duration::from_secs(86_400 * 30))
            .unwrap();
        let pki = Self {
            dir: dir.to_owned(),
            root,
            intermediate,
        };
        std::fs::write(pki.dir.join("root.pem"), pki.root.cert_pem()).unwrap();
        pki
    }

    /// The root's certificate file (the trust bundle).
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("root.pem")
    }

    /// Issues from the root and writes `<name>.pem` (leaf) and `<name>-key.pem`.
    pub fn leaf(&self, name: &str, spec: &LeafSpec) -> (PathBuf, PathBuf) {
        let issued = self.root.issue(spec).unwrap();
        self.write(name, &issued, None)
    }

    /// Issues from the intermediate; the chain file holds the intermediate too when
    /// `with_chain`.
    pub fn leaf_via_intermediate(
        &self,
        name: &str,
        spec: &LeafSpec,
        with_chain: bool,
    ) -> (PathBuf, PathBuf) {
        let issued = self.intermediate.issue(spec).unwrap();
        let chain = with_chain.then(|| self.intermediate.cert_pem().to_owned());
        self.write(name, &issued, chain)
    }

    pub fn write(&self, name: &str, issued: &Issued, chain: Option<String>) -> (PathBuf, PathBuf) {
        let cert = self.dir.join(format!("{name}.pem"));
        let key = self.dir.join(format!("{name}-key.pem"));
        let mut pem = issued.cert_pem.clone();
        if let Some(c) = chain {
            pem.push_str(&c);
        }
        write_atomically(&cert, pem.as_bytes());
        write_atomically(&key, issued.key_pem.as_bytes());
        (cert, key)
    }
}

/// Writes a file by rename, as cert-manager and editors do, so a reader never sees half.
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn load_certs(file: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(file)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

pub fn load_key(file: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(file).unwrap()
}

fn roots(bundle: &Path) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for c in load_certs(bundle) {
        roots.add(c).unwrap();
    }
    roots
}

/// A client config trusting `bundle`, presenting `client` when given, offering `alpn`, and
/// limited to `versions`.
pub fn client_config(
    bundle: &Path,
    client: Option<(&Path, &Path)>,
    alpn: &[&str],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let b = ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots(bundle));
    let mut c = match client {
        Some((cert, key)) => b
            .with_client_auth_cert(load_certs(cert), load_key(key))
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    c.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    Arc::new(c)
}

pub type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Connects and completes the client's side of the handshake.
pub async fn connect(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> std::io::Result<ClientStream> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// A response read over TLS.
pub struct TlsReply {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

/// One GET over an established TLS connection, HTTP/2 when ALPN chose it. An error means
/// the server ended the connection (as after refusing a TLS 1.3 client certificate, which
/// the client learns only once it reads).
pub async fn get_over(
    stream: ClientStream,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<TlsReply, String> {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let mut b = Request::get(path).header("host", "test.local");
    if h2 {
        b = Request::get(format!("https://test.local{path}"));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::new())).unwrap();
    let io = TokioIo::new(stream);
    let resp = if h2 {
        let (mut s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        s.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut s, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        s.send_request(req).await.map_err(|e| e.to_string())?
    };
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(TlsReply {
        status: parts.status,
        headers: parts.headers,
        body,
        version: parts.version,
    })
}

/// An upstream that speaks TLS (HTTP/1.1 and HTTP/2 by ALPN) with the fixture's echo
/// behaviour; with `client_bundle`, it demands a client certificate chained to it.
pub struct TlsUpstream {
    pub addr: SocketAddr,
    served: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsUpstream {
    pub async fn start(name: &str, cert: &Path, key: &Path, client_bundle: Option<&Path>) -> Self {
        let provider = crate::tls::provider();
        let b = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let b = match client_bundle {
            Some(bundle) => b.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots(bundle)),
                    provider,
                )
                .build()
                .unwrap(),
            ),
            None => b.with_no_client_auth(),
        };
        let mut config = b.with_single_cert(load_certs(cert), load_key(key)).unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let (n, s) = (name.to_owned(), served.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (n, s, acceptor) = (n.clone(), s.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = service_fn(move |req| {
                        s.fetch_add(1, Ordering::Relaxed);
                        respond(n.clone(), req)
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self { addr, served, task }
    }

    pub fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub use crate::tls::devca::LeafSpec as Leaf;
