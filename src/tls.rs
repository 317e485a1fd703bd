//! TLS server settings from PEM files, with rustls (ring provider): certificate chain,
//! private key, and optionally a client CA, which turns on mutual TLS (clients must then
//! present a certificate that chains to it).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::Deserialize;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// `tls:` of a listener.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// PEM CA certificates; when set, clients must present a certificate signed by one.
    #[serde(default)]
    pub client_ca_file: Option<String>,
}

/// PEM files larger than this are refused: certificate chains and keys are a few KiB,
/// and a path such as `/dev/zero` must not make sieve read forever.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// Reads a PEM file of at most [`MAX_PEM_BYTES`].
fn read_pem(path: &str, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_PEM_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {what} from {path}: {e}"))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!("{path} is larger than {MAX_PEM_BYTES} bytes"));
    }
    Ok(bytes)
}

fn certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_pem(path, "certificates")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM in {path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {path}"));
    }
    Ok(certs)
}

fn private_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(&read_pem(path, "a private key")?)
        .map_err(|e| format!("cannot read a private key from {path}: {e}"))
}

/// Loads the files and builds an acceptor; errors name the file and the problem.
pub fn acceptor(config: &TlsServerConfig) -> Result<TlsAcceptor, String> {
    Ok(TlsAcceptor::from(Arc::new(server_config(config)?)))
}

/// An acceptor for an HTTP listener: ALPN offers HTTP/2 (which gRPC clients require) and
/// HTTP/1.1.
pub fn http_acceptor(config: &TlsServerConfig) -> Result<TlsAcceptor, String> {
    let mut server = server_config(config)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

fn server_config(config: &TlsServerConfig) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&config.cert_file)?;
    let key = private_key(&config.key_file)?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &config.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("invalid CA certificate in {path}: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("client CA {path}: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "{} does not match {}: {e}",
            config.key_file, config.cert_file
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let config = TlsServerConfig {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
            client_ca_file: None,
        };
        let error = acceptor(&config).err().unwrap();
        assert!(error.contains("/nonexistent/cert.pem"), "{error}");
    }

    #[test]
    fn an_endless_file_is_refused_not_read_forever() {
        let config = TlsServerConfig {
            cert_file: "/dev/zero".into(),
            key_file: "/dev/zero".into(),
            client_ca_file: None,
        };
        let error = acceptor(&config).err().unwrap();
        assert!(error.contains("larger than"), "{error}");
    }
}

/// `tls:` of an exporter, with the collector's `configtls` client option names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsClientConfig {
    /// Send in plaintext: required for a gRPC endpoint written without a scheme, which
    /// otherwise means TLS.
    pub insecure: bool,
    /// Verify servers against this PEM CA bundle instead of the built-in Mozilla roots.
    pub ca_file: Option<String>,
    /// Client certificate (PEM) for mutual TLS; needs `key_file`.
    pub cert_file: Option<String>,
    /// Client private key (PEM) for mutual TLS.
    pub key_file: Option<String>,
}

/// The rustls client settings for `config`; errors name the file and the problem.
pub fn client_config(config: &TlsClientConfig) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            for cert in certificates(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("invalid CA certificate in {path}: {e}"))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match (&config.cert_file, &config.key_file) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = certificates(cert)?;
            let key_der = private_key(key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| format!("{key} does not match {cert}: {e}"))
        }
        _ => Err("cert_file and key_file go together".into()),
    }
}
