//! `imapscope record` between real clients and a real Dovecot.
//!
//! Each test starts its own Dovecot (tests/dovecot/start.sh) on free loopback ports and the
//! `imapscope` binary in front of it, drives a real client through it and then checks what
//! the client got against what Dovecot sent (its own raw log), and the transcript against both.

mod support;

use std::time::Duration;

use imapscope::protocol::{Kind, Side};
use imapscope::transcript::format::Record;
use support::*;

/// Dovecot's rawlog puts `SECONDS.MICROS ` before every line; take it off.
fn strip_rawlog_timestamps(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for line in raw.split_inclusive(|&b| b == b'\n') {
        let mut rest = line;
        if let Some(space) = line.iter().position(|&b| b == b' ')
            && space > 0
            && line[..space]
                .iter()
                .all(|&b| b.is_ascii_digit() || b == b'.')
        {
            rest = &line[space + 1..];
        }
        out.extend_from_slice(rest);
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The long scripted session: every framing case a client can produce, byte-exact.
#[test]
fn raw_session_is_relayed_and_recorded_byte_for_byte() {
    let dovecot = Dovecot::start();
    dovecot.deliver("nell", "INBOX", &message("small", 600));
    dovecot.deliver("nell", "INBOX", &message("large", 200 * 1024));
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&dovecot.addr(), out.path(), &["--record-secrets"]);

    let mut c = RawClient::connect(scope.port());
    c.read_until("the greeting", |l| l.starts_with(b"* OK"));
    assert!(c.command("a1", "LOGIN nell wrong").starts_with("a1 NO"));
    assert!(c.command("a2", "FROBNICATE").contains("a2 BAD"));
    // LOGIN with synchronizing literals for both arguments.
    c.send(b"a3 LOGIN {4}\r\n");
    c.until_continuation();
    c.send(format!("nell {{{}}}\r\n", PASSWORD.len()).as_bytes());
    c.until_continuation();
    c.send(format!("{PASSWORD}\r\n").as_bytes());
    assert!(c.until_tagged("a3").contains("a3 OK"));
    assert!(c.command("a4", "SELECT INBOX").contains("* 2 EXISTS"));
    // APPEND with a synchronizing literal, then with LITERAL+.
    let m = message("appended-sync", 3000);
    c.send(format!("a5 APPEND INBOX (\\Seen) {{{}}}\r\n", m.len()).as_bytes());
    c.until_continuation();
    c.send(&m);
    c.send(b"\r\n");
    assert!(c.until_tagged("a5").contains("a5 OK [APPENDUID"));
    let m = message("appended-nonsync", 5000);
    c.send(format!("a6 APPEND INBOX {{{}+}}\r\n", m.len()).as_bytes());
    c.send(&m);
    c.send(b"\r\n");
    assert!(c.until_tagged("a6").contains("a6 OK"));
    // Pipelined: three commands in one write.
    c.send(b"a7 NOOP\r\na8 FETCH 1:* (FLAGS)\r\na9 UID SEARCH ALL\r\n");
    let piped = c.until_tagged("a9");
    assert!(piped.contains("a7 OK") && piped.contains("a8 OK"));
    // Every message whole, the 200 KB one included.
    let all = c.command("a10", "FETCH 1:* (BODY.PEEK[])");
    assert!(all.len() > 200 * 1024 && all.contains("Subject: large"));
    // IDLE while a message arrives.
    c.send(b"a11 IDLE\r\n");
    c.until_continuation();
    dovecot.deliver("nell", "INBOX", &message("pushed", 400));
    c.read_until("an EXISTS push", |l| l.ends_with(b" EXISTS\r\n"));
    c.send(b"DONE\r\n");
    assert!(c.until_tagged("a11").contains("a11 OK"));
    c.send(b"a12 LOGOUT\r\n");
    c.until_eof();
    assert!(contains(&c.received, b"* BYE"));

    let all = wait_for_ended(out.path(), 1);
    let (path, t) = &all[0];
    assert_paired(path, t);
    // The transcript holds exactly the bytes each side sent.
    assert_eq!(bytes_from(t, Side::Client), c.sent, "client bytes differ");
    assert_eq!(
        bytes_from(t, Side::Server),
        c.received,
        "server bytes differ"
    );
    // And, independently of imapscope's own record: what Dovecot logged having sent after
    // login is exactly what the client received, and what it read is what the client sent.
    let logs = dovecot.rawlogs("nell");
    assert_eq!(logs.len(), 1, "one logged-in session in Dovecot's raw log");
    let (dovecot_in, dovecot_out) = (
        strip_rawlog_timestamps(&logs[0].0),
        strip_rawlog_timestamps(&logs[0].1),
    );
    assert!(dovecot_out.len() > 200 * 1024);
    assert!(
        c.received.ends_with(&dovecot_out),
        "the client did not receive what Dovecot sent"
    );
    assert!(
        c.sent.ends_with(&dovecot_in),
        "Dovecot did not read what the client sent"
    );

    let ms = messages(t);
    let kinds = |k: Kind| ms.iter().filter(|m| m.kind == k).count();
    assert_eq!(kinds(Kind::Greeting), 1);
    assert_eq!(kinds(Kind::Command), 12);
    assert_eq!(kinds(Kind::IdleDone), 1);
    assert_eq!(kinds(Kind::ContinuationRequest), 4);
    let status = |tag: &str| {
        ms.iter()
            .find(|m| m.kind == Kind::Completion && m.tag.as_deref() == Some(tag))
            .and_then(|m| m.status)
            .map(|s| s.as_str())
    };
    assert_eq!(status("a1"), Some("NO"));
    assert_eq!(status("a2"), Some("BAD"));
    assert_eq!(status("a3"), Some("OK"));
    let select = ms.iter().find(|m| m.command.as_deref() == Some("SELECT"));
    assert_eq!(select.and_then(|m| m.mailbox.as_deref()), Some("INBOX"));
    let idle = ms
        .iter()
        .find(|m| m.name.as_deref() == Some("IDLE"))
        .unwrap();
    assert!(
        ms.iter()
            .any(|m| m.name.as_deref() == Some("EXISTS") && *m.in_flight == [idle.seq]),
        "the EXISTS pushed during IDLE is attributed to IDLE"
    );
    let Some(Record::End(end)) = t.records.last() else {
        panic!("no end line")
    };
    assert_eq!(end.bytes_from_client, c.sent.len() as u64);
    assert_eq!(end.bytes_from_server, c.received.len() as u64);
    assert_eq!(end.user.as_deref(), Some("nell"));
    assert!(end.unanswered.is_empty());

    // One human line per completed command.
    scope.wait_for_log("#1 a4 SELECT INBOX -> OK ... ms", 1, |l| {
        l.contains("#1 a4 SELECT INBOX -> OK") && l.ends_with(" ms")
    });
}

/// The client of [`commands_answered_before_their_literal_stay_paired`]: a LOGIN with the
/// password as a synchronizing literal, then APPENDs a server answers before their literal.
fn refused_literals_client(port: u16) -> RawClient {
    let mut c = RawClient::connect(port);
    c.read_until("the greeting", |l| l.starts_with(b"* OK"));
    // The password as a synchronizing literal, the user name quoted.
    c.send(format!("e1 LOGIN \"nell\" {{{}}}\r\n", PASSWORD.len()).as_bytes());
    c.until_continuation();
    c.send(format!("{PASSWORD}\r\n").as_bytes());
    assert!(c.until_tagged("e1").contains("e1 OK"));
    // Synchronizing literals refused with NO (a missing mailbox) and BAD (a bad flag): the
    // client sends no data and goes on.
    c.send(b"a2 APPEND nosuchbox {21}\r\n");
    assert!(c.until_tagged("a2").contains("a2 NO [TRYCREATE]"));
    assert!(c.command("a3", "NOOP").contains("a3 OK"));
    c.send(b"a4 APPEND nosuchbox ~{21}\r\n");
    assert!(c.until_tagged("a4").contains("a4 NO [TRYCREATE]"));
    c.send(b"a5 APPEND INBOX (\\Bogus) {21}\r\n");
    assert!(c.until_tagged("a5").contains("a5 BAD"));
    // LITERAL+: Dovecot answers after the line, while the data is still to come.
    c.send(b"a6 APPEND nosuchbox {93+}\r\n");
    assert!(c.until_tagged("a6").contains("a6 NO [TRYCREATE]"));
    c.send(&[b'x'; 93]);
    c.send(b"\r\n");
    c.send(b"a7 APPEND nosuchbox ~{21+}\r\n");
    assert!(c.until_tagged("a7").contains("a7 NO [TRYCREATE]"));
    c.send(b"a7 data, not a command");
    c.send(b"\r\n");
    assert!(c.command("a8", "NOOP").contains("a8 OK"));
    c.send(b"a9 LOGOUT\r\n");
    c.until_eof();
    c
}

/// A server may answer a command before its literal: a refused synchronizing literal is never
/// sent (RFC 9051 7.5), a refused LITERAL+ one still is. The transcript follows on, and the
/// recording replays against the server and serves its client.
#[test]
fn commands_answered_before_their_literal_stay_paired() {
    let dovecot = Dovecot::start();
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&dovecot.addr(), out.path(), &[]);
    let c = refused_literals_client(scope.port());

    let all = wait_for_ended(out.path(), 1);
    let (path, t) = &all[0];
    assert_paired(path, t);
    assert_eq!(bytes_from(t, Side::Server), c.received);
    let ms = messages(t);
    let commands: Vec<_> = ms
        .iter()
        .filter(|m| m.kind == Kind::Command)
        .map(|m| m.tag.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(
        commands,
        ["e1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9"]
    );
    let refusals = t
        .records
        .iter()
        .filter(|r| matches!(r, Record::Note(n) if n.note.contains("answered before the literal")))
        .count();
    assert_eq!(refusals, 3, "a2, a4 and a5 sent no literal");
    let Some(Record::End(end)) = t.records.last() else {
        panic!("no end line")
    };
    assert!(end.unanswered.is_empty(), "{:?}", end.unanswered);
    assert_eq!(end.user.as_deref(), Some("nell"));
    assert_eq!(end.bytes_from_client, c.sent.len() as u64);
    // Past the LOGIN (redacted), the client's bytes are recorded as sent.
    let after_login = |b: &[u8]| b[b.windows(4).position(|w| w == b"a2 A").unwrap()..].to_vec();
    assert_eq!(
        after_login(&bytes_from(t, Side::Client)),
        after_login(&c.sent)
    );
    // Only the password is hidden; the user name is what `ls` shows.
    let text = std::fs::read_to_string(path).unwrap();
    assert!(!text.contains(PASSWORD));
    assert!(text.contains(r#"e1 LOGIN \"nell\" <redacted>"#), "{text}");
    let imapscope = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_imapscope"))
            .args(args)
            .output()
            .unwrap()
    };
    let ls = imapscope(&["ls", &out.path().to_string_lossy()]);
    assert!(String::from_utf8_lossy(&ls.stdout).contains("nell"));
    // The live log pairs each command too.
    for (tag, what) in [("a3", "NOOP -> OK"), ("a2", "APPEND"), ("a6", "APPEND")] {
        scope.wait_for_log(&format!("{tag} {what}"), 1, |l| {
            l.contains(&format!("#1 {tag} {what}")) && !l.contains(" ? ")
        });
    }

    // Replayed against the server: the same answers, no data sent where none was.
    let path = path.to_string_lossy().into_owned();
    let upstream = dovecot.addr();
    let login = format!("nell:{PASSWORD}");
    let replay = imapscope(&["replay", &path, "--upstream", &upstream, "--login", &login]);
    let report = String::from_utf8_lossy(&replay.stdout).into_owned()
        + &String::from_utf8_lossy(&replay.stderr);
    assert!(
        replay.status.success() && report.starts_with("PASS"),
        "{report}"
    );
    // Served to the same client: each answer where the server gave it, before the data.
    let (serve, port) = start_serve(&[&path, "--rounds", "1"]);
    let listen = format!("127.0.0.1:{port}");
    // That probe was a connection too: serve ignores one that sends nothing. So is one that
    // leaves the greeting unread, whose close then arrives as a reset.
    let unread = std::net::TcpStream::connect(&listen).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(unread);
    let again = refused_literals_client(port);
    assert_eq!(again.received, c.received);
    let served = serve.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&served.stdout).into_owned()
        + &String::from_utf8_lossy(&served.stderr);
    assert!(served.status.success(), "{report}");
    assert!(
        report.contains("PASS") && !report.contains("FAIL"),
        "{report}"
    );
}

#[test]
fn imaplib_and_curl_sessions_keep_passwords_off_disk() {
    let dovecot = Dovecot::start();
    dovecot.deliver("nell", "INBOX", &message("hello", 800));
    dovecot.deliver("nell", "INBOX", &message("big", 200 * 1024));
    dovecot.deliver("quote", "INBOX", &message("quoted", 500));
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&dovecot.addr(), out.path(), &[]);
    let port = scope.port().to_string();

    let seen = python("imaplib_session.py", &[&port, "nell", PASSWORD]);
    assert!(seen.contains("\"exists\": 2"), "{seen}");
    assert!(seen.contains(&format!("{}", message("big", 200 * 1024).len())));
    // imaplib quotes a password with a space and a double quote.
    python("imaplib_session.py", &[&port, "quote", QUOTE_PASSWORD]);

    let curl = std::process::Command::new("curl")
        .args(["-s", "--user", &format!("nell:{PASSWORD}")])
        .arg(format!("imap://127.0.0.1:{port}/INBOX;UID=1"))
        .output()
        .expect("curl is needed for these tests (apt-get install -y curl)");
    assert!(curl.status.success(), "curl failed: {curl:?}");
    assert_eq!(curl.stdout, message("hello", 800));

    // AUTHENTICATE PLAIN without SASL-IR, the way Thunderbird does it.
    let mut c = RawClient::connect(scope.port());
    c.read_until("the greeting", |l| l.starts_with(b"* OK"));
    c.send(b"t1 AUTHENTICATE PLAIN\r\n");
    c.until_continuation();
    use base64::Engine;
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0nell\0{PASSWORD}"));
    c.send(format!("{plain}\r\n").as_bytes());
    assert!(c.until_tagged("t1").contains("t1 OK"));
    // LOGIN with the password as a LITERAL+ literal.
    c.command("t2", "LOGOUT");
    let mut c = RawClient::connect(scope.port());
    c.read_until("the greeting", |l| l.starts_with(b"* OK"));
    c.send(format!("t1 LOGIN nell {{{}+}}\r\n{PASSWORD}\r\n", PASSWORD.len()).as_bytes());
    assert!(c.until_tagged("t1").contains("t1 OK"));
    c.command("t2", "LOGOUT");

    let all = wait_for_ended(out.path(), 5);
    for (path, t) in &all {
        assert_paired(path, t);
        let ms = messages(t);
        let auth = ms
            .iter()
            .find(|m| matches!(m.name.as_deref(), Some("LOGIN" | "AUTHENTICATE")))
            .expect("a login");
        let user = auth.user.as_deref().or_else(|| {
            ms.iter()
                .find(|m| m.kind == Kind::SaslData)
                .and_then(|m| m.user.as_deref())
        });
        assert!(
            matches!(user, Some("nell" | "quote")),
            "{}: user {user:?}",
            path.display()
        );
        assert!(
            ms.iter().any(|m| !m.redacted.is_empty()),
            "{}: nothing marked redacted",
            path.display()
        );
    }
    assert_no_secrets(out.path(), &[PASSWORD, QUOTE_PASSWORD, "pa ss", &plain]);
    // The live log does not leak them either (read once every session's end is logged).
    let log = scope
        .wait_for_log("closed", all.len(), |l| l.contains(" closed: "))
        .join("\n");
    assert!(!log.contains(PASSWORD) && !log.contains("pa ss"), "{log}");
    // Transcripts are private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&all[0].0).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "transcript mode {mode:o}");
    }
}

