//! Throughput of the protocol core (framer + tokenizer + tracker) on two kinds of stream:
//! literal-heavy (large FETCH BODY[] responses) and many small messages (a FETCH FLAGS
//! response for 100,000 messages). Run with `cargo bench --bench core`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use imapscope::protocol::framer::{Fragment, Framer};
use imapscope::protocol::message::parse_response_head;
use imapscope::protocol::{Event, SessionTracker, Side};
use imapscope::transcript::TranscriptWriter;

fn literal_heavy() -> Vec<u8> {
    let mut s = Vec::new();
    let body = vec![b'x'; 1 << 20];
    for i in 1..=16 {
        s.extend_from_slice(
            format!("* {i} FETCH (UID {i} BODY[] {{{}}}\r\n", body.len()).as_bytes(),
        );
        s.extend_from_slice(&body);
        s.extend_from_slice(b")\r\n");
    }
    s.extend_from_slice(b"a1 OK Fetch completed.\r\n");
    s
}

fn many_small() -> Vec<u8> {
    let mut s = Vec::new();
    for i in 1..=100_000 {
        s.extend_from_slice(format!("* {i} FETCH (FLAGS (\\Seen \\Answered))\r\n").as_bytes());
    }
    s.extend_from_slice(b"a1 OK Fetch completed.\r\n");
    s
}

fn run(stream: &[u8]) -> usize {
    let mut tracker = SessionTracker::new();
    let mut events = Vec::new();
    tracker.on_bytes(Side::Server, 0, b"* OK ready\r\n", &mut events);
    tracker.on_bytes(Side::Client, 1, b"a1 FETCH 1:* (FLAGS)\r\n", &mut events);
    let mut n = 0;
    // As the relay feeds it: 64 KiB reads.
    for chunk in stream.chunks(64 * 1024) {
        tracker.on_bytes(Side::Server, 2, chunk, &mut events);
        n += events.len();
        events.clear();
    }
    n
}

fn core(c: &mut Criterion) {
    let mut group = c.benchmark_group("protocol core");
    group.sample_size(20);
    let big = literal_heavy();
    group.throughput(Throughput::Bytes(big.len() as u64));
    group.bench_function("literal-heavy FETCH BODY[] (16 x 1 MiB)", |b| {
        b.iter(|| run(&big))
    });
    let small = many_small();
    group.throughput(Throughput::Bytes(small.len() as u64));
    group.bench_function("FETCH FLAGS for 100,000 messages", |b| {
        b.iter(|| run(&small))
    });
    // Where the small-message time goes: framing alone, then framing + response heads.
    group.bench_function("framer only, 100,000 FETCH FLAGS", |b| {
        b.iter(|| {
            let mut framer = Framer::new(Side::Server);
            let mut n = 0usize;
            for chunk in small.chunks(64 * 1024) {
                let mut input = chunk;
                while let Some(f) = framer.next(&mut input) {
                    n += matches!(f, Fragment::Line { end: Some(_), .. }) as usize;
                }
            }
            n
        })
    });
    group.bench_function("response heads only, 100,000 FETCH FLAGS", |b| {
        b.iter(|| {
            small
                .split_inclusive(|&b| b == b'\n')
                .map(|line| parse_response_head(line).tokens.len())
                .sum::<usize>()
        })
    });
    group.finish();
}

/// The transcript writer's share of recording: encoding literal data as JSON records.
fn writer(c: &mut Criterion) {
    let mut group = c.benchmark_group("transcript writer");
    group.sample_size(20);
    // Mail-like text: 76-character lines, so CRLF escapes come often.
    let line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod te\r\n";
    let text: Vec<u8> = line.iter().copied().cycle().take(256 * 1024).collect();
    let parts = 64;
    group.throughput(Throughput::Bytes((parts * text.len()) as u64));
    group.bench_function("literal parts of mail text (64 x 256 KiB)", |b| {
        b.iter(|| {
            let mut writer = TranscriptWriter::in_memory(true);
            for _ in 0..parts {
                writer.event(Event::Part {
                    seq: 1,
                    from: Side::Server,
                    t_us: 1,
                    bytes: text.clone(),
                    last: false,
                });
            }
            writer.pending_len()
        })
    });
    group.finish();
}

criterion_group!(benches, core, writer);
criterion_main!(benches);
