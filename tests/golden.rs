//! The golden recordings in `recordings/golden/` (made by `scripts/record-golden.sh` through
//! `imapscope record` from a real Dovecot with real clients) as regression tests:
//! each replays green against a fresh, identically seeded Dovecot; each is served by
//! `imapscope serve` to the same client, which passes again; and both matchers can say no.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

const SCENARIOS: &[&str] = &[
    "login-select",
    "search-fetch",
    "store-copy-move-expunge",
    "append",
    "idle",
    "auth-plain",
    "errors",
    "compress",
    "curl-fetch",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden(name: &str) -> PathBuf {
    repo()
        .join("recordings/golden")
        .join(format!("{name}.jsonl"))
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("tests/fixtures/mail").join(name)).expect("mail fixture")
}

/// A fresh Dovecot seeded as the golden recordings' was.
fn seeded_dovecot() -> Dovecot {
    let dovecot = Dovecot::start();
    for m in ["01-plain.eml", "02-multipart.eml", "03-large.eml"] {
        dovecot.deliver("nell", "INBOX", &fixture(m));
    }
    dovecot
}

fn imapscope(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imapscope"));
    c.args(args).env_remove("RUST_LOG").stdin(Stdio::null());
    c
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Replays a transcript against `dovecot`; for `idle`, delivers the pushed message once
/// Dovecot is in the IDLE command.
fn replay(transcript: &Path, dovecot: &Dovecot, extra: &[&str]) -> Output {
    let upstream = dovecot.addr();
    let path = transcript.to_string_lossy().into_owned();
    let mut args = vec![
        "replay",
        &path,
        "--upstream",
        &upstream,
        "--login",
        "nell:ASecretPassword",
    ];
    args.extend(extra);
    let child = imapscope(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run imapscope replay");
    if transcript.file_stem().is_some_and(|s| s == "idle") {
        dovecot.wait_for_command("IDLE");
        dovecot.deliver("nell", "INBOX", &fixture("04-pushed.eml"));
    }
    child.wait_with_output().expect("imapscope replay")
}

#[test]
fn every_golden_recording_replays_green_against_a_fresh_dovecot() {
    for name in SCENARIOS {
        let dovecot = seeded_dovecot();
        let out = replay(&golden(name), &dovecot, &[]);
        assert!(out.status.success(), "{name}:\n{}", text(&out));
        assert!(text(&out).starts_with("PASS"), "{}", text(&out));
    }
}

/// The client of a scenario, pointed at `port`, with nothing delivered behind its back.
fn run_client(name: &str, port: u16) -> Output {
    let mut c = if name == "curl-fetch" {
        let mut c = Command::new("bash");
        c.arg(repo().join("tests/clients/golden_curl.sh"))
            .arg(port.to_string());
        c
    } else {
        let mut c = Command::new("python3");
        c.arg(repo().join("tests/clients/golden.py"))
            .args([name, &port.to_string(), "-"]);
        c
    };
    c.stdin(Stdio::null())
        .output()
        .expect("run the scenario's client")
}

#[test]
fn every_golden_recording_serves_its_own_client() {
    for name in SCENARIOS {
        let (child, port) = serve_unprobed(&["--speed", "5"], &golden(name));
        let client = run_client(name, port);
        let served = child.wait_with_output().expect("imapscope serve");
        assert!(
            client.status.success(),
            "{name}: the client failed against the fake server:\n{}\nserve said:\n{}",
            text(&client),
            text(&served)
        );
        assert!(served.status.success(), "{name}: serve:\n{}", text(&served));
        assert!(text(&served).contains("PASS"), "{}", text(&served));
    }
}

#[test]
fn a_changed_server_response_makes_replay_fail_with_a_diff() {
    let original = std::fs::read_to_string(golden("search-fetch")).unwrap();
    // The recorded SELECT said 3 messages exist; pretend it had said 4.
    assert!(original.contains("* 3 EXISTS"));
    let mutated = original.replacen("* 3 EXISTS", "* 4 EXISTS", 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mutated.jsonl");
    std::fs::write(&path, mutated).unwrap();
    let dovecot = seeded_dovecot();
    let out = replay(&path, &dovecot, &[]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.starts_with("FAIL"), "{shown}");
    assert!(shown.contains("- S: * 4 EXISTS"), "{shown}");
    assert!(shown.contains("+ S: * 3 EXISTS"), "{shown}");
    assert!(shown.contains("first difference"), "{shown}");
    assert!(shown.contains("SELECT INBOX"), "{shown}");
    assert!(shown.contains("bindings: UIDVALIDITY"), "{shown}");

    // The same failure as JSON, for CI.
    let dovecot = seeded_dovecot();
    let out = replay(&path, &dovecot, &["--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(json["ok"], false);
    assert_eq!(json["missing"], 1);
}

#[test]
fn a_different_client_command_makes_serve_fail() {
    let (child, port) = serve_unprobed(&["--speed", "5"], &golden("auth-plain"));
    // The `errors` client logs in with LOGIN: the recording authenticated with PLAIN.
    let client = run_client("errors", port);
    assert!(!client.status.success());
    let served = child.wait_with_output().expect("imapscope serve");
    let shown = text(&served);
    assert_eq!(served.status.code(), Some(1), "{shown}");
    assert!(shown.contains("unexpected"), "{shown}");
    assert!(shown.contains("never asked for"), "{shown}");
    // The diagnostic on stderr: what came, what was expected, the closest recorded command.
    let stderr = String::from_utf8_lossy(&served.stderr);
    assert!(
        stderr.contains("unexpected command") && stderr.contains("expected"),
        "{stderr}"
    );
}

#[test]
fn unusable_input_exits_2_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.jsonl");
    std::fs::write(&junk, "hello\n").unwrap();
    let out = imapscope(&[
        "replay",
        &junk.to_string_lossy(),
        "--upstream",
        "127.0.0.1:1",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("not an imapscope transcript"),
        "{}",
        text(&out)
    );
    let v9 = dir.path().join("v9.jsonl");
    let header = std::fs::read_to_string(golden("errors"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .replace("\"version\":1", "\"version\":9");
    std::fs::write(&v9, header).unwrap();
    let out = imapscope(&["replay", &v9.to_string_lossy(), "--upstream", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("version 9"), "{}", text(&out));
    // Redacted credentials and no --login: said before any traffic.
    let out = imapscope(&[
        "replay",
        &golden("errors").to_string_lossy(),
        "--upstream",
        "127.0.0.1:1",
    ])
    .env_remove("IMAPSCOPE_LOGIN")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--login"), "{}", text(&out));
}

/// The library API as a client developer uses it inside `cargo test`.
#[tokio::test]
async fn library_fake_server_for_a_client_under_test() {
    use imapscope::replay::{FakeServer, ServeOptions};
    let server = FakeServer::start(&[golden("auth-plain")], ServeOptions::default())
        .await
        .expect("a fake server");
    let port = server.addr().port();
    let client = tokio::task::spawn_blocking(move || run_client("auth-plain", port))
        .await
        .unwrap();
    assert!(client.status.success(), "{}", text(&client));
    let report = server.finish().await;
    report.assert_consumed();
}

#[test]
fn dovecot_rawlog_imports_into_a_transcript_that_replays() {
    rawlog_imports_and_replays("search-fetch", "UID SEARCH");
}

/// After COMPRESS, Dovecot logs the compressed stream cut at its `\n` bytes, each piece
/// stamped by its first byte: the import inflates it and orders it by the exchange.
#[test]
fn a_compressed_dovecot_rawlog_imports_and_replays() {
    rawlog_imports_and_replays("compress", "COMPRESS");
}

fn rawlog_imports_and_replays(scenario: &str, command: &str) {
    let dovecot = seeded_dovecot();
    let client = run_client(scenario, dovecot.port);
    assert!(client.status.success(), "{}", text(&client));
    let rawlog_dir = dovecot.dir.path().join("rawlog/nell");
    let deadline = Instant::now() + Duration::from_secs(10);
    let input = loop {
        let found = std::fs::read_dir(&rawlog_dir)
            .ok()
            .and_then(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .find(|p| p.extension().is_some_and(|e| e == "in"))
            })
            // The session is over: LOGOUT was logged (in the clear), or after COMPRESS, where
            // it is compressed, the log has stopped growing.
            .filter(|p| {
                let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
                let logged_out =
                    std::fs::read(p).is_ok_and(|b| b.windows(6).any(|w| w == b"LOGOUT"));
                let before = size(&p.with_extension("out"));
                std::thread::sleep(Duration::from_millis(300));
                logged_out || (before > 0 && size(&p.with_extension("out")) == before)
            });
        if let Some(p) = found {
            break p;
        }
        assert!(Instant::now() < deadline, "Dovecot wrote no rawlog");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = tempfile::tempdir().unwrap();
    let transcript = out.path().join("imported.jsonl");
    let run = imapscope(&[
        "import",
        "rawlog",
        &input.to_string_lossy(),
        "--out",
        &transcript.to_string_lossy(),
    ])
    .output()
    .unwrap();
    assert!(run.status.success(), "{}", text(&run));
    let t = imapscope::transcript::read_transcript(&transcript).unwrap();
    assert_paired(&transcript, &t);
    let names: Vec<String> = messages(&t)
        .iter()
        .filter(|m| m.kind == imapscope::protocol::Kind::Command)
        .filter_map(|m| m.name.as_deref().map(String::from))
        .collect();
    assert_eq!(
        names.first().map(String::as_str),
        Some("LOGIN"),
        "{names:?}"
    );
    assert_eq!(
        names.last().map(String::as_str),
        Some("LOGOUT"),
        "{names:?}"
    );
    assert!(names.contains(&command.to_string()), "{names:?}");

    // The imported session replays green against a fresh server.
    let fresh = seeded_dovecot();
    let replayed = replay(&transcript, &fresh, &[]);
    assert!(replayed.status.success(), "{}", text(&replayed));

    // Without timestamps (the rawlog binary's default), the same exchange comes out.
    let bare = out.path().join("bare");
    for ext in ["in", "out"] {
        let raw = std::fs::read(input.with_extension(ext)).unwrap();
        let stripped: Vec<u8> = raw
            .split_inclusive(|&b| b == b'\n')
            .flat_map(|l| {
                let skip = l.iter().position(|&b| b == b' ').map_or(0, |p| p + 1);
                l[skip..].to_vec()
            })
            .collect();
        std::fs::write(bare.with_extension(ext), stripped).unwrap();
    }
    let transcript2 = out.path().join("bare.jsonl");
    let run = imapscope(&[
        "import",
        "rawlog",
        &bare.to_string_lossy(),
        "--out",
        &transcript2.to_string_lossy(),
        "--user",
        "nell",
    ])
    .output()
    .unwrap();
    assert!(run.status.success(), "{}", text(&run));
    let t2 = imapscope::transcript::read_transcript(&transcript2).unwrap();
    assert_paired(&transcript2, &t2);
    let names2: Vec<String> = messages(&t2)
        .iter()
        .filter(|m| m.kind == imapscope::protocol::Kind::Command)
        .filter_map(|m| m.name.as_deref().map(String::from))
        .collect();
    assert_eq!(names, names2);
}
