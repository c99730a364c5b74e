//! An HTTPS server for tests: an axum router served over TLS on `127.0.0.1`, with a
//! self-signed certificate made at start for `127.0.0.1` and `localhost`. No client trusts
//! it until told to: [`TlsServer::cert_pem`] is the certificate to add to a client's roots.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A router served over TLS until dropped.
#[derive(Debug)]
pub struct TlsServer {
    addr: SocketAddr,
    cert_pem: String,
    failed_handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsServer {
    /// Serves `app` on a free port of `127.0.0.1` under a new self-signed certificate.
    ///
    /// # Panics
    /// When the certificate cannot be made or the port cannot be bound.
    pub async fn start(app: axum::Router) -> TlsServer {
        let made = rcgen::generate_simple_self_signed(["127.0.0.1".into(), "localhost".into()])
            .expect("a self-signed certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("default TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![made.cert.der().clone()], key)
            .expect("the certificate and its key");
        let tcp = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = tcp.local_addr().expect("local address");
        let failed_handshakes = Arc::new(AtomicUsize::new(0));
        let listener = Listener {
            tcp,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            failed_handshakes: failed_handshakes.clone(),
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TlsServer {
            addr,
            cert_pem: made.cert.pem(),
            failed_handshakes,
            task,
        }
    }

    /// `https://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// The server's certificate, PEM-encoded: what a client must trust to reach it.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Connections whose TLS handshake did not complete (a client refusing the certificate
    /// is one).
    pub fn failed_handshakes(&self) -> usize {
        self.failed_handshakes.load(Ordering::SeqCst)
    }
}

struct Listener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    failed_handshakes: Arc<AtomicUsize>,
}

impl axum::serve::Listener for Listener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let handshake = self.acceptor.accept(tcp);
            match tokio::time::timeout(Duration::from_secs(10), handshake).await {
                Ok(Ok(tls)) => return (tls, addr),
                _ => {
                    self.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
