//! How fast the web view answers with real amounts: 2,000 sessions in 500 MB of transcripts,
//! and one session holding a 100 MB literal.
//!
//! `cargo bench --bench web` builds the data in a temporary directory (about 600 MB; a few
//! seconds to write), then times, through the library the server uses:
//! - listing every session cold (nothing cached: what the first page load costs), and again
//!   warm (what each live refresh costs);
//! - the same for transcripts written before the end line carried its counts (read through);
//! - opening the 100 MB-literal session, and fetching a 64 KiB piece from its end;
//! - one `GET /api/sessions` over HTTP from the running server.
//!
//! Timings are wall-clock on a shared VM: compare them with the targets (list < 1 s, a session
//! "at once"), not to the microsecond.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use imapscope::protocol::{Event, SessionTracker, Side};
use imapscope::transcript::TranscriptWriter;
use imapscope::transcript::format::SessionRecord;
use imapscope::web::index::Index;
use imapscope::web::{WebOptions, WebServer, session};

const SESSIONS: usize = 2000;
const LITERAL: usize = 100 << 20;

/// A recorded session of `fetches` FETCHes of a `size`-byte message, written by the real
/// tracker and transcript writer.
fn transcript(fetches: usize, size: usize) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut tracker = SessionTracker::new();
    let mut writer = TranscriptWriter::in_memory(true);
    writer.session(SessionRecord {
        version: imapscope::transcript::FORMAT_VERSION,
        imapscope: "bench".into(),
        id: 1,
        client: "127.0.0.1:50000".into(),
        listen: "127.0.0.1:1143".into(),
        upstream: "127.0.0.1:143".into(),
        start: "2026-11-27T10:00:00.000000Z".into(),
        redaction: true,
    });
    let mut events: Vec<Event> = Vec::new();
    let mut t = 0u64;
    let mut feed = |side: Side, bytes: &[u8], events: &mut Vec<Event>| {
        t += 100;
        tracker.on_bytes(side, t, bytes, events);
    };
    feed(Side::Server, b"* OK ready\r\n", &mut events);
    feed(Side::Client, b"a1 LOGIN nell secret\r\n", &mut events);
    feed(Side::Server, b"a1 OK logged in\r\n", &mut events);
    feed(Side::Client, b"a2 SELECT INBOX\r\n", &mut events);
    feed(
        Side::Server,
        b"* 3 EXISTS\r\na2 OK [READ-WRITE] done\r\n",
        &mut events,
    );
    let body: Vec<u8> = (0..size).map(|i| b"abcdefghij\r\n"[i % 12]).collect();
    for i in 0..fetches {
        feed(
            Side::Client,
            format!("f{i} FETCH 1 BODY[]\r\n").as_bytes(),
            &mut events,
        );
        let mut response = format!("* 1 FETCH (BODY[] {{{size}}}\r\n").into_bytes();
        response.extend_from_slice(&body);
        response.extend_from_slice(format!(")\r\nf{i} OK done\r\n").as_bytes());
        for chunk in response.chunks(64 * 1024) {
            feed(Side::Server, chunk, &mut events);
        }
        for e in events.drain(..) {
            writer.event(e);
        }
    }
    feed(Side::Client, b"z LOGOUT\r\n", &mut events);
    feed(Side::Server, b"* BYE\r\nz OK bye\r\n", &mut events);
    for e in events.drain(..) {
        writer.event(e);
    }
    writer.end(imapscope::transcript::format::EndRecord {
        t_us: t,
        reason: "server closed".into(),
        bytes_from_client: 0,
        bytes_from_server: 0,
        messages: 0,
        unanswered: Vec::new(),
        user: Some("nell".into()),
        compressed: None,
        lost_bytes: 0,
        counts: None,
    });
    rt.block_on(writer.flush()).unwrap();
    writer.take_memory()
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Drops the page cache's copy of nothing: a cold list here is cold for imapscope's own cache
/// (a fresh process), not for the kernel's, which a user reopening the view also has.
fn list(dir: &Path) -> (usize, Duration, Duration) {
    let index = Index::new(dir);
    let (rows, cold) = timed(|| index.sessions());
    let (_, warm) = timed(|| index.sessions());
    (rows.len(), cold, warm)
}

