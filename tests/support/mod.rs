//! Shared pieces of the integration tests: a real Dovecot started per test on loopback with
//! its own configuration, the `imapscope` binary as a child process, a raw IMAP client that
//! remembers every byte, and checks over recorded transcripts.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use imapscope::protocol::{Kind, Side};
use imapscope::transcript::format::{MessageRecord, Record};
use imapscope::transcript::{Transcript, read_transcript};

pub const PASSWORD: &str = "ASecretPassword";
pub const QUOTE_PASSWORD: &str = "pa ss\"word";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` different loopback ports nobody listens on right now. Each is held until all are
/// picked: released one by one, the kernel may hand the same port out twice.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("cannot bind an ephemeral loopback port"))
        .collect();
    std::array::from_fn(|i| {
        held[i]
            .local_addr()
            .expect("a bound listener has an address")
            .port()
    })
}

/// A Dovecot of our own: config, mail, logs and sockets all inside a temp dir.
pub struct Dovecot {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub tls_port: u16,
    pid: u32,
}

impl Dovecot {
    pub fn start() -> Dovecot {
        Dovecot::start_with_mechanisms("plain login")
    }

    /// A Dovecot offering these SASL mechanisms (`auth_mechanisms`), e.g. `plain cram-md5`.
    pub fn start_with_mechanisms(mechanisms: &str) -> Dovecot {
        Dovecot::start_with(mechanisms, |_| {})
    }

    /// A Dovecot whose TLS certificate `make_certificate` writes into its directory, as
    /// `server.pem` and `server-key.pem` (else start.sh makes a CA:FALSE one for localhost).
    pub fn start_with_certificate(make_certificate: impl FnOnce(&Path)) -> Dovecot {
        Dovecot::start_with("plain login", make_certificate)
    }

    fn start_with(mechanisms: &str, make_certificate: impl FnOnce(&Path)) -> Dovecot {
        if Command::new("dovecot").arg("--version").output().is_err() {
            panic!(
                "Dovecot is not installed; these tests need a real one. Install it with \
                 `apt-get install -y dovecot-imapd` (the README's test command does this)."
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("imapscope-dovecot-")
            .tempdir()
            .expect("temp dir");
        make_certificate(dir.path());
        // Tests start Dovecots in parallel: a free port can be taken by another test between
        // being picked and being bound, so a failed start is tried again on new ports.
        let mut failures = String::new();
        let mut attempts = 0;
        let (out, port, tls_port) = loop {
            attempts += 1;
            let [port, tls_port] = free_ports();
            let out = Command::new("bash")
                .arg(repo().join("tests/dovecot/start.sh"))
                .arg(dir.path())
                .arg(port.to_string())
                .arg(tls_port.to_string())
                .env("DOVECOT_AUTH_MECHANISMS", mechanisms)
                .stdin(Stdio::null())
                .output()
                .expect("run tests/dovecot/start.sh");
            if out.status.success() {
                break (out, port, tls_port);
            }
            failures.push_str(&format!(
                "ports {port} and {tls_port}:\n{}{}\n",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
            assert!(
                attempts < 3,
                "tests/dovecot/start.sh failed three times:\n{failures}"
            );
        };
        let pid = String::from_utf8_lossy(&out.stdout)
            .trim()
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .expect("start.sh prints dovecot's pid");
        Dovecot {
            dir,
            port,
            tls_port,
            pid,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Delivers a message with `doveadm save`, as a mail server would.
    pub fn deliver(&self, user: &str, mailbox: &str, message: &[u8]) {
        let mut child = Command::new("doveadm")
            .arg("-c")
            .arg(self.dir.path().join("dovecot.conf"))
            .args(["save", "-u", user, "-m", mailbox])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run doveadm");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(message).expect("write message to doveadm");
        }
        let out = child.wait_with_output().expect("doveadm");
        assert!(
            out.status.success(),
            "doveadm save failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits until one of this Dovecot's imap processes is running `command` (its process
    /// title says so: `verbose_proctitle`), e.g. a replay that reached IDLE.
    pub fn wait_for_command(&self, command: &str) {
        let wanted = format!("dovecot-test-{}/imap [", self.port);
        let ending = format!(" {command}]");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                        let title = String::from_utf8_lossy(&c);
                        title.starts_with(&wanted)
                            && title.trim_end_matches('\0').trim_end().ends_with(&ending)
                    })
                });
            if found {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no imap process of this Dovecot reached {command}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Dovecot's own raw logs of post-login traffic for `user`: (`.in`, `.out`) contents.
    pub fn rawlogs(&self, user: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let dir = self.dir.path().join("rawlog").join(user);
        let mut stems: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "in"))
                    .collect()
            })
            .unwrap_or_default();
        stems.sort();
        stems
            .into_iter()
            .map(|p| {
                (
                    std::fs::read(&p).unwrap_or_default(),
                    std::fs::read(p.with_extension("out")).unwrap_or_default(),
                )
            })
            .collect()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.pid.to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Path::new(&format!("/proc/{}", self.pid)).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A Cyrus IMAP of our own (tests/cyrus/start.sh): config, mail and sockets inside a temp dir.
/// Users as Dovecot's: `nell` / [`PASSWORD`], `alice` / `alicepw`.
pub struct Cyrus {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub tls_port: u16,
}

impl Cyrus {
    pub fn start() -> Cyrus {
        let dir = tempfile::Builder::new()
            .prefix("imapscope-cyrus-")
            .tempdir()
            .expect("temp dir");
        let mut failures = String::new();
        for _ in 0..3 {
            let [port, tls_port] = free_ports();
            let out = Command::new("bash")
                .arg(repo().join("tests/cyrus/start.sh"))
                .arg(dir.path())
                .arg(port.to_string())
                .arg(tls_port.to_string())
                .stdin(Stdio::null())
                .output()
                .expect("run tests/cyrus/start.sh");
            if out.status.success() {
                return Cyrus {
                    dir,
                    port,
                    tls_port,
                };
            }
            failures.push_str(&format!(
                "ports {port} and {tls_port}:\n{}{}\n",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        panic!(
            "tests/cyrus/start.sh failed three times (is Cyrus installed? \
             tests/cyrus/install.sh, which scripts/test.sh runs):\n{failures}"
        );
    }

    /// The certificate it presents (CA:FALSE, for localhost and 127.0.0.1).
    pub fn certificate(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("tests/cyrus/stop.sh"))
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A message of about `size` bytes with a recognisable subject.
pub fn message(subject: &str, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Nell Gwyn <nell@example.com>\r\nTo: nell@example.com\r\nSubject: {subject}\r\n\
         Date: Wed, 25 Nov 2026 21:05:01 +0000\r\nMessage-ID: <{subject}@example.com>\r\n\r\n"
    )
    .into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m
}

/// The `imapscope record` binary running as a child process.
pub struct Imapscope {
    child: Child,
    pub addr: SocketAddr,
    pub out: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Imapscope {
    /// Starts `imapscope record --upstream UPSTREAM --listen 127.0.0.1:0 --out OUT EXTRA...`
    /// and waits until it listens.
    pub fn record(upstream: &str, out: &Path, extra: &[&str]) -> Imapscope {
        Imapscope::record_env(upstream, out, extra, &[])
    }

    /// [`Imapscope::record`] with extra environment variables.
    pub fn record_env(
        upstream: &str,
        out: &Path,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> Imapscope {
        let mut command = Command::new(env!("CARGO_BIN_EXE_imapscope"));
        command
            .args(["record", "--upstream", upstream, "--listen", "127.0.0.1:0"])
            .arg("--out")
            .arg(out)
            .args(extra)
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SIGHUP as a terminal delivers it, even when the suite itself runs under `nohup`:
        // imapscope keeps an inherited "ignore SIGHUP", as nohup asks of it.
        // SAFETY: signal(2) is async-signal-safe, and nothing else runs in the child here.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                libc::signal(libc::SIGHUP, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = command.spawn().expect("start imapscope");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Kept before the address is announced, so a caller woken by the
                // announcement always finds the listening line in `log()`.
                let addr = line
                    .split("listening on ")
                    .nth(1)
                    .and_then(|rest| rest.split(',').next())
                    .map(|a| a.trim().to_string());
                keep.lock().unwrap().push(line);
                if let Some(addr) = addr {
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "imapscope did not start listening; its log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Imapscope {
            child,
            addr,
            out: out.to_path_buf(),
            log,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything imapscope wrote to stderr so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The log once `lines` of its lines satisfy `wanted` (at most 20 s). The log reaches
    /// the test through a pipe and a thread, so a line imapscope wrote before a transcript's
    /// end may still be on its way when the test reads the transcript.
    pub fn wait_for_log(
        &self,
        what: &str,
        lines: usize,
        wanted: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log();
            if log.iter().filter(|l| wanted(l)).count() >= lines {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "no log line {what} within 20 s; the log:\n{}",
                log.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for the exit (at most 20 s).
    pub fn terminate(self) -> ExitStatus {
        self.signal("TERM")
    }

    /// Sends SIG`name` (`TERM`, `HUP`) and waits for imapscope to exit.
    pub fn signal(mut self, name: &str) -> ExitStatus {
        let _ = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("imapscope did not exit within 20 s of SIG{name}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Imapscope {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `imapscope serve ARGS --listen 127.0.0.1:PORT` on a free port, once it accepts connections
/// (the probe that tells is a connection that sends nothing, which serve ignores). Its output
/// is piped: read it with `wait_with_output`.
pub fn start_serve(args: &[&str]) -> (Child, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_imapscope"))
        .arg("serve")
        .args(args)
        .args(["--listen", &listen])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start imapscope serve");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&listen).is_err() {
        assert!(
            Instant::now() < deadline,
            "serve did not listen on {listen}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}

/// A scripted IMAP client over a plain socket that keeps every byte sent and received.
pub struct RawClient {
    stream: TcpStream,
    pub sent: Vec<u8>,
    pub received: Vec<u8>,
    /// Received bytes not yet consumed by a wait.
    unread: usize,
}

impl RawClient {
    pub fn connect(port: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        RawClient {
            stream,
            sent: Vec::new(),
            received: Vec::new(),
            unread: 0,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
        self.sent.extend_from_slice(bytes);
    }

    /// Reads until a complete line satisfies `done`; returns everything read for this wait.
    pub fn read_until(&mut self, what: &str, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let start = self.unread;
        loop {
            // Look for a complete line that satisfies `done`.
            let pending = &self.received[self.unread..];
            let mut at = 0;
            while let Some(nl) = pending[at..].iter().position(|&b| b == b'\n') {
                let line = &pending[at..at + nl + 1];
                at += nl + 1;
                if done(line) {
                    self.unread += at;
                    return self.received[start..self.unread].to_vec();
                }
            }
            let mut buf = [0u8; 65536];
            match self.stream.read(&mut buf) {
                Ok(0) => panic!(
                    "connection closed while waiting for {what}; got:\n{}",
                    String::from_utf8_lossy(&self.received[start..])
                ),
                Ok(n) => self.received.extend_from_slice(&buf[..n]),
                Err(e) => panic!(
                    "no {what} ({e}); got:\n{}",
                    String::from_utf8_lossy(&self.received[start..])
                ),
            }
        }
    }

    /// Reads until the tagged completion of `tag`.
    pub fn until_tagged(&mut self, tag: &str) -> String {
        let prefix = format!("{tag} ");
        let bytes = self.read_until(&format!("the completion of {tag}"), |l| {
            l.starts_with(prefix.as_bytes())
        });
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Reads until a continuation request.
    pub fn until_continuation(&mut self) -> String {
        let bytes = self.read_until("a continuation request", |l| l.starts_with(b"+"));
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Reads until the server closes the connection.
    pub fn until_eof(&mut self) {
        let mut buf = [0u8; 65536];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => self.received.extend_from_slice(&buf[..n]),
                Err(e) => panic!("waiting for the server to close: {e}"),
            }
        }
    }

    pub fn command(&mut self, tag: &str, rest: &str) -> String {
        self.send(format!("{tag} {rest}\r\n").as_bytes());
        self.until_tagged(tag)
    }
}

/// Every transcript in `dir`, sorted by name.
pub fn transcripts(dir: &Path) -> Vec<(PathBuf, Transcript)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.retain(|p| p.extension().is_some_and(|e| e == "jsonl"));
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let t = read_transcript(&p).unwrap_or_else(|e| panic!("{e}"));
            assert_tags_followed(&p, &t);
            (p, t)
        })
        .collect()
}

/// What the tracker says when it pairs a completion with nothing.
const UNPAIRED: &str = "which no command in flight has";

/// No completion in the transcript was left unpaired. Every server the suite talks to keeps
/// its tags straight, so such a note means imapscope lost track of the exchange (as it did
/// when a server refused a command before its literal). Checked on every transcript the
/// suite reads through [`transcripts`] and [`wait_for_ended`].
pub fn assert_tags_followed(path: &Path, t: &Transcript) {
    for r in &t.records {
        let notes: Vec<&String> = match r {
            Record::Message(m) => m.notes.iter().collect(),
            Record::Note(n) => vec![&n.note],
            _ => Vec::new(),
        };
        for note in notes {
            assert!(
                !note.contains(UNPAIRED),
                "{}: imapscope lost track of the tags: {note}",
                path.display()
            );
        }
    }
}

/// Like [`transcripts`], but `None` while any file cannot be read yet (still being written).
fn try_transcripts(dir: &Path) -> Option<Vec<(PathBuf, Transcript)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| read_transcript(&p).ok().map(|t| (p, t)))
        .collect()
}

/// Waits until `n` transcripts exist in `dir` and each has its end line.
pub fn wait_for_ended(dir: &Path, n: usize) -> Vec<(PathBuf, Transcript)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = try_transcripts(dir).unwrap_or_default();
        let ended = all
            .iter()
            .filter(|(_, t)| matches!(t.records.last(), Some(Record::End(_))))
            .count();
        if all.len() >= n && ended == all.len() {
            for (path, t) in &all {
                assert_tags_followed(path, t);
            }
            return all;
        }
        if Instant::now() > deadline {
            panic!(
                "expected {n} finished transcripts in {}, found {} ({} finished)",
                dir.display(),
                all.len(),
                ended
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn messages(t: &Transcript) -> Vec<&MessageRecord> {
    t.records
        .iter()
        .filter_map(|r| match r {
            Record::Message(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// Every command has exactly one completion that points back at it, and vice versa.
pub fn assert_paired(path: &Path, t: &Transcript) {
    assert_paired_until_cut_off(path, t, &[]);
}

/// As [`assert_paired`], except that the session's last command may have no completion when
/// it is one of `cut_off` (a client that quits inside IDLE never sends DONE).
pub fn assert_paired_until_cut_off(path: &Path, t: &Transcript, cut_off: &[&str]) {
    let ms = messages(t);
    let last = ms
        .iter()
        .rev()
        .find(|m| m.kind == Kind::Command)
        .map(|m| m.seq);
    for c in ms.iter().filter(|m| m.kind == Kind::Command) {
        let may_be_open =
            Some(c.seq) == last && c.name.as_deref().is_some_and(|n| cut_off.contains(&n));
        if may_be_open
            && !ms
                .iter()
                .any(|m| m.kind == Kind::Completion && m.reply_to == Some(c.seq))
        {
            continue;
        }
        let completions: Vec<_> = ms
            .iter()
            .filter(|m| m.kind == Kind::Completion && m.reply_to == Some(c.seq))
            .collect();
        assert_eq!(
            completions.len(),
            1,
            "{}: command seq {} ({:?} {:?}) has {} completions",
            path.display(),
            c.seq,
            c.tag,
            c.name,
            completions.len()
        );
        let done = completions[0];
        assert_eq!(done.tag, c.tag);
        assert!(done.latency_us.is_some() && done.status.is_some());
    }
    for done in ms.iter().filter(|m| m.kind == Kind::Completion) {
        assert!(
            done.reply_to.is_some(),
            "{}: completion seq {} answers no recorded command",
            path.display(),
            done.seq
        );
    }
}

/// The bytes one side sent, rebuilt from the transcript (messages and their parts).
pub fn bytes_from(t: &Transcript, side: Side) -> Vec<u8> {
    let mut out = Vec::new();
    for r in &t.records {
        match r {
            Record::Message(m) if m.from == side => {
                out.extend(m.payload.to_bytes().expect("payload"))
            }
            Record::Part(p) if p.from == side => out.extend(p.payload.to_bytes().expect("payload")),
            _ => {}
        }
    }
    out
}

/// No file under `dir` contains any of `secrets`.
pub fn assert_no_secrets(dir: &Path, secrets: &[&str]) {
    let mut checked = 0;
    for entry in walk(dir) {
        let data = std::fs::read(&entry).unwrap_or_default();
        checked += 1;
        for s in secrets {
            assert!(
                !data.windows(s.len()).any(|w| w == s.as_bytes()),
                "{} contains the secret {s:?}",
                entry.display()
            );
        }
    }
    assert!(checked > 0, "no files to check in {}", dir.display());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Runs a Python client script from `tests/clients/` and returns its stdout.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(repo().join("tests/clients").join(script))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("python3 is needed for these tests (apt-get install -y python3)");
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A memory figure of a process from `/proc/PID/status`, in KiB: `VmRSS` (resident now) or
/// `VmHWM` (peak resident). 0 once the process is gone.
pub fn memory_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Starts `imapscope serve TRANSCRIPT` with `args` on a free port and waits until it listens,
/// without connecting (each connection would take a recording).
pub fn serve_unprobed(args: &[&str], transcript: &Path) -> (Child, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_imapscope"))
        .arg("serve")
        .arg(transcript)
        .args(["--listen", &listen])
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("IMAPSCOPE_LOGIN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run imapscope serve");
    // Wait until the port is bound without connecting: it shows in /proc/net/tcp.
    let hex = format!(":{port:04X} ");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        if table
            .lines()
            .any(|l| l.contains(&hex) && l.contains(" 0A "))
        {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("imapscope serve did not listen on {listen}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}