#[test]
fn desktop_style_parallel_connections_get_one_transcript_each() {
    let dovecot = Dovecot::start();
    dovecot.deliver("nell", "INBOX", &message("one", 1000));
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&dovecot.addr(), out.path(), &[]);
    let seen = python(
        "imaplib_session.py",
        &[&scope.port().to_string(), "nell", PASSWORD, "6"],
    );
    assert_eq!(seen.lines().count(), 6);
    let all = wait_for_ended(out.path(), 6);
    assert_eq!(all.len(), 6);
    let mut ids: Vec<u64> = Vec::new();
    for (path, t) in &all {
        assert_paired(path, t);
        let Some(Record::Session(s)) = t.records.first() else {
            panic!("no header")
        };
        ids.push(s.id);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with(&format!("-{:06}.jsonl", s.id)), "{name}");
    }
    ids.sort();
    assert_eq!(ids, vec![1, 2, 3, 4, 5, 6]);
}

#[test]
fn unreachable_upstream_gets_bye_and_a_transcript() {
    let closed = free_port();
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&format!("127.0.0.1:{closed}"), out.path(), &[]);
    let mut c = RawClient::connect(scope.port());
    c.until_eof();
    let text = String::from_utf8_lossy(&c.received).into_owned();
    assert!(
        text.starts_with("* BYE [UNAVAILABLE] imapscope: cannot reach upstream"),
        "{text}"
    );
    let all = wait_for_ended(out.path(), 1);
    let t = &all[0].1;
    assert!(t.records.iter().any(|r| matches!(r,
        Record::Error(e) if e.during == "upstream-connect" && e.message.contains("refused"))));
    let Some(Record::End(end)) = t.records.last() else {
        panic!()
    };
    assert_eq!(end.reason, "upstream unreachable");
    scope.wait_for_log("cannot reach upstream", 1, |l| {
        l.contains("cannot reach upstream")
    });
}

