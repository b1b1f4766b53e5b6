//! imapscope in front of a real Cyrus IMAP (tests/cyrus/start.sh), the other server a
//! careful user runs: what it does differently from Dovecot must record as cleanly.

mod support;

use std::process::Command;

use imapscope::transcript::format::Record;
use support::*;

/// Cyrus ends a TLS session after LOGOUT by closing TCP without TLS's close_notify (checked
/// with openssl s_client and Python's ssl, tests/cyrus/NOTES.md). That is the end of a
/// session, not a failure: the transcript says so and counts no error.
#[test]
fn a_tls_close_without_close_notify_is_an_end_not_an_error() {
    let cyrus = Cyrus::start();
    let out = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let ca = cyrus.certificate();
    let scope = Imapscope::record(
        &format!("localhost:{}", cyrus.tls_port),
        out.path(),
        &[
            "--client-tls",
            "none",
            "--upstream-tls",
            "tls",
            "--upstream-ca",
            &ca.to_string_lossy(),
            "--certs",
            &certs.path().to_string_lossy(),
        ],
    );
    let mut c = RawClient::connect(scope.port());
    c.read_until("the greeting", |l| l.starts_with(b"* OK"));
    assert!(
        c.command("a1", &format!("LOGIN nell {PASSWORD}"))
            .contains("a1 OK")
    );
    assert!(c.command("a2", "SELECT INBOX").contains("a2 OK"));
    c.send(b"a3 LOGOUT\r\n");
    // Read to the end: the server hangs up first.
    c.until_eof();
    let text = String::from_utf8_lossy(&c.received).into_owned();
    assert!(text.contains("* BYE") && text.contains("a3 OK"), "{text}");

    let all = wait_for_ended(out.path(), 1);
    let (path, t) = &all[0];
    assert_paired(path, t);
    let Some(Record::End(end)) = t.records.last() else {
        panic!("no end line")
    };
    assert_eq!(end.reason, "server closed without TLS close_notify");
    assert!(
        !t.records.iter().any(|r| matches!(r, Record::Error(_))),
        "no error line: {:?}",
        t.records
    );
    let ls = Command::new(env!("CARGO_BIN_EXE_imapscope"))
        .args(["ls", "--json"])
        .arg(out.path())
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(listing.contains("\"errors\":0"), "{listing}");
    scope.wait_for_log("the end", 1, |l| {
        l.contains("#1 closed: server closed without TLS close_notify")
    });
}
