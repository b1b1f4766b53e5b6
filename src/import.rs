//! Other tools' logs turned into transcripts, so existing server logs become regression tests.
//!
//! Dovecot's rawlog (`rawlog_dir`, or the `rawlog` binary) writes what an IMAP process read
//! (`.in`) and wrote (`.out`), each line prefixed with `SECONDS.MICROS ` unless timestamps are
//! off. The two files are merged into one stream (by timestamp, or without timestamps by
//! following the exchange: a command, then the server until that command's completion) and fed
//! through the same tracker and writer as a live recording, so redaction applies alike.
//!
//! A rawlog starts after login: there is no greeting and no LOGIN command, only the server's
//! OK to it. The import adds both, marked as synthesized, with the password redacted, so the
//! transcript replays with `--login`.

use std::path::{Path, PathBuf};

use crate::protocol::{SessionTracker, Side};
use crate::transcript::format::{EndRecord, SessionRecord};
use crate::transcript::{FORMAT_VERSION, TranscriptWriter};

pub use crate::transcript::format::SYNTHESIZED;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: not a Dovecot rawlog pair (expected NAME.in and NAME.out)")]
    NotRawlog(String),
}

/// One line of a rawlog, with its time if it had one.
struct Line {
    t_us: Option<u64>,
    bytes: Vec<u8>,
}

/// `PATH` may name the `.in` file, the `.out` file or their common stem.
pub fn rawlog_pair(path: &Path) -> Result<(PathBuf, PathBuf), ImportError> {
    let stem = match path.extension().and_then(|e| e.to_str()) {
        Some("in") | Some("out") => path.with_extension(""),
        _ => path.to_path_buf(),
    };
    let with = |ext: &str| PathBuf::from(format!("{}.{ext}", stem.display()));
    let (input, output) = (with("in"), with("out"));
    if !input.exists() || !output.exists() {
        return Err(ImportError::NotRawlog(path.display().to_string()));
    }
    Ok((input, output))
}

