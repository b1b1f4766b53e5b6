//! A desktop-like client written for these tests (tokio + flate2), through `imapscope record`
//! to a real Dovecot: the extensions Thunderbird uses, COMPRESS=DEFLATE, STARTTLS and
//! implicit TLS, several connections at once (one idling on INBOX while another syncs).
//! The recordings must pair every command, read the same with and without COMPRESS, and
//! replay green with `replay` and with `serve`.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use imapscope::protocol::{Kind, Side};
use imapscope::relay::stream::Stream;
use imapscope::replay::canon::{Bindings, canon, matches};
use imapscope::transcript::Transcript;
use imapscope::transcript::format::Record;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tls {
    None,
    Starttls,
    Implicit,
}

/// The client: tags `d1`, `d2`, ...; COMPRESS optional; everything it reads is decoded.
struct Desktop {
    stream: Stream,
    tag: u32,
    inbuf: Vec<u8>,
    deflate: Option<Compress>,
    inflate: Option<Decompress>,
}

fn ca_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    imapscope::tls::UpstreamTrust::ca(ca)
        .and_then(|t| t.config())
        .expect("client TLS config")
}

impl Desktop {
    async fn connect(port: u16, tls: Tls, ca: Option<&Path>) -> Desktop {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let stream = if tls == Tls::Implicit {
            Desktop::tls(tcp, ca.expect("CA")).await
        } else {
            Stream::Plain(tcp)
        };
        let mut d = Desktop {
            stream,
            tag: 0,
            inbuf: Vec::new(),
            deflate: None,
            inflate: None,
        };
        let greeting = d.response().await;
        assert!(
            greeting.starts_with(b"* OK"),
            "greeting {:?}",
            String::from_utf8_lossy(&greeting)
        );
        if tls == Tls::Starttls {
            // Its own tag, so the session's tags are the same with and without STARTTLS.
            d.send(b"s0 STARTTLS\r\n").await;
            d.until("s0", "STARTTLS", "OK").await;
            let Stream::Plain(tcp) =
                std::mem::replace(&mut d.stream, Stream::Plain(placeholder().await))
            else {
                unreachable!()
            };
            d.stream = Desktop::tls(tcp, ca.expect("CA")).await;
        }
        d
    }

    async fn tls(tcp: TcpStream, ca: &Path) -> Stream {
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(ca_config(ca))
            .connect(name, imapscope::relay::read_ahead::ReadAhead::new(tcp))
            .await
            .expect("TLS handshake with imapscope (trusting its CA)");
        Stream::TlsToServer(Box::new(tls))
    }

    async fn send(&mut self, bytes: &[u8]) {
        let wire = match &mut self.deflate {
            Some(c) => {
                let mut out = Vec::with_capacity(bytes.len() + 64);
                let mut input = bytes;
                loop {
                    out.reserve(input.len() + 64);
                    let before = c.total_in();
                    c.compress_vec(input, &mut out, FlushCompress::Sync)
                        .unwrap();
                    input = &input[(c.total_in() - before) as usize..];
                    if input.is_empty() && out.len() < out.capacity() {
                        break;
                    }
                }
                out
            }
            None => bytes.to_vec(),
        };
        self.stream.write_all(&wire).await.expect("send");
    }

    async fn fill(&mut self) {
        let mut buf = vec![0u8; 65536];
        let n = tokio::time::timeout(Duration::from_secs(15), self.stream.read(&mut buf))
            .await
            .expect("server answered within 15 s")
            .expect("read");
        assert!(
            n > 0,
            "server closed; had {:?}",
            String::from_utf8_lossy(&self.inbuf)
        );
        match &mut self.inflate {
            Some(d) => {
                let mut input = &buf[..n];
                loop {
                    self.inbuf.reserve(65536);
                    let before = d.total_in();
                    d.decompress_vec(input, &mut self.inbuf, FlushDecompress::Sync)
                        .expect("inflate");
                    input = &input[(d.total_in() - before) as usize..];
                    if input.is_empty() && self.inbuf.len() < self.inbuf.capacity() {
                        break;
                    }
                }
            }
            None => self.inbuf.extend_from_slice(&buf[..n]),
        }
    }

