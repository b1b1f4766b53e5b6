//! Transcripts for people: the `show`, `show --stats` and `ls` views.
//!
//! `show` reads like the telnet sessions IMAP people know: `C:` and `S:` lines with the time
//! since the session started, each completion with its latency, literals summarized (size and
//! first line) unless `full`, redacted secrets marked, and TLS, COMPRESS and the close as
//! separators. Pure functions from records to text; the CLI does the file reading.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::protocol::framer::{Fragment, Framer};
use crate::protocol::{Kind, Side, Status};
use crate::transcript::Record;
use crate::transcript::format::{MessageRecord, SessionRecord};

/// ANSI colors, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
    fn client(&self, t: &str) -> String {
        self.paint("36", t)
    }
    fn server(&self, t: &str) -> String {
        self.paint("32", t)
    }
    fn bad(&self, t: &str) -> String {
        self.paint("31", t)
    }
    fn secret(&self, t: &str) -> String {
        self.paint("7;31", t)
    }
    fn strong(&self, t: &str) -> String {
        self.paint("1", t)
    }
}

/// Renders records one at a time (so `--follow` can render as they come).
pub struct Renderer {
    style: Style,
    full: bool,
    /// `#3 ` before each line when several sessions are interleaved.
    prefix: String,
    /// Messages whose parts are still to come, by seq: each continues where it stopped.
    pending: BTreeMap<u64, Pending>,
    /// The end line was rendered.
    ended: bool,
}

/// Where a message handed out in parts (a large literal) stopped.
struct Pending {
    framer: Framer,
    side: Side,
    /// The literal being read: how many bytes so far, and its first bytes (the folded view
    /// shows the size and first line of the whole literal once it ends).
    literal_len: u64,
    preview: Vec<u8>,
    /// With `full`: the literal's line not ended yet (it may end in the next part).
    line: Vec<u8>,
}

impl Pending {
    fn new(side: Side) -> Pending {
        Pending {
            framer: Framer::new(side),
            side,
            literal_len: 0,
            preview: Vec::new(),
            line: Vec::new(),
        }
    }
}

/// How much of a literal's first bytes the folded view keeps for its first line.
const PREVIEW: usize = 200;

/// A literal line without an end longer than this (binary data) is shown in pieces.
const LONGEST_LINE: usize = 64 * 1024;

impl Renderer {
    pub fn new(style: Style, full: bool, prefix: String) -> Renderer {
        Renderer {
            style,
            full,
            prefix,
            pending: BTreeMap::new(),
            ended: false,
        }
    }

    /// After the last record of a transcript that has no end line (imapscope is still
    /// recording it, or was killed): how far each message still in parts came, and that the
    /// transcript stops there. A literal cut by `kill -9` is shown as far as it was written.
    pub fn finish(&mut self) -> String {
        if self.ended {
            return String::new();
        }
        let seqs: Vec<u64> = self.pending.keys().copied().collect();
        let cut: String = seqs.into_iter().map(|seq| self.cut_short(seq)).collect();
        cut + &self.separator(
            "no end line: imapscope is still recording this, or was stopped (kill -9, a crash)",
        )
    }

    fn time(&self, t_us: u64) -> String {
        self.style.dim(&format!("{:>9.3}", t_us as f64 / 1e6))
    }

    fn separator(&self, text: &str) -> String {
        format!(
            "{}{}\n",
            self.prefix,
            self.style.dim(&format!("── {text} ──"))
        )
    }

