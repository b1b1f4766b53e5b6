//! TLS interception: imapscope's CA, the configurations of both legs, and the facts of each
//! handshake that go into the transcript.
//!
//! The client leg is a TLS server with certificates minted per name by [`authority`]; the
//! upstream leg is a verifying TLS client ([`upstream`]); [`diagnose`] says why a handshake
//! failed. Handshakes themselves run in the relay; nothing here reads a socket.

pub mod authority;
pub mod diagnose;
pub mod upstream;

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::CertificateDer;
use sha2::Digest;

pub use authority::{Authority, AuthorityError, Created, MintingResolver};
pub use upstream::{UpstreamTlsError, UpstreamTrust};

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

/// aws-lc-rs's suites with AES-128-GCM first, as Firefox, Thunderbird and Chrome order them:
/// every byte is decrypted on one leg and encrypted on the other, and AES-128 costs about 30%
/// less per pass than AES-256. aws-lc rather than ring because its AES-GCM uses this class of
/// CPU's AVX-512 (VAES) code: 14 against 9 GB/s per core for AES-128-GCM, 9 against 6 for
/// AES-256 (16 KiB records, measured here); the two passes were a third of a TLS relay's CPU.
/// A client that prefers another suite still gets it on its leg; the transcript records what
/// each leg used.
fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
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
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string(),
        cipher: common
            .negotiated_cipher_suite()
            .and_then(|c| c.suite().as_str())
            .unwrap_or_default()
            .to_string(),
        sni: sni.map(String::from),
        alpn: common
            .alpn_protocol()
            .map(|a| String::from_utf8_lossy(a).into_owned()),
        subject: None,
        issuer: None,
        sans: Vec::new(),
        sha256: None,
        verified: None,
    };
    if let Some(der) = certificate {
        let cert = upstream::CertFacts::of(der);
        record.sha256 = Some(cert.sha256);
        record.subject = cert.subject;
        record.issuer = cert.issuer;
        record.sans = cert.names;
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