fn read(path: &Path) -> Result<Vec<u8>, ImportError> {
    std::fs::read(path).map_err(|source| ImportError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Splits a rawlog into lines, taking off `SECONDS.MICROS ` prefixes where every line has one.
fn lines(raw: &[u8]) -> Vec<Line> {
    let split: Vec<&[u8]> = raw.split_inclusive(|&b| b == b'\n').collect();
    let stamp = |l: &[u8]| -> Option<(u64, usize)> {
        let space = l.iter().position(|&b| b == b' ')?;
        let (secs, micros) = std::str::from_utf8(&l[..space]).ok()?.split_once('.')?;
        if micros.len() != 6 {
            return None;
        }
        let t = secs.parse::<u64>().ok()? * 1_000_000 + micros.parse::<u64>().ok()?;
        Some((t, space + 1))
    };
    let stamped = !split.is_empty() && split.iter().all(|l| stamp(l).is_some());
    split
        .into_iter()
        .map(|l| match stamp(l).filter(|_| stamped) {
            Some((t, skip)) => Line {
                t_us: Some(t),
                bytes: l[skip..].to_vec(),
            },
            None => Line {
                t_us: None,
                bytes: l.to_vec(),
            },
        })
        .collect()
}

/// Merges the two directions into (side, time, bytes) in the order they happened.
fn merge(input: Vec<Line>, output: Vec<Line>) -> Vec<(Side, Option<u64>, Vec<u8>)> {
    let timed = input.iter().chain(&output).all(|l| l.t_us.is_some());
    if timed {
        let mut all: Vec<(Side, Option<u64>, Vec<u8>)> = input
            .into_iter()
            .map(|l| (Side::Client, l.t_us, l.bytes))
            .chain(output.into_iter().map(|l| (Side::Server, l.t_us, l.bytes)))
            .collect();
        // Stable: lines with the same time keep their file order; at equal times the server's
        // reply cannot precede the client's request, so the client goes first.
        all.sort_by_key(|(side, t, _)| (t.unwrap_or(0), *side == Side::Server));
        return all;
    }
    // No times: a client line, then the server's lines up to the completion of that command.
    follow_exchange(input, output, true)
}

/// Orders lines by the exchange: each client line, then the server's lines up to the
/// completion of that command (or a continuation request). `after_login`: the server's
/// first lines answer a login that happened before the log started.
fn follow_exchange(
    input: Vec<Line>,
    output: Vec<Line>,
    after_login: bool,
) -> Vec<(Side, Option<u64>, Vec<u8>)> {
    // The tags the server completed: a client line whose first word is none of them is data
    // (a literal, a SASL response), not a command to wait for.
    let completed: std::collections::HashSet<Vec<u8>> = output
        .iter()
        .map(|s| s.bytes.split(|&b| b == b' ').next().unwrap_or(b"").to_vec())
        .filter(|t| t != b"*" && t != b"+")
        .collect();
    let mut out = Vec::new();
    let mut server = output.into_iter().peekable();
    if after_login {
        while let Some(l) = server.next_if(|l| !l.bytes.starts_with(b"* ") || out.is_empty()) {
            let done = !l.bytes.starts_with(b"* ");
            out.push((Side::Server, l.t_us, l.bytes));
            if done {
                break;
            }
        }
    }
    let mut last_command: Vec<u8> = Vec::new();
    for l in input {
        let first = l.bytes.split(|&b| b == b' ').next().unwrap_or(b"").to_vec();
        // DONE ends IDLE: what follows it is the IDLE's completion.
        let tag = if l.bytes.trim_ascii().eq_ignore_ascii_case(b"DONE") {
            last_command.clone()
        } else if completed.contains(&first) {
            last_command = first.clone();
            first
        } else {
            out.push((Side::Client, l.t_us, l.bytes));
            continue;
        };
        out.push((Side::Client, l.t_us, l.bytes));
        for s in server.by_ref() {
            let done = (!tag.is_empty()
                && s.bytes.starts_with(&tag)
                && s.bytes.get(tag.len()) == Some(&b' '))
                || s.bytes.starts_with(b"+");
            out.push((Side::Server, s.t_us, s.bytes));
            if done {
                break;
            }
        }
    }
    out.extend(server.map(|s| (Side::Server, s.t_us, s.bytes)));
    out
}

/// Where COMPRESS took effect: the index of the client's `TAG COMPRESS DEFLATE` line and of
/// the server's `TAG OK` to it.
fn compress_boundary(input: &[Line], output: &[Line]) -> Option<(usize, usize)> {
    let ci = input.iter().position(|l| {
        let upper = l.bytes.to_ascii_uppercase();
        memchr::memmem::find(&upper, b" COMPRESS DEFLATE").is_some()
    })?;
    let tag = input[ci].bytes.split(|&b| b == b' ').next()?.to_vec();
    let mut ok = tag.clone();
    ok.extend_from_slice(b" OK");
    let co = output.iter().position(|l| l.bytes.starts_with(&ok))?;
    Some((ci, co))
}

/// The lines of a compressed part of a rawlog, inflated. Each line carries the stamp of the
/// logged piece its first byte came out of (the pieces are cut at `\n` bytes of the
/// compressed stream, so their stamps say little more).
fn inflated_lines(pieces: &[Line]) -> Result<Vec<Line>, String> {
    let mut inflater = crate::protocol::compress::Inflater::new();
    let mut plain: Vec<u8> = Vec::new();
    // (offset in `plain` where a piece's output starts, its stamp)
    let mut stamps: Vec<(usize, Option<u64>)> = Vec::new();
    for piece in pieces {
        stamps.push((plain.len(), piece.t_us));
        inflater.inflate(&piece.bytes, &mut plain)?;
    }
    let mut lines = Vec::new();
    let mut at = 0;
    for line in plain.split_inclusive(|&b| b == b'\n') {
        let stamp = stamps
            .iter()
            .rev()
            .find(|(offset, _)| *offset <= at)
            .and_then(|(_, t)| *t);
        lines.push(Line {
            t_us: stamp,
            bytes: line.to_vec(),
        });
        at += line.len();
    }
    Ok(lines)
}

/// Puts server data back after the command it answers, where a compressed rawlog's time
/// stamps put it before.
///
/// After COMPRESS, Dovecot logs the *compressed* stream, split wherever a `\n` byte happens
/// to fall in it, and stamps each such piece when its first byte was written. One piece can
/// hold the answer to one command and the untagged data of the next, written milliseconds
/// later, after that next command arrived: merged by stamps, the untagged data lands before
/// the command, with nothing in flight. Dovecot sends untagged data only while a command runs
/// (or IDLE, which is in flight too), so in the compressed part untagged data with nothing in
/// flight is held until the next command, and belongs to it.
#[derive(Default)]
struct CausalOrder {
    compressed: bool,
    held: Vec<crate::protocol::Event>,
}

impl CausalOrder {
    fn push(&mut self, event: crate::protocol::Event, out: &mut Vec<crate::protocol::Event>) {
        use crate::protocol::{Event, Kind};
        match &event {
            Event::Compress { .. } => {
                self.flush(out);
                self.compressed = true;
                out.push(event);
            }
            Event::Message(m)
                if self.compressed
                    && m.from == Side::Server
                    && m.kind == Kind::Untagged
                    && m.in_flight.is_empty() =>
            {
                self.held.push(event)
            }
            Event::Part {
                from: Side::Server, ..
            } if !self.held.is_empty() => self.held.push(event),
            Event::Message(m)
                if m.from == Side::Client && m.kind == Kind::Command && !self.held.is_empty() =>
            {
                let seq = m.seq;
                out.push(event);
                for mut held in self.held.drain(..) {
                    if let Event::Message(h) = &mut held {
                        h.in_flight = std::sync::Arc::from([seq]);
                    }
                    out.push(held);
                }
            }
            _ => {
                self.flush(out);
                out.push(event);
            }
        }
    }

    fn flush(&mut self, out: &mut Vec<crate::protocol::Event>) {
        out.append(&mut self.held);
    }
}

/// Imports the rawlog at `path` into a transcript written to `dest`. `user` names the user
/// for the synthesized LOGIN (default: the rawlog's directory name, as `rawlog_dir=.../%u`).
pub async fn import_rawlog(
    path: &Path,
    dest: &Path,
    user: Option<&str>,
) -> Result<u64, ImportError> {
    let (input_path, output_path) = rawlog_pair(path)?;
    let input = lines(&read(&input_path)?);
    let output = lines(&read(&output_path)?);
    let user = user
        .map(String::from)
        .or_else(|| {
            input_path
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "user".into());
    let first_t = input.iter().chain(&output).filter_map(|l| l.t_us).min();
    // After COMPRESS the rawlog holds compressed pieces whose stamps cannot order the two
    // directions: that part is inflated and ordered by the exchange, and deflated again for
    // the tracker below, which inflates it as it would on the wire.
    let mut recompress_from = usize::MAX;
    let chunks = match compress_boundary(&input, &output) {
        Some((ci, co)) => {
            let (mut input, mut output) = (input, output);
            let (rest_in, rest_out) = (input.split_off(ci + 1), output.split_off(co + 1));
            match (inflated_lines(&rest_in), inflated_lines(&rest_out)) {
                (Ok(plain_in), Ok(plain_out)) => {
                    let mut chunks = merge(input, output);
                    recompress_from = chunks.len();
                    chunks.extend(follow_exchange(plain_in, plain_out, false));
                    chunks
                }
                // Not a DEFLATE stream after all: as logged.
                _ => {
                    input.extend(rest_in);
                    output.extend(rest_out);
                    merge(input, output)
                }
            }
        }
        None => merge(input, output),
    };
    let mut deflaters = [
        crate::protocol::compress::Deflater::new(),
        crate::protocol::compress::Deflater::new(),
    ];

    let mut writer = TranscriptWriter::in_memory(true);
    let start = first_t
        .map(|t| std::time::UNIX_EPOCH + std::time::Duration::from_micros(t))
        .unwrap_or_else(std::time::SystemTime::now);
    writer.session(SessionRecord {
        version: FORMAT_VERSION,
        imapscope: env!("CARGO_PKG_VERSION").into(),
        id: 0,
        client: format!("rawlog {}", input_path.display()),
        listen: "-".into(),
        upstream: format!("rawlog {}", output_path.display()),
        start: humantime::format_rfc3339_micros(start).to_string(),
        redaction: true,
    });
    let mut tracker = SessionTracker::new();
    let mut events = Vec::new();
    // The greeting and LOGIN that happened before the log started.
    tracker.on_bytes(
        Side::Server,
        0,
        b"* OK [CAPABILITY IMAP4rev1] imapscope import: the greeting is not in the rawlog\r\n",
        &mut events,
    );
    let login_tag = chunks
        .iter()
        .find(|(side, _, _)| *side == Side::Server)
        .map(|(_, _, b)| b.split(|&c| c == b' ').next().unwrap_or(b"").to_vec())
        .filter(|t| t != b"*" && t != b"+" && !t.is_empty());
    if let Some(tag) = &login_tag {
        let mut line = tag.clone();
        line.extend_from_slice(
            format!(
                " LOGIN {} <redacted>\r\n",
                crate::protocol::token::quote(&user)
            )
            .as_bytes(),
        );
        tracker.on_bytes(Side::Client, 0, &line, &mut events);
    }
    for e in events.iter_mut() {
        if let crate::protocol::Event::Message(m) = e {
            let from = m.from;
            let detail = m.detail_mut();
            detail.notes.push(SYNTHESIZED.into());
            if from == Side::Client {
                detail.user = Some(user.clone());
            }
        }
    }
    for e in events.drain(..) {
        writer.event(e);
    }
    let mut bytes = [0u64; 2];
    let mut messages = 2;
    let mut last_t = 0;
    let mut causal = CausalOrder::default();
    let mut ordered = Vec::new();
    for (index, (side, t, data)) in chunks.iter().enumerate() {
        // Never backwards: ordered by the exchange, stamps may not follow.
        let t_us = t.zip(first_t).map_or(last_t, |(t, f)| t - f).max(last_t);
        last_t = t_us;
        let deflated;
        let data = if index >= recompress_from {
            deflated = deflaters[*side as usize].deflate(data);
            &deflated
        } else {
            data
        };
        bytes[*side as usize] += data.len() as u64;
        tracker.on_bytes(*side, t_us, data, &mut events);
        for e in events.drain(..) {
            if matches!(e, crate::protocol::Event::Message(_)) {
                messages += 1;
            }
            causal.push(e, &mut ordered);
        }
        for e in ordered.drain(..) {
            writer.event(e);
        }
    }
    tracker.finish(last_t, &mut events);
    for e in events.drain(..) {
        causal.push(e, &mut ordered);
    }
    causal.flush(&mut ordered);
    for e in ordered.drain(..) {
        writer.event(e);
    }
    writer.end(EndRecord {
        t_us: last_t,
        reason: "rawlog ended".into(),
        bytes_from_client: bytes[0],
        bytes_from_server: bytes[1],
        messages,
        unanswered: tracker.unanswered().into_iter().map(|(s, ..)| s).collect(),
        user: Some(user),
        compressed: None,
        lost_bytes: 0,
        counts: None,
    });
    let _ = writer.flush().await;
    let data = writer.take_memory();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write;
    options
        .open(dest)
        .and_then(|mut f| f.write_all(&data))
        .map_err(|source| ImportError::Io {
            path: dest.display().to_string(),
            source,
        })?;
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_taken_off_and_merge_orders_by_time() {
        let input = lines(b"1795654744.193327 a2 SELECT INBOX\r\n1795654744.195643 a3 NOOP\r\n");
        let output = lines(
            b"1795654744.192083 a1 OK Logged in\r\n1795654744.194781 * 1 EXISTS\r\n1795654744.194781 a2 OK done\r\n1795654744.196000 a3 OK\r\n",
        );
        let merged = merge(input, output);
        let order: Vec<String> = merged
            .iter()
            .map(|(s, _, b)| format!("{}:{}", s.as_str(), String::from_utf8_lossy(b).trim_end()))
            .collect();
        assert_eq!(
            order,
            vec![
                "server:a1 OK Logged in",
                "client:a2 SELECT INBOX",
                "server:* 1 EXISTS",
                "server:a2 OK done",
                "client:a3 NOOP",
                "server:a3 OK"
            ]
        );
    }

    #[test]
    fn without_timestamps_the_exchange_decides_the_order() {
        let input = lines(b"a2 SELECT INBOX\r\na3 NOOP\r\n");
        let output = lines(b"a1 OK Logged in\r\n* 1 EXISTS\r\na2 OK done\r\na3 OK\r\n");
        let merged = merge(input, output);
        let sides: Vec<Side> = merged.iter().map(|(s, _, _)| *s).collect();
        assert_eq!(
            sides,
            vec![
                Side::Server,
                Side::Client,
                Side::Server,
                Side::Server,
                Side::Client,
                Side::Server
            ]
        );
    }

    #[test]
    fn compressed_untagged_data_follows_the_command_it_answers() {
        use crate::protocol::{Event, Kind};
        let mut tracker = SessionTracker::new();
        let mut events = Vec::new();
        tracker.on_bytes(Side::Server, 1, b"* OK ready\r\n", &mut events);
        tracker.on_bytes(Side::Server, 2, b"* 3 EXISTS\r\n", &mut events);
        tracker.on_bytes(Side::Client, 3, b"a1 SELECT INBOX\r\n", &mut events);
        let [greeting, exists, select] = <[Event; 3]>::try_from(events).unwrap();
        let mut causal = CausalOrder::default();
        let mut out = Vec::new();
        causal.push(greeting, &mut out);
        causal.push(Event::Compress { t_us: 1 }, &mut out);
        causal.push(exists, &mut out);
        assert_eq!(out.len(), 2, "the untagged data is held");
        causal.push(select, &mut out);
        let order: Vec<(Kind, Vec<u64>)> = out
            .iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some((m.kind, m.in_flight.to_vec())),
                _ => None,
            })
            .collect();
        let select_seq = match &out[2] {
            Event::Message(m) => m.seq,
            _ => panic!("the command comes first"),
        };
        assert_eq!(
            order,
            [
                (Kind::Greeting, vec![]),
                (Kind::Command, vec![]),
                (Kind::Untagged, vec![select_seq])
            ]
        );
    }

    /// A rawlog as Dovecot writes it: each piece stamped, and a stamp after every `\n` byte in
    /// it, compressed or not.
    fn rawlog(pieces: &[(u64, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (t, bytes) in pieces {
            for segment in bytes.split_inclusive(|&b| b == b'\n') {
                out.extend_from_slice(
                    format!("{}.{:06} ", t / 1_000_000, t % 1_000_000).as_bytes(),
                );
                out.extend_from_slice(segment);
            }
            if !bytes.ends_with(b"\n") {
                out.push(b'\n');
            }
        }
        out
    }

    #[test]
    fn a_compressed_rawlog_is_ordered_by_the_exchange_not_by_its_stamps() {
        use crate::protocol::compress::Deflater;
        let (mut client, mut server) = (Deflater::new(), Deflater::new());
        let t0 = 1_795_654_744_000_000u64;
        // The server's piece is stamped before the client's SELECT, as a piece cut at a `\n`
        // of the compressed stream can be; its bytes answer the SELECT.
        let select = client.deflate(b"a2 SELECT INBOX\r\na3 NOOP\r\n");
        let answer = server.deflate(b"* 3 EXISTS\r\na2 OK done\r\na3 OK noop\r\n");
        let input = rawlog(&[(t0 + 100, b"a1 COMPRESS DEFLATE\r\n"), (t0 + 500, &select)]);
        let output = rawlog(&[
            (t0 + 50, b"a0 OK Logged in\r\n"),
            (t0 + 200, b"a1 OK Begin compression\r\n"),
            (t0 + 300, &answer),
        ]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("nell")).unwrap();
        let stem = dir.path().join("nell/20261127-100000.1.1");
        std::fs::write(stem.with_extension("1.in"), input).unwrap();
        std::fs::write(stem.with_extension("1.out"), output).unwrap();
        let dest = dir.path().join("t.jsonl");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(import_rawlog(&stem.with_extension("1.in"), &dest, None))
            .unwrap();
        let t = crate::transcript::read_transcript(&dest).unwrap();
        let shown: Vec<String> = t
            .records
            .iter()
            .filter_map(|r| match r {
                crate::transcript::format::Record::Message(m) => Some(format!(
                    "{}:{}",
                    m.from.as_str(),
                    m.payload.text.clone().unwrap_or_default().trim_end()
                )),
                _ => None,
            })
            .collect();
        assert_eq!(
            &shown[3..],
            [
                "client:a1 COMPRESS DEFLATE",
                "server:a1 OK Begin compression",
                "client:a2 SELECT INBOX",
                "server:* 3 EXISTS",
                "server:a2 OK done",
                "client:a3 NOOP",
                "server:a3 OK noop",
            ],
            "{shown:?}"
        );
    }
}
