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

/// What a person reads has no Rust in it (`Other(OtherError(CaUsedAsEndEntity))`).
fn assert_readable(text: &str) {
    for debug in ["Other(", "Error(", "Error {", "Context", "Os {", "kind:"] {
        assert!(
            !text.contains(debug),
            "Rust debug text {debug:?} in: {text}"
        );
    }
}

/// The `* BYE` a client got from imapscope in front of `upstream` with `flags`, and the
/// log, after sending `first` (nothing when empty).
fn refused(upstream: &str, flags: &[&str], first: &[u8]) -> (String, String) {
    let out = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let certs = certs.path().to_string_lossy().into_owned();
    let mut args = vec!["--certs", &certs];
    args.extend(flags);
    let scope = Imapscope::record(upstream, out.path(), &args);
    let mut c = RawClient::connect(scope.port());
    if !first.is_empty() {
        c.send(first);
    }
    c.until_eof();
    let bye = String::from_utf8_lossy(&c.received).into_owned();
    let all = wait_for_ended(out.path(), 1);
    let errors: Vec<String> = all[0]
        .1
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Error(e) => Some(e.message.clone()),
            _ => None,
        })
        .collect();
    scope.wait_for_log("the session's end", 1, |l| l.contains("#1 closed"));
    (bye, errors.join("\n") + "\n" + &scope.log().join("\n"))
}

