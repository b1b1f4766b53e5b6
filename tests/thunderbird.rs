//! The real Thunderbird (Debian's `thunderbird`, headless, a fresh profile per run, driven by
//! `tests/clients/thunderbird.py`) against the real test Dovecot, through `imapscope record`.
//! Its capture (five connections opened at once, four of them ending inside IDLE, never a
//! LOGOUT) must replay green against a re-seeded Dovecot, and `imapscope serve` must make a
//! fresh Thunderbird complete the same sync from it, again and again, although Thunderbird
//! opens its connections in a different order each run and hands its work to whichever one
//! is free.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::*;

/// One Thunderbird at a time: two starting at once on two cores have made Marionette miss
/// its start-up deadline.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A Dovecot seeded as every Thunderbird test expects: three messages in INBOX, one in Archive.
fn seeded() -> Dovecot {
    let dovecot = Dovecot::start();
    let mail = repo().join("tests/fixtures/mail");
    for name in ["01-plain.eml", "02-multipart.eml", "03-large.eml"] {
        dovecot.deliver("nell", "INBOX", &std::fs::read(mail.join(name)).unwrap());
    }
    dovecot.deliver(
        "nell",
        "Archive",
        &std::fs::read(mail.join("04-pushed.eml")).unwrap(),
    );
    dovecot
}

/// What one Thunderbird sync did, as the harness reports it.
#[derive(Debug)]
struct Sync {
    json: serde_json::Value,
    raw: String,
}

impl Sync {
    fn offline(&self) -> u64 {
        self.json["messages_offline"].as_u64().unwrap_or(0)
    }

    fn bad(&self) -> u64 {
        self.json["bad"].as_u64().unwrap_or(u64::MAX)
    }

    fn connections(&self) -> usize {
        self.json["connections"].as_u64().unwrap_or(0) as usize
    }

    /// The folders and their message counts, and the subjects downloaded: what a person
    /// would call "the same sync".
    fn synced(&self) -> (serde_json::Value, serde_json::Value) {
        (self.json["folders"].clone(), self.json["subjects"].clone())
    }
}

/// Runs a first sync of nell's account by the real Thunderbird at 127.0.0.1:`port`.
fn thunderbird(port: u16, security: &str, ca: &Path, scratch: &Path, name: &str) -> Sync {
    let profile = scratch.join(name);
    let out = Command::new("python3")
        .arg(repo().join("tests/clients/thunderbird.py"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--security",
            security,
            "--user",
            "nell",
            "--password",
            PASSWORD,
        ])
        .arg("--profile")
        .arg(&profile)
        .arg("--ca")
        .arg(ca)
        .args(["--compress", "--expect-messages", "4", "--timeout", "120"])
        .stdin(Stdio::null())
        .output()
        .expect("run tests/clients/thunderbird.py (needs python3 and thunderbird)");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "Thunderbird ({name}) did not complete its sync:\n{raw}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = serde_json::from_str(raw.trim()).expect("the harness prints one JSON object");
    Sync { json, raw }
}

/// `imapscope` with `args`; its exit status and output.
fn imapscope(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imapscope"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run imapscope");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Captures a Thunderbird sync through `imapscope record` with `mode` TLS on both legs.
/// Returns the capture directory's owner, the certificates directory and the sync.
fn capture(mode: &str, scratch: &Path) -> (PathBuf, PathBuf, Sync) {
    let dovecot = seeded();
    let out = scratch.join(format!("capture-{mode}"));
    let certs = scratch.join("certs");
    let server_pem = dovecot.dir.path().join("server.pem");
    let upstream = match mode {
        "tls" => format!("127.0.0.1:{}", dovecot.tls_port),
        _ => dovecot.addr(),
    };
    let scope = Imapscope::record(
        &upstream,
        &out,
        &[
            "--client-tls",
            mode,
            "--upstream-tls",
            mode,
            "--upstream-ca",
            server_pem.to_str().unwrap(),
            "--certs",
            certs.to_str().unwrap(),
        ],
    );
    let sync = thunderbird(
        scope.port(),
        mode,
        &certs.join("ca.pem"),
        scratch,
        &format!("record-{mode}"),
    );
    assert_eq!(sync.offline(), 4, "{}", sync.raw);
    assert_eq!(sync.bad(), 0, "{}", sync.raw);
    let transcripts = wait_for_ended(&out, sync.connections());
    assert!(
        transcripts.len() >= 2,
        "Thunderbird opens several connections: {}",
        sync.raw
    );
    // Thunderbird quits inside IDLE: that last IDLE has no completion; everything else does.
    for (path, t) in &transcripts {
        assert_paired_until_cut_off(path, t, &["IDLE"]);
    }
    assert_no_secrets(&out, &[PASSWORD]);
    scope.terminate();
    (out, certs, sync)
}

