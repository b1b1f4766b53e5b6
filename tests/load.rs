//! Load: 500 concurrent sessions of mixed commands (some with large literals, some in IDLE)
//! for 60 seconds through `imapscope record` to a real Dovecot. Every session must have its
//! header and end lines, every command its completion, every byte must be what the peers
//! sent, and imapscope's memory must stay flat. `IMAPSCOPE_LOAD_SECS` and
//! `IMAPSCOPE_LOAD_SESSIONS` shorten it for a quick look.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use imapscope::protocol::Side;
use imapscope::transcript::format::Record;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One client session; returns (local address, bytes sent, bytes received, commands).
struct Session {
    stream: TcpStream,
    sent: Vec<u8>,
    received: Vec<u8>,
    unread: usize,
}

impl Session {
    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
        self.sent.extend_from_slice(bytes);
    }

    /// Reads until a line starting with `prefix` is complete.
    async fn until(&mut self, prefix: &[u8]) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let pending = &self.received[self.unread..];
            let mut at = 0;
            while let Some(nl) = pending[at..].iter().position(|&b| b == b'\n') {
                let line = &pending[at..at + nl + 1];
                at += nl + 1;
                if line.starts_with(prefix) {
                    self.unread += at;
                    return;
                }
            }
            let n = tokio::time::timeout(Duration::from_secs(60), self.stream.read(&mut buf))
                .await
                .expect("an answer within 60 s")
                .expect("read");
            assert!(
                n > 0,
                "closed while waiting for {}",
                String::from_utf8_lossy(prefix)
            );
            self.received.extend_from_slice(&buf[..n]);
        }
    }

    async fn command(&mut self, tag: &str, text: &str) {
        self.send(format!("{tag} {text}\r\n").as_bytes()).await;
        self.until(format!("{tag} ").as_bytes()).await;
    }
}

async fn run_session(
    port: u16,
    index: usize,
    deadline: Instant,
) -> (String, Vec<u8>, Vec<u8>, usize) {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let local = stream.local_addr().unwrap().to_string();
    let mut s = Session {
        stream,
        sent: Vec::new(),
        received: Vec::new(),
        unread: 0,
    };
    s.until(b"* OK").await;
    s.command("l", &format!("LOGIN nell {PASSWORD}")).await;
    s.command("s", "SELECT INBOX").await;
    let mut commands = 2;
    if index.is_multiple_of(25) {
        // Some sessions sit in IDLE the whole time.
        s.send(b"i IDLE\r\n").await;
        s.until(b"+").await;
        tokio::time::sleep_until(deadline.into()).await;
        s.send(b"DONE\r\n").await;
        s.until(b"i ").await;
        commands += 1;
    } else {
        let mut n = 0u64;
        while Instant::now() < deadline {
            let tag = format!("c{n}");
            let text = match (n + index as u64) % 7 {
                0 if index % 10 == 1 => "FETCH 3 (BODY.PEEK[])", // the 200 KB message
                0 | 1 => "NOOP",
                2 => "FETCH 1:* (FLAGS)",
                3 => "UID SEARCH ALL",
                4 => "STATUS INBOX (MESSAGES UIDNEXT)",
                5 => "FETCH 1:2 (ENVELOPE)",
                _ => "CHECK",
            };
            s.command(&tag, text).await;
            commands += 1;
            n += 1;
            // A mail client, not a benchmark: a pause between commands (500 sessions then ask
            // for about 2,000 commands a second, what this 2-core machine serves).
            tokio::time::sleep(Duration::from_millis(200 + (index as u64 % 50))).await;
        }
    }
    s.command("o", "LOGOUT").await;
    commands += 1;
    let mut rest = Vec::new();
    let _ = s.stream.read_to_end(&mut rest).await;
    s.received.extend_from_slice(&rest);
    (local, s.sent, s.received, commands)
}

#[test]
fn five_hundred_sessions_for_a_minute() {
    let secs = env_or("IMAPSCOPE_LOAD_SECS", 60);
    let sessions = env_or("IMAPSCOPE_LOAD_SESSIONS", 500) as usize;
    let dovecot = Dovecot::start();
    let mail = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mail");
    for m in ["01-plain.eml", "02-multipart.eml", "03-large.eml"] {
        dovecot.deliver("nell", "INBOX", &std::fs::read(mail.join(m)).unwrap());
    }
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&dovecot.addr(), out.path(), &[]);
    let pid = scope.pid();
    let port = scope.port();
    let rss_idle = memory_kib(pid, "VmRSS");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let (results, samples) = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..sessions {
            tasks.push(tokio::spawn(run_session(port, i, deadline)));
            if i % 50 == 49 {
                // Dovecot's login processes take a moment to start.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // imapscope's memory during the load, sampled every 5 s.
        let sampler = tokio::spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(5)).await;
                samples.push(memory_kib(pid, "VmRSS"));
            }
            samples
        });
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.expect("a session failed"));
        }
        (results, sampler.await.unwrap())
    });
    let all = wait_for_ended(out.path(), sessions);
    assert_eq!(all.len(), sessions);
    // After the load: every connection's state is gone, nothing keeps growing.
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = memory_kib(pid, "VmRSS");
    let by_client: HashMap<String, (Vec<u8>, Vec<u8>, usize)> = results
        .into_iter()
        .map(|(local, sent, received, n)| (local, (sent, received, n)))
        .collect();
    let mut commands = 0;
    for (path, t) in &all {
        let Some(Record::Session(header)) = t.records.first() else {
            panic!("{}: no header", path.display())
        };
        assert!(
            matches!(t.records.last(), Some(Record::End(_))),
            "{}: no end",
            path.display()
        );
        assert_paired(path, t);
        let (sent, received, n) = by_client
            .get(&header.client)
            .unwrap_or_else(|| panic!("{}: no client {}", path.display(), header.client));
        commands += n;
        // Byte for byte (the password is redacted in the record: compare around it).
        let recorded_client = bytes_from(t, Side::Client);
        let redacted = String::from_utf8_lossy(sent).replace(PASSWORD, "<redacted>");
        assert_eq!(
            String::from_utf8_lossy(&recorded_client),
            redacted,
            "{}",
            path.display()
        );
        assert_eq!(&bytes_from(t, Side::Server), received, "{}", path.display());
    }
    assert_no_secrets(out.path(), &[PASSWORD]);
    // Flat memory: the last third of the run holds no more than the first third did, give or
    // take what the allocator keeps.
    let third = (samples.len() / 3).max(1);
    let early = samples[..third].iter().max().copied().unwrap_or(0);
    let late = samples[samples.len() - third..]
        .iter()
        .max()
        .copied()
        .unwrap_or(0);
    eprintln!(
        "load: {sessions} sessions, {commands} commands in {:?}; imapscope RSS idle {rss_idle} KiB, samples {samples:?} KiB, after {rss_after} KiB",
        started.elapsed()
    );
    assert!(
        late <= early + early / 4 + 8 * 1024,
        "imapscope's memory grew under steady load: {samples:?} KiB"
    );
    let peak = samples.iter().max().copied().unwrap_or(0);
    assert!(
        rss_after <= peak + 4 * 1024,
        "imapscope's memory grew after the load: {rss_after} KiB after, {samples:?} KiB during"
    );
}