/// A Dovecot whose certificate `openssl req` makes from `args` (besides the key options).
fn dovecot_with_openssl_certificate(args: &[&str]) -> Dovecot {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    Dovecot::start_with_certificate(move |dir| {
        let ok = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
            ])
            .arg("-keyout")
            .arg(dir.join("server-key.pem"))
            .arg("-out")
            .arg(dir.join("server.pem"))
            .args(&args)
            .output()
            .expect("openssl");
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
    })
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
    // Its end line before the process is killed (the client can be gone before it is written).
    wait_for_ended(s.out.path(), 1);
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
    assert!(
        text.contains("is not signed by a CA imapscope trusts")
            && text.contains("--upstream-ca FILE")
            && text.contains("--upstream-fingerprint SHA256:"),
        "{text}"
    );
    assert_readable(&text);
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
    let error = t
        .records
        .iter()
        .find_map(|r| match r {
            Record::Error(e) if e.during == "client-tls-handshake" => Some(e),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{:?}", t.records));
    assert!(
        error.message.contains("refused imapscope's certificate")
            && error.message.contains("`imapscope ca show`"),
        "{}",
        error.message
    );
    assert_readable(&error.message);
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

/// With STARTTLS expected on the client leg, a client that logs in without it (curl without
/// `--ssl-reqd`) is warned of, in the log and in the transcript: its credentials crossed both
/// legs in clear.
#[test]
fn a_login_without_starttls_is_warned_of() {
    let s = Setup::new();
    let scope = s.record(false, "starttls", "starttls", true);
    let out = curl(&[&format!("imap://127.0.0.1:{}/", scope.port())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    scope.wait_for_log("the warning", 1, |l| {
        l.contains("WARN") && l.contains("AUTHENTICATE before STARTTLS")
    });
    let all = wait_for_ended(s.out.path(), 1);
    let noted = all[0]
        .1
        .records
        .iter()
        .any(|r| matches!(r, Record::Note(n) if n.note.contains("credentials in clear")));
    assert!(noted, "the transcript says so too");
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

/// The certificate private servers have: `openssl req -x509 ... -subj /CN=localhost -addext
/// subjectAltName=DNS:localhost`, which OpenSSL 3 marks CA:TRUE. Refused with what it is and
/// the options that accept it; accepted when pinned by file or by fingerprint.
#[test]
fn a_textbook_self_signed_certificate_is_accepted_pinned() {
    let dovecot = dovecot_with_openssl_certificate(&[
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost",
    ]);
    let pem = dovecot.dir.path().join("server.pem");
    let text = std::fs::read_to_string(&pem).unwrap();
    let shown = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&pem)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("CA:TRUE"),
        "OpenSSL 3 marks it CA:TRUE"
    );
    assert!(text.contains("BEGIN CERTIFICATE"));
    let upstream = format!("localhost:{}", dovecot.tls_port);
    let tls = ["--client-tls", "none", "--upstream-tls", "tls"];

    // Not pinned: refused, saying what it is and what would accept it.
    let (bye, log) = refused(&upstream, &tls, b"");
    assert!(bye.starts_with("* BYE [UNAVAILABLE] imapscope: "), "{bye}");
    for part in [
        "presented a CA certificate",
        "--upstream-ca FILE",
        "subject CN=localhost",
        "issuer CN=localhost",
        "names DNS:localhost",
        "valid ",
    ] {
        assert!(bye.contains(part), "{part} in {bye}");
    }
    assert!(log.contains("presented a CA certificate"), "{log}");
    assert_readable(&bye);
    assert_readable(&log);
    let pin = bye
        .split("--upstream-fingerprint ")
        .nth(1)
        .and_then(|rest| rest.split(['.', ' ']).next())
        .expect("the option to pin it")
        .to_string();
    assert!(pin.starts_with("SHA256:") && pin.len() == 7 + 95, "{pin}");

    // Pinned by the very file, or by the fingerprint the refusal printed: the session runs.
    let pem_arg = pem.to_string_lossy().into_owned();
    for (flag, value, said) in [
        (
            "--upstream-ca",
            pem_arg.as_str(),
            "pinned: byte-identical to a certificate in --upstream-ca",
        ),
        (
            "--upstream-fingerprint",
            pin.as_str(),
            "pinned by --upstream-fingerprint",
        ),
    ] {
        let out = tempfile::tempdir().unwrap();
        let mut args = tls.to_vec();
        args.extend([flag, value]);
        let scope = Imapscope::record(&upstream, out.path(), &args);
        let got = curl(&[
            &format!("imap://127.0.0.1:{}/", scope.port()),
            "-X",
            "EXAMINE INBOX",
        ]);
        assert!(
            got.status.success(),
            "{flag}: {}",
            String::from_utf8_lossy(&got.stderr)
        );
        let all = wait_for_ended(out.path(), 1);
        let upstream_leg = tls_records(&all[0].1)
            .into_iter()
            .find(|l| l.leg == "upstream")
            .cloned()
            .expect("an upstream tls line");
        assert!(
            upstream_leg
                .verified
                .as_deref()
                .is_some_and(|v| v.starts_with(said)),
            "{flag}: {upstream_leg:?}"
        );
        let shown = Command::new(env!("CARGO_BIN_EXE_imapscope"))
            .arg("show")
            .arg(&all[0].0)
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&shown.stdout).contains(said));
    }

    // Pinned by file, it is still held to its name, as curl holds a --cacert anchor.
    let by_address = format!("127.0.0.1:{}", dovecot.tls_port);
    let mut args = tls.to_vec();
    args.extend(["--upstream-ca", &pem_arg]);
    let (bye, _) = refused(&by_address, &args, b"");
    assert!(
        bye.contains("is for DNS:localhost, not for 127.0.0.1 (the host in --upstream)"),
        "{bye}"
    );
    assert!(bye.contains("--upstream NAME:PORT"), "{bye}");
    assert_readable(&bye);
    // A fingerprint names exactly this certificate, whatever it says.
    let mut args = tls.to_vec();
    args.extend(["--upstream-fingerprint", &pin]);
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&by_address, out.path(), &args);
    let got = curl(&[&format!("imap://127.0.0.1:{}/", scope.port()), "-X", "NOOP"]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
}

/// A Dovecot presenting a self-signed certificate for localhost valid between two times.
fn dovecot_with_dates(not_before: i64, not_after: i64) -> Dovecot {
    Dovecot::start_with_certificate(move |dir| {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("server-key.pem"), key.serialize_pem()).unwrap();
    })
}

