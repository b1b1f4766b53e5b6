//! A failed TLS handshake, said as a sentence with its fix.
//!
//! rustls reports what went wrong as Rust values (`InvalidCertificate(Other(OtherError(
//! CaUsedAsEndEntity)))`); a person at a mail client needs to read which side refused what and
//! which option to change. Every TLS failure on either leg goes through here before it reaches
//! the log, the transcript or the client's `* BYE [UNAVAILABLE]`. Pure functions: errors in,
//! words out.

use std::io;

use rustls::{AlertDescription, CertificateError};

use super::upstream::Refusal;

/// Which leg a handshake was on, and how that leg was set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// imapscope as the TLS server facing the client.
    Client,
    /// imapscope as the TLS client of the server.
    Upstream,
}

/// The rustls error inside an I/O error from tokio-rustls, if there is one.
fn rustls_in(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// The refusal of [`super::upstream`]'s verifier inside an error, if there is one.
pub fn refusal(e: &rustls::Error) -> Option<&Refusal> {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            let inner: &(dyn std::error::Error + 'static) = &*other.0;
            inner.downcast_ref::<Refusal>()
        }
        _ => None,
    }
}

/// What went wrong on an established TLS leg, in words, when rustls says: the peer's alert
/// (a server that wants a client certificate only after the handshake, as TLS 1.3 allows; a
/// TLS 1.2 server that renegotiates), a record that does not decrypt. `None` for other errors,
/// which read well as they are.
pub fn established_failure(e: &io::Error, peer: &str) -> Option<String> {
    let error = rustls_in(e)?;
    Some(match error {
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => format!(
            "the {peer} asks for a client certificate, which imapscope does not present \
             (alert: certificate required)"
        ),
        rustls::Error::AlertReceived(AlertDescription::NoRenegotiation)
        | rustls::Error::AlertReceived(AlertDescription::HandshakeFailure) => format!(
            "the {peer} ended TLS with the alert \"{}\": it may have tried a new handshake \
             (TLS 1.2 renegotiation), which imapscope does not take part in",
            alert_words(match error {
                rustls::Error::AlertReceived(a) => *a,
                _ => AlertDescription::HandshakeFailure,
            })
        ),
        rustls::Error::DecryptError => format!(
            "a TLS record from the {peer} did not decrypt: it was damaged or altered on the way"
        ),
        other => format!("the {peer}'s TLS failed: {}", rustls_error(other)),
    })
}

/// Bytes that are not TLS records at all (plain IMAP starts `* OK` or `a1 `), as opposed to
/// TLS that rustls cannot accept.
fn not_tls(m: &rustls::InvalidMessage) -> bool {
    matches!(
        m,
        rustls::InvalidMessage::InvalidContentType | rustls::InvalidMessage::UnknownProtocolVersion
    )
}

/// What is wrong with a TLS message rustls could not decode.
fn unreadable(m: &rustls::InvalidMessage) -> String {
    match m {
        rustls::InvalidMessage::CertificatePayloadTooLarge
        | rustls::InvalidMessage::HandshakePayloadTooLarge => {
            "its certificate chain is larger than the 64 KiB rustls accepts".into()
        }
        rustls::InvalidMessage::MessageTooLarge => "a record larger than TLS allows".into(),
        other => format!("{other:?} (a malformed or unusual handshake)"),
    }
}

