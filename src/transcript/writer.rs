//! The one writer of transcripts. Every record on its way to disk passes through
//! [`TranscriptWriter`], which applies redaction; there is no other path, so a secret cannot
//! leak through a forgotten call site.
//!
//! Records are encoded into a buffer and written out by [`TranscriptWriter::flush_now`], which
//! the relay's transcript thread calls after each batch of records (or [`TranscriptWriter::flush`]
//! on the blocking pool, from async code), so a `kill -9` loses at most what was not yet
//! flushed, and a torn write can only damage the last line. A write that fails (a full disk) is
//! counted and logged; the session goes on, and when writing works again a `note` record says
//! where the gap is.

use std::io;
use std::path::{Path, PathBuf};

use std::io::Write;

use super::format::{
    CompressRecord, Counts, DroppedRecord, EndRecord, ErrorRecord, MessageRecord, NoteRecord,
    OpaqueRecord, PartRecord, Payload, Record, SessionRecord, TlsRecord,
};
use crate::protocol::message::parse_command;
use crate::protocol::{Event, Kind, Side, Status, redact};

/// Where encoded records go.
enum Output {
    /// Written on the blocking pool or the caller's thread, one write per batch; `None` only
    /// while a write is out.
    File(Option<std::fs::File>),
    /// For tests and for callers that keep the transcript themselves.
    Memory(Vec<u8>),
    /// `--out none`: nothing is kept.
    Discard,
}

/// Encodes records, hides secrets, writes them out. See the module documentation.
pub struct TranscriptWriter {
    output: Output,
    path: Option<PathBuf>,
    redact: bool,
    /// Encoded records not yet written.
    pending: Vec<u8>,
    /// Messages handed out in parts whose later parts must be hidden.
    secret_seqs: Vec<u64>,
    /// Bytes lost to failed writes since the last successful one, and in all.
    lost_since_ok: u64,
    lost_total: u64,
    write_error: Option<String>,
    /// Reused by the payload escaper.
    escape_scratch: Vec<u8>,
    /// What the end line says the transcript holds.
    counts: Counts,
}

impl TranscriptWriter {
    /// Creates `DIR/NAME.jsonl`, readable by its owner only, failing if it exists.
    pub async fn create(dir: &Path, name: &str, redact: bool) -> io::Result<TranscriptWriter> {
        let path = dir.join(format!("{name}.jsonl"));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let opened = path.clone();
        let file = tokio::task::spawn_blocking(move || options.open(opened))
            .await
            .map_err(io::Error::other)??;
        Ok(TranscriptWriter::with_output(
            Output::File(Some(file)),
            Some(path),
            redact,
        ))
    }

    /// A writer that keeps the encoded transcript in memory (see [`Self::take_memory`]).
    pub fn in_memory(redact: bool) -> TranscriptWriter {
        TranscriptWriter::with_output(Output::Memory(Vec::new()), None, redact)
    }

    /// A writer that keeps nothing (`record --out none`).
    pub fn discard() -> TranscriptWriter {
        TranscriptWriter::with_output(Output::Discard, None, true)
    }