/// Replays the capture in `dir` against a freshly seeded Dovecot: every session green.
fn replays_green(dir: &Path, mode: &str, concurrent: bool) {
    let dovecot = seeded();
    let server_pem = dovecot.dir.path().join("server.pem");
    let upstream = match mode {
        "tls" => format!("127.0.0.1:{}", dovecot.tls_port),
        _ => dovecot.addr(),
    };
    let login = format!("nell:{PASSWORD}");
    let mut args = vec![
        "replay",
        dir.to_str().unwrap(),
        "--upstream",
        &upstream,
        "--upstream-ca",
        server_pem.to_str().unwrap(),
        "--login",
        &login,
    ];
    if concurrent {
        args.push("--concurrent");
    }
    let (code, shown) = imapscope(&args);
    assert_eq!(code, 0, "replay of {} failed:\n{shown}", dir.display());
    assert!(!shown.contains("FAIL"), "{shown}");
    assert!(shown.matches("PASS").count() >= 2, "{shown}");
}

/// Serves the capture in `dir` `rounds` times to a fresh Thunderbird each time: each syncs
/// what `expected` synced, with no BAD, and serve ends having used every recording fully.
fn serves_to_thunderbird(dir: &Path, certs: &Path, mode: &str, expected: &Sync, rounds: usize) {
    let scratch = tempfile::tempdir().unwrap();
    let certs_arg = certs.to_string_lossy();
    let rounds_arg = rounds.to_string();
    let (mut serve, port) = serve_unprobed(&["--certs", &certs_arg, "--rounds", &rounds_arg], dir);
    // A port probe, as monitoring makes: it must consume nothing (checked at the end).
    drop(std::net::TcpStream::connect(("127.0.0.1", port)).expect("probe serve"));
    /// Ends serve if the test fails before serve does.
    struct Reap(u32);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .arg(self.0.to_string())
                .stderr(Stdio::null())
                .status();
        }
    }
    let _reap = Reap(serve.id());
    let _ = &mut serve;
    for round in 0..rounds {
        let sync = thunderbird(
            port,
            mode,
            &certs.join("ca.pem"),
            scratch.path(),
            &format!("serve-{round}"),
        );
        assert_eq!(sync.bad(), 0, "round {round}: {}", sync.raw);
        assert_eq!(
            sync.synced(),
            expected.synced(),
            "round {round}: {}",
            sync.raw
        );
    }
    let out = serve
        .wait_with_output()
        .expect("serve ends after its rounds");
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "serve:\n{shown}");
    assert!(!shown.contains("FAIL"), "{shown}");
    assert!(
        shown.contains("connection(s) closed before their first command"),
        "{shown}"
    );
}

#[test]
fn starttls_compress_capture_replays_and_serves_a_fresh_thunderbird_three_times() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = tempfile::tempdir().unwrap();
    let (dir, certs, sync) = capture("starttls", scratch.path());
    replays_green(&dir, "starttls", false);
    replays_green(&dir, "starttls", true);
    serves_to_thunderbird(&dir, &certs, "starttls", &sync, 3);
}

/// The golden Thunderbird capture (`scripts/record-golden-thunderbird.sh`) replays green
/// against a freshly seeded Dovecot and makes a fresh Thunderbird sync what it synced.
#[test]
fn golden_thunderbird_capture_replays_both_ways() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = repo().join("recordings/golden/thunderbird");
    replays_green(&dir, "starttls", false);

    // A changed line in a message the server sent fails the replay, with that line shown.
    let tampered = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace("this is the first golden", "this is the frist golden");
        std::fs::write(tampered.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let dovecot = seeded();
    let (code, shown) = imapscope(&[
        "replay",
        tampered.path().to_str().unwrap(),
        "--upstream",
        &dovecot.addr(),
        "--upstream-ca",
        dovecot.dir.path().join("server.pem").to_str().unwrap(),
        "--login",
        &format!("nell:{PASSWORD}"),
    ]);
    assert_eq!(code, 1, "{shown}");
    assert!(
        shown.contains("-this is the frist golden message"),
        "{shown}"
    );
    assert!(
        shown.contains("+this is the first golden message"),
        "{shown}"
    );
    let raw = std::fs::read_to_string(dir.join("sync.json")).expect("sync.json beside the capture");
    let expected = Sync {
        json: serde_json::from_str(raw.trim()).expect("sync.json is the harness's JSON"),
        raw,
    };
    let certs = tempfile::tempdir().unwrap();
    serves_to_thunderbird(&dir, certs.path(), "starttls", &expected, 1);
}

#[test]
fn implicit_tls_capture_replays_and_serves() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = tempfile::tempdir().unwrap();
    let (dir, certs, sync) = capture("tls", scratch.path());
    replays_green(&dir, "tls", false);
    serves_to_thunderbird(&dir, &certs, "tls", &sync, 1);
}
