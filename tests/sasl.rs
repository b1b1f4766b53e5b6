//! Logins whose answer depends on the server's challenge (CRAM-MD5, SCRAM-SHA-1/256), made
//! by real clients (Python's imaplib, curl) through `imapscope record`: the transcripts hide
//! them, and `replay --login` must log in again against another Dovecot, whose challenges
//! differ, by answering this run's challenge.

mod support;

use std::process::{Command, Stdio};

use support::*;

const MECHANISMS: &str = "plain login cram-md5 scram-sha-1 scram-sha-256";

/// curl logs in as `user` (`USER:PASS`) through `port` with `options` and examines INBOX.
fn curl_examines(port: &str, user: &str, options: &[&str]) {
    let curl = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(options)
        .args(["--user", user])
        .arg(format!("imap://127.0.0.1:{port}/INBOX"))
        .args(["--request", "EXAMINE INBOX"])
        .stdin(Stdio::null())
        .output()
        .expect("curl is needed for these tests");
    assert!(
        curl.status.success(),
        "{options:?}: {}",
        String::from_utf8_lossy(&curl.stderr)
    );
}

#[test]
fn challenge_response_logins_replay_against_another_server() {
    let recorded_on = Dovecot::start_with_mechanisms(MECHANISMS);
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&recorded_on.addr(), out.path(), &[]);
    let port = scope.port().to_string();
    for mechanism in ["CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"] {
        let said = python("sasl_login.py", &[mechanism, &port]);
        assert!(said.contains("logged in"), "{said}");
    }
    // curl's own CRAM-MD5; and LOGIN with the user name sent with the command (SASL-IR), as
    // neomutt does too: the replay must then answer only "Password:".
    let nell = format!("nell:{PASSWORD}");
    curl_examines(&port, &nell, &["--login-options", "AUTH=CRAM-MD5"]);
    curl_examines(
        &port,
        &nell,
        &["--login-options", "AUTH=LOGIN", "--sasl-ir"],
    );
    let transcripts = wait_for_ended(out.path(), 5);
    for (path, t) in &transcripts {
        assert_paired(path, t);
    }
    assert_no_secrets(out.path(), &[PASSWORD]);
    // The server's SCRAM proof (`v=`) would let a password guess be tested offline against
    // the recorded exchange: hidden too, once per SCRAM login.
    let proofs: Vec<_> = transcripts
        .iter()
        .flat_map(|(_, t)| messages(t))
        .filter(|m| m.redacted.iter().any(|r| r == "sasl-server-proof"))
        .collect();
    assert_eq!(proofs.len(), 2, "{proofs:?}");
    for (_, t) in &transcripts {
        for m in messages(t) {
            let text = m.payload.to_bytes().unwrap_or_default();
            let payload = text.strip_prefix(b"+ ").unwrap_or_default().trim_ascii();
            let decoded =
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, payload)
                    .unwrap_or_default();
            assert!(!decoded.starts_with(b"v="), "{m:?}");
        }
    }
    scope.terminate();

    let replay_on = Dovecot::start_with_mechanisms(MECHANISMS);
    let replay = Command::new(env!("CARGO_BIN_EXE_imapscope"))
        .arg("replay")
        .arg(out.path())
        .args(["--upstream", &replay_on.addr()])
        .args(["--login", &format!("nell:{PASSWORD}")])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&replay.stdout);
    assert!(
        replay.status.success(),
        "{shown}{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert_eq!(shown.matches("PASS").count(), 5, "{shown}");

    // Without the password there is nothing to answer the challenge with: exit 2, and why.
    let without = Command::new(env!("CARGO_BIN_EXE_imapscope"))
        .arg("replay")
        .arg(out.path())
        .args(["--upstream", &replay_on.addr()])
        .env_remove("IMAPSCOPE_LOGIN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(without.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&without.stderr).contains("--login"),
        "{}",
        String::from_utf8_lossy(&without.stderr)
    );
}

/// Sessions of several users replay each as its own user with one `--login` per user; one
/// `--login` alone stands for every user, and the report says whose account it used; a user
/// left out of several is named.
#[test]
fn each_session_logs_in_again_as_its_own_user() {
    let recorded_on = Dovecot::start();
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&recorded_on.addr(), out.path(), &[]);
    let port = scope.port().to_string();
    for user in [format!("nell:{PASSWORD}"), "alice:alicepw".to_string()] {
        curl_examines(&port, &user, &[]);
    }
    wait_for_ended(out.path(), 2);
    assert_no_secrets(out.path(), &[PASSWORD, "alicepw"]);
    scope.terminate();

    let replay_on = Dovecot::start();
    let replay = |logins: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_imapscope"));
        command
            .arg("replay")
            .arg(out.path())
            .args(["--upstream", &replay_on.addr()]);
        for login in logins {
            command.args(["--login", login]);
        }
        let done = command
            .env_remove("RUST_LOG")
            .env_remove("IMAPSCOPE_LOGIN")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&done.stdout),
            String::from_utf8_lossy(&done.stderr)
        );
        (done.status.code(), said)
    };
    let nell = format!("nell:{PASSWORD}");

    let (code, said) = replay(&[&nell, "alice:alicepw"]);
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(said.matches("PASS").count(), 2, "{said}");
    assert!(!said.contains("logged in as"), "{said}");

    let (_, said) = replay(&[&nell]);
    assert_eq!(
        said.matches("[logged in as nell; the recording logged in as alice]")
            .count(),
        1,
        "{said}"
    );

    let (code, said) = replay(&[&nell, "bob:bobpw"]);
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains("of alice, for whom no --login was given"),
        "{said}"
    );
}

/// A SCRAM client checks the server's proof of its password, which no recording holds:
/// `serve --login` makes it for this run's nonces, and without the password `serve` refuses
/// the login and says why.
#[test]
fn scram_logins_are_served_with_the_password() {
    let recorded_on = Dovecot::start_with_mechanisms(MECHANISMS);
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&recorded_on.addr(), out.path(), &[]);
    let port = scope.port().to_string();
    let mechanisms = ["SCRAM-SHA-1", "SCRAM-SHA-256"];
    for mechanism in mechanisms {
        let said = python("sasl_login.py", &[mechanism, &port]);
        assert!(said.contains("logged in"), "{said}");
    }
    let transcripts = wait_for_ended(out.path(), 2);
    scope.terminate();
    for ((path, _), mechanism) in transcripts.iter().zip(mechanisms) {
        let login = format!("nell:{PASSWORD}");
        let (serve, port) = serve_unprobed(&["--login", &login, "--linger", "0"], path);
        let said = python("sasl_login.py", &[mechanism, &port.to_string()]);
        assert!(said.contains("logged in"), "{said}");
        let served = serve.wait_with_output().unwrap();
        assert!(
            served.status.success(),
            "{}{}",
            String::from_utf8_lossy(&served.stdout),
            String::from_utf8_lossy(&served.stderr)
        );

        let (serve, port) = serve_unprobed(&["--linger", "0"], path);
        let client = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/clients/sasl_login.py"
            ))
            .args([mechanism, &port.to_string()])
            .output()
            .unwrap();
        assert!(!client.status.success());
        let served = serve.wait_with_output().unwrap();
        let report = String::from_utf8_lossy(&served.stdout);
        assert!(!served.status.success(), "{report}");
        assert!(report.contains("serve cannot make"), "{report}");
    }
}