    /// The text for one record (possibly several lines, possibly none).
    pub fn record(&mut self, record: &Record) -> String {
        let s = self.style;
        match record {
            Record::Session(h) => self.separator(&session_title(h)),
            Record::Message(m) => self.message(m),
            Record::Part(p) => {
                let bytes = p.payload.to_bytes().unwrap_or_default();
                let side = p.from;
                let mut pending = self
                    .pending
                    .remove(&p.seq)
                    .unwrap_or_else(|| Pending::new(side));
                let body = self.fragments(&mut pending, &bytes, p.redacted);
                if !p.last {
                    self.pending.insert(p.seq, pending);
                }
                let label = self.label(side);
                body.iter()
                    .map(|l| format!("{}{} {label} {l}\n", self.prefix, " ".repeat(9)))
                    .collect()
            }
            Record::Tls(t) => self.separator(&format!(
                "TLS {} leg: {} {}{}{}{}",
                t.leg,
                t.version,
                t.cipher,
                t.sni
                    .as_ref()
                    .map(|n| format!(", SNI {}", visible(n)))
                    .unwrap_or_default(),
                t.subject
                    .as_ref()
                    .map(|n| format!(", certificate {}", visible(n)))
                    .unwrap_or_default(),
                t.verified
                    .as_ref()
                    .map(|v| format!(" ({v})"))
                    .unwrap_or_default()
            )),
            Record::Compress(c) => {
                self.separator(&format!("COMPRESS {} from here on", c.algorithm))
            }
            Record::Opaque(o) => format!(
                "{}{} {} {}\n",
                self.prefix,
                self.time(o.t_us),
                self.label(o.from),
                s.dim(&format!("[{} bytes of {}, not decoded]", o.len, o.what))
            ),
            Record::Dropped(d) => {
                let text = visible(text_of(&d.payload.to_bytes().unwrap_or_default()).trim_end())
                    .into_owned();
                format!(
                    "{}{} {} {} {}\n",
                    self.prefix,
                    self.time(d.t_us),
                    self.label(d.from),
                    s.bad("[NOT RELAYED]"),
                    s.bad(&format!("{text}  ({})", d.reason))
                )
            }
            Record::Note(n) => {
                // A message cut short gets its note: say first how far its literal came.
                let cut = n.seq.map(|seq| self.cut_short(seq)).unwrap_or_default();
                format!(
                    "{cut}{}{} {}\n",
                    self.prefix,
                    self.time(n.t_us),
                    s.dim(&format!("note: {}", visible(&n.note)))
                )
            }
            Record::Error(e) => format!(
                "{}{} {}\n",
                self.prefix,
                self.time(e.t_us),
                s.bad(&format!(
                    "error during {}: {}",
                    e.during,
                    visible(&e.message)
                ))
            ),
            Record::End(e) => {
                self.ended = true;
                let seqs: Vec<u64> = self.pending.keys().copied().collect();
                let cut: String = seqs.into_iter().map(|seq| self.cut_short(seq)).collect();
                let mut text = format!(
                    "closed at {:.3} s: {} · {} bytes from client, {} from server",
                    e.t_us as f64 / 1e6,
                    e.reason,
                    e.bytes_from_client,
                    e.bytes_from_server
                );
                if let Some(c) = e.compressed {
                    let _ = write!(
                        text,
                        " · DEFLATE: client {} bytes on the wire for {} of IMAP, server {} for {}",
                        c.client_compressed,
                        c.client_inflated,
                        c.server_compressed,
                        c.server_inflated
                    );
                }
                if !e.unanswered.is_empty() {
                    let _ = write!(text, " · {} unanswered", e.unanswered.len());
                }
                if e.lost_bytes > 0 {
                    let _ = write!(text, " · {} transcript bytes lost", e.lost_bytes);
                }
                cut + &self.separator(&text)
            }
        }
    }

    fn label(&self, side: Side) -> String {
        match side {
            Side::Client => self.style.client("C:"),
            Side::Server => self.style.server("S:"),
        }
    }

    /// How far the literal of message `seq` came, when the message will get no more parts.
    fn cut_short(&mut self, seq: u64) -> String {
        let Some(mut p) = self.pending.remove(&seq) else {
            return String::new();
        };
        let mut lines = Vec::new();
        if self.full && !p.line.is_empty() {
            lines.push(self.literal_line(&std::mem::take(&mut p.line)));
        }
        if p.literal_len > 0 && !self.full {
            lines.push(
                self.style
                    .dim(&literal_summary(p.literal_len, &p.preview, " so far")),
            );
        }
        let label = self.label(p.side);
        lines
            .iter()
            .map(|l| format!("{}{} {label} {l}\n", self.prefix, " ".repeat(9)))
            .collect()
    }