fn main() {
    let tmp = std::env::temp_dir().join(format!("imapscope-web-bench-{}", std::process::id()));
    let with_counts = tmp.join("counts");
    let without = tmp.join("old");
    std::fs::create_dir_all(&with_counts).unwrap();
    std::fs::create_dir_all(&without).unwrap();

    // 2,000 sessions of 250 KB: 500 MB.
    let (one, made) = timed(|| transcript(2, 120 * 1024));
    let old: Vec<u8> = {
        // The same transcript as an older imapscope wrote it: an end line without counts.
        let text = String::from_utf8_lossy(&one).into_owned();
        let mut lines: Vec<&str> = text.lines().collect();
        let end = lines.pop().unwrap_or_default().to_string();
        let mut v: serde_json::Value = serde_json::from_str(&end).unwrap();
        v.as_object_mut().unwrap().remove("counts");
        let mut out = lines.join("\n");
        out.push('\n');
        out.push_str(&v.to_string());
        out.push('\n');
        out.into_bytes()
    };
    let (_, wrote) = timed(|| {
        for i in 0..SESSIONS {
            let name = format!("20261127T100000.{i:06}Z-{i:06}.jsonl");
            std::fs::write(with_counts.join(&name), &one).unwrap();
            std::fs::write(without.join(&name), &old).unwrap();
        }
    });
    let total = (one.len() * SESSIONS) as f64 / 1e6;
    println!(
        "data: {SESSIONS} sessions of {} KB = {total:.0} MB per directory (made in {}, written in {})",
        one.len() / 1000,
        ms(made),
        ms(wrote)
    );

    let (n, cold, warm) = list(&with_counts);
    assert_eq!(n, SESSIONS);
    println!(
        "list, end lines with counts:    cold {:>10}   warm {:>10}",
        ms(cold),
        ms(warm)
    );
    let (n, cold, warm) = list(&without);
    assert_eq!(n, SESSIONS);
    println!(
        "list, older transcripts (read): cold {:>10}   warm {:>10}",
        ms(cold),
        ms(warm)
    );

    // One session with a 100 MB literal.
    let big_dir = tmp.join("big");
    std::fs::create_dir_all(&big_dir).unwrap();
    let big = big_dir.join("big.jsonl");
    let (bytes, made) = timed(|| transcript(1, LITERAL));
    std::fs::write(&big, &bytes).unwrap();
    println!(
        "a session with a 100 MB literal: {:.0} MB on disk (made in {})",
        bytes.len() as f64 / 1e6,
        ms(made)
    );
    drop(bytes);
    let (view, opened) =
        timed(|| serde_json::to_value(session::session(&big, "big.jsonl").unwrap()).unwrap());
    let items = view["items"].as_array().map_or(0, |a| a.len());
    let json_len = view.to_string().len();
    println!(
        "open it: {:>10} ({items} items, {} KB of JSON to the page)",
        ms(opened),
        json_len / 1000
    );
    let seq = view["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["bytes"].as_u64().unwrap_or(0) > LITERAL as u64)
        .and_then(|i| i["seq"].as_u64())
        .expect("the FETCH with the literal");
    let (piece, fetched) =
        timed(|| session::message_piece(&big, seq, LITERAL as u64 - 65536, 65536).unwrap());
    assert_eq!(piece["len"], 65536);
    println!("its last 64 KiB: {:>10}", ms(fetched));

    // Over HTTP, from the server itself (a fresh one: its cache is cold).
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let stop = tokio_util::sync::CancellationToken::new();
        let server = WebServer::start(
            WebOptions {
                dir: with_counts.clone(),
                listen: ([127, 0, 0, 1], 0).into(),
                token: "bench".into(),
            },
            stop.clone(),
        )
        .await
        .unwrap();
        let addr = server.addr;
        let get = move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            write!(
                s,
                "GET /api/sessions?token=bench HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut body = Vec::new();
            s.read_to_end(&mut body).unwrap();
            body.len()
        };
        let (len, cold) = tokio::task::spawn_blocking(move || timed(get))
            .await
            .unwrap();
        let (_, warm) = tokio::task::spawn_blocking(move || timed(get))
            .await
            .unwrap();
        println!(
            "GET /api/sessions: cold {:>10}   warm {:>10}   ({} KB)",
            ms(cold),
            ms(warm),
            len / 1000
        );
        stop.cancel();
        server.wait().await;
    });
    let _ = std::fs::remove_dir_all(&tmp);
}
