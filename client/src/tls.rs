//! TLS (rustls) for the client: a [`Connector`] that wraps each TCP
//! connection in a TLS session verified against the given CA.
//!
//! ```no_run
//! # async fn f() -> ringcache_client::Result<()> {
//! use std::sync::Arc;
//! let tls = ringcache_client::TlsConnector::from_pem_files("ca.crt", None, None).expect("TLS files");
//! let opts = ringcache_client::Options { connector: Some(Arc::new(tls)), ..Default::default() };
//! let client = ringcache_client::Client::with_options(["cache.example:6380"], opts).await?;
//! # let _ = client; Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls;

use crate::conn::{Connecting, Connector, Stream};

/// Opens TLS connections (TCP_NODELAY, then the handshake).
#[derive(Clone)]
pub struct TlsConnector {
    inner: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().map_err(|e| format!("{}: {e}", path.display()))
}

impl TlsConnector {
    /// Trusts the CA certificates in `ca` (PEM); presents `cert`/`key` when
    /// the server asks for a client certificate. The server's certificate
    /// must name `server_name` (default: the address connected to).
    pub fn from_pem_files(
        ca: impl AsRef<Path>,
        client: Option<(&Path, &Path)>,
        server_name: Option<&str>,
    ) -> Result<TlsConnector, String> {
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(ca.as_ref())? {
            roots.add(c).map_err(|e| e.to_string())?;
        }
        // ring (see the server's net/tls.rs for why not aws-lc-rs).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
                builder.with_client_auth_cert(certs(cert)?, key).map_err(|e| e.to_string())?
            }
        };
        let server_name = match server_name {
            Some(n) => Some(ServerName::try_from(n.to_string()).map_err(|e| format!("server name {n}: {e}"))?),
            None => None,
        };
        Ok(TlsConnector { inner: tokio_rustls::TlsConnector::from(Arc::new(config)), server_name })
    }
}

impl Connector for TlsConnector {
    fn connect(&self, addr: SocketAddr) -> Connecting<'_> {
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let name = self.server_name.clone().unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
            let tls = self.inner.connect(name, tcp).await?;
            Ok(Box::new(tls) as Box<dyn Stream>)
        })
    }
}