/// Why the handshake with the server at `upstream` (`HOST:PORT`) failed.
pub fn upstream_failure(e: &io::Error, upstream: &str) -> String {
    tracing::debug!("upstream TLS handshake failed: {e:?}");
    let Some(error) = rustls_in(e) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => format!(
                "the server at {upstream} closed the connection during the TLS handshake. If \
                 that port speaks plain IMAP or STARTTLS, use --upstream-tls starttls (or none); \
                 otherwise the server accepts none of imapscope's TLS versions (1.2, 1.3)"
            ),
            _ => format!("the TLS handshake with the server at {upstream} failed: {e}"),
        };
    };
    if let Some(refusal) = refusal(error) {
        return format!("imapscope refused the certificate of {upstream}: {refusal}");
    }
    match error {
        rustls::Error::InvalidMessage(m) if not_tls(m) => format!(
            "the server at {upstream} answered in plain text, not TLS: that port speaks plain \
             IMAP. Use --upstream-tls starttls if the server offers STARTTLS there, or \
             --upstream-tls none"
        ),
        rustls::Error::InvalidMessage(m) => format!(
            "the server at {upstream} sent a TLS handshake message imapscope cannot read: {}",
            unreadable(m)
        ),
        rustls::Error::AlertReceived(alert) => format!(
            "the server at {upstream} refused the TLS handshake (alert: {}){}",
            alert_words(*alert),
            match alert {
                AlertDescription::HandshakeFailure
                | AlertDescription::ProtocolVersion
                | AlertDescription::InsufficientSecurity => {
                    ": it shares no TLS version or cipher suite with imapscope (TLS 1.2 or 1.3, \
                     AES-GCM or ChaCha20-Poly1305)"
                }
                AlertDescription::UnrecognisedName => {
                    ": it does not serve the name imapscope asked for; give --upstream the \
                     server's own name"
                }
                _ => "",
            }
        ),
        rustls::Error::PeerIncompatible(_) => format!(
            "the server at {upstream} shares no TLS version or cipher suite with imapscope \
             (TLS 1.2 or 1.3, AES-GCM or ChaCha20-Poly1305)"
        ),
        other => format!(
            "the TLS handshake with the server at {upstream} failed: {}",
            rustls_error(other)
        ),
    }
}

/// Why the handshake with a client failed.
/// [`client_failure`] for a client leg in `--client-tls starttls` mode, where plain text
/// after imapscope's OK to STARTTLS is a client that did not start TLS, not a wrong mode.
pub fn client_failure_after_starttls(e: &io::Error) -> String {
    match rustls_in(e) {
        Some(rustls::Error::InvalidMessage(m)) if not_tls(m) => {
            "the client went on in plain text after imapscope's OK to its STARTTLS instead of \
             starting TLS: it does not finish STARTTLS. Set the client to SSL/TLS and run \
             imapscope with --client-tls tls, or use --client-tls none"
                .to_string()
        }
        _ => client_failure(e),
    }
}

pub fn client_failure(e: &io::Error) -> String {
    tracing::debug!("client TLS handshake failed: {e:?}");
    const TRUST: &str = "install imapscope's CA in the client once; `imapscope ca show` says \
                         where it is and how";
    let Some(error) = rustls_in(e) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => format!(
                "the client closed the connection during the TLS handshake, most often because \
                 it does not trust imapscope's certificate: {TRUST}"
            ),
            _ => format!("the TLS handshake with the client failed: {e}"),
        };
    };
    match error {
        rustls::Error::AlertReceived(
            alert @ (AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError),
        ) => format!(
            "the client refused imapscope's certificate (alert: {}): it does not trust \
             imapscope's CA yet; {TRUST}",
            alert_words(*alert)
        ),
        // OpenSSL-based clients (fetchmail, mbsync, `openssl s_client -verify_hostname`) send
        // these for a name that does not match as well as for an unknown issuer.
        rustls::Error::AlertReceived(
            alert @ (AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate),
        ) => format!(
            "the client refused imapscope's certificate (alert: {}): either it does not trust \
             imapscope's CA yet ({TRUST}), or the host name it checks is not among the \
             certificate's names. The certificate names the host the client asks for by SNI \
             (else a default: the upstream host, or for `serve` the name the recorded client \
             accepted), plus localhost and the loopback addresses; a client that connects \
             by address and checks only DNS names (fetchmail, mbsync) wants a host name: \
             localhost, for instance",
            alert_words(*alert)
        ),
        rustls::Error::AlertReceived(AlertDescription::CertificateExpired) => {
            "the client says imapscope's certificate has expired or is not valid yet (it is \
             valid from an hour ago for 7 days): the client's clock and this machine's differ"
                .to_string()
        }
        rustls::Error::AlertReceived(alert) => format!(
            "the client ended the TLS handshake (alert: {})",
            alert_words(*alert)
        ),
        rustls::Error::InvalidMessage(m) if not_tls(m) => "the client spoke plain text, not \
             TLS: it is set up for plain IMAP or STARTTLS on this port. Run imapscope with \
             --client-tls starttls (or none), or set the client to SSL/TLS"
            .to_string(),
        rustls::Error::InvalidMessage(m) => format!(
            "the client sent a TLS handshake message imapscope cannot read: {}",
            unreadable(m)
        ),
        rustls::Error::PeerIncompatible(_) => "the client shares no TLS version or cipher suite \
             with imapscope (TLS 1.2 or 1.3, AES-GCM or ChaCha20-Poly1305)"
            .to_string(),
        other => format!(
            "the TLS handshake with the client failed: {}",
            rustls_error(other)
        ),
    }
}

