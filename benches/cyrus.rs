//! A large FETCH from a real Cyrus IMAP, direct and through relays, in turns.
//!
//! Cyrus writes with Nagle's algorithm on: the last, short segment of a large response waits
//! until the earlier ones are acknowledged, and a receiver that delays its ACK (Linux: up to
//! 40 ms) makes the whole FETCH wait that long. A direct client meets it now and then; a relay
//! that reads and forwards met it almost every time. `cargo bench --bench cyrus` starts a Cyrus
//! of its own (tests/cyrus/start.sh; tests/cyrus/install.sh installs it), APPENDs a 204 KB
//! message, and FETCHes it on every path in turns: direct, imapscope `--out none`, imapscope
//! recording, socat `-b 262144` (skipped when absent). For each path: p50, p90, max, and how
//! many FETCHes took over 20 ms (a delayed-ACK stall). Plain, then with TLS to Cyrus.
//!
//! `cargo bench --bench cyrus -- 50` sets the FETCHes per path (default 30).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

trait Leg: Read + Write {}
impl<T: Read + Write> Leg for T {}

/// A minimal IMAP client: TCP with TCP_NODELAY, as mail clients set it, plain or TLS.
struct Client {
    s: Box<dyn Leg>,
    buf: Vec<u8>,
    /// The TCP socket, and whether each read is acknowledged at once (TCP_QUICKACK): the
    /// quick direct case.
    fd: i32,
    quickack: bool,
}

impl Client {
    fn connect(port: u16) -> Client {
        Client::over(port, None)
    }

    /// A direct client that acknowledges every read at once.
    fn quick(port: u16) -> Client {
        let mut c = Client::connect(port);
        c.quickack = true;
        c
    }