#[test]
fn sigterm_closes_every_transcript_and_exits_zero() {
    let dovecot = Dovecot::start();
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&dovecot.addr(), out.path(), &[]);
    let mut idler = RawClient::connect(scope.port());
    idler.read_until("the greeting", |l| l.starts_with(b"* OK"));
    idler.command("i1", &format!("LOGIN nell {PASSWORD}"));
    idler.command("i2", "SELECT INBOX");
    idler.send(b"i3 IDLE\r\n");
    idler.until_continuation();
    let mut mid_literal = RawClient::connect(scope.port());
    mid_literal.read_until("the greeting", |l| l.starts_with(b"* OK"));
    mid_literal.send(b"m1 LOGIN nell {100+}\r\nonly part of it");
    std::thread::sleep(Duration::from_millis(300));

    let status = scope.terminate();
    assert!(status.success(), "exit status {status:?}");
    let all = transcripts(out.path());
    assert_eq!(all.len(), 2);
    for (path, t) in &all {
        let Some(Record::End(end)) = t.records.last() else {
            panic!("{}: no end line", path.display())
        };
        assert_eq!(end.reason, "imapscope shut down");
        assert_eq!(end.unanswered.len(), 1, "{}", path.display());
    }
    // The half-sent LOGIN was recorded as far as it went, still redacted, and noted.
    let cut = &all[1].1;
    assert!(cut.records.iter().any(|r| matches!(r,
        Record::Note(n) if n.note.contains("before this message was complete"))));
    assert_no_secrets(out.path(), &["only part of it", PASSWORD]);
}

