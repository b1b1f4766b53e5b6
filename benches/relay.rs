//! Relay throughput and added latency: direct vs through imapscope (recording off and on),
//! measured in one run so the ratios hold on a noisy shared machine.
//!
//! The server is a purpose-built in-process responder (not Dovecot) so that it is not the
//! bottleneck: it answers `FETCH` with one large literal and `NOOP` with `OK`.
//! Run with `cargo bench --bench relay`.

use std::net::SocketAddr;
use std::time::Instant;

use imapscope::relay::{RelayConfig, RelayServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const BODY: usize = 10 << 20;
const FETCHES: usize = 30;
const PINGS: usize = 3000;

async fn responder() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = vec![b'x'; BODY];
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let _ = socket.set_nodelay(true);
                let (r, mut w) = socket.into_split();
                let mut r = BufReader::new(r);
                w.write_all(b"* OK bench responder ready\r\n").await.ok();
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let tag = line.split(' ').next().unwrap_or("*").to_string();
                    if line.contains("FETCH") {
                        let head = format!("* 1 FETCH (BODY[] {{{}}}\r\n", body.len());
                        w.write_all(head.as_bytes()).await.ok();
                        w.write_all(&body).await.ok();
                        w.write_all(format!(")\r\n{tag} OK done\r\n").as_bytes())
                            .await
                            .ok();
                    } else {
                        w.write_all(format!("{tag} OK done\r\n").as_bytes())
                            .await
                            .ok();
                    }
                }
            });
        }
    });
    addr
}

async fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut s = BufReader::with_capacity(256 * 1024, s);
    let mut greeting = String::new();
    s.read_line(&mut greeting).await.unwrap();
    s
}

/// MB/s of FETCHing large literals.
async fn bulk(addr: SocketAddr) -> f64 {
    let mut s = connect(addr).await;
    let expect = format!("* 1 FETCH (BODY[] {{{BODY}}}\r\n").len() + BODY + ")\r\n".len();
    let mut buf = vec![0u8; 256 * 1024];
    let start = Instant::now();
    for i in 0..FETCHES {
        s.get_mut()
            .write_all(format!("f{i} FETCH 1 BODY[]\r\n").as_bytes())
            .await
            .unwrap();
        let mut left = expect;
        while left > 0 {
            let n = s.read(&mut buf[..left.min(256 * 1024)]).await.unwrap();
            assert!(n > 0, "closed");
            left -= n;
        }
        let mut done = String::new();
        s.read_line(&mut done).await.unwrap();
    }
    (FETCHES * expect) as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// Round-trip times of NOOP, in microseconds, sorted.
async fn pings(addr: SocketAddr) -> Vec<f64> {
    let mut s = connect(addr).await;
    let mut times = Vec::with_capacity(PINGS);
    let mut line = String::new();
    for i in 0..PINGS {
        let t = Instant::now();
        s.get_mut()
            .write_all(format!("n{i} NOOP\r\n").as_bytes())
            .await
            .unwrap();
        line.clear();
        s.read_line(&mut line).await.unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    times
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

async fn relay(
    upstream: SocketAddr,
    out: Option<std::path::PathBuf>,
) -> (SocketAddr, CancellationToken) {
    let config = RelayConfig::plain("127.0.0.1:0".parse().unwrap(), &upstream.to_string(), out);
    let server = RelayServer::bind(config).await.unwrap();
    let addr = server.local_addr();
    let stop = CancellationToken::new();
    tokio::spawn(server.run(stop.clone()));
    (addr, stop)
}

fn main() {
    // `cargo test --benches` runs bench targets with `--test`: nothing to measure then.
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let upstream = responder().await;
        let dir = tempfile::tempdir().unwrap();
        let (plain, stop_plain) = relay(upstream, None).await;
        let (recording, stop_rec) = relay(upstream, Some(dir.path().to_path_buf())).await;
        let paths = [
            ("direct", upstream),
            ("imapscope --out none", plain),
            ("imapscope recording", recording),
        ];
        println!("relay benchmark: in-process responder, {FETCHES} x {} MiB FETCH, {PINGS} NOOPs", BODY >> 20);
        let mut direct = (0.0, 0.0);
        for (name, addr) in paths {
            let mbps = bulk(addr).await;
            let rtt = pings(addr).await;
            let (p50, p99) = (pct(&rtt, 0.5), pct(&rtt, 0.99));
            if name == "direct" {
                direct = (mbps, p50);
            }
            println!(
                "{name:<22} {mbps:>8.0} MB/s ({:.2} of direct)   NOOP p50 {p50:>6.1} us (+{:.1})  p99 {p99:>6.1} us",
                mbps / direct.0,
                p50 - direct.1
            );
        }
        stop_plain.cancel();
        stop_rec.cancel();
    });
}
