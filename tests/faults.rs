//! Faults, with real sockets and the real binary: peers that vanish mid-literal, a peer that
//! sends one byte at a time, a line with no end, binary garbage, TLS where plain text is
//! expected and the reverse, a full disk, `kill -9`, SIGTERM under load. Each test checks
//! that nothing relayed was changed or lost and that what was recorded reads back.
//!
//! The upstream here is a scripted fake server (a thread with a socket), not Dovecot: these
//! are faults a real server will not produce on demand.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use imapscope::transcript::format::Record;
use support::*;

/// A fake upstream that runs `script` on the first connection and returns what it read.
fn upstream(script: impl FnOnce(&mut TcpStream) + Send + 'static) -> (String, JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        script(&mut s);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        rest
    });
    (addr, handle)
}

fn read_line(s: &mut TcpStream) -> Vec<u8> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap_or(0) == 1 {
        line.push(b[0]);
        if b[0] == b'\n' {
            break;
        }
    }
    line
}

fn end_of(t: &imapscope::transcript::Transcript) -> &imapscope::transcript::format::EndRecord {
    match t.records.last() {
        Some(Record::End(e)) => e,
        other => panic!("no end line, last record {other:?}"),
    }
}

fn notes(t: &imapscope::transcript::Transcript) -> Vec<String> {
    t.records
        .iter()
        .filter_map(|r| match r {
            Record::Note(n) => Some(n.note.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn upstream_dies_mid_literal() {
    let (addr, server) = upstream(|s| {
        s.write_all(b"* OK fake ready\r\n").unwrap();
        read_line(s);
        s.write_all(b"* 1 FETCH (BODY[] {100000}\r\n").unwrap();
        s.write_all(&[b'y'; 5000]).unwrap();
        // and the server process dies
        let _ = s.shutdown(std::net::Shutdown::Both);
    });
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&addr, out.path(), &[]);
    let mut c = RawClient::connect(scope.port());
    c.read_until("greeting", |l| l.starts_with(b"* OK"));
    c.send(b"a FETCH 1 BODY[]\r\n");
    c.until_eof();
    server.join().unwrap();
    let mut expected = b"* OK fake ready\r\n* 1 FETCH (BODY[] {100000}\r\n".to_vec();
    expected.extend_from_slice(&[b'y'; 5000]);
    assert_eq!(
        c.received, expected,
        "the client got what the server sent, no more"
    );
    let all = wait_for_ended(out.path(), 1);
    let t = &all[0].1;
    assert_eq!(bytes_from(t, imapscope::protocol::Side::Server), expected);
    assert!(
        notes(t)
            .iter()
            .any(|n| n.contains("before this message was complete"))
    );
    let end = end_of(t);
    assert!(end.reason.starts_with("server closed"), "{}", end.reason);
    assert_eq!(end.unanswered.len(), 1);
}

#[test]
fn client_dies_mid_literal() {
    let (addr, server) = upstream(|s| {
        s.write_all(b"* OK fake ready\r\n").unwrap();
    });
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&addr, out.path(), &[]);
    let mut c = RawClient::connect(scope.port());
    c.read_until("greeting", |l| l.starts_with(b"* OK"));
    c.send(b"a APPEND INBOX {100000+}\r\n");
    c.send(&[b'z'; 3000]);
    drop(c);
    let got = server.join().unwrap();
    let mut sent = b"a APPEND INBOX {100000+}\r\n".to_vec();
    sent.extend_from_slice(&[b'z'; 3000]);
    assert_eq!(got, sent, "the server got exactly what the client sent");
    let all = wait_for_ended(out.path(), 1);
    let t = &all[0].1;
    assert!(
        notes(t)
            .iter()
            .any(|n| n.contains("before this message was complete"))
    );
    assert!(end_of(t).reason.starts_with("client closed"));
}

#[test]
fn a_peer_sending_one_byte_at_a_time() {
    let (addr, server) = upstream(|s| {
        s.write_all(b"* OK fake ready\r\n").unwrap();
        let line = read_line(s);
        assert_eq!(line, b"a NOOP\r\n");
        s.write_all(b"a OK done\r\n").unwrap();
    });
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&addr, out.path(), &[]);
    let mut c = RawClient::connect(scope.port());
    c.read_until("greeting", |l| l.starts_with(b"* OK"));
    // A quarter of a second between bytes (a second each would make a 10-second test).
    for b in b"a NOOP\r\n" {
        c.send(&[*b]);
        std::thread::sleep(Duration::from_millis(250));
    }
    c.until_tagged("a");
    drop(c);
    server.join().unwrap();
    let all = wait_for_ended(out.path(), 1);
    let (path, t) = &all[0];
    assert_paired(path, t);
    let ms = messages(t);
    let noop = ms
        .iter()
        .find(|m| m.name.as_deref() == Some("NOOP"))
        .unwrap();
    let done = ms.iter().find(|m| m.reply_to == Some(noop.seq)).unwrap();
    assert!(
        done.latency_us.unwrap() >= 1_500_000,
        "latency counts from the first byte"
    );
}

/// A hundred thousand nested `(` from either side: once a stack overflow that took the whole
/// process (every session) down; now relayed unchanged and annotated.
#[test]
fn lists_nested_a_hundred_thousand_deep() {
    let deep = |prefix: &[u8]| {
        let mut line = prefix.to_vec();
        line.extend(std::iter::repeat_n(b'(', 100_000));
        line.extend(std::iter::repeat_n(b')', 100_000));
        line.extend_from_slice(b"\r\n");
        line
    };
    let (server_line, client_line) = (deep(b"* 1 FETCH "), deep(b"a SEARCH "));
    let expected = client_line.clone();
    let reply = server_line.clone();
    let (addr, server) = upstream(move |s| {
        s.write_all(b"* OK fake ready\r\n").unwrap();
        let line = read_line(s);
        assert!(line == expected, "the command arrived changed");
        s.write_all(&reply).unwrap();
        s.write_all(b"a OK done\r\n").unwrap();
    });
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&addr, out.path(), &[]);
    let mut c = RawClient::connect(scope.port());
    c.read_until("greeting", |l| l.starts_with(b"* OK"));
    c.send(&client_line);
    let got = c.until_tagged("a");
    assert!(got.contains(std::str::from_utf8(&server_line).unwrap()));
    drop(c);
    server.join().unwrap();
    let all = wait_for_ended(out.path(), 1);
    let (path, t) = &all[0];
    assert_paired(path, t);
    let deep_notes: Vec<&String> = messages(t)
        .iter()
        .flat_map(|m| &m.notes)
        .filter(|n| n.contains("nested more than 128 deep"))
        .collect();
    assert_eq!(deep_notes.len(), 2, "{deep_notes:?}");
    assert!(
        scope.terminate().success(),
        "imapscope survived and exits cleanly"
    );
}

