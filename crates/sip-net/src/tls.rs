//! TLS configuration for the TLS and WSS transports: server certificates from PEM
//! files, a self-signed certificate for tests and for `serve` without a configured one,
//! and a client configuration that trusts given certificates.
//!
//! Everything uses rustls's `ring` provider explicitly rather than the process-wide
//! default, so that another crate in the binary enabling a second provider cannot turn
//! `builder()` into a panic.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why TLS could not be set up; each names the file or the step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds no usable item.
    #[error("cannot read {what} from {path}: {reason}")]
    Pem {
        /// "certificate chain" or "private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        reason: String,
    },
    /// rustls refused the configuration (key does not match the certificate, say).
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// Certificate generation failed.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration from a PEM certificate chain (leaf first) and a PEM private
/// key (PKCS#8, PKCS#1 or SEC1).
pub fn server_config_from_pem_files(
    cert_chain: &Path,
    key: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert_chain)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem {
            what: "certificate chain",
            path: cert_chain.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: "certificate chain",
            path: cert_chain.to_owned(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
        what: "private key",
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    server_config(certs, key_der)
}

/// A server configuration from certificates and key already in memory.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// A client configuration trusting exactly `roots` (a test CA, a self-signed peer,
/// or a system bundle the caller loaded).
pub fn client_config(
    roots: impl IntoIterator<Item = CertificateDer<'static>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in roots {
        store.add(cert)?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A freshly generated self-signed certificate and what can be built from it.
pub struct SelfSigned {
    /// The certificate, PEM encoded (to write to a file or show to a user).
    pub cert_pem: String,
    /// The private key, PEM encoded.
    pub key_pem: String,
    /// The certificate, DER encoded (to trust it with [`client_config`]).
    pub cert_der: CertificateDer<'static>,
    /// A server configuration presenting it.
    pub server_config: Arc<ServerConfig>,
}

impl std::fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("SelfSigned")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// Generates a self-signed certificate for `names` (DNS names or IP addresses, e.g.
/// `["localhost", "127.0.0.1"]`; the first is also its common name). Peers will not trust
/// it unless told to: it is for tests and for `serve` with no certificate configured.
pub fn self_signed(names: &[&str]) -> Result<SelfSigned, TlsError> {
    let owned: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let mut params = rcgen::CertificateParams::new(owned)?;
    // What an admin sees in `openssl x509 -text` or a phone's trust dialog.
    let common_name = format!("{} (self-signed)", names.first().copied().unwrap_or("SIP"));
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let signing_key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&signing_key)?;
    let cert_der = cert.der().clone();
    let key_der = PrivateKeyDer::try_from(signing_key.serialize_der())
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_owned())))?;
    let server_config = server_config(vec![cert_der.clone()], key_der)?;
    Ok(SelfSigned {
        cert_pem: cert.pem(),
        key_pem: signing_key.serialize_pem(),
        cert_der,
        server_config,
    })
}

/// Checks that a client trusting exactly `cert` accepts it, now, from a server it
/// reached as `name` (a DNS name or an IP address): the check a phone given the file
/// with `--ca` makes. `Err` says why not (a name it does not cover, an expired date).
pub fn check_self_signed_for(cert: &CertificateDer<'static>, name: &str) -> Result<(), String> {
    use rustls::client::danger::ServerCertVerifier as _;
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).map_err(|e| e.to_string())?;
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| e.to_string())?;
    let server_name = rustls::pki_types::ServerName::try_from(name.to_owned())
        .map_err(|e| format!("\"{name}\": {e}"))?;
    verifier
        .verify_server_cert(
            cert,
            &[],
            &server_name,
            &[],
            rustls::pki_types::UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_self_signed_certificate_serves_its_names_and_addresses_only() {
        let ss = self_signed(&["sip.example.test", "localhost", "127.0.0.1", "::1"]).unwrap();
        for name in ["sip.example.test", "localhost", "127.0.0.1", "::1"] {
            check_self_signed_for(&ss.cert_der, name).unwrap();
        }
        for name in ["other.example.test", "127.0.0.2", "::2"] {
            let e = check_self_signed_for(&ss.cert_der, name).unwrap_err();
            assert!(e.contains("not valid for name"), "{name}: {e}");
        }
        assert!(ss.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(ss.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    }
}
