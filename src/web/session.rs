//! One session as the page shows it: its records turned into items, big messages folded.
//!
//! A message's text is its head and parts joined, cut at [`SHOWN`] bytes; the rest is fetched
//! piece by piece ([`message_piece`]), so a session holding a 100 MB literal opens after one
//! read through the file in which the literal's parts are counted, not decoded.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;
use serde_json::{Value, json};

use super::lines::{self, Lines};
use crate::protocol::message::Word;
use crate::protocol::{Kind, Side, Status};
use crate::transcript::format::{MessageRecord, Payload, Record};

/// How much of a message the session view carries.
pub const SHOWN: usize = 8 * 1024;
/// The largest piece of a message asked for at once.
pub const PIECE_MAX: usize = 1 << 20;

/// The session view's data (see docs/web.md, `GET /api/session/NAME`).
#[derive(Serialize)]
pub struct SessionView {
    name: String,
    session: Value,
    tls: Vec<Value>,
    end: Option<Value>,
    open: bool,
    items: Vec<Item>,
    next: u64,
}

/// The session view of the transcript at `path`, serialized straight from its items (a JSON
/// tree of a 100,000-command session would hold many times its size).
pub fn session(path: &Path, name: &str) -> std::io::Result<SessionView> {
    let mut view = View::default();
    let next = view.read(path, 0)?;
    let open = view.end.is_none();
    Ok(SessionView {
        name: name.to_string(),
        session: std::mem::take(&mut view.session),
        tls: std::mem::take(&mut view.tls),
        end: view.end.take(),
        open,
        items: view.finish(),
        next,
    })
}

/// Records appended after `after`, as items (for following a live session), and the offset
/// to go on from. A part of a message sent before comes as `{"kind": "part"}`.
pub fn follow(path: &Path, after: u64) -> std::io::Result<(Vec<Item>, u64, bool)> {
    let mut view = View {
        following: true,
        ..View::default()
    };
    let next = view.read(path, after)?;
    let ended = view.end.is_some();
    Ok((view.finish(), next, ended))
}

/// Bytes `from..from+len` of message `seq` (its head and parts joined).
pub fn message_piece(path: &Path, seq: u64, from: u64, len: usize) -> std::io::Result<Value> {
    let len = len.min(PIECE_MAX);
    let mut lines = Lines::open(path, 0)?;
    let mut at = 0u64;
    let mut out = Vec::with_capacity(len);
    let mut total = 0u64;
    let mut found = false;
    while let Some((_, line)) = lines.next_line()? {
        let kind = lines::record_type(line);
        let mine = match kind {
            Some(b"part") => lines::part_header(line).is_some_and(|(s, _)| s == seq),
            Some(b"message") => !found && lines::part_header(line).is_some_and(|(s, _)| s == seq),
            _ => false,
        };
        if !mine {
            continue;
        }
        found = true;
        let size = lines::payload_len(line);
        total += size;
        let want_end = from + len as u64;
        if at + size > from && at < want_end {
            let bytes = decode(line);
            let start = from.saturating_sub(at) as usize;
            let end = ((want_end - at) as usize).min(bytes.len());
            if start < end {
                out.extend_from_slice(&bytes[start..end]);
            }
        }
        at += size;
    }
    // A piece that stops inside a character ends before it; the next starts with it.
    if from + (out.len() as u64) < total {
        out.truncate(whole_characters(&out));
    }
    let (text, binary) = shown(&out);
    Ok(
        json!({"seq": seq, "from": from, "len": out.len(), "total": total,
              "text": text, "binary": binary}),
    )
}

/// The bytes of a message or part line's payload.
fn decode(line: &[u8]) -> Vec<u8> {
    #[derive(serde::Deserialize)]
    struct Only {
        #[serde(flatten)]
        payload: Payload,
    }
    serde_json::from_slice::<Only>(line)
        .ok()
        .and_then(|o| o.payload.to_bytes())
        .unwrap_or_default()
}

/// How much of `bytes` to keep so as not to end inside a UTF-8 character: all of it, unless
/// its last one to three bytes start a character that the rest would complete.
fn whole_characters(bytes: &[u8]) -> usize {
    let continuation = |b: u8| b & 0xC0 == 0x80;
    let tail = bytes
        .iter()
        .rev()
        .take(3)
        .take_while(|&&b| continuation(b))
        .count();
    let Some(&lead) = bytes.len().checked_sub(tail + 1).and_then(|i| bytes.get(i)) else {
        return bytes.len();
    };
    let needs = match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return bytes.len(),
    };
    if tail + 1 < needs {
        bytes.len() - tail - 1
    } else {
        bytes.len()
    }
}