    /// TLS when `tls` gives a configuration (server name `localhost`).
    fn over(port: u16, tls: Option<std::sync::Arc<rustls::ClientConfig>>) -> Client {
        let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        tcp.set_nodelay(true).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
        let s: Box<dyn Leg> = match tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
                let conn = rustls::ClientConnection::new(config, name).unwrap();
                Box::new(rustls::StreamOwned::new(conn, tcp))
            }
        };
        let mut c = Client {
            s,
            buf: Vec::new(),
            fd,
            quickack: false,
        };
        c.until(|b| b.ends_with(b"\r\n"));
        c
    }

    fn until(&mut self, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let mut chunk = vec![0u8; 1 << 20];
        while !done(&self.buf) {
            let n = self.s.read(&mut chunk).expect("read");
            assert!(n > 0, "connection closed");
            if self.quickack {
                imapscope::relay::stream::acknowledge_now(self.fd);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        std::mem::take(&mut self.buf)
    }

    fn command(&mut self, tag: &str, text: &str) -> Vec<u8> {
        self.s
            .write_all(format!("{tag} {text}\r\n").as_bytes())
            .unwrap();
        let end = format!("\r\n{tag} ");
        let start = format!("{tag} ");
        self.until(|b| {
            b.ends_with(b"\r\n")
                && (b.starts_with(start.as_bytes())
                    || memchr::memmem::find(b, end.as_bytes()).is_some())
        })
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn imapscope(upstream: &str, extra: &[&str]) -> (Proc, u16) {
    let bin = repo().join("target/release/imapscope");
    assert!(
        bin.exists(),
        "build the release binary first: cargo build --release"
    );
    let port = free_port();
    let child = Command::new(bin)
        .args(["record", "--upstream", upstream, "-q", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port);
    (Proc(child), port)
}

fn socat(upstream_port: u16) -> Option<(Proc, u16)> {
    let port = free_port();
    let child = Command::new("socat")
        .args(["-b", "262144"])
        .arg(format!("TCP-LISTEN:{port},reuseaddr,fork,bind=127.0.0.1"))
        .arg(format!("TCP:127.0.0.1:{upstream_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_listening(port);
    Some((Proc(child), port))
}

/// Logged in, INBOX selected.
fn session(port: u16) -> Client {
    login(Client::connect(port))
}

fn login(mut c: Client) -> Client {
    c.command("a1", "LOGIN nell ASecretPassword");
    c.command("a2", "SELECT INBOX");
    c
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn run_with(title: &str, paths: &[(&str, u16)], mut clients: Vec<Client>, rounds: usize) {
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for round in 0..rounds {
        for (i, c) in clients.iter_mut().enumerate() {
            let start = Instant::now();
            let out = c.command(&format!("f{round}"), "UID FETCH 1:* BODY.PEEK[]");
            times[i].push(start.elapsed().as_secs_f64() * 1e3);
            assert!(out.len() > 200_000, "the message came whole");
        }
    }
    println!("\n{title} ({rounds} FETCHes of 204 KB per path, in turns)");
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>12}",
        "path", "p50 ms", "p90 ms", "max ms", "over 20 ms"
    );
    for (i, (name, _)) in paths.iter().enumerate() {
        let mut t = times[i].clone();
        t.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{:<28} {:>9.2} {:>9.2} {:>9.2} {:>9} of {}",
            name,
            percentile(&t, 0.5),
            percentile(&t, 0.9),
            t[t.len() - 1],
            t.iter().filter(|&&x| x > 20.0).count(),
            t.len()
        );
    }
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(30);
    let dir = std::env::temp_dir().join(format!("imapscope-cyrus-bench-{}", std::process::id()));
    let (port, tls_port) = (free_port(), free_port());
    let started = Command::new("bash")
        .arg(repo().join("tests/cyrus/start.sh"))
        .arg(&dir)
        .arg(port.to_string())
        .arg(tls_port.to_string())
        .output();
    match started {
        Ok(o) if o.status.success() => {}
        other => {
            println!(
                "cyrus bench skipped: tests/cyrus/start.sh failed (run tests/cyrus/install.sh \
                 as root): {:?}",
                other.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            );
            return;
        }
    }
    let stop = || {
        let _ = Command::new("bash")
            .arg(repo().join("tests/cyrus/stop.sh"))
            .arg(&dir)
            .output();
        let _ = std::fs::remove_dir_all(&dir);
    };
    // One message of 204 KB, as the issue measured.
    {
        let mut c = session(port);
        let body: Vec<u8> = std::iter::once(b"Subject: large\r\n\r\n".to_vec())
            .chain((0..3400).map(|i| {
                format!("line {i:06} of a large message body........................\r\n")
                    .into_bytes()
            }))
            .flatten()
            .collect();
        c.s.write_all(format!("a3 APPEND INBOX {{{}}}\r\n", body.len()).as_bytes())
            .unwrap();
        c.until(|b| b.starts_with(b"+"));
        c.s.write_all(&body).unwrap();
        c.s.write_all(b"\r\n").unwrap();
        c.until(|b| memchr::memmem::find(b, b"a3 OK").is_some());
    }
    let upstream = format!("127.0.0.1:{port}");
    let rec =
        std::env::temp_dir().join(format!("imapscope-cyrus-bench-rec-{}", std::process::id()));
    let rec_arg = rec.to_string_lossy().into_owned();
    let (_a, off) = imapscope(&upstream, &["--out", "none"]);
    let (_b, on) = imapscope(&upstream, &["--out", &rec_arg]);
    let socat = socat(port);
    let mut paths = vec![
        ("direct", port),
        ("direct, acknowledging at once", port),
        ("imapscope --out none", off),
        ("imapscope recording", on),
    ];
    match &socat {
        Some((_, p)) => paths.push(("socat -b 262144", *p)),
        None => println!("(socat not installed: its row is skipped)"),
    }
    let clients = paths
        .iter()
        .map(|(name, p)| match *name {
            "direct, acknowledging at once" => login(Client::quick(*p)),
            _ => session(*p),
        })
        .collect();
    run_with("Cyrus, plain", &paths, clients, rounds);

    // TLS to Cyrus, the client leg plain (as a desktop client on localhost would have it).
    let ca = dir.join("server.pem");
    let ca = ca.to_string_lossy().into_owned();
    let tls_upstream = format!("localhost:{tls_port}");
    let tls = [
        "--upstream-tls",
        "tls",
        "--client-tls",
        "none",
        "--upstream-ca",
        &ca,
    ];
    let mut off_args = tls.to_vec();
    off_args.extend(["--out", "none"]);
    let (_c, tls_off) = imapscope(&tls_upstream, &off_args);
    let mut on_args = tls.to_vec();
    on_args.extend(["--out", &rec_arg]);
    let (_d, tls_on) = imapscope(&tls_upstream, &on_args);
    let config = imapscope::tls::UpstreamTrust::ca(Path::new(&ca))
        .and_then(|t| t.config())
        .expect("a TLS client configuration");
    let paths = [
        ("direct TLS", tls_port),
        ("imapscope --out none", tls_off),
        ("imapscope recording", tls_on),
    ];
    let clients = vec![
        login(Client::over(tls_port, Some(config))),
        session(tls_off),
        session(tls_on),
    ];
    run_with(
        "Cyrus over TLS (direct: TLS client; imapscope: upstream leg TLS, client leg plain)",
        &paths,
        clients,
        rounds,
    );
    let _ = std::fs::remove_dir_all(&rec);
    stop();
}
