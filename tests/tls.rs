//! TLS interception against a real Dovecot with its own self-signed certificate (trusted by
//! imapscope through `--upstream-ca`), with curl, Python's ssl/imaplib and openssl s_client.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use imapscope::protocol::Kind;
use imapscope::transcript::format::Record;
use support::*;

struct Setup {
    dovecot: Dovecot,
    certs: tempfile::TempDir,
    out: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dovecot = Dovecot::start();
        dovecot.deliver("nell", "INBOX", &message("tls-hello", 700));
        Setup {
            dovecot,
            certs: tempfile::tempdir().unwrap(),
            out: tempfile::tempdir().unwrap(),
        }
    }

    fn server_ca(&self) -> PathBuf {
        self.dovecot.dir.path().join("server.pem")
    }

    fn our_ca(&self) -> PathBuf {
        self.certs.path().join("ca.pem")
    }

    /// imapscope in front of Dovecot's plain port (`tls=false`) or TLS port.
    fn record(&self, tls_port: bool, client: &str, upstream: &str, trust: bool) -> Imapscope {
        let port = if tls_port {
            self.dovecot.tls_port
        } else {
            self.dovecot.port
        };
        let certs = self.certs.path().to_string_lossy().into_owned();
        let ca = self.server_ca().to_string_lossy().into_owned();
        let mut args = vec![
            "--client-tls",
            client,
            "--upstream-tls",
            upstream,
            "--certs",
            &certs,
        ];
        if trust {
            args.extend(["--upstream-ca", &ca]);
        }
        Imapscope::record(&format!("127.0.0.1:{port}"), self.out.path(), &args)
    }
}

fn tls_records(
    t: &imapscope::transcript::Transcript,
) -> Vec<&imapscope::transcript::format::TlsRecord> {
    t.records
        .iter()
        .filter_map(|r| match r {
            Record::Tls(tls) => Some(tls),
            _ => None,
        })
        .collect()
}

fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--user", &format!("nell:{PASSWORD}")])
        .args(args)
        .output()
        .expect("curl is needed for these tests (apt-get install -y curl)")
}

/// The names of the commands in a transcript, in order, and that each was paired.
fn command_names(path: &Path, t: &imapscope::transcript::Transcript) -> Vec<String> {
    assert_paired(path, t);
    messages(t)
        .iter()
        .filter(|m| m.kind == Kind::Command)
        .filter_map(|m| m.name.as_deref().map(String::from))
        .collect()
}

#[test]
fn curl_and_imaplib_through_implicit_tls_on_both_legs() {
    let s = Setup::new();
    let scope = s.record(true, "tls", "tls", true);
    let port = scope.port();
    let ca = s.our_ca();
    let out = curl(&[
        "--cacert",
        &ca.to_string_lossy(),
        &format!("imaps://localhost:{port}/INBOX;UID=1"),
    ]);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, message("tls-hello", 700));
    let seen = python(
        "tls_session.py",
        &["ssl", &port.to_string(), &ca.to_string_lossy()],
    );
    assert!(seen.contains("Subject: tls-hello"), "{seen}");
    // openssl s_client on the implicit-TLS port: issued by our CA, names localhost.
    let s_client = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "-servername",
            "localhost",
            "-verify_hostname",
            "localhost",
            "-CAfile",
        ])
        .arg(&ca)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&s_client.stdout);
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(
        text.contains("issuer=CN = imapscope interception CA"),
        "{text}"
    );

    let all = wait_for_ended(s.out.path(), 3);
    let python_tls = all
        .iter()
        .find(|(_, t)| {
            messages(t)
                .iter()
                .any(|m| m.name.as_deref() == Some("LOGIN"))
        })
        .map(|(p, t)| command_names(p, t))
        .expect("the imaplib session");
    // The same client in plain text through a plain relay issues the same commands.
    let plain_out = tempfile::tempdir().unwrap();
    let plain = Imapscope::record(&s.dovecot.addr(), plain_out.path(), &[]);
    python("tls_session.py", &["plain", &plain.port().to_string()]);
    let plain_all = wait_for_ended(plain_out.path(), 1);
    assert_eq!(python_tls, command_names(&plain_all[0].0, &plain_all[0].1));

    for (path, t) in &all {
        if !messages(t).iter().any(|m| m.kind == Kind::Command) {
            continue; // s_client's session: a handshake and no command
        }
        let legs = tls_records(t);
        assert_eq!(legs.len(), 2, "{}: a tls line per leg", path.display());
        let client = legs.iter().find(|l| l.leg == "client").unwrap();
        assert_eq!(client.sni.as_deref(), Some("localhost"));
        assert!(client.issuer.as_deref().unwrap().contains("imapscope"));
        assert!(client.sans.contains(&"DNS:localhost".to_string()));
        let upstream = legs.iter().find(|l| l.leg == "upstream").unwrap();
        assert!(upstream.version.starts_with("TLSv1_"));
        // imapscope offers AES-128-GCM first (the cheaper pass); Dovecot honours the order.
        assert_eq!(
            (upstream.version.as_str(), upstream.cipher.as_str()),
            ("TLSv1_3", "TLS13_AES_128_GCM_SHA256")
        );
        assert_eq!(upstream.subject.as_deref(), Some("CN=localhost"));
        assert!(upstream.sha256.as_ref().unwrap().len() == 95);
        // Decrypted, the session reads like a plain one.
        let names = command_names(path, t);
        assert!(names.contains(&"SELECT".to_string()), "{names:?}");
    }
    assert_no_secrets(s.out.path(), &[PASSWORD]);
}

