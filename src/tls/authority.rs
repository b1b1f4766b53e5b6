//! imapscope's own certificate authority, and the leaf certificates it mints per host name.
//!
//! The CA lives in a directory created 0700: `ca.pem` (the certificate), `ca.crt` (the same in
//! DER, for import dialogs) and `ca-key.pem` (the key, 0600). A key that others can read is
//! refused: whoever holds it can impersonate any mail server to every client that trusts it.
//! Leaf certificates are ECDSA P-256, valid for a week, minted once per name and cached until
//! a day before they expire.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::crypto::aws_lc_rs::sign::any_supported_type;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::fingerprint;

pub const CA_CERT: &str = "ca.pem";
pub const CA_DER: &str = "ca.crt";
pub const CA_KEY: &str = "ca-key.pem";

/// The subject of the CA certificate.
const CA_NAME: &str = "imapscope interception CA";

#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is readable by others (mode {mode:o}); the CA key must be private. \
         Fix it with `chmod 600 {path}`, or delete the CA and run `imapscope ca init`."
    )]
    KeyTooOpen { path: PathBuf, mode: u32 },
    #[error("{path}: not a usable {what}: {reason}")]
    Invalid {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("minting a certificate failed: {0}")]
    Mint(String),
}

/// How long a minted leaf certificate is valid.
const LEAF_LIFE: time::Duration = time::Duration::days(7);

/// The most names whose leaf certificates are kept (see [`Authority::leaf_at`]).
const MAX_LEAVES: usize = 1024;

/// The CA and a cache of the leaf certificates it minted.
pub struct Authority {
    dir: PathBuf,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    /// Per name: the leaf and when it stops being handed out (a day before it expires).
    leaves: Mutex<HashMap<String, (Arc<CertifiedKey>, time::OffsetDateTime)>>,
    /// Names every leaf covers besides its own: clients may reach imapscope by any of them.
    local_names: Vec<String>,
}

/// Whether `ensure` made a new CA or found one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    Existing,
}

impl Authority {
    /// Loads the CA from `dir`, creating it (and `dir`, 0700) if there is none.
    pub fn ensure(dir: &Path) -> Result<(Authority, Created), AuthorityError> {
        if dir.join(CA_KEY).exists() || dir.join(CA_CERT).exists() {
            return Ok((Authority::load(dir)?, Created::Existing));
        }
        create_private_dir(dir)?;
        let key = KeyPair::generate().map_err(|e| AuthorityError::Mint(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, CA_NAME);
        dn.push(DnType::OrganizationName, "imapscope");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params
            .self_signed(&key)
            .map_err(|e| AuthorityError::Mint(e.to_string()))?;
        match write_file(&dir.join(CA_KEY), key.serialize_pem().as_bytes(), 0o600) {
            Err(AuthorityError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                // Another imapscope is creating the CA right now: use its CA once written.
                for _ in 0..50 {
                    if dir.join(CA_DER).exists() {
                        return Ok((Authority::load(dir)?, Created::Existing));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                return Ok((Authority::load(dir)?, Created::Existing));
            }
            other => other?,
        }
        write_file(&dir.join(CA_CERT), cert.pem().as_bytes(), 0o644)?;
        write_file(&dir.join(CA_DER), cert.der(), 0o644)?;
        Ok((Authority::load(dir)?, Created::New))
    }

    /// Loads an existing CA, refusing a key that others can read.
    pub fn load(dir: &Path) -> Result<Authority, AuthorityError> {
        let key_path = dir.join(CA_KEY);
        check_private(&key_path)?;
        let key_pem = read_text(&key_path)?;
        let cert_path = dir.join(CA_CERT);
        let cert_pem = read_text(&cert_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| AuthorityError::Invalid {
            path: key_path.clone(),
            what: "CA key",
            reason: e.to_string(),
        })?;
        let cert_der = first_pem_cert(&cert_pem).ok_or_else(|| AuthorityError::Invalid {
            path: cert_path.clone(),
            what: "CA certificate",
            reason: "no PEM certificate in it".into(),
        })?;
        // A key that is not the certificate's would sign leaves no client can verify, each
        // handshake then failing as if the client did not trust the CA.
        let certified_key = x509_parser::parse_x509_certificate(&cert_der)
            .map(|(_, cert)| {
                cert.tbs_certificate
                    .subject_pki
                    .subject_public_key
                    .data
                    .to_vec()
            })
            .map_err(|e| AuthorityError::Invalid {
                path: cert_path.clone(),
                what: "CA certificate",
                reason: e.to_string(),
            })?;
        if certified_key != rcgen::PublicKeyData::der_bytes(&key) {
            return Err(AuthorityError::Invalid {
                path: key_path.clone(),
                what: "CA key",
                reason: format!(
                    "it is not the key of {} (was one of the two files replaced?); \
                     move both away to make a new CA, and trust the new one in the clients",
                    cert_path.display()
                ),
            });
        }
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| AuthorityError::Invalid {
                path: cert_path.clone(),
                what: "CA certificate",
                reason: e.to_string(),
            })?;
        Ok(Authority {
            dir: dir.to_path_buf(),
            cert_pem,
            cert_der,
            issuer,
            leaves: Mutex::new(HashMap::new()),
            local_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// A leaf certificate for `name` (plus the local names), minted once and cached.
    pub fn leaf(&self, name: &str) -> Result<Arc<CertifiedKey>, AuthorityError> {
        self.leaf_at(name, time::OffsetDateTime::now_utc())
    }

    /// [`Authority::leaf`] at the time `now`. A cached leaf is handed out until a day before
    /// it expires, then minted again: `record` and `serve` run for weeks. The cache holds at
    /// most [`MAX_LEAVES`] names (clients choose the SNI): when full, the leaves due for
    /// renewal go, and if none is, all of them (minting one takes about a millisecond).
    pub fn leaf_at(
        &self,
        name: &str,
        now: time::OffsetDateTime,
    ) -> Result<Arc<CertifiedKey>, AuthorityError> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let mut cache = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((found, renew_at)) = cache.get(&name)
            && now < *renew_at
        {
            return Ok(found.clone());
        }
        if cache.len() >= MAX_LEAVES {
            cache.retain(|_, (_, renew_at)| now < *renew_at);
            if cache.len() >= MAX_LEAVES {
                cache.clear();
            }
        }
        let leaf = Arc::new(self.mint(&name, now)?);
        cache.insert(
            name,
            (leaf.clone(), now + LEAF_LIFE - time::Duration::days(1)),
        );
        Ok(leaf)
    }

    /// How many leaf certificates were minted so far.
    pub fn minted(&self) -> usize {
        self.leaves.lock().map(|c| c.len()).unwrap_or(0)
    }

    fn mint(&self, name: &str, now: time::OffsetDateTime) -> Result<CertifiedKey, AuthorityError> {
        let mint_err = |e: rcgen::Error| AuthorityError::Mint(e.to_string());
        let key = KeyPair::generate().map_err(mint_err)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "imapscope");
        params.distinguished_name = dn;
        let mut names = vec![name.to_string()];
        names.extend(self.local_names.iter().filter(|n| *n != name).cloned());
        params.subject_alt_names = names
            .iter()
            .filter_map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Some(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().ok().map(SanType::DnsName),
            })
            .collect();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.is_ca = IsCa::ExplicitNoCa;
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + LEAF_LIFE;
        let cert = params.signed_by(&key, &self.issuer).map_err(mint_err)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing =
            any_supported_type(&key_der).map_err(|e| AuthorityError::Mint(e.to_string()))?;
        Ok(CertifiedKey::new(
            vec![cert.der().clone(), self.cert_der.clone()],
            signing,
        ))
    }

    /// SHA-256 of the CA certificate, `AB:CD:...`.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }
}

/// rustls asks this for a certificate during each client handshake: the client's SNI names
/// it, else the default name (the upstream host).
pub struct MintingResolver {
    pub authority: Arc<Authority>,
    pub default_name: String,
}

impl std::fmt::Debug for MintingResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintingResolver")
            .field("default_name", &self.default_name)
            .finish()
    }
}