    /// One whole response, literals (and literal8) included.
    async fn response(&mut self) -> Vec<u8> {
        let mut at = 0;
        loop {
            while !self.inbuf[at..].contains(&b'\n') {
                self.fill().await;
            }
            let nl = at + self.inbuf[at..].iter().position(|&b| b == b'\n').unwrap();
            let line = &self.inbuf[at..nl + 1];
            let trimmed = line.strip_suffix(b"\r\n").unwrap_or(line);
            let literal = trimmed
                .strip_suffix(b"}")
                .and_then(|t| t.iter().rposition(|&b| b == b'{').map(|o| &t[o + 1..]))
                .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok())
                .filter(|_| !line.starts_with(b"+"));
            at = nl + 1;
            match literal {
                Some(n) => {
                    while self.inbuf.len() < at + n {
                        self.fill().await;
                    }
                    at += n;
                }
                None => return self.inbuf.drain(..at).collect(),
            }
        }
    }

    fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("d{}", self.tag)
    }

    /// Sends a command, returns its untagged responses; the completion must be `expect`.
    async fn command(&mut self, text: &str, expect: &str) -> Vec<Vec<u8>> {
        let tag = self.next_tag();
        self.send(format!("{tag} {text}\r\n").as_bytes()).await;
        self.until(&tag, text, expect).await
    }

    async fn until(&mut self, tag: &str, text: &str, expect: &str) -> Vec<Vec<u8>> {
        let mut untagged = Vec::new();
        loop {
            let r = self.response().await;
            if r.starts_with(format!("{tag} ").as_bytes()) {
                let got = String::from_utf8_lossy(&r);
                assert!(
                    got.starts_with(&format!("{tag} {expect}")),
                    "{text}: expected {expect}, got {got}"
                );
                return untagged;
            }
            untagged.push(r);
        }
    }

    async fn ok(&mut self, text: &str) -> Vec<Vec<u8>> {
        self.command(text, "OK").await
    }

    async fn compress(&mut self) {
        // Its own tag, so the session's tags are the same with and without COMPRESS.
        self.send(b"z0 COMPRESS DEFLATE\r\n").await;
        self.until("z0", "COMPRESS", "OK").await;
        self.deflate = Some(Compress::new(Compression::default(), false));
        self.inflate = Some(Decompress::new(false));
    }

    async fn logout(&mut self) {
        let u = self.ok("LOGOUT").await;
        assert!(u.iter().any(|r| r.starts_with(b"* BYE")));
    }
}

async fn placeholder() -> TcpStream {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    TcpStream::connect(l.local_addr().unwrap()).await.unwrap()
}

fn has(responses: &[Vec<u8>], needle: &str) -> bool {
    responses
        .iter()
        .any(|r| String::from_utf8_lossy(r).contains(needle))
}