/// Resident and peak memory of a process, in KiB.
#[test]
fn a_gigabyte_line_without_crlf_keeps_memory_bounded() {
    const GB: usize = 1 << 30;
    let (addr, server) = upstream(|s| {
        s.write_all(b"* OK fake ready\r\n").unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..GB / chunk.len() {
            if s.write_all(&chunk).is_err() {
                return;
            }
        }
        s.write_all(b"\r\n").unwrap();
    });
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&addr, out.path(), &[]);
    let pid = scope.pid();
    let mut c = TcpStream::connect(("127.0.0.1", scope.port())).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    let mut peak = 0;
    let started = Instant::now();
    while total < GB + 19 {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {total} bytes");
        total += n;
        if total % (64 << 20) < n {
            peak = peak.max(memory_kib(pid, "VmRSS"));
        }
    }
    let elapsed = started.elapsed();
    drop(c);
    server.join().unwrap();
    let hwm = memory_kib(pid, "VmHWM");
    let all = wait_for_ended(out.path(), 1);
    let end = end_of(&all[0].1);
    assert_eq!(end.bytes_from_server as usize, GB + 19);
    assert!(
        hwm < 96 * 1024,
        "imapscope's peak memory was {hwm} KiB relaying a 1 GB line (resident samples up to {peak} KiB)"
    );
    eprintln!("1 GB line relayed and recorded in {elapsed:?}, imapscope peak RSS {hwm} KiB");
}

