//! The load generator: direct vs socat vs imapscope (recording off and on, plain and TLS),
//! side by side in one run, because on a shared 2-core machine only ratios hold.
//!
//! `cargo bench --bench load` runs everything (add `-- quick` for a short run). One part alone:
//! `-- tls` (both legs TLS, against direct TLS, sslsplit and mitmproxy), `-- peers` (the same
//! between Python's ssl module at both ends, `benches/peers.py`), and `-- rtt`, `-- fanout` or
//! `-- bulk` (that measurement alone, in rounds, for A/B runs). The server is a purpose-built
//! responder in a child process (not Dovecot, so the server is not the bottleneck): it answers
//! `FETCH` with one large literal, `NOOP` and `FETCH FLAGS` with small answers, and `IDLE` with
//! `+ idling`. imapscope runs as its own process (the release binary), so its CPU time and
//! memory are its own: read from /proc. `IMAPSCOPE_BENCH_OTHER=path/to/imapscope` adds rows for
//! another build (`--out none` and recording), measured in the same turns (an A/B comparison
//! that the machine's noise hits alike). Peer relays (socat, sslsplit, mitmproxy) that are not
//! installed are skipped with a message.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const MB: usize = 1 << 20;

struct Plan {
    body: usize,
    fetches: usize,
    pings: usize,
    fanout_sessions: usize,
    fanout_secs: f64,
    idle_target: usize,
}

// ---------------------------------------------------------------------------------------
// The responder (child process).

fn responder_main(port_file: &str, tls_dir: Option<&str>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls = tls_dir.map(|dir| {
        let (authority, _) = imapscope::tls::Authority::ensure(Path::new(dir)).unwrap();
        imapscope::tls::client_leg_config(Arc::new(authority), "localhost").unwrap()
    });
    std::fs::write(port_file, port.to_string()).unwrap();
    let body = Arc::new(vec![b'x'; 100 * MB]);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let body = body.clone();
        let tls = tls.clone();
        // Small stacks: the idle test opens thousands of these.
        let _ = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let _ = stream.set_nodelay(true);
                match tls {
                    Some(config) => {
                        let conn = rustls::ServerConnection::new(config).unwrap();
                        let tls = rustls::StreamOwned::new(conn, stream);
                        serve_one(tls, &body);
                    }
                    None => serve_one(stream, &body),
                }
            });
    }
}

fn serve_one<S: Read + Write>(stream: S, body: &[u8]) {
    let mut r = BufReader::with_capacity(4096, stream);
    let _ = r.get_mut().write_all(b"* OK bench responder ready\r\n");
    let _ = r.get_mut().flush();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut words = line.split_whitespace();
        let tag = words.next().unwrap_or("*").to_string();
        let cmd = words.next().unwrap_or("").to_ascii_uppercase();
        let w = r.get_mut();
        let _ = match cmd.as_str() {
            "FETCH" if line.contains("BODY[]") => {
                let n: usize = words
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(10)
                    .min(100)
                    * MB;
                w.write_all(format!("* 1 FETCH (BODY[] {{{n}}}\r\n").as_bytes())
                    .and_then(|_| w.write_all(&body[..n]))
                    .and_then(|_| w.write_all(format!(")\r\n{tag} OK Fetch completed.\r\n").as_bytes()))
            }
            "FETCH" => w.write_all(
                format!("* 1 FETCH (FLAGS (\\Seen))\r\n* 2 FETCH (FLAGS ())\r\n{tag} OK Fetch completed.\r\n")
                    .as_bytes(),
            ),
            "IDLE" => w.write_all(b"+ idling\r\n"),
            "DONE" => w.write_all(b"i OK Idle completed.\r\n"),
            "LOGOUT" => {
                let _ = w.write_all(format!("* BYE bye\r\n{tag} OK Logout completed.\r\n").as_bytes());
                let _ = w.flush();
                return;
            }
            _ => w.write_all(format!("{tag} OK done.\r\n").as_bytes()),
        };
        let _ = w.flush();
    }
}

// ---------------------------------------------------------------------------------------
// Processes under test.

struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    /// utime + stime in seconds.
    fn cpu(&self) -> f64 {
        cpu_of(&self.pid().to_string())
    }
    fn status(&self, key: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
    fn rss_kib(&self) -> u64 {
        self.status("VmRSS:")
    }
    fn peak_kib(&self) -> u64 {
        self.status("VmHWM:")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16) {
    if !listening_within(port, Duration::from_secs(5)) {
        panic!("nothing listens on {port}");
    }
}

/// Whether something listens on `port` within `limit`, from /proc/net/tcp.
fn listening_within(port: u16, limit: Duration) -> bool {
    let hex = format!(":{port:04X} ");
    let start = Instant::now();
    while start.elapsed() < limit {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        if table
            .lines()
            .any(|l| l.contains(&hex) && l.contains(" 0A "))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn start_responder(tls_dir: Option<&Path>) -> Proc {
    let dir = tempfile::tempdir().unwrap();
    let port_file = dir.path().join("port");
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.arg("--responder").arg(&port_file);
    if let Some(d) = tls_dir {
        cmd.arg(d);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let port = loop {
        if let Ok(p) = std::fs::read_to_string(&port_file).map(|s| s.parse::<u16>()) {
            break p.unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    wait_listening(port);
    Proc {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn start_imapscope(upstream: SocketAddr, out: Option<&Path>, extra: &[&str]) -> Proc {
    start_imapscope_from(
        Path::new(env!("CARGO_BIN_EXE_imapscope")),
        upstream,
        out,
        extra,
    )
}

fn start_imapscope_from(
    binary: &Path,
    upstream: SocketAddr,
    out: Option<&Path>,
    extra: &[&str],
) -> Proc {
    let port = free_port();
    let out = out.map_or("none".to_string(), |p| p.display().to_string());
    let child = Command::new(binary)
        .args(["-q", "record", "--upstream", &upstream.to_string()])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--out", &out])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_listening(port);
    Proc {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

/// socat at its best: `nodelay` on both sockets. Without it socat writes with Nagle on, so
/// the last short segment of every response waits for the receiver's delayed ACK (up to
/// 40 ms): that, not socat's copying, is what held it at 0.32-0.48 of direct in this
/// benchmark while an independent measurement saw 0.8.
fn start_socat(upstream: SocketAddr, buffer: Option<usize>) -> Option<Proc> {
    let port = free_port();
    let mut cmd = Command::new("socat");
    if let Some(b) = buffer {
        cmd.args(["-b", &b.to_string()]);
    }
    let child = cmd
        .arg(format!(
            "TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,backlog=4096,nodelay"
        ))
        .arg(format!("TCP:{upstream},nodelay"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_listening(port);
    Some(Proc {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    })
}

/// sslsplit 0.5.5 (Debian) intercepting TLS on both legs with the given CA, as shipped or with
/// `preload` (see [`nodelay_shim`]) in `LD_PRELOAD`. `None` when it is not installed.
fn start_sslsplit(
    upstream: SocketAddr,
    ca_cert: &Path,
    ca_key: &Path,
    preload: Option<&Path>,
) -> Option<Group> {
    let port = free_port();
    let mut command = Command::new("sslsplit");
    if let Some(shim) = preload {
        command.env("LD_PRELOAD", shim);
    }
    let child = command
        .process_group(0)
        .arg("-c")
        .arg(ca_cert)
        .arg("-k")
        .arg(ca_key)
        .args(["ssl", "127.0.0.1", &port.to_string()])
        .args([upstream.ip().to_string(), upstream.port().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_listening(port);
    Some(Group(Proc {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }))
}

/// sslsplit 0.5.5 leaves Nagle on, so the last short segment of each response waits for a
/// delayed ACK. The issue's independent run measured it also "with TCP_NODELAY forced": this
/// builds the same thing, a preload library that sets TCP_NODELAY on every TCP socket sslsplit
/// connects or accepts. `None` (and the row skipped) when no C compiler is found.
fn nodelay_shim(work: &Path) -> Option<PathBuf> {
    const SOURCE: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static void nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real)(int, const struct sockaddr *, socklen_t);
    if (!real) real = dlsym(RTLD_NEXT, "connect");
    nodelay(fd);
    return real(fd, addr, len);
}

int accept(int fd, struct sockaddr *addr, socklen_t *len) {
    static int (*real)(int, struct sockaddr *, socklen_t *);
    if (!real) real = dlsym(RTLD_NEXT, "accept");
    int s = real(fd, addr, len);
    if (s >= 0) nodelay(s);
    return s;
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    if (!real) real = dlsym(RTLD_NEXT, "accept4");
    int s = real(fd, addr, len, flags);
    if (s >= 0) nodelay(s);
    return s;
}
"#;
    let source = work.join("nodelay.c");
    let library = work.join("nodelay.so");
    std::fs::write(&source, SOURCE).ok()?;
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&library)
        .arg(&source)
        .arg("-ldl")
        .stderr(Stdio::null())
        .status()
        .ok()?;
    built.success().then_some(library)
}

/// mitmproxy's `mitmdump` (Debian's 8.1) as a TLS-intercepting relay of raw TCP: a reverse
/// proxy to the TLS responder that forges with `ca_cert`/`ca_key` and keeps no flows.
fn start_mitmdump(
    work: &Path,
    upstream: SocketAddr,
    ca_cert: &Path,
    ca_key: &Path,
) -> Option<Group> {
    let confdir = work.join("mitmproxy");
    std::fs::create_dir_all(&confdir).ok()?;
    // Key and certificate in one file, the only CA form mitmproxy reads; without it mitmproxy
    // would silently make a CA of its own.
    let mut ca = std::fs::read(ca_key).ok()?;
    ca.extend(std::fs::read(ca_cert).ok()?);
    std::fs::write(confdir.join("mitmproxy-ca.pem"), ca).ok()?;
    // 8.1 keeps every relayed chunk in the flow for the life of the process: this add-on drops
    // them, so its memory stays flat (as the independent run did).
    let addon = confdir.join("drop_messages.py");
    std::fs::write(
        &addon,
        "def tcp_message(flow):\n    del flow.messages[:-1]\n",
    )
    .ok()?;
    let port = free_port();
    let child = Command::new("mitmdump")
        .process_group(0)
        .args(["-q", "--mode", &format!("reverse:https://{upstream}")])
        .args([
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            &port.to_string(),
        ])
        .arg("--set")
        .arg(format!("confdir={}", confdir.display()))
        // Raw TCP, never HTTP; the responder's certificate is not checked.
        .args(["--ssl-insecure", "--tcp-hosts", ".*"])
        .args([
            "--set",
            "flow_detail=0",
            "--set",
            "termlog_verbosity=error",
            "-s",
        ])
        .arg(&addon)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let group = Group(Proc {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    });
    // Python takes about a second to start; polled without connecting (a connection would
    // make it open one to the responder).
    listening_within(port, Duration::from_secs(20)).then_some(group)
}

/// A process that forks workers of its own (sslsplit): its whole process group is ended.
struct Group(Proc);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = self.0.child.id() as libc::pid_t;
        // SAFETY: signals the process group this bench created for the child, nothing else.
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Clients.

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

/// A socket read in 64 KiB gulps under rustls, which asks for 4 KiB at a time: the
/// benchmark's own TLS client must not burn the shared cores on `recv` calls (imapscope's TLS
/// legs do the same, `src/relay/read_ahead.rs`; mail clients read in large chunks too).
struct Gulping(BufReader<TcpStream>);

impl Read for Gulping {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Gulping {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.get_mut().write(buf)
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        self.0.get_mut().write_vectored(bufs)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.get_mut().flush()
    }
}

fn connect(addr: SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> BufReader<Box<dyn Conn>> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_nodelay(true).unwrap();
    let stream: Box<dyn Conn> = match tls {
        Some(config) => {
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
            let tcp = Gulping(BufReader::with_capacity(64 * 1024, tcp));
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
        None => Box::new(tcp),
    };
    let mut r = BufReader::with_capacity(256 * 1024, stream);
    let mut greeting = String::new();
    r.read_line(&mut greeting).unwrap();
    assert!(greeting.starts_with("* OK"), "greeting {greeting:?}");
    r
}

fn until_tagged(r: &mut BufReader<Box<dyn Conn>>, tag: &str) {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "closed");
        if line.starts_with(tag) && line[tag.len()..].starts_with(' ') {
            return;
        }
    }
}

/// FETCHes one literal of `body` bytes on an open session; returns the seconds it took.
fn fetch_once(r: &mut BufReader<Box<dyn Conn>>, tag: &str, body: usize, buf: &mut [u8]) -> f64 {
    let start = Instant::now();
    r.get_mut()
        .write_all(format!("{tag} FETCH {} BODY[]\r\n", body / MB).as_bytes())
        .unwrap();
    r.get_mut().flush().unwrap();
    let mut head = String::new();
    r.read_line(&mut head).unwrap();
    let mut left = body;
    while left > 0 {
        let want = left.min(buf.len());
        let n = r.read(&mut buf[..want]).unwrap();
        assert!(n > 0);
        left -= n;
    }
    until_tagged(r, tag);
    start.elapsed().as_secs_f64()
}

/// MB/s FETCHing `fetches` literals of `body` bytes on one session.
fn bulk(
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
    body: usize,
    fetches: usize,
) -> f64 {
    let mut r = connect(addr, tls);
    let mut buf = vec![0u8; 256 * 1024];
    let secs: f64 = (0..fetches)
        .map(|i| fetch_once(&mut r, &format!("f{i}"), body, &mut buf))
        .sum();
    (fetches * body) as f64 / secs / 1e6
}

/// The order of the paths in round `round`: a shuffle, the same in every run, so that no path
/// always goes first or always follows the same one. Measured: with the same build on two
/// paths, the one measured first in every round came out up to 0.25 s/GB costlier; and when
/// each round only started one path later, every path kept its predecessor, and a round trip
/// that followed one through the same program (imapscope after imapscope, sslsplit after
/// sslsplit: its code still in the caches) came out 10-30 us quicker than the others.
fn turn_order(round: usize, paths: usize) -> impl Iterator<Item = usize> {
    let mut order: Vec<usize> = (0..paths).collect();
    // splitmix64, seeded by the round: Fisher-Yates needs only a few fair draws.
    let mut state = (round as u64)
        .wrapping_add(1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for i in (1..paths).rev() {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        order.swap(i, (z % (i as u64 + 1)) as usize);
    }
    order.into_iter()
}

/// One unmeasured FETCH on every session, so that no path is measured cold (a process that
/// has not yet grown its buffers and heap) against one that is warm from earlier rows.
fn warm_up(sessions: &mut [BufReader<Box<dyn Conn>>], body: usize, buf: &mut [u8]) {
    for r in sessions {
        fetch_once(r, "w", body, buf);
    }
}

/// A path to measure: where to connect, with TLS or not, and imapscope's process if it is one.
type Route<'a> = (
    SocketAddr,
    Option<&'a Arc<rustls::ClientConfig>>,
    Option<&'a Proc>,
);

/// Bulk throughput of several paths measured in turns: each round FETCHes one literal on
/// every path, so a burst of noise on this shared machine hits all of them alike. Returns
/// MB/s per path and, for paths with a process, its CPU seconds per GB.
fn bulk_in_turns(paths: &[Route<'_>], body: usize, fetches: usize) -> Vec<(f64, Option<f64>)> {
    let mut sessions: Vec<_> = paths.iter().map(|(a, tls, _)| connect(*a, *tls)).collect();
    let mut buf = vec![0u8; 256 * 1024];
    warm_up(&mut sessions, body, &mut buf);
    let mut secs = vec![0.0; paths.len()];
    let mut cpu = vec![0.0; paths.len()];
    for i in 0..fetches {
        for k in turn_order(i, paths.len()) {
            let r = &mut sessions[k];
            let cpu0 = paths[k].2.map(|p| p.cpu());
            secs[k] += fetch_once(r, &format!("f{i}"), body, &mut buf);
            if let (Some(p), Some(c0)) = (paths[k].2, cpu0) {
                cpu[k] += p.cpu() - c0;
            }
        }
    }
    let gb = (fetches * body) as f64 / 1e9;
    (0..paths.len())
        .map(|k| {
            (
                (fetches * body) as f64 / secs[k] / 1e6,
                paths[k].2.map(|_| cpu[k] / gb),
            )
        })
        .collect()
}

/// NOOP round trips in microseconds, sorted, per path. Pings go in turns (one on every path,
/// then the next), for the same reason as [`bulk_in_turns`].
fn pings_in_turns(addrs: &[SocketAddr], n: usize) -> Vec<Vec<f64>> {
    let routes: Vec<_> = addrs.iter().map(|a| (*a, None)).collect();
    pings_over(&routes, n)
}

/// [`pings_in_turns`] over paths that may be TLS.
fn pings_over(
    routes: &[(SocketAddr, Option<&Arc<rustls::ClientConfig>>)],
    n: usize,
) -> Vec<Vec<f64>> {
    let addrs: Vec<SocketAddr> = routes.iter().map(|r| r.0).collect();
    let mut sessions: Vec<_> = routes.iter().map(|(a, tls)| connect(*a, *tls)).collect();
    let mut times = vec![Vec::with_capacity(n); addrs.len()];
    for i in 0..n {
        for k in turn_order(i, addrs.len()) {
            let r = &mut sessions[k];
            let t = Instant::now();
            r.get_mut()
                .write_all(format!("n{i} NOOP\r\n").as_bytes())
                .unwrap();
            until_tagged(r, &format!("n{i}"));
            times[k].push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    for t in &mut times {
        t.sort_by(f64::total_cmp);
    }
    times
}

fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() - 1) as f64 * p) as usize]
}

/// Commands per second over `sessions` concurrent sessions of NOOP / FETCH FLAGS.
fn fanout(addr: SocketAddr, sessions: usize, secs: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..sessions)
        .map(|s| {
            let (stop, count) = (stop.clone(), count.clone());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut r = connect(addr, None);
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let cmd = if i.is_multiple_of(2) {
                            "NOOP"
                        } else {
                            "FETCH 1:2 (FLAGS)"
                        };
                        let tag = format!("s{s}x{i}");
                        r.get_mut()
                            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
                            .unwrap();
                        until_tagged(&mut r, &tag);
                        count.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                    let _ = r.get_mut().write_all(b"z LOGOUT\r\n");
                })
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = count.load(Ordering::Relaxed);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let done = count.load(Ordering::Relaxed) - before;
    let rate = done as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    rate
}

/// `-- peers`: Python at both ends (`benches/peers.py`), the kind of peers issue 14's
/// independent measurement used, slower than this benchmark's own. First plain legs: direct,
/// socat, imapscope (`--out none`, recording, another build); then TLS on both legs (Python's
/// ssl module): direct TLS, imapscope, sslsplit (as shipped, and with TCP_NODELAY) and
/// mitmproxy. Throughput and round trips in turns, in one run.
fn python_peers(work: &Path, plan: &Plan) {
    let dir = work.join("peers");
    std::fs::create_dir_all(&dir).unwrap();
    let other_bin = other_build();

    let server = start_peers_server(&dir.join("plain-port"), None);
    let scope = start_imapscope(server.addr, None, &[]);
    let recording = start_imapscope(server.addr, Some(&work.join("peers-plain-recordings")), &[]);
    let other = other_bin
        .as_ref()
        .map(|bin| start_imapscope_from(Path::new(bin), server.addr, None, &[]));
    let socat = start_socat(server.addr, Some(262_144));
    let mut rows: Vec<(&str, &Proc)> = vec![("direct", &server)];
    match &socat {
        Some(s) => rows.push(("socat -b 262144", s)),
        None => println!("socat: not installed, its row is skipped"),
    }
    rows.push(("imapscope --out none", &scope));
    rows.push(("imapscope recording", &recording));
    if let Some(o) = &other {
        rows.push(("other build --out none", o));
    }
    peers_in_turns(false, &server, &rows, plan);
    drop((server, scope, recording, other, socat));

    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
    let (cert_pem, key_pem) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_pem, cert.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();
    let server = start_peers_server(&dir.join("tls-port"), Some((&cert_pem, &key_pem)));
    let certs = work.join("peers-certs");
    let tls_args = both_legs_tls(&cert_pem, &certs);
    let tls_args: Vec<&str> = tls_args.iter().map(String::as_str).collect();
    let scope = start_imapscope(server.addr, None, &tls_args);
    let rec = work.join("peers-recordings");
    let recording = start_imapscope(server.addr, Some(&rec), &tls_args);
    let other = other_bin
        .as_ref()
        .map(|bin| start_imapscope_from(Path::new(bin), server.addr, None, &tls_args));
    let relays = tls_peer_relays(
        work,
        server.addr,
        &certs.join("ca.pem"),
        &certs.join("ca-key.pem"),
    );
    let mut rows: Vec<(&str, &Proc)> = vec![
        ("direct TLS", &server),
        ("imapscope --out none", &scope),
        ("imapscope recording", &recording),
    ];
    if let Some(o) = &other {
        rows.push(("other build --out none", o));
    }
    for (name, relay) in &relays {
        if let Some(r) = relay {
            rows.push((name, &r.0));
        }
    }
    peers_in_turns(true, &server, &rows, plan);
}

/// `benches/peers.py`'s server, plain or with TLS (`cert`, `key`); it writes its port to
/// `port_file`.
fn start_peers_server(port_file: &Path, tls: Option<(&Path, &Path)>) -> Proc {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers.py");
    let mut command = Command::new("python3");
    command.arg(&script).arg("server").arg(port_file);
    match tls {
        Some((cert, key)) => command.arg(cert).arg(key),
        None => command.arg("plain"),
    };
    let server = command
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs the peers");
    let start = Instant::now();
    let port = loop {
        if let Some(p) = std::fs::read_to_string(port_file)
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok())
        {
            break p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "peers.py server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    Proc {
        child: server,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

/// Runs `benches/peers.py`'s client over `rows` (the first is direct: the server itself) and
/// prints the table, then each party's CPU per GB on each path.
fn peers_in_turns(tls: bool, server: &Proc, rows: &[(&str, &Proc)], plan: &Plan) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers.py");
    let fetches = plan.fetches.max(10);
    let legs = if tls { "TLS" } else { "plain" };
    eprintln!(
        "measuring Python peers ({legs}) through {} paths, in turns...",
        rows.len()
    );
    let output = Command::new("python3")
        .arg(&script)
        .args([
            if tls { "client" } else { "client-plain" },
            &fetches.to_string(),
            &(plan.body / MB).to_string(),
        ])
        .arg(plan.pings.to_string())
        .args(rows.iter().map(|(name, relay)| {
            // socat and sslsplit work in processes they fork: the CPU of the one started
            // is not theirs.
            if relay.pid() == server.pid()
                || name.starts_with("sslsplit")
                || name.starts_with("socat")
            {
                relay.addr.port().to_string()
            } else {
                format!("{}/{}", relay.addr.port(), relay.pid())
            }
        }))
        .env("PEERS_SERVER_PID", server.pid().to_string())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "peers.py client printed no result ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    let figure = |addr: SocketAddr, key: &str| result[addr.port().to_string()][key].as_f64();
    let base = |key: &str| figure(rows[0].1.addr, key).unwrap_or(f64::NAN);
    println!();
    println!(
        "Python peers, {} legs, {fetches} x {} MiB FETCH and {} NOOPs per path, in turns:",
        if tls {
            "TLS (ssl module) on both"
        } else {
            "plain"
        },
        plan.body / MB,
        plan.pings
    );
    let of = if tls { "of direct TLS" } else { "of direct" };
    println!(
        "  {:<24} {:>7} {:>14} {:>9} {:>9}",
        "path", "MB/s", of, "p50 +us", "p99 +us"
    );
    for (name, relay) in rows {
        let mbps = figure(relay.addr, "mbps").unwrap_or(f64::NAN);
        println!(
            "  {:<24} {:>7.0} {:>14.2} {:>9.1} {:>9.1}",
            name,
            mbps,
            mbps / base("mbps"),
            figure(relay.addr, "p50").unwrap_or(f64::NAN) - base("p50"),
            figure(relay.addr, "p99").unwrap_or(f64::NAN) - base("p99"),
        );
    }
    // Whether a path is bound by the CPU the parties share: on two cores, a path whose
    // parties keep both busy cannot go faster by any change to one of them alone.
    for (name, relay) in rows {
        let port = relay.addr.port().to_string();
        let party = |what: &str, who: &str| result[&port][what][who].as_f64();
        let (Some(client), Some(server)) = (
            party("cpu_s_per_gb", "client"),
            party("cpu_s_per_gb", "server"),
        ) else {
            continue;
        };
        let cores = |who: &str| party("cores", who).unwrap_or(0.0);
        let relay_gb = party("cpu_s_per_gb", "relay");
        println!(
            "  {:<24} CPU s/GB: client {client:.2}, relay {}, server {server:.2}; cores busy: {:.2} (client {:.2}, relay {:.2}, server {:.2})",
            name,
            relay_gb.map_or("-".to_string(), |r| format!("{r:.2}")),
            cores("client") + cores("relay") + cores("server"),
            cores("client"),
            cores("relay"),
            cores("server"),
        );
    }
}

/// One measurement alone, over every row, in rounds of turns: `rtt` (NOOP round trips, 5
/// rounds of `plan.pings`) or `fanout` (5 rounds of `plan.fanout_secs` per row). Prints the
/// median of the rounds and each round's figure, so that an A/B difference can be told from
/// the machine's drift.
fn focused(mode: &str, rows: &[(String, SocketAddr, Option<&Proc>)], plan: &Plan) {
    const ROUNDS: usize = 5;
    let addrs: Vec<SocketAddr> = rows.iter().map(|r| r.1).collect();
    if mode == "bulk" {
        return bulk_alone(rows, plan);
    }
    let mut figures: Vec<Vec<(f64, f64)>> = vec![Vec::new(); rows.len()];
    for round in 0..ROUNDS {
        eprintln!("{mode}: round {} of {ROUNDS}...", round + 1);
        if mode == "rtt" {
            let times = pings_in_turns(&addrs, plan.pings);
            for (k, t) in times.iter().enumerate() {
                figures[k].push((pct(t, 0.5), pct(t, 0.99)));
            }
        } else {
            for k in turn_order(round, rows.len()) {
                let rate = fanout(addrs[k], plan.fanout_sessions, plan.fanout_secs);
                figures[k].push((rate, 0.0));
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!();
    if mode == "rtt" {
        println!(
            "NOOP round trips, {ROUNDS} rounds of {} in turns: time added over direct (median of rounds; each round)",
            plan.pings
        );
        let direct: Vec<(f64, f64)> = figures[0].clone();
        for (k, (name, ..)) in rows.iter().enumerate() {
            let mut p50: Vec<f64> = (0..ROUNDS).map(|r| figures[k][r].0 - direct[r].0).collect();
            let mut p99: Vec<f64> = (0..ROUNDS).map(|r| figures[k][r].1 - direct[r].1).collect();
            let rounds: Vec<String> = p50.iter().map(|v| format!("{v:.1}")).collect();
            println!(
                "{name:<24} p50 +{:>6.1} us  p99 +{:>6.1} us   ({})",
                median(&mut p50),
                median(&mut p99),
                rounds.join(" ")
            );
        }
    } else {
        println!(
            "fan-out, {} sessions of NOOP / FETCH FLAGS, {ROUNDS} rounds of {} s in turns: commands/s (median; each round)",
            plan.fanout_sessions, plan.fanout_secs
        );
        for (k, (name, ..)) in rows.iter().enumerate() {
            let mut rates: Vec<f64> = figures[k].iter().map(|f| f.0).collect();
            let rounds: Vec<String> = rates.iter().map(|v| format!("{v:.0}")).collect();
            println!(
                "{name:<24} {:>8.0}   ({})",
                median(&mut rates),
                rounds.join(" ")
            );
        }
    }
}

/// `-- bulk`: 4 x `plan.fetches` FETCHes per row in turns, each timed: the median FETCH's
/// throughput, the throughput over all of them, and the FETCHes that took over 3 times the
/// median (a stall, such as a segment held for a delayed ACK, shows there and nowhere else).
fn bulk_alone(rows: &[(String, SocketAddr, Option<&Proc>)], plan: &Plan) {
    let mut sessions: Vec<_> = rows.iter().map(|r| connect(r.1, None)).collect();
    let mut buf = vec![0u8; 256 * 1024];
    warm_up(&mut sessions, plan.body, &mut buf);
    let n = 4 * plan.fetches;
    let mut times = vec![Vec::with_capacity(n); rows.len()];
    for i in 0..n {
        for k in turn_order(i, rows.len()) {
            times[k].push(fetch_once(
                &mut sessions[k],
                &format!("f{i}"),
                plan.body,
                &mut buf,
            ));
        }
    }
    println!();
    println!(
        "bulk, {n} x {} MiB FETCH in turns: MB/s of the median FETCH, MB/s over all, FETCHes over 3 x the median (the slowest)",
        plan.body / MB
    );
    for (k, (name, ..)) in rows.iter().enumerate() {
        let mut t = times[k].clone();
        t.sort_by(f64::total_cmp);
        let median = t[t.len() / 2];
        let total: f64 = t.iter().sum();
        let slow = t.iter().filter(|&&x| x > 3.0 * median).count();
        println!(
            "{name:<24} {:>7.0} {:>7.0}   {slow} slow (slowest {:.1} ms)",
            plan.body as f64 / median / 1e6,
            (n * plan.body) as f64 / total / 1e6,
            t[t.len() - 1] * 1e3
        );
    }
}

/// Opens `n` sessions, each idling; returns them (kept open while memory is read).
fn idlers(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
        s.write_all(b"i IDLE\r\n").unwrap();
        let _ = s.read(&mut buf);
        out.push(s);
    }
    out
}

fn raise_fd_limit() -> u64 {
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        // Root may raise the hard limit too (10,000 idle sessions need about 20,000
        // descriptors in imapscope); otherwise the hard limit is as far as it goes.
        let wanted = libc::rlimit {
            rlim_cur: 65_536,
            rlim_max: 65_536,
        };
        if lim.rlim_max < wanted.rlim_max && libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
            return wanted.rlim_cur;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        lim.rlim_cur
    }
}

/// CPU seconds of a process, every thread: the scheduler's own count (`schedstat`, in
/// nanoseconds). `/proc/PID/stat`'s utime and stime, used before, are adjusted to stay
/// monotonic and can stand still for many milliseconds, which put the responder's work for
/// one path on another path's FETCHes (a path measured at 0.00 s/GB). A thread that ends
/// between two readings takes its time along.
fn cpu_of(pid: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanos as f64 / 1e9
}

/// `IMAPSCOPE_BENCH_OTHER`: another imapscope binary to measure in the same turns (empty
/// counts as unset).
fn other_build() -> Option<std::ffi::OsString> {
    std::env::var_os("IMAPSCOPE_BENCH_OTHER").filter(|v| !v.is_empty())
}

/// The TLS-intercepting peer relays, each forging with imapscope's CA (`ca_cert`, `ca_key`):
/// sslsplit as shipped, sslsplit with TCP_NODELAY forced, mitmproxy. One that is not installed
/// (or not started) is `None`, and the reason is printed.
fn tls_peer_relays(
    work: &Path,
    upstream: SocketAddr,
    ca_cert: &Path,
    ca_key: &Path,
) -> [(&'static str, Option<Group>); 3] {
    let sslsplit = start_sslsplit(upstream, ca_cert, ca_key, None);
    if sslsplit.is_none() {
        println!("sslsplit not found: its rows are skipped (apt-get install sslsplit)");
    }
    let nodelay = sslsplit.as_ref().and_then(|_| match nodelay_shim(work) {
        Some(shim) => start_sslsplit(upstream, ca_cert, ca_key, Some(&shim)),
        None => {
            println!("no C compiler for the TCP_NODELAY preload: that sslsplit row is skipped");
            None
        }
    });
    let mitmdump = start_mitmdump(work, upstream, ca_cert, ca_key);
    if mitmdump.is_none() {
        println!(
            "mitmdump not found or not listening: its row is skipped (apt-get install mitmproxy)"
        );
    }
    [
        ("sslsplit", sslsplit),
        ("sslsplit TCP_NODELAY", nodelay),
        ("mitmproxy", mitmdump),
    ]
}

/// imapscope's arguments for TLS on both legs: the server's certificate (or its CA) pinned
/// from `upstream_ca`, imapscope's own CA in `certs`.
fn both_legs_tls(upstream_ca: &Path, certs: &Path) -> Vec<String> {
    let mut args: Vec<String> = ["--client-tls", "tls", "--upstream-tls", "tls"]
        .map(String::from)
        .to_vec();
    args.push("--upstream-ca".into());
    args.push(upstream_ca.display().to_string());
    args.push("--certs".into());
    args.push(certs.display().to_string());
    args
}

/// Both legs TLS vs plain imapscope, in turns, with the CPU of every party: the TLS row
/// shares two cores with a client and a server that do TLS themselves, and the split shows
/// how much of the cores imapscope had.
fn tls_row(work: &Path, plain: &Proc, plain_responder: &Proc, plan: &Plan) {
    let tls_dir = work.join("tls-certs");
    let tls_responder = start_responder(Some(&tls_dir));
    let ca = tls_dir.join("ca.pem");
    let certs = work.join("scope-certs");
    let tls_args = both_legs_tls(&ca, &certs);
    let tls_args: Vec<&str> = tls_args.iter().map(String::as_str).collect();
    let tls_scope = start_imapscope(tls_responder.addr, None, &tls_args);
    let tls_rec = work.join("tls-recordings");
    std::fs::create_dir_all(&tls_rec).unwrap();
    let tls_recording = start_imapscope(tls_responder.addr, Some(&tls_rec), &tls_args);
    let other = other_build()
        .map(|bin| start_imapscope_from(Path::new(&bin), tls_responder.addr, None, &tls_args));
    // Every connection makes a full handshake: the paths share the name `localhost`, and a
    // ticket one relay issued must not be offered to the next.
    let fresh = |config: Arc<rustls::ClientConfig>| {
        let mut config = (*config).clone();
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    };
    let client_tls = fresh(
        imapscope::tls::UpstreamTrust::ca(&certs.join("ca.pem"))
            .and_then(|t| t.config())
            .unwrap(),
    );
    // The same client straight to the TLS responder: the TLS rows' yardstick.
    let direct_tls = fresh(
        imapscope::tls::UpstreamTrust::ca(&ca)
            .and_then(|t| t.config())
            .unwrap(),
    );
    // Per path: name, imapscope (none: direct), responder, client TLS.
    type TlsPath<'a> = (
        &'a str,
        Option<&'a Proc>,
        &'a Proc,
        Option<&'a Arc<rustls::ClientConfig>>,
    );
    let mut paths: Vec<TlsPath<'_>> = vec![
        ("direct TLS", None, &tls_responder, Some(&direct_tls)),
        ("TLS", Some(&tls_scope), &tls_responder, Some(&client_tls)),
        (
            "TLS recording",
            Some(&tls_recording),
            &tls_responder,
            Some(&client_tls),
        ),
        ("plain", Some(plain), plain_responder, None),
    ];
    if let Some(o) = &other {
        paths.push((
            "TLS, other build",
            Some(o),
            &tls_responder,
            Some(&client_tls),
        ));
    }
    // sslsplit and mitmproxy forge with imapscope's CA, which the client trusts already.
    let relays = tls_peer_relays(
        work,
        tls_responder.addr,
        &certs.join("ca.pem"),
        &certs.join("ca-key.pem"),
    );
    for (name, relay) in &relays {
        if let Some(r) = relay {
            paths.push((name, Some(&r.0), &tls_responder, Some(&client_tls)));
        }
    }
    let mut sessions: Vec<_> = paths
        .iter()
        .map(|p| connect(p.1.map_or(p.2.addr, |s| s.addr), p.3))
        .collect();
    let mut buf = vec![0u8; 256 * 1024];
    warm_up(&mut sessions, plan.body, &mut buf);
    // Per path: seconds, then CPU seconds of client (this process), imapscope, responder.
    let mut used = vec![[0.0f64; 4]; paths.len()];
    for i in 0..plan.fetches {
        for k in turn_order(i, paths.len()) {
            let r = &mut sessions[k];
            let scope = paths[k].1.map(|p| p.pid().to_string());
            let responder = paths[k].2.pid().to_string();
            let cpu_scope = || scope.as_deref().map_or(0.0, cpu_of);
            let before = [cpu_of("self"), cpu_scope(), cpu_of(&responder)];
            used[k][0] += fetch_once(r, &format!("f{i}"), plan.body, &mut buf);
            let after = [cpu_of("self"), cpu_scope(), cpu_of(&responder)];
            for j in 0..3 {
                used[k][j + 1] += after[j] - before[j];
            }
        }
    }
    let gb = (plan.fetches * plan.body) as f64 / 1e9;
    let mbps = |k: usize| gb * 1e3 / used[k][0];
    println!();
    println!(
        "TLS both legs, in turns: direct TLS {:.0} MB/s; imapscope --out none {:.0} MB/s = {:.2} of \
         direct TLS; recording {:.0} MB/s = {:.2} of direct TLS (plain imapscope: {:.0} MB/s)",
        mbps(0),
        mbps(1),
        mbps(1) / mbps(0),
        mbps(2),
        mbps(2) / mbps(0),
        mbps(3)
    );
    // Round trips on the TLS paths, in turns, against direct TLS.
    let tls_paths: Vec<usize> = (0..paths.len())
        .filter(|&k| paths[k].0 != "plain")
        .collect();
    let routes: Vec<_> = tls_paths
        .iter()
        .map(|&k| (paths[k].1.map_or(paths[k].2.addr, |s| s.addr), paths[k].3))
        .collect();
    eprintln!("measuring TLS round trips, in turns...");
    let rtts = pings_over(&routes, plan.pings);
    println!(
        "  {:<22} {:>7} {:>14} {:>9} {:>9}",
        "path (both legs TLS)", "MB/s", "of direct TLS", "p50 +us", "p99 +us"
    );
    for (j, &k) in tls_paths.iter().enumerate() {
        println!(
            "  {:<22} {:>7.0} {:>14.2} {:>9.1} {:>9.1}",
            paths[k].0,
            mbps(k),
            mbps(k) / mbps(0),
            pct(&rtts[j], 0.5) - pct(&rtts[0], 0.5),
            pct(&rtts[j], 0.99) - pct(&rtts[0], 0.99)
        );
    }
    for (k, path) in paths.iter().enumerate() {
        if path.0.starts_with("sslsplit") {
            // Its work is done in processes it forks: the CPU of the one started is not it.
            continue;
        }
        let share = |j: usize| used[k][j] / used[k][0];
        println!(
            "  {:<16} CPU s/GB: client {:.2}, imapscope {:.2}, responder {:.2}; cores used: client {:.2}, imapscope {:.2}, responder {:.2}",
            path.0,
            used[k][1] / gb,
            used[k][2] / gb,
            used[k][3] / gb,
            share(1),
            share(2),
            share(3)
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--responder") {
        raise_fd_limit();
        responder_main(&args[i + 1], args.get(i + 2).map(String::as_str));
        return;
    }
    if args.iter().any(|a| a == "--test") {
        return; // `cargo test --benches`: nothing to measure
    }
    let quick = args.iter().any(|a| a == "quick");
    let tls_only = args.iter().any(|a| a == "tls");
    // `rtt` or `fanout`: that measurement alone, in several rounds of turns (for A/B runs).
    let focus = ["rtt", "fanout", "bulk"]
        .into_iter()
        .find(|m| args.iter().any(|a| a == m));
    let plan = if quick {
        Plan {
            body: 10 * MB,
            fetches: 5,
            pings: 500,
            fanout_sessions: 50,
            fanout_secs: 1.0,
            idle_target: 1000,
        }
    } else {
        Plan {
            body: 10 * MB,
            fetches: 20,
            pings: 3000,
            fanout_sessions: 200,
            fanout_secs: 3.0,
            idle_target: 10_000,
        }
    };
    let fd_limit = raise_fd_limit();
    let work = tempfile::tempdir().unwrap();
    let responder = start_responder(None);
    let up = responder.addr;
    println!(
        "imapscope load benchmark: responder is a purpose-built in-process-style server (not Dovecot), imapscope is the release binary"
    );
    println!(
        "bulk: {} x {} MiB FETCH; latency: {} NOOPs; fan-out: {} sessions for {} s",
        plan.fetches,
        plan.body / MB,
        plan.pings,
        plan.fanout_sessions,
        plan.fanout_secs
    );

    if args.iter().any(|a| a == "peers") {
        python_peers(work.path(), &plan);
        return;
    }
    if tls_only {
        let plain = start_imapscope(up, None, &[]);
        tls_row(work.path(), &plain, &responder, &plan);
        return;
    }
    let socat_big = start_socat(up, Some(262_144));
    let socat_default = start_socat(up, None);
    if socat_big.is_none() {
        println!("socat not found: its rows are skipped (apt-get install socat)");
    }
    let plain = start_imapscope(up, None, &[]);
    let rec_dir = work.path().join("rec");
    let recording = start_imapscope(up, Some(&rec_dir), &[]);
    // Another build of imapscope, measured in the same turns: A/B on a noisy machine.
    let other_bin = other_build();
    let other = other_bin
        .as_ref()
        .map(|bin| start_imapscope_from(Path::new(bin), up, None, &[]));
    let other_rec_dir = work.path().join("rec-other");
    let other_recording = other_bin
        .as_ref()
        .map(|bin| start_imapscope_from(Path::new(bin), up, Some(&other_rec_dir), &[]));

    let mut rows: Vec<(String, SocketAddr, Option<&Proc>)> = vec![("direct".into(), up, None)];
    if let Some(s) = &socat_big {
        rows.push(("socat -b 262144".into(), s.addr, None));
    }
    if let Some(s) = &socat_default {
        rows.push(("socat (8 KiB)".into(), s.addr, None));
    }
    rows.push(("imapscope --out none".into(), plain.addr, Some(&plain)));
    rows.push((
        "imapscope recording".into(),
        recording.addr,
        Some(&recording),
    ));
    if let Some(o) = &other {
        rows.push(("other build --out none".into(), o.addr, Some(o)));
    }
    if let Some(o) = &other_recording {
        rows.push(("other build recording".into(), o.addr, Some(o)));
    }
    if let Some(mode) = focus {
        focused(mode, &rows, &plan);
        return;
    }

    eprintln!("measuring bulk throughput, in turns...");
    let bulk_paths: Vec<_> = rows.iter().map(|(_, a, p)| (*a, None, *p)).collect();
    let bulks = bulk_in_turns(&bulk_paths, plan.body, plan.fetches);
    eprintln!("measuring round trips, in turns...");
    let addrs: Vec<SocketAddr> = rows.iter().map(|r| r.1).collect();
    let rtts = pings_in_turns(&addrs, plan.pings);
    let mut results = Vec::new();
    for (k, (name, addr, _)) in rows.iter().enumerate() {
        eprintln!("measuring fan-out through {name}...");
        let rate = fanout(*addr, plan.fanout_sessions, plan.fanout_secs);
        results.push((
            name.clone(),
            bulks[k].0,
            pct(&rtts[k], 0.5),
            pct(&rtts[k], 0.99),
            rate,
            bulks[k].1,
        ));
    }
    let direct = results[0].clone();
    let socat = results.iter().find(|r| r.0 == "socat -b 262144").cloned();
    println!();
    println!(
        "{:<22} {:>9} {:>8} {:>8} {:>11} {:>11} {:>11} {:>12}",
        "path", "MB/s", "of direct", "of socat", "p50 +us", "p99 +us", "cmds/s", "CPU s/GB"
    );
    for r in &results {
        println!(
            "{:<22} {:>9.0} {:>9.2} {:>8} {:>11.1} {:>11.1} {:>11.0} {:>12}",
            r.0,
            r.1,
            r.1 / direct.1,
            socat
                .as_ref()
                .map_or("-".into(), |s| format!("{:.2}", r.1 / s.1)),
            r.2 - direct.2,
            r.3 - direct.3,
            r.4,
            r.5.map_or("-".into(), |c| format!("{c:.2}"))
        );
    }
    drop(socat_big);
    drop(socat_default);

    tls_row(work.path(), &plain, &responder, &plan);
    if !quick {
        python_peers(work.path(), &plan);
    }

    // 100 MB literal recorded: imapscope's peak memory.
    let fresh = start_imapscope(up, Some(&work.path().join("rec100")), &[]);
    let mbps = bulk(fresh.addr, None, 100 * MB, 1);
    println!(
        "100 MB literal relayed and recorded at {mbps:.0} MB/s: imapscope peak RSS {:.1} MB",
        fresh.peak_kib() as f64 / 1024.0
    );
    drop(fresh);

    // Idle sessions: each needs 2 descriptors in imapscope, 1 here and 1 in the responder.
    let n = plan
        .idle_target
        .min((fd_limit.saturating_sub(200) / 2) as usize);
    if n < plan.idle_target {
        println!(
            "idle: the descriptor limit ({fd_limit}) allows {n} sessions, not {}",
            plan.idle_target
        );
    }
    let idle_scope = start_imapscope(up, None, &[]);
    std::thread::sleep(Duration::from_millis(200));
    let before = idle_scope.rss_kib();
    let sessions = idlers(idle_scope.addr, n);
    std::thread::sleep(Duration::from_millis(500));
    let after = idle_scope.rss_kib();
    println!(
        "idle: {} sessions in IDLE: imapscope RSS {:.1} MB -> {:.1} MB = {:.1} KiB per session",
        sessions.len(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / sessions.len() as f64
    );
    drop(sessions);
    let _ = std::fs::remove_dir_all(PathBuf::from(&rec_dir));
}