/// Two imapscope processes recording into one directory, each numbering its connections from
/// 1: the file names still sort in the order the sessions started, and `ls` lists them so.
#[test]
fn two_processes_in_one_directory_sort_in_start_order() {
    let dovecot = Dovecot::start();
    let out = tempfile::tempdir().unwrap();
    let a = Imapscope::record(&dovecot.addr(), out.path(), &[]);
    let b = Imapscope::record(&dovecot.addr(), out.path(), &[]);
    // a#1, b#1, b#2, a#2, a#3, b#3: ids and names that collide, out of step with time.
    for scope in [&a, &b, &b, &a, &a, &b] {
        let mut c = RawClient::connect(scope.port());
        c.read_until("the greeting", |l| l.starts_with(b"* OK"));
        c.send(b"z LOGOUT\r\n");
        c.until_eof();
        std::thread::sleep(Duration::from_millis(5));
    }
    let all = wait_for_ended(out.path(), 6);
    assert_eq!(all.len(), 6);
    let starts: Vec<String> = all
        .iter()
        .map(|(_, t)| match &t.records[0] {
            Record::Session(s) => s.start.clone(),
            other => panic!("first record is not the session: {other:?}"),
        })
        .collect();
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(starts, sorted, "file names sort in start order");
    let ls = std::process::Command::new(env!("CARGO_BIN_EXE_imapscope"))
        .args(["ls", "--json"])
        .arg(out.path())
        .output()
        .unwrap();
    let listed: Vec<String> = String::from_utf8_lossy(&ls.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["start"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(listed, sorted, "ls lists by start time");
}

/// A message of `lines` numbered lines, the same in every Dovecot the test seeds.
fn numbered_message(lines: usize, word: &str) -> Vec<u8> {
    let mut m =
        b"From: Bob <bob@example.com>\r\nTo: nell@example.com\r\nSubject: big\r\n\r\n".to_vec();
    for n in 0..lines {
        m.extend_from_slice(
            format!("{n:08} the quick {word} fox jumps over the lazy dog\r\n").as_bytes(),
        );
    }
    m
}

/// A client killed in the middle of a large FETCH: the transcript has the start of the
/// message, and a replay against a server seeded alike passes on that start (and fails on a
/// different body), as mbsync killed during a 21 MB FETCH showed.
#[test]
fn a_client_killed_inside_a_large_fetch_replays_on_what_was_recorded() {
    let message = numbered_message(80_000, "brown");
    let dovecot = Dovecot::start();
    dovecot.deliver("nell", "INBOX", &message);
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&dovecot.addr(), out.path(), &[]);
    let mut c = std::net::TcpStream::connect(("127.0.0.1", scope.port())).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut got = Vec::new();
    let read_until = |c: &mut std::net::TcpStream, got: &mut Vec<u8>, want: &[u8]| {
        let mut buf = [0u8; 65536];
        while !contains(got, want) {
            let n = std::io::Read::read(c, &mut buf).unwrap();
            assert!(n > 0, "closed before {:?}", String::from_utf8_lossy(want));
            got.extend_from_slice(&buf[..n]);
        }
    };
    read_until(&mut c, &mut got, b"\r\n");
    std::io::Write::write_all(&mut c, format!("a1 LOGIN nell {PASSWORD}\r\n").as_bytes()).unwrap();
    read_until(&mut c, &mut got, b"a1 OK");
    std::io::Write::write_all(&mut c, b"a2 SELECT INBOX\r\na3 UID FETCH 1 BODY.PEEK[]\r\n")
        .unwrap();
    read_until(&mut c, &mut got, b"00002000 the quick");
    drop(c);
    let all = wait_for_ended(out.path(), 1);
    let (path, t) = &all[0];
    let cut = t.records.iter().any(|r| {
        matches!(r, Record::Note(n) if n.note.contains("closed before this message was complete"))
    });
    assert!(cut, "the recording ends inside the FETCH");
    let path = path.to_string_lossy().into_owned();
    let login = format!("nell:{PASSWORD}");
    let replay = |message: &[u8]| {
        let fresh = Dovecot::start();
        fresh.deliver("nell", "INBOX", message);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_imapscope"))
            .args([
                "replay",
                &path,
                "--upstream",
                &fresh.addr(),
                "--login",
                &login,
            ])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, report) = replay(&message);
    assert!(code == Some(0) && report.starts_with("PASS"), "{report}");
    let (code, report) = replay(&numbered_message(80_000, "green"));
    assert!(code == Some(1) && report.starts_with("FAIL"), "{report}");
    assert!(report.contains("+00000000 the quick green fox"), "{report}");
}
