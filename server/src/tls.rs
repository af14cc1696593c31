//! TLS for clients and (with `--tls-cluster yes`) for peer links (rustls,
//! no OpenSSL), with Redis's flag names:
//! `--tls-port`, `--tls-cert-file`, `--tls-key-file`, `--tls-ca-cert-file`,
//! `--tls-auth-clients yes|no|optional`.
//!
//! The acceptor's configuration is replaced whole when the files change:
//! on SIGHUP, and when a file's modification time moves (checked every
//! `POLL`). A new handshake uses the newest configuration; connections
//! already open keep theirs. A reload that fails (a half-written file, a
//! key that does not match) keeps the previous configuration and logs why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tokio_rustls::rustls;
use tracing::{info, warn};

use crate::config::{Config, TlsAuthClients};

const POLL: Duration = Duration::from_secs(5);

/// The files a TLS configuration is built from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
    pub auth_clients: TlsAuthClients,
}

impl TlsFiles {
    pub fn of(config: &Config) -> Option<TlsFiles> {
        config.tls_port?;
        Some(TlsFiles {
            cert: config.tls_cert_file.clone()?,
            key: config.tls_key_file.clone()?,
            ca: config.tls_ca_cert_file.clone(),
            auth_clients: config.tls_auth_clients,
        })
    }

    /// The files of `--tls-cluster` (the same certificate, key and CA).
    pub fn of_cluster(config: &Config) -> Option<TlsFiles> {
        if !config.tls_cluster {
            return None;
        }
        Some(TlsFiles {
            cert: config.tls_cert_file.clone()?,
            key: config.tls_key_file.clone()?,
            ca: config.tls_ca_cert_file.clone(),
            auth_clients: TlsAuthClients::Yes,
        })
    }

    fn paths(&self) -> Vec<&Path> {
        let mut v = vec![self.cert.as_path(), self.key.as_path()];
        v.extend(self.ca.as_deref());
        v
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The certificates in a PEM file (at least one).
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|e| format!("{}: no usable private key: {e}", path.display()))
}

/// The trust roots in a PEM file.
pub fn roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(path)? {
        roots.add(c).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// ring, not aws-lc-rs: it builds with a C compiler alone (aws-lc-rs
/// wants cmake and minutes more per build). rustls marks ring's provider
/// deprecated because it has no post-quantum key exchange.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server configuration the files describe.
pub fn server_config(f: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match (&f.ca, f.auth_clients) {
        (_, TlsAuthClients::No) => builder.with_no_client_auth(),
        (None, _) => return Err("tls-auth-clients yes/optional needs --tls-ca-cert-file".into()),
        (Some(ca), auth) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider);
            let verifier = if auth == TlsAuthClients::Optional { verifier.allow_unauthenticated() } else { verifier };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| e.to_string())?)
        }
    };
    let mut config = builder
        .with_single_cert(certs(&f.cert)?, key(&f.key)?)
        .map_err(|e| format!("certificate and key do not go together: {e}"))?;
    // RESP has no ALPN id; clients that send none are served.
    config.alpn_protocols.clear();
    Ok(Arc::new(config))
}

/// The current acceptor configuration, replaced on reload.
#[derive(Debug)]
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<rustls::ServerConfig>>,
    stamps: RwLock<Vec<Option<SystemTime>>>,
}

fn stamps(f: &TlsFiles) -> Vec<Option<SystemTime>> {
    f.paths().iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
}

impl Tls {
    /// Loads the files once; an error here stops the node from starting.
    pub fn load(files: TlsFiles) -> Result<Tls, String> {
        let config = server_config(&files)?;
        Ok(Tls { stamps: RwLock::new(stamps(&files)), current: RwLock::new(config), files })
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }

    /// Builds the configuration again from the files; keeps the old one if
    /// that fails. Whether it changed.
    pub fn reload(&self, why: &str) -> bool {
        *self.stamps.write().unwrap_or_else(std::sync::PoisonError::into_inner) = stamps(&self.files);
        match server_config(&self.files) {
            Ok(c) => {
                *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = c;
                info!(why, cert = %self.files.cert.display(), "TLS certificates reloaded");
                true
            }
            Err(e) => {
                warn!(why, error = %e, "TLS reload failed: still serving the previous certificates");
                false
            }
        }
    }

    fn changed(&self) -> bool {
        *self.stamps.read().unwrap_or_else(std::sync::PoisonError::into_inner) != stamps(&self.files)
    }
}

/// Reloads on SIGHUP and when a file's modification time moves: the
/// client port's configuration, and the peer links' (`--tls-cluster`;
/// links already up keep their session, new ones use the new files).
pub async fn watch_files(
    config: Arc<Config>,
    cluster: Arc<RwLock<Option<ClusterTls>>>,
    client: Option<Arc<Tls>>,
    mut stop: watch::Receiver<bool>,
) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let cluster_files = TlsFiles::of_cluster(&config);
    let mut cluster_stamps = cluster_files.as_ref().map(stamps);
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<Option<()>>();
        let why = tokio::select! {
            _ = tick.tick() => "file changed",
            _ = hangup => "SIGHUP",
            _ = stop.changed() => return,
        };
        let forced = why == "SIGHUP";
        if let Some(tls) = &client
            && (forced || tls.changed())
        {
            tls.reload(why);
        }
        if let Some(files) = &cluster_files {
            let now = stamps(files);
            if forced || cluster_stamps.as_ref() != Some(&now) {
                cluster_stamps = Some(now);
                match ClusterTls::load(&config) {
                    Ok(c) => {
                        *cluster.write().unwrap_or_else(std::sync::PoisonError::into_inner) = c;
                        info!(why, "peer-link TLS certificates reloaded");
                    }
                    Err(e) => {
                        warn!(why, error = %e, "peer-link TLS reload failed: still using the previous certificates")
                    }
                }
            }
        }
    }
}

/// Mutual TLS for peer links (`--tls-cluster yes`): every node presents
/// its certificate (the `--tls-cert-file`/`--tls-key-file` pair) and
/// accepts only certificates signed by `--tls-ca-cert-file` that name the
/// address the other side connects from or to.
#[derive(Clone)]
pub struct ClusterTls {
    pub connector: tokio_rustls::TlsConnector,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTls(..)")
    }
}

impl ClusterTls {
    pub fn load(config: &Config) -> Result<Option<ClusterTls>, String> {
        let Some(files) = TlsFiles::of_cluster(config) else { return Ok(None) };
        let (cert, key, ca) = (&files.cert, &files.key, files.ca.as_deref().ok_or("tls-cluster needs a CA file")?);
        let server = server_config(&files)?;
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots(ca)?)
            .with_client_auth_cert(certs(cert)?, self::key(key)?)
            .map_err(|e| format!("certificate and key do not go together: {e}"))?;
        Ok(Some(ClusterTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            acceptor: tokio_rustls::TlsAcceptor::from(server),
        }))
    }
}

/// Whether the first of `certs` (already verified against the CA) names
/// `ip`: a member may only speak for the address it connects from.
pub fn names_address(certs: Option<&[CertificateDer<'_>]>, ip: std::net::IpAddr) -> bool {
    let Some(first) = certs.and_then(|c| c.first()) else { return false };
    let Ok(cert) = webpki::EndEntityCert::try_from(first) else { return false };
    cert.verify_is_valid_for_subject_name(&rustls_pki_types::ServerName::IpAddress(ip.into())).is_ok()
}