    fn with_output(output: Output, path: Option<PathBuf>, redact: bool) -> TranscriptWriter {
        TranscriptWriter {
            output,
            path,
            redact,
            pending: Vec::with_capacity(4096),
            secret_seqs: Vec::new(),
            lost_since_ok: 0,
            lost_total: 0,
            write_error: None,
            escape_scratch: Vec::new(),
            counts: Counts::default(),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// `record --out none`: nothing is kept, so nobody needs whole messages.
    pub fn keeps_nothing(&self) -> bool {
        matches!(self.output, Output::Discard)
    }

    pub fn redacts(&self) -> bool {
        self.redact
    }

    /// Bytes that failed to reach disk so far.
    pub fn lost_bytes(&self) -> u64 {
        self.lost_total
    }

    /// Bytes lost since the last write that worked: while this is not zero, the transcript
    /// has not yet said where its gap is (nor, at the end, written its end line).
    pub fn unnoted_gap(&self) -> u64 {
        self.lost_since_ok
    }

    /// The in-memory transcript (empty for other outputs).
    pub fn take_memory(&mut self) -> Vec<u8> {
        match &mut self.output {
            Output::Memory(v) => std::mem::take(v),
            _ => Vec::new(),
        }
    }

    pub fn session(&mut self, record: SessionRecord) {
        self.push(&Record::Session(record));
    }

    pub fn error(&mut self, t_us: u64, during: &str, message: &str) {
        self.counts.errors += 1;
        self.push(&Record::Error(ErrorRecord {
            t_us,
            during: during.into(),
            message: message.into(),
        }));
    }

    pub fn note(&mut self, t_us: u64, from: Option<Side>, note: &str) {
        self.push(&Record::Note(NoteRecord {
            t_us,
            seq: None,
            from,
            note: note.into(),
        }));
    }

    pub fn tls(&mut self, record: TlsRecord) {
        self.push(&Record::Tls(record));
    }

    /// Records bytes that were not relayed; a client's are redacted line by line like commands
    /// (a LOGIN pipelined after STARTTLS is exactly what an injection would carry).
    pub fn dropped(&mut self, t_us: u64, from: Side, bytes: &[u8], reason: &str) {
        let mut redacted = Vec::new();
        let bytes = if self.redact && from == Side::Client {
            let mut out = Vec::with_capacity(bytes.len());
            let mut hide_rest = false;
            for line in bytes.split_inclusive(|&b| b == b'\n') {
                if hide_rest {
                    continue;
                }
                let head = parse_command(line);
                let complete = line.ends_with(b"\n")
                    && crate::protocol::framer::literal_suffix(line.trim_ascii_end()).is_none();
                let secrets = redact::secrets(Kind::Command, &head, line, complete);
                if secrets.is_empty() {
                    out.extend_from_slice(line);
                    if !complete && line.ends_with(b"\n") {
                        // A literal follows whose role cannot be told here.
                        hide_rest = true;
                        out.extend_from_slice(redact::PLACEHOLDER);
                        redacted.push("literal".to_string());
                    }
                } else {
                    out.extend(redact::apply(line, &secrets));
                    redacted.extend(secrets.iter().map(|s| s.what.to_string()));
                    hide_rest = !complete;
                }
            }
            redacted.dedup();
            out
        } else {
            bytes.to_vec()
        };
        let record = Record::Dropped(DroppedRecord {
            t_us,
            from,
            payload: Payload::default(),
            reason: reason.to_string(),
            redacted,
        });
        self.push_with_payload(&record, &bytes);
    }

    pub fn end(&mut self, mut record: EndRecord) {
        record.lost_bytes = self.lost_total + self.lost_since_ok;
        record.counts = Some(self.counts);
        self.push(&Record::End(record));
    }

    /// Records one event of the tracker, hiding secrets unless told not to.
    pub fn event(&mut self, event: Event) {
        let record = match event {
            Event::Message(mut m) => {
                match (m.kind, m.status) {
                    (Kind::Command, _) => self.counts.commands += 1,
                    (Kind::Completion, Some(Status::No)) => self.counts.no += 1,
                    (Kind::Completion, Some(Status::Bad)) => self.counts.bad += 1,
                    _ => {}
                }
                let detail = m.take_detail();
                let mut bytes = m.bytes;
                let mut redacted = Vec::new();
                if self.redact && m.from == Side::Client {
                    let kind = m.kind;
                    if matches!(kind, Kind::Command | Kind::SaslData) {
                        let head = parse_command(&bytes);
                        let secrets = redact::secrets(kind, &head, &bytes, !m.partial);
                        if !secrets.is_empty() {
                            bytes = redact::apply(&bytes, &secrets);
                            redacted = secrets.iter().map(|s| s.what.to_string()).collect();
                            redacted.dedup();
                            if m.partial {
                                self.secret_seqs.push(m.seq);
                            }
                        }
                    }
                } else if self.redact
                    && m.kind == Kind::ContinuationRequest
                    && let Some(proof) = redact::server_proof(&bytes)
                {
                    bytes = redact::apply(&bytes, std::slice::from_ref(&proof));
                    redacted.push(proof.what.to_string());
                }
                let record = Record::Message(MessageRecord {
                    seq: m.seq,
                    t_us: m.t_us,
                    from: m.from,
                    kind: m.kind,
                    tag: m.tag,
                    name: m.name,
                    payload: Payload::default(),
                    partial: m.partial,
                    status: m.status,
                    code: detail.code,
                    reply_to: m.reply_to,
                    latency_us: detail.latency_us,
                    command: detail.command,
                    in_flight: m.in_flight,
                    mailbox: detail.mailbox,
                    user: detail.user,
                    capabilities: detail.capabilities,
                    redacted,
                    notes: detail.notes,
                });
                self.push_with_payload(&record, &bytes);
                return;
            }
            Event::Part {
                seq,
                from,
                t_us,
                bytes,
                last,
            } => {
                let hide = self.secret_seqs.contains(&seq);
                if hide && last {
                    self.secret_seqs.retain(|&s| s != seq);
                }
                let record = Record::Part(PartRecord {
                    seq,
                    t_us,
                    from,
                    payload: Payload::default(),
                    last,
                    redacted: hide,
                });
                let bytes = if hide {
                    redact::PLACEHOLDER
                } else {
                    &bytes[..]
                };
                self.push_with_payload(&record, bytes);
                return;
            }
            Event::Compress { t_us } => Record::Compress(CompressRecord {
                t_us,
                algorithm: "DEFLATE".into(),
            }),
            Event::Opaque { from, t_us, len } => Record::Opaque(OpaqueRecord {
                t_us,
                from,
                len: len as u64,
                what: "tls".into(),
            }),
            Event::Note {
                seq,
                from,
                t_us,
                text,
            } => Record::Note(NoteRecord {
                t_us,
                seq,
                from: Some(from),
                note: text,
            }),
        };
        self.push(&record);
    }

    fn push(&mut self, record: &Record) {
        if matches!(self.output, Output::Discard) {
            return;
        }
        // Serializing these types cannot fail: no maps with non-string keys, no custom code.
        if serde_json::to_writer(&mut self.pending, record).is_ok() {
            self.pending.push(b'\n');
        }
    }

    /// Pushes a record whose `payload` is left empty, with `payload` as its text (or base64).
    ///
    /// Literal data is most of what a transcript holds, and serde_json escapes strings a byte
    /// at a time (about 360 MB/s here), which made encoding the bottleneck of recording. So
    /// the record's other fields go through serde and the payload through a SIMD escaper,
    /// appended as the object's last field: the same JSON a reader gets from serde.
    fn push_with_payload(&mut self, record: &Record, payload: &[u8]) {
        if matches!(self.output, Output::Discard) {
            return;
        }
        let start = self.pending.len();
        if serde_json::to_writer(&mut self.pending, record).is_err()
            || self.pending.last() != Some(&b'}')
        {
            self.pending.truncate(start);
            return;
        }
        self.pending.pop();
        encode_payload(&mut self.pending, &mut self.escape_scratch, payload);
        self.pending.extend_from_slice(b"}\n");
    }

    /// Bytes encoded and not yet written.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Writes what was encoded, on the blocking pool. On failure the bytes are dropped and
    /// counted (the relay must not stall or grow without bound because of a full disk), the
    /// error is returned once per run of failures, and the next successful write first records
    /// the gap.
    pub async fn flush(&mut self) -> Result<(), String> {
        let Some(batch) = self.take_batch() else {
            return Ok(());
        };
        let result = match batch {
            Batch::Done(result) => result,
            Batch::ToFile { file, gap, data } => {
                let joined = tokio::task::spawn_blocking(move || {
                    let mut file = file;
                    let result = write_batch(&mut file, &gap, &data);
                    (file, data, result)
                })
                .await;
                match joined {
                    Ok((file, data, result)) => {
                        self.output = Output::File(Some(file));
                        // The buffer comes back to be reused.
                        self.pending = data;
                        result
                    }
                    Err(e) => Err(io::Error::other(e)),
                }
            }
        };
        self.batch_done(result)
    }

    /// [`Self::flush`] on this thread, which the write blocks: for a thread that only writes
    /// transcripts (`relay::transcript_thread`).
    pub fn flush_now(&mut self) -> Result<(), String> {
        let Some(batch) = self.take_batch() else {
            return Ok(());
        };
        let result = match batch {
            Batch::Done(result) => result,
            Batch::ToFile {
                mut file,
                gap,
                data,
            } => {
                let result = write_batch(&mut file, &gap, &data);
                self.output = Output::File(Some(file));
                self.pending = data;
                result
            }
        };
        self.batch_done(result)
    }

    /// What a flush must do: nothing (`None`), something already done, or a file write.
    fn take_batch(&mut self) -> Option<Batch> {
        if self.pending.is_empty() {
            return None;
        }
        Some(match &mut self.output {
            Output::Discard => Batch::Done(Ok(())),
            Output::Memory(v) => {
                v.extend_from_slice(&self.pending);
                Batch::Done(Ok(()))
            }
            Output::File(slot) => {
                let mut gap = Vec::new();
                if self.lost_since_ok > 0 {
                    // Start on a fresh line in case the failed write left half of one.
                    let note = Record::Note(NoteRecord {
                        t_us: 0,
                        seq: None,
                        from: None,
                        note: format!(
                            "gap: {} bytes of transcript could not be written ({})",
                            self.lost_since_ok,
                            self.write_error.as_deref().unwrap_or("write failed")
                        ),
                    });
                    gap.push(b'\n');
                    let _ = serde_json::to_writer(&mut gap, &note);
                    gap.push(b'\n');
                }
                match slot.take() {
                    None => Batch::Done(Err(io::Error::other("the transcript file is gone"))),
                    Some(file) => Batch::ToFile {
                        file,
                        gap,
                        data: std::mem::take(&mut self.pending),
                    },
                }
            }
        })
    }

    /// Counts a flush's outcome (`self.pending` holds the bytes it was given).
    fn batch_done(&mut self, result: io::Result<()>) -> Result<(), String> {
        let len = self.pending.len() as u64;
        self.pending.clear();
        match result {
            Ok(()) => {
                self.lost_total += self.lost_since_ok;
                self.lost_since_ok = 0;
                self.write_error = None;
                Ok(())
            }
            Err(e) => {
                self.lost_since_ok += len;
                let first = self.write_error.is_none();
                self.write_error = Some(e.to_string());
                if first { Err(e.to_string()) } else { Ok(()) }
            }
        }
    }
}

/// One flush's work (see [`TranscriptWriter::take_batch`]).
enum Batch {
    Done(io::Result<()>),
    ToFile {
        file: std::fs::File,
        gap: Vec<u8>,
        data: Vec<u8>,
    },
}

fn write_batch(file: &mut std::fs::File, gap: &[u8], data: &[u8]) -> io::Result<()> {
    file.write_all(gap).and_then(|_| file.write_all(data))
}

/// How much text is escaped per call: the escaper reserves six times its input, so pieces
/// keep the buffer's growth small whatever the size of a literal.
const ESCAPE_PIECE: usize = 16 * 1024;

/// The SIMD escaper loads whole vector registers and may read up to one register past the
/// end of its input (it only avoids crossing a page). So each piece is followed by at least
/// this many bytes of the text itself, and the tail is copied into a scratch buffer with this
/// much slack: every load stays inside memory the writer owns.
const ESCAPE_SLACK: usize = 64;

/// Appends `,"text":"..."` (UTF-8) or `,"base64":"..."` (anything else), as [`Payload`] would
/// serialize. `scratch` is reused between calls.
fn encode_payload(out: &mut Vec<u8>, scratch: &mut Vec<u8>, bytes: &[u8]) {
    // simdutf8: core's check took 12% of a recording relay's CPU during bulk FETCH.
    let Ok(mut text) = simdutf8::basic::from_utf8(bytes) else {
        use base64::Engine;
        out.extend_from_slice(br#","base64":""#);
        let at = out.len();
        out.resize(at + base64::encoded_len(bytes.len(), true).unwrap_or(0), 0);
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(bytes, &mut out[at..])
            .unwrap_or(0);
        out.truncate(at + written);
        out.push(b'"');
        return;
    };
    out.extend_from_slice(br#","text":"#);
    if text.is_empty() {
        out.extend_from_slice(br#""""#);
        return;
    }
    let mut first = true;
    while !text.is_empty() {
        // Leave at least ESCAPE_SLACK bytes of the text after each piece, so loads past the
        // piece stay inside the text; only the short tail needs the padded copy.
        let mut cut = text.len().saturating_sub(ESCAPE_SLACK).min(ESCAPE_PIECE);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, rest) = if cut == 0 {
            (text, "")
        } else {
            text.split_at(cut)
        };
        text = rest;
        // Each piece comes back quoted, and the pieces must make one string. The first
        // piece's opening quote opens it and the last one's closing quote closes it; in
        // between, the previous piece's closing quote and last byte are taken off, and that
        // byte goes where this piece's opening quote lands, so nothing is shifted.
        let carried = if first {
            None
        } else {
            out.pop();
            out.pop()
        };
        first = false;
        let at = out.len();
        if rest.len() >= ESCAPE_SLACK {
            json_escape_simd::escape_into(piece, out);
        } else {
            scratch.clear();
            scratch.extend_from_slice(piece.as_bytes());
            scratch.resize(piece.len() + ESCAPE_SLACK, 0);
            // A copy of a `str` cut at a char boundary: valid UTF-8, so never the default.
            let padded = std::str::from_utf8(&scratch[..piece.len()]).unwrap_or_default();
            json_escape_simd::escape_into(padded, out);
        }
        if let Some(byte) = carried {
            out[at] = byte;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::SessionTracker;

    async fn record(client: &[&[u8]], server: &[&[u8]], redact: bool) -> String {
        let mut tracker = SessionTracker::new();
        let mut writer = TranscriptWriter::in_memory(redact);
        let mut events = Vec::new();
        for (i, chunk) in server.iter().enumerate() {
            tracker.on_bytes(Side::Server, i as u64, chunk, &mut events);
            if let Some(c) = client.get(i) {
                tracker.on_bytes(Side::Client, i as u64, c, &mut events);
            }
        }
        for e in events {
            writer.event(e);
        }
        writer.flush().await.unwrap();
        String::from_utf8(writer.take_memory()).unwrap()
    }

    /// The fast payload encoding reads back exactly as serde's own encoding would.
    #[test]
    fn payloads_read_back_as_serde_writes_them() {
        let long: String = "é€\u{1F600}\"\\\r\n\t\u{7}x".repeat(5000);
        let cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"a1 OK done\r\n".to_vec(),
            b"quote \" backslash \\ nul \0 del \x7f bell \x07".to_vec(),
            long.into_bytes(),
            vec![0xff, 0xfe, b'a', 0x80],
            "é".repeat(33).into_bytes(),
            "x".repeat(64).into_bytes(),
            "€".repeat(22).into_bytes(),
            "y".repeat(16 * 1024 + 64).into_bytes(),
            [b"caf\xc3\xa9 ".as_slice(), &[0xc3]].concat(),
        ];
        for bytes in cases {
            let mut writer = TranscriptWriter::in_memory(false);
            writer.event(Event::Part {
                seq: 7,
                from: Side::Server,
                t_us: 9,
                bytes: bytes.clone(),
                last: true,
            });
            let line = std::mem::take(&mut writer.pending);
            let read: Record = serde_json::from_slice(&line).expect("valid JSON");
            let expected = Record::Part(PartRecord {
                seq: 7,
                t_us: 9,
                from: Side::Server,
                payload: Payload::from_bytes(bytes.clone()),
                last: true,
                redacted: false,
            });
            assert_eq!(read, expected);
            let Record::Part(part) = read else {
                unreachable!()
            };
            assert_eq!(part.payload.to_bytes(), Some(bytes));
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        }
    }

    #[tokio::test]
    async fn passwords_never_reach_the_output() {
        let out = record(
            &[
                b"a LOGIN nell \"Sec ret\"\r\n",
                b"b LOGIN {4}\r\nnell {6}\r\n",
                b"Secret\r\n",
                b"c AUTHENTICATE PLAIN\r\n",
                b"AG5lbGwAU2VjcmV0\r\n",
            ],
            &[
                b"* OK hi\r\n",
                b"a NO nope\r\n",
                b"+ go\r\n",
                b"b NO nope\r\n",
                b"+ \r\n",
                b"c OK yes\r\n",
            ],
            true,
        )
        .await;
        assert!(!out.contains("Sec ret") && !out.contains("Secret"), "{out}");
        assert!(!out.contains("AG5lbGwAU2VjcmV0"), "{out}");
        assert!(out.contains(r#""redacted":["password"]"#), "{out}");
        assert!(out.contains(r#""redacted":["sasl-data"]"#), "{out}");
        assert!(out.contains(r#""user":"nell""#), "{out}");
        // The password as a synchronizing literal: the user name stays, the rest is hidden.
        let out = record(
            &[b"e2 LOGIN \"alice\" {6}\r\n", b"Secret\r\n"],
            &[b"* OK hi\r\n", b"+ OK\r\n", b"e2 OK yes\r\n"],
            true,
        )
        .await;
        assert!(!out.contains("Secret"), "{out}");
        assert!(out.contains(r#""user":"alice""#), "{out}");
        assert!(out.contains(r#"e2 LOGIN \"alice\" <redacted>"#), "{out}");
        let raw = record(&[b"a LOGIN nell Secret\r\n"], &[b"* OK hi\r\n"], false).await;
        assert!(raw.contains("Secret"));
    }
}