/// A client that sent nothing within `waited` on a port where imapscope expects a TLS
/// handshake first.
pub fn client_silent(waited: std::time::Duration) -> String {
    format!(
        "the client sent no TLS handshake within {} s: a client set up for plain IMAP or \
         STARTTLS waits for the server's greeting instead. Run imapscope with --client-tls \
         starttls (or none), or set the client to SSL/TLS",
        waited.as_secs()
    )
}

/// A client that started a TLS handshake on a port where imapscope relays plain IMAP.
pub fn client_tls_on_plain_port() -> String {
    "the client started a TLS handshake on a plain IMAP port: it is set up for SSL/TLS \
     (implicit TLS, as on port 993). Run imapscope with --client-tls tls, or set the client to \
     STARTTLS or no encryption"
        .to_string()
}

/// A server that answered a plain connection with TLS.
pub fn server_tls_on_plain_connection(upstream: &str) -> String {
    format!(
        "the server at {upstream} speaks TLS from the first byte (implicit TLS, as on port \
         993), and imapscope connected in plain text. Run imapscope with --upstream-tls tls"
    )
}

/// A plain upstream that closed the connection without ever greeting.
pub fn server_closed_before_greeting(upstream: &str) -> String {
    format!(
        "the server at {upstream} closed the connection without a greeting. If that port \
         speaks implicit TLS (as port 993 does), run imapscope with --upstream-tls tls"
    )
}

/// A rustls error in words, without Rust's debug notation.
pub fn rustls_error(e: &rustls::Error) -> String {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => match refusal(e) {
            Some(r) => r.to_string(),
            None => format!("invalid certificate: {}", certificate_error(c)),
        },
        E::AlertReceived(a) => format!("the peer sent the alert \"{}\"", alert_words(*a)),
        E::InvalidMessage(_) => "the peer sent something that is not TLS".into(),
        E::PeerIncompatible(_) => "no TLS version or cipher suite in common".into(),
        E::PeerMisbehaved(_) => "the peer broke the TLS protocol".into(),
        E::NoCertificatesPresented => "the peer presented no certificate".into(),
        E::DecryptError => "a record could not be decrypted".into(),
        E::General(s) => s.clone(),
        E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            "the peer sent a TLS message out of order".into()
        }
        _ => words(&format!("{e:?}")),
    }
}

/// A certificate error in words.
pub fn certificate_error(e: &CertificateError) -> String {
    use CertificateError as E;
    match e {
        E::BadEncoding => "it cannot be parsed".into(),
        E::Expired | E::ExpiredContext { .. } => "it has expired".into(),
        E::NotValidYet | E::NotValidYetContext { .. } => "it is not valid yet".into(),
        E::Revoked => "it has been revoked".into(),
        E::UnknownIssuer => "it is signed by an unknown CA".into(),
        E::BadSignature => "its signature does not verify".into(),
        E::NotValidForName | E::NotValidForNameContext { .. } => {
            "it is not for the name connected to".into()
        }
        E::InvalidPurpose | E::InvalidPurposeContext { .. } => "it is not for TLS servers".into(),
        E::UnsupportedSignatureAlgorithmContext { .. }
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "its signature algorithm is not supported".into()
        }
        E::Other(other) => other.0.to_string(),
        other => words(&format!("{other:?}")),
    }
}

/// A TLS alert in words: `unknown CA`, `handshake failure`.
pub fn alert_words(alert: AlertDescription) -> String {
    match alert {
        AlertDescription::UnknownCA => "unknown CA".into(),
        AlertDescription::BadCertificate => "bad certificate".into(),
        AlertDescription::CertificateUnknown => "certificate unknown".into(),
        AlertDescription::HandshakeFailure => "handshake failure".into(),
        AlertDescription::ProtocolVersion => "protocol version".into(),
        AlertDescription::DecryptError => "decrypt error".into(),
        AlertDescription::AccessDenied => "access denied".into(),
        AlertDescription::UnrecognisedName => "unrecognised name".into(),
        other => words(&format!("{other:?}")),
    }
}