/// Two bytes make a message, and a message is an event of a hundred bytes or more: a peer's
/// flood of empty lines once took a recording imapscope past 600 MB (a 256 KiB read made
/// 128k events at once, and sixteen such reads could wait for the transcript thread).
#[test]
fn a_flood_of_empty_lines_keeps_memory_bounded_and_every_line_recorded() {
    const LINES: usize = 1_000_000;
    let (addr, server) = upstream(|s| {
        s.write_all(b"* OK fake ready\r\n").unwrap();
        let mut reader = s.try_clone().unwrap();
        let drain = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0;
            while total < 2 * LINES {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        });
        let _ = s.write_all(&b"\r\n".repeat(LINES));
        drain.join().unwrap();
    });
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&addr, out.path(), &[]);
    let pid = scope.pid();
    let c = TcpStream::connect(("127.0.0.1", scope.port())).unwrap();
    let mut writer = c.try_clone().unwrap();
    let send = std::thread::spawn(move || writer.write_all(&b"\r\n".repeat(LINES)));
    let mut reader = &c;
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0;
    while total < 17 + 2 * LINES {
        let n = reader.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {total} bytes");
        total += n;
    }
    send.join().unwrap().unwrap();
    server.join().unwrap();
    drop(c);
    let hwm = memory_kib(pid, "VmHWM");
    let all = wait_for_ended(out.path(), 1);
    let end = end_of(&all[0].1);
    assert_eq!(end.messages as usize, 1 + 2 * LINES);
    assert_eq!(messages(&all[0].1).len(), 1 + 2 * LINES);
    assert!(
        hwm < 96 * 1024,
        "imapscope's peak memory was {hwm} KiB recording 2 million empty lines"
    );
    eprintln!("2 million empty lines recorded, imapscope peak RSS {hwm} KiB");
}

