//! Whom imapscope believes on the upstream leg, and why it refused a certificate.
//!
//! Public servers chain to a CA in the Mozilla roots. Private servers mostly present a
//! certificate they made themselves, and OpenSSL 3's `openssl req -x509` marks it CA:TRUE,
//! which webpki will not take as a server's certificate (`CaUsedAsEndEntity`); curl, Python
//! and Thunderbird accept it as its own trust anchor. So a certificate is also accepted when it
//! is *pinned*: byte-identical to one in `--upstream-ca`, or with the SHA-256 fingerprint given
//! by `--upstream-fingerprint`, whatever its extensions. A pin by file is still held to the
//! name and dates, as curl holds a `--cacert` anchor; a pin by fingerprint names this one
//! certificate and is held to nothing else, like a Thunderbird exception.
//!
//! A refusal carries what a person needs to decide: the certificate's fingerprint, subject,
//! issuer, names and dates, and the exact option that would accept it ([`Refusal`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::Digest;

use super::{fingerprint, provider};

/// Why the upstream configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("{path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error(
        "--upstream-fingerprint {0:?}: not a SHA-256 fingerprint (64 hex digits, colons \
         allowed, as `SHA256:AB:CD:...` or openssl's `sha256 Fingerprint=AB:CD:...`)"
    )]
    Fingerprint(String),
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// How the upstream's certificate is trusted: see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTrust {
    /// `--upstream-ca`: its path and certificates.
    ca_file: Option<(PathBuf, Vec<CertificateDer<'static>>)>,
    /// `--upstream-fingerprint`: SHA-256 digests.
    fingerprints: Vec<[u8; 32]>,
    /// `--insecure-upstream`.
    insecure: bool,
}

impl UpstreamTrust {
    /// Reads `ca_file` (PEM) and parses `fingerprints`.
    pub fn new(
        ca_file: Option<&Path>,
        fingerprints: &[String],
        insecure: bool,
    ) -> Result<UpstreamTrust, UpstreamTlsError> {
        let ca_file = match ca_file {
            Some(path) => Some((path.to_path_buf(), read_pem(path)?)),
            None => None,
        };
        let fingerprints = fingerprints
            .iter()
            .map(|f| parse_fingerprint(f).ok_or_else(|| UpstreamTlsError::Fingerprint(f.clone())))
            .collect::<Result<_, _>>()?;
        Ok(UpstreamTrust {
            ca_file,
            fingerprints,
            insecure,
        })
    }

    /// Trusting `ca_file` besides the Mozilla roots.
    pub fn ca(ca_file: &Path) -> Result<UpstreamTrust, UpstreamTlsError> {
        UpstreamTrust::new(Some(ca_file), &[], false)
    }

    /// The TLS client configuration of the upstream leg.
    pub fn config(&self) -> Result<Arc<ClientConfig>, UpstreamTlsError> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let verifier: Arc<dyn ServerCertVerifier> = if self.insecure {
            Arc::new(NoVerification(provider))
        } else {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some((path, certs)) = &self.ca_file {
                for cert in certs {
                    roots
                        .add(cert.clone())
                        .map_err(|e| UpstreamTlsError::CaFile {
                            path: path.display().to_string(),
                            reason: super::diagnose::rustls_error(&e),
                        })?;
                }
            }
            let chains = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| UpstreamTlsError::CaFile {
                    path: "the trusted roots".into(),
                    reason: e.to_string(),
                })?;
            Arc::new(PinningVerifier {
                chains,
                trust: self.clone(),
            })
        };
        let mut config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.key_log = Arc::new(rustls::KeyLogFile::new());
        Ok(Arc::new(config))
    }

    /// How a certificate the handshake accepted was trusted, for the transcript's `tls` line.
    pub fn verified_by(&self, der: &[u8]) -> String {
        if self.insecure {
            return "not verified (--insecure-upstream)".into();
        }
        if self.pinned_by_fingerprint(der) {
            return "pinned by --upstream-fingerprint".into();
        }
        if let Some(path) = self.pinned_by_file(der) {
            return format!(
                "pinned: byte-identical to a certificate in --upstream-ca {}",
                path.display()
            );
        }
        "chains to a trusted CA".into()
    }

    fn pinned_by_fingerprint(&self, der: &[u8]) -> bool {
        let digest: [u8; 32] = sha2::Sha256::digest(der).into();
        self.fingerprints.contains(&digest)
    }

    fn pinned_by_file(&self, der: &[u8]) -> Option<&Path> {
        let (path, certs) = self.ca_file.as_ref()?;
        certs
            .iter()
            .any(|c| c.as_ref() == der)
            .then_some(path.as_path())
    }
}

fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, UpstreamTlsError> {
    use rustls_pki_types::pem::PemObject;
    let shown = path.display().to_string();
    let failed = |reason: String| UpstreamTlsError::CaFile {
        path: shown.clone(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| failed(pem_error(&e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| failed(pem_error(&e)))?;
    if certs.is_empty() {
        return Err(failed(
            "no PEM certificate in it (a file of `-----BEGIN CERTIFICATE-----` blocks)".into(),
        ));
    }
    Ok(certs)
}

fn pem_error(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::Io(e) => e.to_string(),
        Error::NoItemsFound => "no PEM certificate in it".into(),
        _ => "not a readable PEM file".into(),
    }
}

/// `SHA256:AB:CD:...`, `sha256 Fingerprint=AB:CD:...`, or 64 hex digits.
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let lower = text.to_ascii_lowercase();
    let hex = ["sha256 fingerprint=", "sha256:", "sha-256:"]
        .iter()
        .find_map(|p| lower.strip_prefix(p))
        .unwrap_or(&lower);
    let digits: Vec<u8> = hex.bytes().filter(|&b| b != b':').collect();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// Chains to a trusted CA, or is pinned. See the module documentation.
#[derive(Debug)]
struct PinningVerifier {
    chains: Arc<WebPkiServerVerifier>,
    trust: UpstreamTrust,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.trust.pinned_by_fingerprint(end_entity) {
            return Ok(ServerCertVerified::assertion());
        }
        let refuse = |reason: Reason| {
            rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                Arc::new(Refusal::new(reason, end_entity, server_name, &self.trust)),
            )))
        };
        if self.trust.pinned_by_file(end_entity).is_some() {
            // Held to its name and dates, as curl holds a --cacert anchor.
            let facts = CertFacts::of(end_entity);
            let now_s = now.as_secs() as i64;
            if let Some((not_before, not_after)) = facts.validity {
                if now_s < not_before {
                    return Err(refuse(Reason::NotYetValid));
                }
                if now_s > not_after {
                    return Err(refuse(Reason::Expired));
                }
            }
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)
                .map_err(|_| refuse(Reason::Unreadable))?;
            return match rustls::client::verify_server_name(&parsed, server_name) {
                Ok(()) => Ok(ServerCertVerified::assertion()),
                Err(_) => Err(refuse(Reason::NameMismatch)),
            };
        }
        self.chains
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(c) => refuse(Reason::from_rustls(c, end_entity)),
                other => other,
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chains.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chains.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chains.supported_verify_schemes()
    }
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

/// What a person reads about a certificate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CertFacts {
    pub sha256: String,
    pub subject: Option<String>,
    pub issuer: Option<String>,
    /// `DNS:name`, `IP:address`.
    pub names: Vec<String>,
    /// Not before, not after: seconds since the Unix epoch.
    pub validity: Option<(i64, i64)>,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
}

impl CertFacts {
    pub fn of(der: &[u8]) -> CertFacts {
        let mut facts = CertFacts {
            sha256: fingerprint(der),
            ..CertFacts::default()
        };
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return facts;
        };
        facts.subject = Some(cert.subject().to_string());
        facts.issuer = Some(cert.issuer().to_string());
        let validity = cert.validity();
        facts.validity = Some((
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
        ));
        facts.is_ca = cert.is_ca();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            facts.names = san.value.general_names.iter().map(general_name).collect();
        }
        facts
    }
}