/// An expired or not yet valid certificate: its dates, the time now, and what would accept it.
#[test]
fn an_expired_certificate_is_refused_with_its_dates() {
    for (dovecot, said) in [
        (
            dovecot_with_dates(1_600_000_000, 1_700_000_000),
            "expired on 2023-11-14 22:13 UTC (it is now 20",
        ),
        (
            dovecot_with_dates(4_000_000_000, 4_100_000_000),
            "is not valid until 2096-10-02 07:06 UTC (it is now 20",
        ),
    ] {
        let pem = dovecot.dir.path().join("server.pem");
        let pem = pem.to_string_lossy();
        let (bye, _) = refused(
            &format!("localhost:{}", dovecot.tls_port),
            &[
                "--client-tls",
                "none",
                "--upstream-tls",
                "tls",
                "--upstream-ca",
                &pem,
            ],
            b"",
        );
        assert!(bye.contains(said), "{bye}");
        assert!(bye.contains("--upstream-fingerprint SHA256:"), "{bye}");
        assert_readable(&bye);
    }
}

/// Plain IMAP where TLS was expected and TLS where plain IMAP was, on either leg: each says
/// which option to use.
#[test]
fn tls_and_plain_ports_mixed_up_say_which_option_to_use() {
    let dovecot = Dovecot::start();
    let ca = dovecot.dir.path().join("server.pem");
    let ca = ca.to_string_lossy();
    let plain = format!("localhost:{}", dovecot.port);
    let tls_port = format!("localhost:{}", dovecot.tls_port);

    // Upstream: TLS asked of a plain port.
    let (bye, _) = refused(
        &plain,
        &[
            "--client-tls",
            "none",
            "--upstream-tls",
            "tls",
            "--upstream-ca",
            &ca,
        ],
        b"",
    );
    assert!(bye.contains("answered in plain text, not TLS"), "{bye}");
    assert!(bye.contains("--upstream-tls starttls"), "{bye}");
    // Upstream: plain IMAP asked of a TLS port (Dovecot hangs up on a command).
    let (bye, log) = refused(
        &tls_port,
        &["--client-tls", "none", "--upstream-tls", "none"],
        b"a1 CAPABILITY\r\n",
    );
    assert!(
        bye.contains("closed the connection without a greeting"),
        "{bye}"
    );
    assert!(bye.contains("--upstream-tls tls"), "{bye}");
    assert_readable(&log);

    // Client: a TLS client on a plain port (curl imaps://).
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&plain, out.path(), &["--client-tls", "none"]);
    let got = curl(&["-k", &format!("imaps://127.0.0.1:{}/", scope.port())]);
    assert!(!got.status.success());
    let all = wait_for_ended(out.path(), 1);
    let error = all[0]
        .1
        .records
        .iter()
        .find_map(|r| match r {
            Record::Error(e) => Some(e.message.clone()),
            _ => None,
        })
        .expect("an error line");
    assert!(
        error.contains("started a TLS handshake on a plain IMAP port")
            && error.contains("--client-tls tls"),
        "{error}"
    );
    // The hello itself is relayed unchanged, as everything a client sends.
    assert!(bytes_from(&all[0].1, imapscope::protocol::Side::Client).starts_with(b"\x16\x03"));

    // Client: a plain client on a TLS port.
    let (_, log) = refused(
        &tls_port,
        &[
            "--client-tls",
            "tls",
            "--upstream-tls",
            "tls",
            "--upstream-ca",
            &ca,
        ],
        b"a1 CAPABILITY\r\n",
    );
    assert!(
        log.contains("the client spoke plain text, not TLS")
            && log.contains("--client-tls starttls"),
        "{log}"
    );
    assert_readable(&log);
}