    fn message(&mut self, m: &MessageRecord) -> String {
        let s = self.style;
        let bytes = m.payload.to_bytes().unwrap_or_default();
        let mut pending = Pending::new(m.from);
        let lines = self.fragments(&mut pending, &bytes, false);
        if m.partial {
            self.pending.insert(m.seq, pending);
        }
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            let mut line = line.clone();
            if i == 0 {
                if m.kind == Kind::Completion {
                    let status = m.status.map(|s| s.as_str()).unwrap_or("?");
                    if matches!(m.status, Some(Status::No | Status::Bad)) {
                        line = line.replacen(status, &s.bad(status), 1);
                    }
                    if let Some(l) = m.latency_us {
                        let _ = write!(line, "  {}", s.dim(&format!("({})", latency(l))));
                    }
                }
                if m.kind == Kind::Untagged && m.status == Some(Status::Bye) {
                    line = s.strong(&line);
                }
            }
            let time = if i == 0 {
                self.time(m.t_us)
            } else {
                " ".repeat(9)
            };
            let _ = writeln!(out, "{}{time} {} {line}", self.prefix, self.label(m.from));
        }
        for note in &m.notes {
            let _ = writeln!(
                out,
                "{}{} {}",
                self.prefix,
                " ".repeat(9),
                s.dim(&format!("   ^ {}", visible(note)))
            );
        }
        out
    }

    /// The lines of some bytes of a message, literals summarized unless `full`. `p` carries
    /// a literal across the parts of a message.
    fn fragments(&self, p: &mut Pending, bytes: &[u8], hidden: bool) -> Vec<String> {
        let s = self.style;
        let mut lines: Vec<String> = Vec::new();
        let mut current = String::new();
        let mut input = bytes;
        let mark_secrets = |text: &str| text.replace("<redacted>", &s.secret("<redacted>"));
        while let Some(f) = p.framer.next(&mut input) {
            match f {
                Fragment::Line { bytes, end } => {
                    let text = text_of(bytes);
                    current.push_str(&visible(text.trim_end_matches(['\r', '\n'])));
                    // A command that ends with its literal (APPEND) leaves an empty line:
                    // nothing a person would read.
                    let empty_after_literal = current.is_empty() && !lines.is_empty();
                    if end.is_some() && !empty_after_literal {
                        let line = std::mem::take(&mut current);
                        lines.push(mark_secrets(&self.folded(line)));
                    }
                }
                Fragment::Literal { bytes, last } => {
                    p.literal_len += bytes.len() as u64;
                    if self.full {
                        self.literal_lines(p, bytes, last, &mut lines);
                    } else if p.preview.len() < PREVIEW {
                        let room = PREVIEW - p.preview.len();
                        p.preview.extend_from_slice(&bytes[..bytes.len().min(room)]);
                    }
                    if last {
                        if !self.full {
                            lines.push(s.dim(&literal_summary(p.literal_len, &p.preview, "")));
                        }
                        p.literal_len = 0;
                        p.preview.clear();
                    }
                }
                Fragment::Opaque(b) => lines.push(s.dim(&format!("[{} opaque bytes]", b.len()))),
            }
        }
        if !current.is_empty() {
            lines.push(mark_secrets(&self.folded(current)));
        }
        if hidden {
            lines = vec![s.secret("<redacted>")];
        }
        lines
    }

    /// With `full`: the literal's lines that `bytes` ends, one by one; a line the bytes do
    /// not end waits in `p` (unless it is very long), and the literal's last line is shown
    /// with its last bytes.
    fn literal_lines(&self, p: &mut Pending, bytes: &[u8], last: bool, lines: &mut Vec<String>) {
        let mut rest = bytes;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            if p.line.is_empty() {
                lines.push(self.literal_line(&rest[..=i]));
            } else {
                p.line.extend_from_slice(&rest[..=i]);
                lines.push(self.literal_line(&std::mem::take(&mut p.line)));
            }
            rest = &rest[i + 1..];
        }
        p.line.extend_from_slice(rest);
        if (last && !p.line.is_empty()) || p.line.len() > LONGEST_LINE {
            lines.push(self.literal_line(&std::mem::take(&mut p.line)));
        }
    }

    fn literal_line(&self, line: &[u8]) -> String {
        format!(
            "{} {}",
            self.style.dim("│"),
            visible(text_of(line).trim_end_matches(['\r', '\n']))
        )
    }

    /// A line as the folded view shows it: a very long one (a SEARCH of a large mailbox, a
    /// command a peer never ended) cut, as literals are folded; `--full` shows it whole.
    fn folded(&self, line: String) -> String {
        if self.full || line.len() <= LONGEST_SHOWN_LINE {
            return line;
        }
        let mut cut = LONGEST_SHOWN_LINE;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        let more = line.len() - cut;
        format!(
            "{}{}",
            &line[..cut],
            self.style.dim(&format!(
                "… ({more} more bytes of this line; --full shows them)"
            ))
        )
    }
}