#[test]
fn starttls_on_both_legs_with_curl_imaplib_and_openssl() {
    let s = Setup::new();
    let scope = s.record(false, "starttls", "starttls", true);
    let port = scope.port();
    let ca = s.our_ca();
    let out = curl(&[
        "--ssl-reqd",
        "--cacert",
        &ca.to_string_lossy(),
        &format!("imap://localhost:{port}/INBOX;UID=1"),
    ]);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, message("tls-hello", 700));
    let seen = python(
        "tls_session.py",
        &["starttls", &port.to_string(), &ca.to_string_lossy()],
    );
    assert!(seen.contains("Subject: tls-hello"), "{seen}");

    // openssl s_client: the presented certificate is ours and names localhost.
    let s_client = Command::new("openssl")
        .args(["s_client", "-starttls", "imap", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", "localhost", "-CAfile"])
        .arg(&ca)
        .arg("-showcerts")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&s_client.stdout);
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(text.contains("imapscope interception CA"), "{text}");
    let leaf_pem: String = text
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .map(|rest| {
            format!(
                "-----BEGIN CERTIFICATE-----{}",
                rest.split("-----END CERTIFICATE-----").next().unwrap_or("")
            ) + "-----END CERTIFICATE-----\n"
        })
        .expect("a certificate in s_client's output");
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    x509.stdin
        .take()
        .unwrap()
        .write_all(leaf_pem.as_bytes())
        .unwrap();
    let sans = String::from_utf8_lossy(&x509.wait_with_output().unwrap().stdout).into_owned();
    assert!(sans.contains("DNS:localhost"), "{sans}");

    let all = wait_for_ended(s.out.path(), 3);
    let (path, t) = &all[0];
    let names = command_names(path, t);
    let starttls = names
        .iter()
        .position(|n| n == "STARTTLS")
        .expect("STARTTLS recorded");
    assert!(
        names[starttls + 1..].iter().any(|n| n == "SELECT"),
        "{names:?}"
    );
    assert_eq!(tls_records(t).len(), 2);
    assert!(!t.records.iter().any(|r| matches!(r, Record::Opaque(_))));
    assert_no_secrets(s.out.path(), &[PASSWORD]);
}

#[test]
fn mixed_legs_plain_client_to_tls_server_and_back() {
    let s = Setup::new();
    // none/tls: a plain client, no CA to install.
    let scope = s.record(true, "none", "tls", true);
    let seen = python("tls_session.py", &["plain", &scope.port().to_string()]);
    assert!(seen.contains("Subject: tls-hello"), "{seen}");
    drop(scope);
    // tls/none: a TLS client in front of Dovecot's plain port.
    let scope = s.record(false, "tls", "none", false);
    let seen = python(
        "tls_session.py",
        &[
            "ssl",
            &scope.port().to_string(),
            &s.our_ca().to_string_lossy(),
        ],
    );
    assert!(seen.contains("Subject: tls-hello"), "{seen}");
    let all = wait_for_ended(s.out.path(), 2);
    let legs: Vec<Vec<String>> = all
        .iter()
        .map(|(_, t)| tls_records(t).iter().map(|l| l.leg.clone()).collect())
        .collect();
    assert!(legs.contains(&vec!["upstream".to_string()]), "{legs:?}");
    assert!(legs.contains(&vec!["client".to_string()]), "{legs:?}");
}

#[test]
fn untrusted_upstream_certificate_is_refused_clearly() {
    let s = Setup::new();
    // No --upstream-ca: Dovecot's self-signed certificate is not trusted.
    let scope = s.record(true, "none", "tls", false);
    let mut c = RawClient::connect(scope.port());
    c.until_eof();
    let text = String::from_utf8_lossy(&c.received).into_owned();
    assert!(text.starts_with("* BYE [UNAVAILABLE]"), "{text}");
    assert!(text.contains("TLS handshake with upstream"), "{text}");
    let all = wait_for_ended(s.out.path(), 1);
    let t = &all[0].1;
    let error = t
        .records
        .iter()
        .find_map(|r| match r {
            Record::Error(e) => Some(e),
            _ => None,
        })
        .expect("an error line");
    assert_eq!(error.during, "upstream-tls-handshake");
    assert!(
        error.message.to_lowercase().contains("certificate"),
        "{}",
        error.message
    );
    assert!(messages(t).is_empty(), "no session took place");
}

