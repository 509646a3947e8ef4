//! TLS with rustls, both ways: terminating callers' TLS (`[server.tls]`: a PEM certificate chain and
//! key, re-read when the files change, each new pair checked before it replaces the old one, so a bad
//! rotation never takes the listener down), and the trust roots of upstream connections (the system's,
//! or a backend's own `ca_file` bundle). Loading is plain functions over bytes; `watch` is the only
//! task.

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the certificate and key files are checked for a change when the config does not say.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// The crypto provider used everywhere (ring, as hyper-rustls is built with).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM certificate chain (leaf first) and its private key, and checks that they belong
/// together. Errors name what is wrong, never the key material.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain = certificates(cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => "the private key does not belong to the certificate".to_owned(),
        e => format!("unusable certificate or key: {e}"),
    })
}

/// Every certificate in a PEM bundle; at least one.
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in the file".to_owned());
    }
    Ok(certs)
}

/// The trust roots of a `ca_file` bundle: every certificate in it must be a usable CA certificate.
pub fn root_store(pem: &[u8]) -> Result<rustls::RootCertStore, String> {
    let mut store = rustls::RootCertStore::empty();
    for (i, cert) in certificates(pem)?.into_iter().enumerate() {
        store.add(cert).map_err(|e| format!("certificate {} is not a usable CA certificate: {e}", i + 1))?;
    }
    Ok(store)
}

/// Reads the pair of files and parses them; errors start with the file at fault.
pub fn load_pair(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, String> {
    let cert = std::fs::read(cert_file).map_err(|e| format!("{}: {e}", cert_file.display()))?;
    let key = std::fs::read(key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
    certified_key(&cert, &key)
}

/// The certificate the listener presents: swapped whole by `watch`, read lock-free per handshake.
#[derive(Debug)]
pub struct Resolver {
    current: ArcSwap<CertifiedKey>,
}

impl Resolver {
    pub fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(Resolver { current: ArcSwap::from_pointee(key) })
    }

    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The listener's rustls config: TLS 1.2 and 1.3, ALPN h2 and http/1.1, certificate from `resolver`.
pub fn server_config(resolver: Arc<Resolver>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Re-reads the certificate and key every `every` when either file changed; a pair that parses and
/// matches replaces the served one for new connections (open ones keep theirs), anything else is
/// logged and counted and the old pair stays. `reloads` counts by result (`ok`, `error`).
pub async fn watch(
    resolver: Arc<Resolver>,
    cert_file: PathBuf,
    key_file: PathBuf,
    every: Duration,
    reloads: prometheus::IntCounterVec,
    shutdown: CancellationToken,
) {
    let stamp = crate::sources::stamp;
    let mut last = (stamp(&cert_file), stamp(&key_file));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
        let now = (stamp(&cert_file), stamp(&key_file));
        if now == last {
            continue;
        }
        last = now;
        match load_pair(&cert_file, &key_file) {
            Ok(key) => {
                resolver.replace(key);
                reloads.with_label_values(&["ok"]).inc();
                tracing::info!(cert = %cert_file.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                // A rotation may write the two files one after the other: the next change retries.
                reloads.with_label_values(&["error"]).inc();
                tracing::error!(error = %e, "TLS certificate not reloaded; still serving the previous one");
            }
        }
    }
}
