//! The TLS client settings earshot's outgoing connections share (the agent link's `wss://`
//! and `https://` webhooks): rustls with the ring provider, the webpki roots (Mozilla's CA
//! list, compiled in), plus the certificates of an optional PEM `ca_file` for a private CA.

use std::path::Path;
use std::sync::Arc;

/// Why the TLS client settings could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read CA file {path}: {source}")]
    CaFile {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("CA file {path}: {source}")]
    BadCa { path: String, source: rustls::Error },
    #[error("TLS settings: {0}")]
    Tls(#[from] rustls::Error),
}

/// rustls with the ring provider, the webpki roots and `ca_file`'s certificates.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let shown = || path.display().to_string();
        let certs = CertificateDer::pem_file_iter(path).map_err(|source| TlsError::CaFile {
            path: shown(),
            source,
        })?;
        for cert in certs {
            let cert = cert.map_err(|source| TlsError::CaFile {
                path: shown(),
                source,
            })?;
            roots.add(cert).map_err(|source| TlsError::BadCa {
                path: shown(),
                source,
            })?;
        }
    }
    // ring builds without a C toolchain beyond cc; neither the agent link nor webhooks need
    // post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}