fn general_name(name: &x509_parser::extensions::GeneralName<'_>) -> String {
    use x509_parser::extensions::GeneralName;
    match name {
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::IPAddress(ip) => match ip.len() {
            4 => format!(
                "IP:{}",
                std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or([0; 4]))
            ),
            16 => format!(
                "IP:{}",
                std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or([0; 16]))
            ),
            _ => "IP:?".to_string(),
        },
        other => other.to_string(),
    }
}

/// `2026-11-27 12:00 UTC`.
pub fn utc(seconds: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(t) => format!(
            "{} {:02}:{:02} UTC",
            t.date(),
            t.time().hour(),
            t.time().minute()
        ),
        Err(_) => format!("{seconds} s after 1970"),
    }
}

/// Why a certificate was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// Signed by no CA imapscope trusts (a self-signed certificate not pinned).
    UnknownIssuer,
    /// Its names do not include the name imapscope connected to.
    NameMismatch,
    Expired,
    NotYetValid,
    /// A CA certificate (CA:TRUE) presented as the server's own.
    CaAsServer,
    Revoked,
    /// Not for TLS servers (extended key usage).
    WrongPurpose,
    /// Its signature does not verify.
    BadSignature,
    Unreadable,
    /// Anything else, in words.
    Other(String),
}

impl Reason {
    fn from_rustls(error: CertificateError, der: &[u8]) -> Reason {
        use CertificateError as E;
        match error {
            E::UnknownIssuer | E::Other(_) if CertFacts::of(der).is_ca => Reason::CaAsServer,
            E::UnknownIssuer => Reason::UnknownIssuer,
            E::NotValidForName | E::NotValidForNameContext { .. } => Reason::NameMismatch,
            E::Expired | E::ExpiredContext { .. } => Reason::Expired,
            E::NotValidYet | E::NotValidYetContext { .. } => Reason::NotYetValid,
            E::Revoked => Reason::Revoked,
            E::InvalidPurpose | E::InvalidPurposeContext { .. } => Reason::WrongPurpose,
            E::BadSignature => Reason::BadSignature,
            E::BadEncoding => Reason::Unreadable,
            other => Reason::Other(super::diagnose::certificate_error(&other)),
        }
    }
}

/// A refused upstream certificate: why, what it is, and what would accept it.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub reason: Reason,
    pub cert: CertFacts,
    /// The name imapscope checked the certificate against (the host of `--upstream`).
    pub name: String,
    /// `--upstream-ca FILE` was given (then the fix names it).
    pub ca_file: Option<PathBuf>,
}

impl Refusal {
    fn new(
        reason: Reason,
        der: &[u8],
        server_name: &ServerName<'_>,
        trust: &UpstreamTrust,
    ) -> Refusal {
        Refusal {
            reason,
            cert: CertFacts::of(der),
            name: server_name.to_str().into_owned(),
            ca_file: trust.ca_file.as_ref().map(|(p, _)| p.clone()),
        }
    }

    /// The option that accepts exactly this certificate.
    pub fn pin_option(&self) -> String {
        format!("--upstream-fingerprint SHA256:{}", self.cert.sha256)
    }
}