/// The longest line the folded view shows whole.
const LONGEST_SHOWN_LINE: usize = 4096;

/// Bytes as text with nothing lost: bytes that are not UTF-8 are written out as `\xNN`, as
/// NUL and the other control bytes are (see [`visible`]), not all made one U+FFFD.
pub fn text_of(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return text.into();
    }
    let mut out = String::with_capacity(bytes.len() + 16);
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.into()
}

/// `text` as a terminal shows it and nothing more: what a peer sent may hold escape sequences
/// (retitle the window, clear the screen, move the cursor up to forge an earlier line), a
/// bare CR, or bidirectional overrides. Each is written out as `\x1b`, `\r`, `\u{202e}`, as
/// Wireshark and `cat -v` make them visible. A tab stays a tab.
pub fn visible(text: &str) -> std::borrow::Cow<'_, str> {
    // Bidirectional marks, embeddings, overrides and isolates reorder what follows them.
    let bidi = |c: char| matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}');
    let isolate = |c: char| matches!(c, '\u{2066}'..='\u{2069}');
    let hidden = |c: char| (c.is_control() && c != '\t') || bidi(c) || isolate(c);
    if !text.contains(hidden) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if hidden(c) && (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if hidden(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.into()
}

/// The first line of a literal's first bytes, at most 60 characters, for the folded view.
fn first_line(preview: &[u8]) -> String {
    let line: String = text_of(preview)
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(60)
        .collect();
    visible(&line).into_owned()
}

/// A folded literal: `│ 1234 bytes: From: nell@example.com…`, the `…` only where more
/// follows what is shown, and no first line for one that is empty (`│ 2 bytes`, a lone CRLF).
fn literal_summary(len: u64, preview: &[u8], so_far: &str) -> String {
    let first = first_line(preview);
    let line_bytes = memchr::memchr(b'\n', preview).map_or(preview.len(), |nl| nl + 1);
    let whole_line = text_of(&preview[..line_bytes])
        .trim_end_matches(['\r', '\n'])
        .chars()
        .count()
        <= 60;
    let more = len > line_bytes as u64 || !whole_line;
    match (first.is_empty(), more) {
        (true, false) => format!("│ {len} bytes{so_far}"),
        (_, true) => format!("│ {len} bytes{so_far}: {first}…"),
        (false, false) => format!("│ {len} bytes{so_far}: {first}"),
    }
}

fn session_title(h: &SessionRecord) -> String {
    format!(
        "session #{} · {} → {} · {}{}",
        h.id,
        h.client,
        h.upstream,
        h.start,
        if h.redaction {
            ""
        } else {
            " · SECRETS RECORDED"
        }
    )
}

fn latency(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2} s", us as f64 / 1e6)
    } else {
        format!("{:.2} ms", us as f64 / 1e3)
    }
}