impl ResolvesServerCert for MintingResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().unwrap_or(&self.default_name);
        match self.authority.leaf(name) {
            Ok(leaf) => Some(leaf),
            Err(e) => {
                tracing::error!("cannot mint a certificate for {name}: {e}");
                None
            }
        }
    }
}

fn first_pem_cert(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()
}

fn read_text(path: &Path) -> Result<String, AuthorityError> {
    std::fs::read_to_string(path).map_err(|source| AuthorityError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn check_private(path: &Path) -> Result<(), AuthorityError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|source| AuthorityError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(AuthorityError::KeyTooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), AuthorityError> {
    crate::private_dir::ensure(dir).map_err(|source| AuthorityError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), AuthorityError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    options
        .open(path)
        .and_then(|mut f| f.write_all(data))
        .map_err(|source| AuthorityError::Io {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_keeps_the_key_private_and_caches_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let (ca, created) = Authority::ensure(&certs).unwrap();
        assert_eq!(created, Created::New);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&certs), 0o700);
            assert_eq!(mode(&certs.join(CA_KEY)), 0o600);
        }
        let (again, created) = Authority::ensure(&certs).unwrap();
        assert_eq!(created, Created::Existing);
        assert_eq!(again.fingerprint(), ca.fingerprint());
        let a = ca.leaf("imap.example.com").unwrap();
        let b = ca.leaf("IMAP.example.com.").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(ca.minted(), 1);
        assert_eq!(a.cert.len(), 2);
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (one, other) = (dir.path().join("one"), dir.path().join("other"));
        Authority::ensure(&one).unwrap();
        Authority::ensure(&other).unwrap();
        std::fs::copy(other.join(CA_KEY), one.join(CA_KEY)).unwrap();
        let refused = Authority::ensure(&one)
            .err()
            .expect("a mismatched key is refused");
        assert!(refused.to_string().contains("not the key of"), "{refused}");
    }

    #[test]
    fn a_leaf_is_minted_again_before_it_expires_and_the_cache_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = Authority::ensure(&dir.path().join("certs")).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let first = ca.leaf_at("localhost", now).unwrap();
        let day5 = ca
            .leaf_at("localhost", now + time::Duration::days(5))
            .unwrap();
        assert!(Arc::ptr_eq(&first, &day5), "still valid for two days");
        let day8 = ca
            .leaf_at("localhost", now + time::Duration::days(8))
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &day8), "minted again");
        let not_after = |leaf: &CertifiedKey| {
            let (_, cert) = x509_parser::parse_x509_certificate(&leaf.cert[0]).unwrap();
            cert.validity().not_after.timestamp()
        };
        assert!(not_after(&day8) > (now + time::Duration::days(14)).unix_timestamp());
        for i in 0..MAX_LEAVES + 10 {
            ca.leaf_at(&format!("n{i}.example"), now).unwrap();
        }
        assert!(ca.minted() <= MAX_LEAVES, "{}", ca.minted());
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_key_others_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        Authority::ensure(dir.path()).unwrap();
        let key = dir.path().join(CA_KEY);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Authority::load(dir.path()).err().unwrap();
        assert!(matches!(err, AuthorityError::KeyTooOpen { .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"));
    }
}