/// A deterministic stream of random bytes.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn binary_garbage_both_ways_is_relayed_unchanged() {
    let from_server = garbage(7, 1 << 20);
    let sent_by_server = from_server.clone();
    let (addr, server) = upstream(move |s| {
        s.write_all(&sent_by_server).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&addr, out.path(), &[]);
    let mut c = TcpStream::connect(("127.0.0.1", scope.port())).unwrap();
    let from_client = garbage(11, 1 << 20);
    let mut writer = c.try_clone().unwrap();
    let to_send = from_client.clone();
    let sender = std::thread::spawn(move || {
        writer.write_all(&to_send).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    sender.join().unwrap();
    assert_eq!(
        got, from_server,
        "the client got the server's bytes unchanged"
    );
    assert_eq!(
        server.join().unwrap(),
        from_client,
        "and the server the client's"
    );
    let all = wait_for_ended(out.path(), 1);
    let t = &all[0].1;
    assert_eq!(
        bytes_from(t, imapscope::protocol::Side::Server),
        from_server
    );
    assert_eq!(
        bytes_from(t, imapscope::protocol::Side::Client),
        from_client
    );
    // Annotated, not dropped.
    assert!(messages(t).iter().any(|m| !m.notes.is_empty()));
}

#[test]
fn tls_on_a_plain_listener_and_plain_text_on_a_tls_listener() {
    // A TLS ClientHello to a plain relay: relayed as it is, recorded, annotated.
    let hello: Vec<u8> = b"\x16\x03\x01\x00\x2f\x01\x00\x00\x2b\x03\x03"
        .iter()
        .copied()
        .chain(garbage(3, 40))
        .collect();
    let expect = hello.clone();
    let (addr, server) = upstream(move |s| {
        s.write_all(b"* OK fake ready\r\n").unwrap();
        let mut got = vec![0u8; expect.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, expect);
    });
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&addr, out.path(), &[]);
    let mut c = RawClient::connect(scope.port());
    c.send(&hello);
    server.join().unwrap();
    c.until_eof();
    let all = wait_for_ended(out.path(), 1);
    assert_eq!(
        bytes_from(&all[0].1, imapscope::protocol::Side::Client),
        hello
    );

    // Plain text to a TLS listener: the handshake fails, said precisely; the upstream is
    // never contacted.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let never = listener.local_addr().unwrap().to_string();
    let out2 = tempfile::tempdir().unwrap();
    let certs = out2.path().join("certs");
    let scope = Imapscope::record(
        &never,
        &out2.path().join("rec"),
        &[
            "--client-tls",
            "tls",
            "--upstream-tls",
            "none",
            "--certs",
            &certs.to_string_lossy(),
        ],
    );
    let mut c = TcpStream::connect(("127.0.0.1", scope.port())).unwrap();
    c.write_all(b"a LOGIN nell secret\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    let all = wait_for_ended(&out2.path().join("rec"), 1);
    assert!(all[0].1.records.iter().any(|r| matches!(r,
        Record::Error(e) if e.during == "client-tls-handshake")));
    assert!(listener.accept().is_err(), "no connection to the upstream");
    assert_no_secrets(&out2.path().join("rec"), &["secret"]);
}

/// Mounts a tmpfs of `size` at `dir` for the test's life (needs root, as the test suite runs).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "mounting a small tmpfs failed: this test needs root (the README's test command runs as root)"
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_loses_transcript_not_the_session() {
    const BODY: usize = 4 << 20;
    let (addr, server) = upstream(|s| {
        s.write_all(b"* OK fake ready\r\n").unwrap();
        read_line(s);
        s.write_all(format!("* 1 FETCH (BODY[] {{{BODY}}}\r\n").as_bytes())
            .unwrap();
        s.write_all(&vec![b'q'; BODY]).unwrap();
        s.write_all(b")\r\na OK done\r\n").unwrap();
        read_line(s);
        s.write_all(b"* BYE bye\r\nb OK bye\r\n").unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let _disk = Tmpfs::mount(dir.path(), "256k");
    // Ballast, removed mid-session to give the disk room again.
    let ballast = dir.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; 128 << 10]).unwrap();
    let scope = Imapscope::record(&addr, dir.path(), &[]);
    let mut c = RawClient::connect(scope.port());
    c.read_until("greeting", |l| l.starts_with(b"* OK"));
    let answer = c.command("a", "FETCH 1 BODY[]");
    assert!(
        answer.len() > BODY,
        "the session went on: the whole literal arrived"
    );
    // Let the recorder get through the literal (its writes fail), then free some space.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !scope.log().join("\n").contains("No space left on device") {
        assert!(Instant::now() < deadline, "no write failure logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    std::fs::remove_file(&ballast).unwrap();
    c.command("b", "LOGOUT");
    drop(c);
    server.join().unwrap();
    scope.wait_for_log("transcript write failed", 1, |l| {
        l.contains("transcript write failed")
    });
    // What was written before the disk filled reads back; after it, a note says where the
    // gap is, the session goes on being recorded, and the end line counts what was lost.
    let all = wait_for_ended(dir.path(), 1);
    let t = &all[0].1;
    assert!(matches!(t.records.first(), Some(Record::Session(_))));
    assert!(
        messages(t)
            .iter()
            .any(|m| m.kind == imapscope::protocol::Kind::Greeting)
    );
    let gap = notes(t)
        .into_iter()
        .find(|n| n.starts_with("gap: "))
        .expect("a gap note");
    assert!(gap.contains("No space left on device"), "{gap}");
    assert!(
        messages(t)
            .iter()
            .any(|m| m.name.as_deref() == Some("LOGOUT")),
        "recording went on after the gap"
    );
    let end = end_of(t);
    assert!(end.lost_bytes > 0, "the end line counts the lost bytes");
    assert!(end.lost_bytes < (BODY as u64) * 2, "{}", end.lost_bytes);
}

#[test]
fn kill_9_leaves_transcripts_readable() {
    let dovecot = Dovecot::start();
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&dovecot.addr(), out.path(), &[]);
    let mut c = RawClient::connect(scope.port());
    c.read_until("greeting", |l| l.starts_with(b"* OK"));
    c.command("a1", &format!("LOGIN nell {PASSWORD}"));
    c.command("a2", "SELECT INBOX");
    c.send(b"a3 IDLE\r\n");
    c.until_continuation();
    std::thread::sleep(Duration::from_millis(200));
    Command::new("kill")
        .args(["-9", &scope.pid().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let all = transcripts(out.path());
    let (path, t) = &all[0];
    assert!(
        messages(t)
            .iter()
            .any(|m| m.name.as_deref() == Some("IDLE"))
    );
    assert!(
        !matches!(t.records.last(), Some(Record::End(_))),
        "no end line after kill -9"
    );
    let show = Command::new(env!("CARGO_BIN_EXE_imapscope"))
        .args(["show", "--color", "never"])
        .arg(path)
        .output()
        .unwrap();
    assert!(show.status.success());
    assert!(String::from_utf8_lossy(&show.stdout).contains("C: a3 IDLE"));
    assert_no_secrets(out.path(), &[PASSWORD]);
}

#[test]
fn a_torn_last_line_is_reported_by_show() {
    let dir = tempfile::tempdir().unwrap();
    let golden = std::fs::read(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("recordings/golden/idle.jsonl"),
    )
    .unwrap();
    let torn = dir.path().join("torn.jsonl");
    std::fs::write(&torn, &golden[..golden.len() - 40]).unwrap();
    let show = Command::new(env!("CARGO_BIN_EXE_imapscope"))
        .args(["show", "--color", "never"])
        .arg(&torn)
        .output()
        .unwrap();
    assert!(show.status.success());
    assert!(String::from_utf8_lossy(&show.stderr).contains("last line is torn"));
    assert!(String::from_utf8_lossy(&show.stdout).contains("C: DONE"));
}

#[test]
fn sigterm_under_load_closes_every_transcript() {
    let dovecot = Dovecot::start();
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&dovecot.addr(), out.path(), &[]);
    let port = scope.port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..40)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                    return;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(format!("l LOGIN nell {PASSWORD}\r\n").as_bytes());
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if s.write_all(format!("n{i}x{n} NOOP\r\n").as_bytes())
                        .is_err()
                    {
                        return;
                    }
                    if s.read(&mut buf).unwrap_or(0) == 0 {
                        return;
                    }
                    n += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let status = scope.terminate();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    assert!(status.success());
    let all = transcripts(out.path());
    assert_eq!(all.len(), 40);
    for (path, t) in &all {
        let end = end_of(t);
        assert_eq!(end.reason, "imapscope shut down", "{}", path.display());
    }
}

/// A TLS client of imapscope on `port`, trusting its CA `ca`, that has read the greeting
/// (`* OK fake ready`) and sent `a FETCH 1 BODY[]`.
fn tls_client_fetching(
    port: u16,
    ca: &Path,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let config = imapscope::tls::UpstreamTrust::ca(ca)
        .and_then(|t| t.config())
        .expect("client TLS config");
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let mut greeting = [0u8; 17];
    stream.read_exact(&mut greeting).unwrap();
    stream.write_all(b"a FETCH 1 BODY[]\r\n").unwrap();
    stream
}

/// A client that sends its last command and half-closes (`shutdown(SHUT_WR)`, as
/// `nc -N` or a fetch script does) gets the whole answer, however long the server takes to
/// send it: the grace after one side closes runs from the other side's last bytes. It once
/// cut the answer off five seconds after the client's close, on plain and TLS legs alike.
fn half_closed_client_gets_a_slow_answer_whole(tls: bool) {
    const CHUNK: usize = 256 * 1024;
    const CHUNKS: usize = 28;
    let total = CHUNK * CHUNKS;
    let (addr, server) = upstream(move |s| {
        s.write_all(b"* OK fake ready\r\n").unwrap();
        read_line(s);
        s.write_all(format!("* 1 FETCH (BODY[] {{{total}}}\r\n").as_bytes())
            .unwrap();
        // Seven seconds of answer, a chunk every quarter of a second.
        for _ in 0..CHUNKS {
            s.write_all(&[b'q'; CHUNK]).unwrap();
            std::thread::sleep(Duration::from_millis(250));
        }
        s.write_all(b")\r\na OK done\r\n").unwrap();
        let _ = s.shutdown(std::net::Shutdown::Write);
    });
    let out = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let certs_arg = certs.path().to_string_lossy().into_owned();
    let mut flags = vec!["--certs", &certs_arg, "--upstream-tls", "none"];
    if tls {
        flags.extend(["--client-tls", "tls"]);
    }
    let scope = Imapscope::record(&addr, out.path(), &flags);
    let received = if tls {
        let mut stream = tls_client_fetching(scope.port(), &certs.path().join("ca.pem"));
        stream.conn.send_close_notify();
        stream.flush().unwrap();
        stream.sock.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        match stream.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}"),
        }
        rest
    } else {
        let mut tcp = TcpStream::connect(("127.0.0.1", scope.port())).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut greeting = [0u8; 17];
        tcp.read_exact(&mut greeting).unwrap();
        tcp.write_all(b"a FETCH 1 BODY[]\r\n").unwrap();
        tcp.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest);
        rest
    };
    server.join().unwrap();
    let body = received.iter().filter(|&&b| b == b'q').count();
    assert_eq!(body, total, "the client got the whole answer");
    assert!(received.ends_with(b"a OK done\r\n"));
    let all = wait_for_ended(out.path(), 1);
    assert!(
        end_of(&all[0].1).unanswered.is_empty(),
        "{:?}",
        end_of(&all[0].1)
    );
}

