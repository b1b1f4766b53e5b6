//! One session as the page shows it: its records turned into items, big messages folded.
//!
//! A message's text is its head and parts joined, cut at [`SHOWN`] bytes; the rest is fetched
//! piece by piece ([`message_piece`]), so a session holding a 100 MB literal opens after one
//! read through the file in which the literal's parts are counted, not decoded.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Value, json};

use super::lines::{self, Lines};
use crate::protocol::Kind;
use crate::transcript::format::{MessageRecord, Payload, Record};

/// How much of a message the session view carries.
pub const SHOWN: usize = 8 * 1024;
/// The largest piece of a message asked for at once.
pub const PIECE_MAX: usize = 1 << 20;

/// The session view's data (see docs/web.md, `GET /api/session/NAME`).
pub fn session(path: &Path, name: &str) -> std::io::Result<Value> {
    let mut view = View::default();
    let next = view.read(path, 0)?;
    let open = view.end.is_none();
    Ok(json!({
        "name": name,
        "session": view.session,
        "tls": view.tls,
        "end": view.end,
        "open": open,
        "items": view.finish(),
        "next": next,
    }))
}

/// Records appended after `after`, as items (for following a live session), and the offset
/// to go on from. A part of a message sent before comes as `{"kind": "part"}`.
pub fn follow(path: &Path, after: u64) -> std::io::Result<(Vec<Value>, u64, bool)> {
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

/// Items being built from records.
#[derive(Default)]
struct View {
    session: Value,
    tls: Vec<Value>,
    end: Option<Value>,
    items: Vec<Value>,
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
                self.items
                    .push(json!({"kind": "part", "seq": seq, "bytes": size}));
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
        self.items.push(item);
    }

    fn message(&mut self, m: MessageRecord) {
        let bytes = m.payload.to_bytes().unwrap_or_default();
        let total = bytes.len() as u64;
        let shown: Vec<u8> = bytes[..bytes.len().min(SHOWN)].to_vec();
        let item = json!({
            "kind": "message",
            "seq": m.seq,
            "t_us": m.t_us,
            "from": m.from,
            "type": type_name(m.kind),
            "tag": m.tag,
            "name": m.name,
            "status": m.status,
            "code": m.code,
            "reply_to": m.reply_to,
            "latency_us": m.latency_us,
            "command": m.command,
            "in_flight": &*m.in_flight,
            "user": m.user,
            "mailbox": m.mailbox,
            "redacted": m.redacted,
            "notes": m.notes,
            "partial": m.partial,
        });
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
    fn finish(mut self) -> Vec<Value> {
        for m in self.messages.values() {
            let (text, binary) = shown(&m.shown);
            if let Some(Value::Object(item)) = self.items.get_mut(m.item) {
                item.insert("text".into(), json!(text));
                item.insert("bytes".into(), json!(m.total));
                item.insert("binary".into(), json!(binary));
                item.insert("more".into(), json!(m.total > m.shown.len() as u64));
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