/// The main session: login with SASL-IR, COMPRESS, and the extension set. `deliver` brings a
/// message in while the client idles (against a real server; `None` against a fake one).
async fn session(
    port: u16,
    tls: Tls,
    ca: Option<&Path>,
    compress: bool,
    deliver: Option<&(dyn Fn() + Sync)>,
) {
    let mut d = Desktop::connect(port, tls, ca).await;
    let caps = d.ok("CAPABILITY").await;
    assert!(has(&caps, "SASL-IR"));
    let ir = base64::engine::general_purpose::STANDARD.encode(format!("\0nell\0{PASSWORD}"));
    d.ok(&format!("AUTHENTICATE PLAIN {ir}")).await;
    if compress {
        d.compress().await;
    }
    let caps = d.ok("CAPABILITY").await;
    assert!(has(&caps, "QRESYNC") && has(&caps, "MOVE"));
    d.ok(r#"ID ("name" "imapscope-desktop" "version" "1.0")"#)
        .await;
    let enabled = d.ok("ENABLE CONDSTORE QRESYNC UTF8=ACCEPT").await;
    assert!(has(&enabled, "* ENABLED"));
    d.ok("NAMESPACE").await;
    let special = d
        .ok(r#"LIST (SUBSCRIBED) "" "*" RETURN (SPECIAL-USE)"#)
        .await;
    assert!(has(&special, "\\Archive"));
    let list_status = d
        .ok(r#"LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN))"#)
        .await;
    assert!(has(&list_status, "* STATUS"));
    d.ok(r#"STATUS "Archive" (UIDNEXT MESSAGES UNSEEN RECENT)"#)
        .await;
    let select = d.ok("SELECT INBOX (CONDSTORE)").await;
    assert!(has(&select, "HIGHESTMODSEQ"));
    d.ok("UID SEARCH ALL").await;
    let esearch = d.ok("SEARCH RETURN (MIN MAX COUNT) ALL").await;
    assert!(has(&esearch, "* ESEARCH"));
    d.ok(
        "UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Subject Date)])",
    )
    .await;
    let binary = d.ok("UID FETCH 2 (BINARY.PEEK[2])").await;
    assert!(
        has(&binary, "BINARY[2] ~{"),
        "literal8: {:?}",
        String::from_utf8_lossy(&binary[0])
    );
    // APPEND with a literal8, sent without waiting (LITERAL+).
    let tag = d.next_tag();
    let body = b"Subject: binary append\r\n\r\nbytes \x01\x02 here\r\n";
    let mut cmd = format!("{tag} APPEND INBOX ~{{{}+}}\r\n", body.len()).into_bytes();
    cmd.extend_from_slice(body);
    cmd.extend_from_slice(b"\r\n");
    d.send(&cmd).await;
    d.until(&tag, "APPEND literal8", "OK").await;
    let moved = d.ok("UID MOVE 3 Archive").await;
    assert!(has(&moved, "COPYUID"), "UIDPLUS COPYUID");
    d.ok("GETQUOTAROOT INBOX").await;
    d.ok("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1)").await;
    d.ok("UNSELECT").await;
    // QRESYNC: what changed since the start, with VANISHED for the moved message.
    let status = d.ok("STATUS INBOX (UIDVALIDITY)").await;
    let validity = String::from_utf8_lossy(&status[0])
        .split("UIDVALIDITY ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or("1")
        .to_string();
    let resync = d
        .ok(&format!("SELECT INBOX (QRESYNC ({validity} 1))"))
        .await;
    assert!(
        has(&resync, "VANISHED (EARLIER)"),
        "{:?}",
        resync
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect::<Vec<_>>()
    );
    // IDLE until a message arrives.
    let tag = d.next_tag();
    d.send(format!("{tag} IDLE\r\n").as_bytes()).await;
    let cont = d.response().await;
    assert!(cont.starts_with(b"+"));
    if let Some(deliver) = deliver {
        deliver();
    }
    loop {
        let push = d.response().await;
        if push.ends_with(b"EXISTS\r\n") {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.send(b"DONE\r\n").await;
    d.until(&tag, "IDLE", "OK").await;
    d.logout().await;
}

fn mail(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/mail")
            .join(name),
    )
    .unwrap()
}

fn seeded() -> Dovecot {
    let dovecot = Dovecot::start();
    for m in ["01-plain.eml", "02-multipart.eml", "03-large.eml"] {
        dovecot.deliver("nell", "INBOX", &mail(m));
    }
    dovecot
}

/// Records one session through imapscope with the given TLS modes; returns the transcript.
fn record(tls: Tls, compress: bool) -> (Transcript, PathBuf, tempfile::TempDir) {
    let dovecot = seeded();
    let out = tempfile::tempdir().unwrap();
    let certs = out.path().join("certs");
    let (mode, port) = match tls {
        Tls::None => ("none", dovecot.port),
        Tls::Starttls => ("starttls", dovecot.port),
        Tls::Implicit => ("tls", dovecot.tls_port),
    };
    let rec = out.path().join("rec");
    let server_ca = dovecot.dir.path().join("server.pem");
    let scope = Imapscope::record(
        &format!("127.0.0.1:{port}"),
        &rec,
        &[
            "--client-tls",
            mode,
            "--certs",
            &certs.to_string_lossy(),
            "--upstream-ca",
            &server_ca.to_string_lossy(),
        ],
    );
    let ca = certs.join("ca.pem");
    let deliver = || dovecot.deliver("nell", "INBOX", &mail("04-pushed.eml"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(session(
        scope.port(),
        tls,
        Some(&ca),
        compress,
        Some(&deliver),
    ));
    let all = wait_for_ended(&rec, 1);
    drop(scope);
    let (path, t) = all.into_iter().next().unwrap();
    (t, path, out)
}

/// The messages, without the COMPRESS and STARTTLS exchanges (the only differences allowed).
fn decoded(t: &Transcript) -> Vec<(Side, Vec<u8>)> {
    let ms = messages(t);
    let switches: Vec<u64> = ms
        .iter()
        .filter(|m| matches!(m.name.as_deref(), Some("COMPRESS" | "STARTTLS")))
        .map(|m| m.seq)
        .collect();
    ms.iter()
        .filter(|m| !switches.contains(&m.seq) && m.reply_to.is_none_or(|r| !switches.contains(&r)))
        .map(|m| (m.from, m.payload.to_bytes().unwrap()))
        .collect()
}

#[test]
fn desktop_session_reads_the_same_with_and_without_compress_and_over_tls() {
    // Each TLS mode against its own uncompressed run: over TLS Dovecot words its login
    // answer differently, which is the server's choice, not imapscope's.
    for tls in [Tls::None, Tls::Starttls, Tls::Implicit] {
        let (plain, plain_path, _keep1) = record(tls, false);
        assert_paired(&plain_path, &plain);
        let baseline = decoded(&plain);
        let (t, path, _keep) = record(tls, true);
        assert_paired(&path, &t);
        assert!(
            t.records.iter().any(|r| matches!(r, Record::Compress(_))),
            "{tls:?}: the switch is marked"
        );
        let Some(Record::End(end)) = t.records.last() else {
            panic!()
        };
        let counts = end
            .compressed
            .expect("compressed byte counts in the end line");
        assert!(counts.server_inflated > counts.server_compressed);
        if tls != Tls::None {
            assert_eq!(
                t.records
                    .iter()
                    .filter(|r| matches!(r, Record::Tls(_)))
                    .count(),
                2
            );
        }
        let this = decoded(&t);
        let mut bindings = Bindings::default();
        for (i, ((sa, a), (sb, b))) in baseline.iter().zip(&this).enumerate() {
            assert_eq!(sa, sb, "{tls:?}: message {i} direction");
            if *sa == Side::Client || i == 0 {
                if *sa == Side::Client {
                    // QRESYNC names the UIDVALIDITY each server announced.
                    assert_eq!(
                        without_uidvalidity(a),
                        without_uidvalidity(b),
                        "{tls:?}: client message {i}"
                    );
                }
                continue;
            }
            assert!(
                matches(&canon(a), &canon(b), &mut bindings),
                "{tls:?}: server message {i} differs:\n{}\n{}",
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(b)
            );
        }
        assert_eq!(
            this.len(),
            baseline.len(),
            "{tls:?}: message count; first messages:\n{}",
            this.iter()
                .take(6)
                .map(|(s, b)| format!(
                    "{s:?} {}",
                    String::from_utf8_lossy(b).lines().next().unwrap_or("")
                ))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

fn without_uidvalidity(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).into_owned();
    match text.split_once("(QRESYNC (") {
        Some((head, rest)) => format!(
            "{head}(QRESYNC (N{}",
            rest.trim_start_matches(|c: char| c.is_ascii_digit())
        ),
        None => text,
    }
}

/// The desktop recording (with COMPRESS) over each TLS mode replays green against a fresh
/// Dovecot and is served to the same client, TLS and all.
#[test]
fn desktop_recording_replays_and_serves() {
    for tls in [Tls::None, Tls::Starttls, Tls::Implicit] {
        let (t, path, keep) = record(tls, true);
        assert_paired(&path, &t);
        // replay against a fresh server, delivering the pushed message when IDLE starts.
        let dovecot = seeded();
        let (mode, port) = match tls {
            Tls::None => ("none", dovecot.port),
            Tls::Starttls => ("starttls", dovecot.port),
            Tls::Implicit => ("tls", dovecot.tls_port),
        };
        let server_ca = dovecot.dir.path().join("server.pem");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_imapscope"))
            .args(["replay", &path.to_string_lossy()])
            .args(["--upstream", &format!("127.0.0.1:{port}")])
            .args(["--upstream-tls", mode])
            .args(["--upstream-ca", &server_ca.to_string_lossy()])
            .args(["--login", &format!("nell:{PASSWORD}")])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        dovecot.wait_for_command("IDLE");
        dovecot.deliver("nell", "INBOX", &mail("04-pushed.eml"));
        let out = child.wait_with_output().unwrap();
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{tls:?}: {shown}{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // serve it to the same client, in-process through the library API, with a
        // certificate from a CA the client trusts.
        let certs = keep.path().join("serve-certs");
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            use imapscope::replay::{FakeServer, ServeOptions};
            let tls_config = (tls != Tls::None).then(|| {
                let (authority, _) = imapscope::tls::Authority::ensure(&certs).unwrap();
                imapscope::tls::client_leg_config(Arc::new(authority), "localhost").unwrap()
            });
            let options = ServeOptions {
                speed: 4.0,
                client_tls: Some(match tls {
                    Tls::None => imapscope::tls::TlsMode::None,
                    Tls::Starttls => imapscope::tls::TlsMode::Starttls,
                    Tls::Implicit => imapscope::tls::TlsMode::Tls,
                }),
                tls: tls_config,
                ..ServeOptions::default()
            };
            let server = FakeServer::start(&[&path], options).await.unwrap();
            let ca = certs.join("ca.pem");
            session(server.addr().port(), tls, Some(&ca), true, None).await;
            server.finish().await.assert_consumed();
        });
    }
}

#[test]
fn parallel_connections_one_idling_while_another_syncs() {
    let dovecot = seeded();
    let out = tempfile::tempdir().unwrap();
    let scope = Imapscope::record(&dovecot.addr(), out.path(), &[]);
    let port = scope.port();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // The idler.
        let mut idler = Desktop::connect(port, Tls::None, None).await;
        idler.ok(&format!("LOGIN nell {PASSWORD}")).await;
        idler.compress().await;
        idler.ok("SELECT INBOX").await;
        let idle_tag = idler.next_tag();
        idler.send(format!("{idle_tag} IDLE\r\n").as_bytes()).await;
        assert!(idler.response().await.starts_with(b"+"));
        // Four syncing connections, as a desktop client opens them.
        let mut syncs = Vec::new();
        for i in 0..4 {
            syncs.push(tokio::spawn(async move {
                let mut d = Desktop::connect(port, Tls::None, None).await;
                d.ok(&format!("LOGIN nell {PASSWORD}")).await;
                for mailbox in ["INBOX", "Archive", "Sent", "Drafts", "Trash", "Junk"] {
                    d.ok(&format!(
                        r#"STATUS "{mailbox}" (UIDNEXT MESSAGES UNSEEN RECENT)"#
                    ))
                    .await;
                }
                d.ok("EXAMINE INBOX").await;
                d.ok("UID FETCH 1:* (UID RFC822.SIZE FLAGS)").await;
                if i == 0 {
                    // Changes the idler must hear about: a flag, then an expunge.
                    d.ok("SELECT INBOX").await;
                    d.ok("STORE 1 +FLAGS (\\Flagged)").await;
                    d.ok("STORE 2 +FLAGS (\\Deleted)").await;
                    d.ok("EXPUNGE").await;
                }
                d.logout().await;
            }));
        }
        for s in syncs {
            s.await.unwrap();
        }
        // The flag change reaches the idler as a FETCH push, the expunge as EXPUNGE.
        let mut pushes = String::new();
        while !(pushes.contains("FETCH") && pushes.contains("EXPUNGE")) {
            pushes.push_str(&String::from_utf8_lossy(&idler.response().await));
        }
        idler.send(b"DONE\r\n").await;
        idler.until(&idle_tag, "IDLE", "OK").await;
        // Thunderbird does not log out: it just closes, here in the middle of an IDLE.
        let again = idler.next_tag();
        idler.send(format!("{again} IDLE\r\n").as_bytes()).await;
        assert!(idler.response().await.starts_with(b"+"));
    });
    drop(rt);
    let all = wait_for_ended(out.path(), 5);
    assert_eq!(all.len(), 5);
    for (path, t) in &all {
        let Some(Record::End(end)) = t.records.last() else {
            panic!()
        };
        if end.unanswered.is_empty() {
            assert_paired(path, t);
        } else {
            // The idler, closed inside its second IDLE: that IDLE is the one command
            // left unanswered, and the transcript says so in its end line.
            let ms = messages(t);
            let open: Vec<_> = ms
                .iter()
                .filter(|m| end.unanswered.contains(&m.seq))
                .map(|m| m.name.clone().unwrap_or_default())
                .collect();
            assert_eq!(open, ["IDLE"], "{}", path.display());
        }
        let Some(Record::End(end)) = t.records.last() else {
            panic!()
        };
        assert!(
            end.reason.contains("closed"),
            "{}: {}",
            path.display(),
            end.reason
        );
    }
    let idler = all
        .iter()
        .find(|(_, t)| t.records.iter().any(|r| matches!(r, Record::Compress(_))))
        .expect("the idler's transcript");
    for push in ["FETCH", "EXPUNGE"] {
        assert!(
            messages(&idler.1)
                .iter()
                .any(|m| m.kind == Kind::Untagged && m.name.as_deref() == Some(push)),
            "the idler's transcript has the {push} push"
        );
    }
}