#[test]
fn a_half_closed_client_gets_a_slow_answer_whole() {
    half_closed_client_gets_a_slow_answer_whole(false);
}

#[test]
fn a_half_closed_tls_client_gets_a_slow_answer_whole() {
    half_closed_client_gets_a_slow_answer_whole(true);
}

/// A TLS upstream that ends in the middle of a literal, after `script` made it say the
/// greeting and part of a FETCH: with `close_notify` or without it (a truncation).
fn tls_upstream_ending_mid_literal(
    close_notify: bool,
    dir: &Path,
) -> (String, std::path::PathBuf, JoinHandle<()>) {
    let key =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let pem = dir.join("upstream.pem");
    std::fs::write(&pem, key.cert.pem()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![key.cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into()),
        )
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let conn = rustls::ServerConnection::new(std::sync::Arc::new(config)).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        s.write_all(b"* OK fake ready\r\n").unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
            line.push(byte[0]);
        }
        s.write_all(b"* 1 FETCH (BODY[] {100000}\r\n").unwrap();
        s.write_all(&[b'y'; 5000]).unwrap();
        if close_notify {
            s.conn.send_close_notify();
        }
        s.flush().unwrap();
        let _ = s.sock.shutdown(std::net::Shutdown::Both);
    });
    (addr, pem, handle)
}