/// Text to show: UTF-8 as it is, other bytes as `\xNN`.
pub fn shown(bytes: &[u8]) -> (String, bool) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), false),
        Err(_) => {
            let mut out = String::with_capacity(bytes.len() + 16);
            for chunk in bytes.utf8_chunks() {
                out.push_str(chunk.valid());
                for b in chunk.invalid() {
                    out.push_str(&format!("\\x{b:02X}"));
                }
            }
            (out, true)
        }
    }
}

/// One item of the view: a message (nearly all of a big session's items, so a typed struct
/// rather than a JSON map: a map held 40 times a transcript's size in memory) or another
/// record's item.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Item {
    Message(Box<MessageItem>),
    Other(Value),
}

impl Item {
    /// The session's end record.
    pub fn is_end(&self) -> bool {
        matches!(self, Item::Other(v) if v["kind"] == "end")
    }
}

/// A message as docs/web.md's `Item` has it.
#[derive(Serialize)]
pub struct MessageItem {
    kind: &'static str,
    seq: u64,
    t_us: u64,
    from: Side,
    #[serde(rename = "type")]
    type_: &'static str,
    tag: Option<Word>,
    name: Option<Word>,
    status: Option<Status>,
    code: Option<Word>,
    reply_to: Option<u64>,
    latency_us: Option<u64>,
    command: Option<Word>,
    in_flight: std::sync::Arc<[u64]>,
    user: Option<String>,
    mailbox: Option<String>,
    redacted: Vec<String>,
    notes: Vec<String>,
    partial: bool,
    text: String,
    bytes: u64,
    binary: bool,
    more: bool,
}

/// Items being built from records.
#[derive(Default)]
struct View {
    session: Value,
    tls: Vec<Value>,
    end: Option<Value>,
    items: Vec<Item>,
    /// Messages by seq: their item's index, shown bytes so far and total.
    messages: HashMap<u64, Message>,
    /// Only records after an offset: parts of earlier messages become `part` items.
    following: bool,
}

struct Message {
    item: usize,
    shown: Vec<u8>,
    total: u64,
}

impl View {
    /// Reads records from `from`; returns where to go on from.
    fn read(&mut self, path: &Path, from: u64) -> std::io::Result<u64> {
        let mut lines = Lines::open(path, from)?;
        while let Some((_, line)) = lines.next_line()? {
            if lines::record_type(line) == Some(b"part") {
                self.part(line);
                continue;
            }
            if let Ok(record) = serde_json::from_slice::<Record>(line) {
                self.record(record);
            }
        }
        Ok(lines.offset())
    }

    fn part(&mut self, line: &[u8]) {
        let Some((seq, _)) = lines::part_header(line) else {
            return;
        };
        let size = lines::payload_len(line);
        match self.messages.get_mut(&seq) {
            Some(m) => {
                if m.shown.len() < SHOWN {
                    let bytes = decode(line);
                    let room = SHOWN - m.shown.len();
                    m.shown.extend_from_slice(&bytes[..room.min(bytes.len())]);
                }
                m.total += size;
            }
            None if self.following => {
                self.items.push(Item::Other(
                    json!({"kind": "part", "seq": seq, "bytes": size}),
                ));
            }
            None => {}
        }
    }

    fn record(&mut self, record: Record) {
        let item = match record {
            Record::Session(s) => {
                self.session = json!(s);
                return;
            }
            Record::Message(m) => {
                self.message(m);
                return;
            }
            Record::Part(_) => return,
            Record::Tls(t) => {
                let v = json!(t);
                self.tls.push(v.clone());
                with_kind("tls", v)
            }
            Record::Compress(c) => json!({"kind": "compress", "t_us": c.t_us}),
            Record::Opaque(o) => {
                json!({"kind": "opaque", "t_us": o.t_us, "from": o.from, "bytes": o.len})
            }
            Record::Dropped(d) => json!({"kind": "dropped", "t_us": d.t_us, "from": d.from,
                "bytes": d.payload.len(), "reason": d.reason}),
            Record::Note(n) => json!({"kind": "note", "t_us": n.t_us, "seq": n.seq,
                "from": n.from, "text": n.note}),
            Record::Error(e) => json!({"kind": "error", "t_us": e.t_us, "during": e.during,
                "message": e.message}),
            Record::End(e) => {
                let v = json!(e);
                self.end = Some(v.clone());
                with_kind("end", v)
            }
        };
        self.items.push(Item::Other(item));
    }