impl std::error::Error for Refusal {}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = if self.cert.names.is_empty() {
            "no names (no subjectAltName)".to_string()
        } else {
            self.cert.names.join(", ")
        };
        let pin = self.pin_option();
        match &self.reason {
            Reason::UnknownIssuer => write!(
                f,
                "the server's certificate is not signed by a CA imapscope trusts. To trust it, \
                 pass the CA that signed it (or this very certificate) with --upstream-ca FILE, \
                 or pin it with {pin}"
            )?,
            Reason::CaAsServer => write!(
                f,
                "the server presented a CA certificate (basicConstraints CA:TRUE, as \
                 `openssl req -x509` makes by default) as its own. imapscope takes it only \
                 pinned: pass this very certificate with --upstream-ca FILE, or {pin}"
            )?,
            Reason::NameMismatch => write!(
                f,
                "the server's certificate is for {names}, not for {} (the host in --upstream). \
                 Connect by a name it has (--upstream NAME:PORT), or pin it with {pin}",
                self.name
            )?,
            Reason::Expired => write!(
                f,
                "the server's certificate expired on {} (it is now {}). Renew it on the server, \
                 or pin it as it is with {pin}",
                self.cert
                    .validity
                    .map_or("an unreadable date".into(), |v| utc(v.1)),
                utc(now())
            )?,
            Reason::NotYetValid => write!(
                f,
                "the server's certificate is not valid until {} (it is now {}): check the \
                 clocks of both machines, or pin it with {pin}",
                self.cert
                    .validity
                    .map_or("an unreadable date".into(), |v| utc(v.0)),
                utc(now())
            )?,
            Reason::Revoked => write!(
                f,
                "the server's certificate has been revoked by its CA; the server needs a new one"
            )?,
            Reason::WrongPurpose => write!(
                f,
                "the server's certificate is not for TLS servers (its extended key usage lacks \
                 serverAuth). Pin it with {pin} to accept it all the same"
            )?,
            Reason::BadSignature => write!(
                f,
                "the server's certificate has a signature that does not verify: it was altered, \
                 or not issued by the CA it names"
            )?,
            Reason::Unreadable => write!(f, "the server's certificate cannot be parsed")?,
            Reason::Other(why) => write!(f, "the server's certificate was refused: {why}")?,
        }
        write!(
            f,
            ". The certificate: subject {}",
            or_unknown(&self.cert.subject)
        )?;
        write!(f, "; issuer {}", or_unknown(&self.cert.issuer))?;
        write!(f, "; names {names}")?;
        if let Some((from, to)) = self.cert.validity {
            write!(f, "; valid {} to {}", utc(from), utc(to))?;
        }
        write!(f, "; SHA-256 {}", self.cert.sha256)
    }
}

fn or_unknown(v: &Option<String>) -> &str {
    v.as_deref().filter(|s| !s.is_empty()).unwrap_or("(none)")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_in_the_forms_people_paste() {
        let hex = "AB".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        for text in [
            format!("SHA256:{colons}"),
            format!("sha256:{}", hex.to_lowercase()),
            format!("sha256 Fingerprint={colons}"),
            hex.clone(),
            format!("  {colons}  "),
        ] {
            assert_eq!(parse_fingerprint(&text), Some([0xAB; 32]), "{text}");
        }
        for bad in ["", "SHA256:AB", &"G".repeat(64), &format!("SHA1:{colons}")] {
            assert_eq!(parse_fingerprint(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_refusal_says_what_the_certificate_is_and_how_to_accept_it() {
        let refusal = Refusal {
            reason: Reason::NameMismatch,
            cert: CertFacts {
                sha256: "AB:CD".into(),
                subject: Some("CN=mail.example.com".into()),
                issuer: Some("CN=Example CA".into()),
                names: vec!["DNS:mail.example.com".into()],
                validity: Some((0, 86_400)),
                is_ca: false,
            },
            name: "127.0.0.1".into(),
            ca_file: None,
        };
        let text = refusal.to_string();
        assert!(
            text.starts_with(
                "the server's certificate is for DNS:mail.example.com, not for 127.0.0.1"
            ),
            "{text}"
        );
        for part in [
            "--upstream-fingerprint SHA256:AB:CD",
            "subject CN=mail.example.com",
            "issuer CN=Example CA",
            "valid 1970-01-01 00:00 UTC to 1970-01-02 00:00 UTC",
            "SHA-256 AB:CD",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        assert_eq!(utc(1_795_780_800), "2026-11-27 12:00 UTC");
    }
}