/// A TLS server that drops the connection in the middle of a literal without close_notify
/// (a crash, a reset, an attacker's truncation) reaches a TLS client the same way: as an
/// unclean end, not as the clean close_notify imapscope once sent in its place. A server
/// that does send close_notify is passed on as a clean end.
#[test]
fn a_truncated_tls_upstream_reaches_a_tls_client_truncated() {
    for close_notify in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (addr, pem, server) = tls_upstream_ending_mid_literal(close_notify, dir.path());
        let out = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let (certs_arg, pem_arg) = (certs.to_string_lossy(), pem.to_string_lossy());
        let scope = Imapscope::record(
            &addr,
            out.path(),
            &[
                "--certs",
                &certs_arg,
                "--client-tls",
                "tls",
                "--upstream-tls",
                "tls",
                "--upstream-ca",
                &pem_arg,
            ],
        );
        let mut stream = tls_client_fetching(scope.port(), &certs.join("ca.pem"));
        let mut got = Vec::new();
        let end = stream.read_to_end(&mut got);
        server.join().unwrap();
        assert_eq!(got.len(), 28 + 5000, "everything the server sent");
        match (close_notify, end) {
            (true, Ok(_)) => {}
            (false, Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            (close_notify, end) => panic!("close_notify {close_notify}: the client saw {end:?}"),
        }
        let all = wait_for_ended(out.path(), 1);
        let reason = &end_of(&all[0].1).reason;
        assert_eq!(
            reason.contains("without TLS close_notify"),
            !close_notify,
            "{reason}"
        );
    }
}