/// `serve` presents the certificate name the recorded client accepted: a client that connects
/// by address sends no SNI, and mbsync or fetchmail then check the CN, which `record` had
/// made the upstream host (127.0.0.1 here) and `serve` used to make `localhost`.
#[test]
fn serve_presents_the_certificate_name_the_recorded_client_accepted() {
    let s = Setup::new();
    let scope = s.record(true, "tls", "tls", true);
    let ca = s.our_ca();
    let out = curl(&[
        "--cacert",
        &ca.to_string_lossy(),
        &format!("imaps://127.0.0.1:{}/INBOX;UID=1", scope.port()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = wait_for_ended(s.out.path(), 1);
    let path = all[0].0.to_string_lossy().into_owned();
    let certs = s.certs.path().to_string_lossy().into_owned();
    let (mut serve, port) = start_serve(&[&path, "--certs", &certs]);
    let listen = format!("127.0.0.1:{port}");
    // No -servername: an address, as mbsync with `Host 127.0.0.1` connects.
    let s_client = Command::new("openssl")
        .args(["s_client", "-connect", &listen, "-CAfile"])
        .arg(&ca)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl");
    let _ = serve.kill();
    let _ = serve.wait();
    let text = String::from_utf8_lossy(&s_client.stdout);
    assert!(text.contains("subject=CN = 127.0.0.1"), "{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
}

/// A plain upstream that says nothing (an implicit-TLS port waiting for a hello, while the
/// client waits for a greeting) gets a note after five seconds, and the session goes on: the
/// client's first bytes, once sent, are relayed as ever.
#[test]
fn a_silent_upstream_is_named_after_five_seconds() {
    let dovecot = Dovecot::start();
    let tls_port = format!("localhost:{}", dovecot.tls_port);
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(
        &tls_port,
        out.path(),
        &["--client-tls", "none", "--upstream-tls", "none"],
    );
    let mut c = RawClient::connect(scope.port());
    scope.wait_for_log("the silent upstream's note", 1, |l| {
        l.contains("has sent no greeting after 5 s") && l.contains("--upstream-tls tls")
    });
    // The wait did not end the session: a command still reaches the server, which hangs up
    // on plain text, and that is said too.
    c.send(b"a1 CAPABILITY\r\n");
    c.until_eof();
    let bye = String::from_utf8_lossy(&c.received).into_owned();
    assert!(
        bye.contains("closed the connection without a greeting"),
        "{bye}"
    );
    let all = wait_for_ended(out.path(), 1);
    let noted =
        all[0].1.records.iter().any(
            |r| matches!(r, Record::Note(n) if n.note.contains("has sent no greeting after 5 s")),
        );
    assert!(noted, "the note is in the transcript too");
}

/// A client that reads slowly gets the whole of large answers over TLS. The end of an answer
/// used to stay in rustls when the client's socket was full at the last write, and the client
/// waited for ever (seen once with a Python client in the load benchmark). Whether the socket
/// is full at that moment is the kernel's timing, so this test does not catch that every time;
/// `records_rustls_holds_back_are_sent_before_a_chunk_counts_as_written` in
/// `relay/connection.rs` does, with a 16 KiB pipe for a socket.
#[test]
fn a_slow_tls_client_gets_the_whole_of_a_large_fetch() {
    let s = Setup::new();
    let size = 8 << 20;
    s.dovecot.deliver("nell", "INBOX", &message("large", size));
    // A plain upstream: imapscope then reads up to 256 KiB at once, so the last chunk of an
    // answer is large and more likely to find the client's socket full.
    let scope = s.record(false, "tls", "none", false);
    let out = python(
        "tls_session.py",
        &[
            "slow",
            &scope.port().to_string(),
            &s.our_ca().to_string_lossy(),
        ],
    );
    let seen: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    assert_eq!(seen["complete"], true, "{seen}");
    for received in seen["received"].as_array().unwrap() {
        assert!(received.as_u64().unwrap() > size as u64, "{seen}");
    }
}