/// Renders whole transcripts; several are interleaved by absolute time, each line prefixed
/// with its connection id.
pub fn render(transcripts: &[(String, Vec<Record>)], style: Style, full: bool) -> String {
    if transcripts.len() == 1 {
        let mut r = Renderer::new(style, full, String::new());
        let mut out: String = transcripts[0].1.iter().map(|rec| r.record(rec)).collect();
        out.push_str(&r.finish());
        return out;
    }
    // (absolute µs, transcript index, record index)
    let mut order = Vec::new();
    for (i, (_, records)) in transcripts.iter().enumerate() {
        let start = records
            .first()
            .and_then(|r| match r {
                Record::Session(s) => humantime::parse_rfc3339(&s.start).ok(),
                _ => None,
            })
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_micros() as u64);
        for (j, r) in records.iter().enumerate() {
            order.push((start + record_time(r), i, j));
        }
    }
    order.sort();
    // Connection ids, unless two transcripts share one (recorded by different runs): then
    // their file names.
    let ids: Vec<u64> = transcripts
        .iter()
        .map(|(_, records)| match records.first() {
            Some(Record::Session(s)) => s.id,
            _ => 0,
        })
        .collect();
    let unique = ids.iter().collect::<std::collections::BTreeSet<_>>().len() == ids.len();
    let mut renderers: Vec<Renderer> = transcripts
        .iter()
        .zip(&ids)
        .map(|((name, _), id)| {
            let label = if unique {
                format!("#{id}")
            } else {
                std::path::Path::new(name)
                    .file_stem()
                    .map_or_else(|| name.clone(), |s| s.to_string_lossy().into_owned())
            };
            Renderer::new(style, full, format!("{} ", style.strong(&label)))
        })
        .collect();
    let mut out: String = order
        .into_iter()
        .map(|(_, i, j)| renderers[i].record(&transcripts[i].1[j]))
        .collect();
    for r in &mut renderers {
        out.push_str(&r.finish());
    }
    out
}

fn record_time(r: &Record) -> u64 {
    match r {
        Record::Session(_) => 0,
        Record::Message(m) => m.t_us,
        Record::Part(p) => p.t_us,
        Record::Opaque(o) => o.t_us,
        Record::Tls(t) => t.t_us,
        Record::Compress(c) => c.t_us,
        Record::Dropped(d) => d.t_us,
        Record::Note(n) => n.t_us,
        Record::Error(e) => e.t_us,
        Record::End(e) => e.t_us,
    }
}

/// Per command name: how often, how often refused, how fast.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CommandStats {
    pub command: String,
    pub count: usize,
    pub no: usize,
    pub bad: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    pub sessions: usize,
    pub commands: Vec<CommandStats>,
    pub bytes_from_client: u64,
    pub bytes_from_server: u64,
    /// Sum of session durations, in seconds.
    pub duration_s: f64,
}

pub fn stats(transcripts: &[(String, Vec<Record>)]) -> Stats {
    let mut by_name: BTreeMap<String, (Vec<u64>, usize, usize)> = BTreeMap::new();
    let mut st = Stats {
        sessions: transcripts.len(),
        commands: Vec::new(),
        bytes_from_client: 0,
        bytes_from_server: 0,
        duration_s: 0.0,
    };
    for (_, records) in transcripts {
        let mut last_t = 0;
        for r in records {
            last_t = last_t.max(record_time(r));
            match r {
                Record::Message(m) if m.kind == Kind::Completion => {
                    let entry = by_name
                        .entry(m.command.as_deref().unwrap_or("?").to_string())
                        .or_default();
                    entry.0.push(m.latency_us.unwrap_or(0));
                    match m.status {
                        Some(Status::No) => entry.1 += 1,
                        Some(Status::Bad) => entry.2 += 1,
                        _ => {}
                    }
                }
                Record::End(e) => {
                    st.bytes_from_client += e.bytes_from_client;
                    st.bytes_from_server += e.bytes_from_server;
                }
                _ => {}
            }
        }
        st.duration_s += last_t as f64 / 1e6;
    }
    for (command, (mut lat, no, bad)) in by_name {
        lat.sort_unstable();
        let pick = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize] as f64 / 1e3;
        st.commands.push(CommandStats {
            command,
            count: lat.len(),
            no,
            bad,
            p50_ms: pick(0.5),
            p95_ms: pick(0.95),
            max_ms: pick(1.0),
        });
    }
    st
}