#[test]
fn client_that_does_not_trust_the_ca_is_recorded() {
    let s = Setup::new();
    let scope = s.record(true, "tls", "tls", true);
    let seen = python("tls_session.py", &["untrusted", &scope.port().to_string()]);
    assert!(
        seen.contains("\"error\": \""),
        "the client refused our certificate: {seen}"
    );
    let all = wait_for_ended(s.out.path(), 1);
    let t = &all[0].1;
    assert!(
        t.records.iter().any(|r| matches!(r,
            Record::Error(e) if e.during == "client-tls-handshake")),
        "{:?}",
        t.records
    );
}

#[test]
fn refused_starttls_keeps_the_session_plain() {
    let s = Setup::new();
    let scope = s.record(false, "starttls", "starttls", true);
    let seen = python("tls_session.py", &["refused", &scope.port().to_string()]);
    assert!(
        seen.contains("\"starttls\": \"BAD\"") || seen.contains("\"starttls\": \"NO\""),
        "{seen}"
    );
    assert!(seen.contains("\"noop\": \"OK\""), "{seen}");
    let all = wait_for_ended(s.out.path(), 1);
    let (path, t) = &all[0];
    let names = command_names(path, t);
    assert!(
        names.ends_with(&[
            "STARTTLS".to_string(),
            "NOOP".to_string(),
            "LOGOUT".to_string()
        ]),
        "{names:?}"
    );
    assert!(tls_records(t).is_empty());
}

#[test]
fn plaintext_pipelined_after_starttls_is_never_relayed() {
    let s = Setup::new();
    let scope = s.record(false, "starttls", "starttls", true);
    let seen = python(
        "tls_session.py",
        &[
            "injection",
            &scope.port().to_string(),
            &s.our_ca().to_string_lossy(),
        ],
    );
    assert!(seen.contains("\"starttls\": \"OK\""), "{seen}");
    assert!(seen.contains("\"login\": \"OK\""), "{seen}");
    assert!(seen.contains("\"pipelined_answered\": false"), "{seen}");
    let all = wait_for_ended(s.out.path(), 1);
    let (path, t) = &all[0];
    let dropped = t
        .records
        .iter()
        .find_map(|r| match r {
            Record::Dropped(d) => Some(d),
            _ => None,
        })
        .expect("the injected bytes are recorded");
    assert_eq!(dropped.payload.text.as_deref(), Some("s2 CAPABILITY\r\n"));
    assert!(dropped.reason.contains("CVE-2011-0411"));
    // The server never saw s2: nothing answers it.
    assert!(!messages(t).iter().any(|m| m.tag.as_deref() == Some("s2")));
    command_names(path, t);
}

#[test]
fn sslkeylogfile_gets_both_legs_secrets() {
    let s = Setup::new();
    let keylog = s.out.path().join("keys.log");
    let certs = s.certs.path().to_string_lossy().into_owned();
    let ca = s.server_ca().to_string_lossy().into_owned();
    let scope = Imapscope::record_env(
        &format!("127.0.0.1:{}", s.dovecot.tls_port),
        s.out.path(),
        &[
            "--client-tls",
            "tls",
            "--certs",
            &certs,
            "--upstream-ca",
            &ca,
        ],
        &[("SSLKEYLOGFILE", &keylog)],
    );
    python(
        "tls_session.py",
        &[
            "ssl",
            &scope.port().to_string(),
            &s.our_ca().to_string_lossy(),
        ],
    );
    wait_for_ended(s.out.path(), 1);
    let text = std::fs::read_to_string(&keylog).expect("the key log was written");
    let randoms: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("CLIENT_TRAFFIC_SECRET_0"))
        .filter_map(|l| l.split(' ').nth(1))
        .collect();
    assert_eq!(randoms.len(), 2, "one handshake per leg:\n{text}");
}

/// Port 993 means implicit TLS upstream whatever the client leg says: `--client-tls none`
/// alone gives the none/tls combination (a plain client, no CA to install).
#[test]
fn port_993_implies_tls_upstream_even_for_a_plain_client() {
    let certs = tempfile::tempdir().unwrap();
    let certs_arg = certs.path().join("certs");
    let certs_arg = certs_arg.to_string_lossy();
    let cases = [
        (
            vec!["--client-tls", "none"],
            "client leg: none, upstream leg: tls",
        ),
        (vec![], "client leg: tls, upstream leg: tls"),
        (
            vec!["--client-tls", "none", "--upstream-tls", "none"],
            "client leg: none, upstream leg: none",
        ),
    ];
    for (flags, expected) in cases {
        let mut extra = vec!["--certs", &certs_arg];
        extra.extend(flags.iter().copied());
        let scope = Imapscope::record("127.0.0.1:993", Path::new("none"), &extra);
        let log = scope.log().join("\n");
        assert!(log.contains(expected), "{flags:?}: {log}");
    }
    let scope = Imapscope::record(
        "127.0.0.1:143",
        Path::new("none"),
        &["--client-tls", "tls", "--certs", &certs_arg],
    );
    let log = scope.log().join("\n");
    assert!(log.contains("client leg: tls, upstream leg: tls"), "{log}");
}
