//! A test PKI for the agents' `wss://` servers: a CA and a server certificate for 127.0.0.1
//! and localhost, made with the `openssl` CLI (the test command installs it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// A CA and a server certificate for 127.0.0.1 and localhost, made with the `openssl` CLI:
/// returns the CA's PEM and the server's TLS acceptor.
pub fn test_pki(dir: &Path) -> (PathBuf, tokio_rustls::TlsAcceptor) {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    std::fs::write(
        dir.join("ca.cnf"),
        "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n\
         [dn]\nCN = earshot test CA\n\
         [v3_ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n\
         subjectKeyIdentifier = hash\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("server.cnf"),
        "[req]\ndistinguished_name = dn\nprompt = no\n\
         [dn]\nCN = localhost\n\
         [v3_server]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1, DNS:localhost\n\
         authorityKeyIdentifier = keyid\n",
    )
    .unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let steps: [Vec<&str>; 3] = [
        [
            &["req", "-x509", "-config", "ca.cnf", "-nodes"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
        ]
        .concat(),
        [
            &["req", "-new", "-config", "server.cnf", "-nodes"][..],
            &ec,
            &["-keyout", "server.key", "-out", "server.csr"],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.cnf",
            "-extensions",
            "v3_server",
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .output()
            .expect("the openssl CLI must be installed");
        assert!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    // Like earshot's client: ring, without post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    (
        dir.join("ca.pem"),
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    )
}