impl Stats {
    pub fn render(&self) -> String {
        let mut s = format!(
            "{:<16} {:>6} {:>4} {:>4} {:>10} {:>10} {:>10}\n",
            "command", "count", "NO", "BAD", "p50 ms", "p95 ms", "max ms"
        );
        for c in &self.commands {
            let _ = writeln!(
                s,
                "{:<16} {:>6} {:>4} {:>4} {:>10.2} {:>10.2} {:>10.2}",
                c.command, c.count, c.no, c.bad, c.p50_ms, c.p95_ms, c.max_ms
            );
        }
        let _ = writeln!(
            s,
            "{} session(s), {:.3} s, {} bytes from client, {} bytes from server",
            self.sessions, self.duration_s, self.bytes_from_client, self.bytes_from_server
        );
        s
    }
}

/// One line of `imapscope ls`.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub file: String,
    pub start: String,
    pub duration_s: f64,
    pub client: String,
    pub user: Option<String>,
    pub upstream: String,
    pub commands: usize,
    pub errors: usize,
    pub size: u64,
    /// No end line: still running, or imapscope was killed.
    pub open: bool,
}

pub fn listing(file: String, size: u64, records: &[Record]) -> Listing {
    let mut l = Listing {
        file,
        start: String::new(),
        duration_s: 0.0,
        client: String::new(),
        user: None,
        upstream: String::new(),
        commands: 0,
        errors: 0,
        size,
        open: true,
    };
    for r in records {
        l.duration_s = l.duration_s.max(record_time(r) as f64 / 1e6);
        match r {
            Record::Session(s) => {
                l.start = s.start.clone();
                l.client = s.client.clone();
                l.upstream = s.upstream.clone();
            }
            Record::Message(m) => {
                if m.kind == Kind::Command {
                    l.commands += 1;
                }
                if matches!(m.status, Some(Status::No | Status::Bad)) && m.kind == Kind::Completion
                {
                    l.errors += 1;
                }
                if l.user.is_none() {
                    l.user = m.user.clone();
                }
            }
            Record::Error(_) => l.errors += 1,
            Record::End(e) => {
                l.open = false;
                if e.user.is_some() {
                    l.user = e.user.clone();
                }
            }
            _ => {}
        }
    }
    l
}

impl Listing {
    /// What sorts sessions by start: the session line's time (RFC 3339, UTC), then the file.
    pub fn start_key(&self) -> (Option<std::time::SystemTime>, &str) {
        (humantime::parse_rfc3339(&self.start).ok(), &self.file)
    }

    pub fn header() -> String {
        format!(
            "{:<27} {:>9} {:<22} {:<10} {:<22} {:>5} {:>4} {:>9}  {}",
            "start", "duration", "client", "user", "upstream", "cmds", "errs", "size", "file"
        )
    }

    pub fn render(&self) -> String {
        let start: String = self.start.chars().take(19).collect::<String>() + "Z";
        format!(
            "{:<27} {:>8.3}s {:<22} {:<10} {:<22} {:>5} {:>4} {:>9}  {}{}",
            start,
            self.duration_s,
            self.client,
            visible(self.user.as_deref().unwrap_or("-")),
            self.upstream,
            self.commands,
            self.errors,
            self.size,
            self.file,
            if self.open { "  (open)" } else { "" }
        )
    }
}