    fn message(&mut self, m: MessageRecord) {
        let bytes = m.payload.to_bytes().unwrap_or_default();
        let total = bytes.len() as u64;
        let shown: Vec<u8> = bytes[..bytes.len().min(SHOWN)].to_vec();
        let item = Item::Message(Box::new(MessageItem {
            kind: "message",
            seq: m.seq,
            t_us: m.t_us,
            from: m.from,
            type_: type_name(m.kind),
            tag: m.tag,
            name: m.name,
            status: m.status,
            code: m.code,
            reply_to: m.reply_to,
            latency_us: m.latency_us,
            command: m.command,
            in_flight: m.in_flight,
            user: m.user,
            mailbox: m.mailbox,
            redacted: m.redacted,
            notes: m.notes,
            partial: m.partial,
            text: String::new(),
            bytes: total,
            binary: false,
            more: false,
        }));
        self.messages.insert(
            m.seq,
            Message {
                item: self.items.len(),
                shown,
                total,
            },
        );
        self.items.push(item);
    }

    /// The items, with each message's text and size filled in.
    fn finish(mut self) -> Vec<Item> {
        for m in self.messages.values() {
            let more = m.total > m.shown.len() as u64;
            // Cut at SHOWN, a message may end inside a character: shown up to it, and the
            // page fetches the rest from there.
            let keep = if more {
                whole_characters(&m.shown)
            } else {
                m.shown.len()
            };
            let (text, binary) = shown(&m.shown[..keep]);
            if let Some(Item::Message(item)) = self.items.get_mut(m.item) {
                item.text = text;
                item.bytes = m.total;
                item.binary = binary;
                item.more = more;
            }
        }
        self.items
    }
}

fn with_kind(kind: &str, mut v: Value) -> Value {
    if let Value::Object(map) = &mut v {
        map.insert("kind".into(), json!(kind));
    }
    v
}

/// The page's name for a message kind.
pub fn type_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Greeting => "greeting",
        Kind::Command => "command",
        Kind::Completion => "completion",
        Kind::Untagged => "untagged",
        Kind::ContinuationRequest => "continuation",
        Kind::SaslData => "sasl",
        Kind::IdleDone => "idle-done",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transcript whose server message is `body`, written as a head and two parts cut
    /// inside characters (as the recorder may cut them).
    fn transcript(dir: &Path, body: &str) -> std::path::PathBuf {
        let bytes = body.as_bytes();
        let (a, rest) = bytes.split_at(10_001);
        let (b, c) = rest.split_at(40_001);
        let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
        let lines = [
            r#"{"type":"session","version":1,"imapscope":"t","id":1,"client":"c","listen":"l","upstream":"u","start":"2026-11-27T10:00:00.000000Z","redaction":true}"#.to_string(),
            format!(r#"{{"type":"message","seq":2,"t_us":1,"from":"server","kind":"untagged","partial":true,"base64":"{}"}}"#, b64(a)),
            format!(r#"{{"type":"part","seq":2,"t_us":2,"from":"server","base64":"{}","last":false}}"#, b64(b)),
            format!(r#"{{"type":"part","seq":2,"t_us":3,"from":"server","base64":"{}","last":true}}"#, b64(c)),
        ];
        let path = dir.join("utf8.jsonl");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    }

    #[test]
    fn text_cut_inside_a_character_is_shown_whole_and_joins_up() {
        let dir = tempfile::tempdir().unwrap();
        let body = "€".repeat(30_000);
        let path = transcript(dir.path(), &body);
        let view = serde_json::to_value(session(&path, "utf8.jsonl").unwrap()).unwrap();
        let item = &view["items"][0];
        let head = item["text"].as_str().unwrap();
        assert_eq!(item["binary"], false, "{item}");
        assert!(head.chars().all(|c| c == '€') && !head.is_empty());
        assert_eq!(item["bytes"], 90_000);
        // The page fetches the rest in pieces from where the head ended.
        let mut text = head.to_string();
        let mut from = head.len() as u64;
        while from < 90_000 {
            let piece = message_piece(&path, 2, from, 7_000).unwrap();
            assert_eq!(piece["binary"], false, "{piece}");
            text.push_str(piece["text"].as_str().unwrap());
            from += piece["len"].as_u64().unwrap();
        }
        assert_eq!(text, body);
    }

    #[test]
    fn a_cut_character_is_found_at_any_length() {
        let euro = "€".as_bytes();
        assert_eq!(whole_characters(&euro[..1]), 0);
        assert_eq!(whole_characters(&euro[..2]), 0);
        assert_eq!(whole_characters(euro), 3);
        assert_eq!(whole_characters(b"ab\xF0\x9F\x98"), 2);
        assert_eq!(whole_characters(b"ab\x80\x80\x80"), 5);
        assert_eq!(whole_characters(b""), 0);
    }
}