/// `CertificateExpired` -> `certificate expired`; anything in parentheses is left out.
fn words(debug: &str) -> String {
    let name = debug.split(['(', '{', ' ']).next().unwrap_or(debug);
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push(' ');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    /// Nothing a person reads looks like Rust.
    fn readable(text: &str) {
        for debug in ["Other(", "OtherError", "Context", "AlertReceived", "::"] {
            assert!(!text.contains(debug), "{debug} in {text}");
        }
    }

    #[test]
    fn plain_text_after_starttls_is_not_blamed_on_the_mode() {
        let plain = io(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        let said = client_failure_after_starttls(&plain);
        assert!(said.contains("does not finish STARTTLS"), "{said}");
        assert!(!said.contains("--client-tls starttls"), "{said}");
        readable(&said);
    }

    #[test]
    fn an_established_leg_says_what_failed_in_words() {
        let said = |e: rustls::Error| established_failure(&io(e), "server").unwrap_or_default();
        let cert = said(rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired,
        ));
        assert!(cert.contains("asks for a client certificate"), "{cert}");
        let reneg = said(rustls::Error::AlertReceived(
            AlertDescription::HandshakeFailure,
        ));
        assert!(reneg.contains("renegotiation"), "{reneg}");
        let damaged = said(rustls::Error::DecryptError);
        assert!(damaged.contains("did not decrypt"), "{damaged}");
        for text in [cert, reneg, damaged] {
            readable(&text);
        }
        let plain = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(established_failure(&plain, "server"), None);
    }

    #[test]
    fn every_failure_reads_as_a_sentence_with_its_fix() {
        let cases = [
            (
                upstream_failure(
                    &io(rustls::Error::InvalidMessage(
                        rustls::InvalidMessage::InvalidContentType,
                    )),
                    "127.0.0.1:143",
                ),
                "--upstream-tls starttls",
            ),
            (
                upstream_failure(
                    &io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof"),
                    "127.0.0.1:143",
                ),
                "--upstream-tls starttls",
            ),
            // TLS that rustls cannot take is not plain text.
            (
                upstream_failure(
                    &io(rustls::Error::InvalidMessage(
                        rustls::InvalidMessage::CertificatePayloadTooLarge,
                    )),
                    "imap.example.com:993",
                ),
                "certificate chain is larger than the 64 KiB",
            ),
            (
                client_failure(&io(rustls::Error::InvalidMessage(
                    rustls::InvalidMessage::MissingData("ClientHello"),
                ))),
                "cannot read",
            ),
            (
                upstream_failure(
                    &io(rustls::Error::AlertReceived(
                        AlertDescription::HandshakeFailure,
                    )),
                    "imap.example.com:993",
                ),
                "no TLS version or cipher suite",
            ),
            (
                client_failure(&io(rustls::Error::AlertReceived(
                    AlertDescription::UnknownCA,
                ))),
                "imapscope ca show",
            ),
            (
                client_failure(&io::Error::new(io::ErrorKind::UnexpectedEof, "eof")),
                "imapscope ca show",
            ),
            (
                client_failure(&io(rustls::Error::AlertReceived(
                    AlertDescription::BadCertificate,
                ))),
                "or the host name it checks is not among the certificate's names",
            ),
            (
                client_failure(&io(rustls::Error::AlertReceived(
                    AlertDescription::CertificateExpired,
                ))),
                "the client's clock",
            ),
            (
                client_failure(&io(rustls::Error::InvalidMessage(
                    rustls::InvalidMessage::InvalidContentType,
                ))),
                "--client-tls starttls",
            ),
            (
                client_silent(std::time::Duration::from_secs(10)),
                "--client-tls starttls",
            ),
            (client_tls_on_plain_port(), "--client-tls tls"),
            (
                server_closed_before_greeting("127.0.0.1:993"),
                "--upstream-tls tls",
            ),
            (
                server_tls_on_plain_connection("127.0.0.1:993"),
                "--upstream-tls tls",
            ),
            (
                rustls_error(&rustls::Error::InvalidCertificate(CertificateError::Other(
                    rustls::OtherError(std::sync::Arc::new(io::Error::other("x"))),
                ))),
                "invalid certificate",
            ),
        ];
        for (text, fix) in cases {
            assert!(text.contains(fix), "{fix} in {text}");
            readable(&text);
        }
        assert_eq!(
            alert_words(AlertDescription::CertificateExpired),
            "certificate expired"
        );
    }
}