/// The terminal or SSH session imapscope runs in goes away (SIGHUP): it shuts down as on
/// SIGTERM, and a session in the middle of a literal gets its end line.
#[test]
fn a_hangup_closes_every_transcript() {
    let (addr, _server) = upstream(|s| {
        s.write_all(b"* OK fake ready\r\n").unwrap();
        read_line(s);
        s.write_all(b"* 1 FETCH (BODY[] {100000}\r\n").unwrap();
        s.write_all(&[b'y'; 5000]).unwrap();
        std::thread::sleep(Duration::from_secs(3));
    });
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&addr, out.path(), &[]);
    let mut c = RawClient::connect(scope.port());
    c.read_until("greeting", |l| l.starts_with(b"* OK"));
    c.send(b"a FETCH 1 BODY[]\r\n");
    // The server has sent the literal's start and waits.
    std::thread::sleep(Duration::from_millis(500));
    assert!(scope.signal("HUP").success());
    let all = transcripts(out.path());
    assert_eq!(all.len(), 1);
    assert_eq!(end_of(&all[0].1).reason, "imapscope shut down");
}

/// SIGTERM while a session is still being set up (the upstream's TLS handshake has not
/// finished): the session ends as shut down, not as an upstream failure, and the client is
/// told so.
#[test]
fn sigterm_during_setup_ends_the_session_as_shut_down() {
    // An upstream that accepts and never answers the TLS hello.
    let (addr, _server) = upstream(|_| std::thread::sleep(Duration::from_secs(5)));
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(
        &addr,
        out.path(),
        &["--upstream-tls", "tls", "--insecure-upstream"],
    );
    let mut c = RawClient::connect(scope.port());
    std::thread::sleep(Duration::from_millis(500));
    assert!(scope.terminate().success());
    let bye = c.read_until("a BYE", |l| l.starts_with(b"* BYE"));
    assert!(
        String::from_utf8_lossy(&bye).contains("shutting down"),
        "{}",
        String::from_utf8_lossy(&bye)
    );
    let all = transcripts(out.path());
    assert_eq!(all.len(), 1);
    let t = &all[0].1;
    assert_eq!(end_of(t).reason, "imapscope shut down");
    let errors: Vec<_> = t
        .records
        .iter()
        .filter(|r| matches!(r, Record::Error(_)))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}
