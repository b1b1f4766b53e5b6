//! TLS interception: imapscope's CA, the configurations of both legs, and the facts of each
//! handshake that go into the transcript.
//!
//! The client leg is a TLS server with certificates minted per name by [`authority`]; the
//! upstream leg is a verifying TLS client ([`upstream_config`]). Handshakes themselves run in
//! the relay; nothing here reads a socket.

pub mod authority;

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::Digest;

pub use authority::{Authority, AuthorityError, Created, MintingResolver};

use crate::transcript::format::TlsRecord;

/// How one leg speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMode {
    /// Plain TCP throughout.
    None,
    /// Plain until STARTTLS, then TLS.
    Starttls,
    /// TLS from the first byte (port 993).
    Tls,
}

/// ring's suites with AES-128-GCM first, as Firefox, Thunderbird and Chrome order them: every
/// byte is decrypted on one leg and encrypted on the other, and AES-128 costs about 30% less
/// per pass than AES-256 (3.3 against 2.3 GB/s per core here, `openssl speed`). A client that
/// prefers another suite still gets it on its leg; the transcript records what each leg used.
fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// SHA-256 of a DER certificate, as `AB:CD:...`.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = sha2::Sha256::digest(der);
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The TLS server configuration of the client leg: certificates minted per SNI.
pub fn client_leg_config(
    authority: Arc<Authority>,
    default_name: &str,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(MintingResolver {
            authority,
            default_name: default_name.to_string(),
        }));
    config.key_log = Arc::new(rustls::KeyLogFile::new());
    Ok(Arc::new(config))
}

/// Why the upstream configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("{path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// The TLS client configuration of the upstream leg: verifying against the Mozilla roots plus
/// `extra_ca` (PEM), or not verifying at all when `insecure`.
pub fn upstream_config(
    extra_ca: Option<&Path>,
    insecure: bool,
) -> Result<Arc<ClientConfig>, UpstreamTlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = extra_ca {
            use rustls_pki_types::pem::PemObject;
            let shown = path.display().to_string();
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| UpstreamTlsError::CaFile {
                    path: shown.clone(),
                    reason: e.to_string(),
                })?
                .collect::<Result<_, _>>()
                .map_err(|e| UpstreamTlsError::CaFile {
                    path: shown.clone(),
                    reason: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(UpstreamTlsError::CaFile {
                    path: shown,
                    reason: "no PEM certificate in it".into(),
                });
            }
            for cert in certs {
                roots.add(cert).map_err(|e| UpstreamTlsError::CaFile {
                    path: shown.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.key_log = Arc::new(rustls::KeyLogFile::new());
    Ok(Arc::new(config))
}

/// `--insecure-upstream`: accepts any certificate, still checks handshake signatures.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The host part of `HOST:PORT` (brackets of an IPv6 literal removed).
pub fn host_of(upstream: &str) -> &str {
    let host = upstream.rsplit_once(':').map_or(upstream, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// What the transcript says about a finished handshake.
pub fn facts(
    leg: &str,
    t_us: u64,
    common: &rustls::CommonState,
    sni: Option<&str>,
    certificate: Option<&CertificateDer<'_>>,
) -> TlsRecord {
    let mut record = TlsRecord {
        t_us,
        leg: leg.to_string(),
        version: common
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default(),
        cipher: common
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_default(),
        sni: sni.map(String::from),
        alpn: common
            .alpn_protocol()
            .map(|a| String::from_utf8_lossy(a).into_owned()),
        subject: None,
        issuer: None,
        sans: Vec::new(),
        sha256: None,
    };
    if let Some(der) = certificate {
        record.sha256 = Some(fingerprint(der));
        if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) {
            record.subject = Some(cert.subject().to_string());
            record.issuer = Some(cert.issuer().to_string());
            if let Ok(Some(san)) = cert.subject_alternative_name() {
                record.sans = san
                    .value
                    .general_names
                    .iter()
                    .map(|name| match name {
                        x509_parser::extensions::GeneralName::DNSName(d) => format!("DNS:{d}"),
                        x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                            4 => format!(
                                "IP:{}",
                                std::net::Ipv4Addr::from(
                                    <[u8; 4]>::try_from(*ip).unwrap_or([0; 4])
                                )
                            ),
                            16 => format!(
                                "IP:{}",
                                std::net::Ipv6Addr::from(
                                    <[u8; 16]>::try_from(*ip).unwrap_or([0; 16])
                                )
                            ),
                            _ => "IP:?".to_string(),
                        },
                        other => other.to_string(),
                    })
                    .collect();
            }
        }
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_upstream() {
        assert_eq!(host_of("imap.example.com:993"), "imap.example.com");
        assert_eq!(host_of("[::1]:143"), "::1");
        assert_eq!(host_of("127.0.0.1:143"), "127.0.0.1");
    }

    #[test]
    fn fingerprint_format() {
        let f = fingerprint(b"abc");
        assert!(f.starts_with("BA:78:16:BF"));
        assert_eq!(f.len(), 32 * 3 - 1);
    }
}
