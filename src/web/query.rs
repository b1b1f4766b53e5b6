//! What the page asks across sessions: the waterfall's timeline, per-command statistics,
//! filters and free-text search.
//!
//! Each session is read once into a [`Digest`] (its commands with their answers), cached by
//! file size and modification time; the waterfall, the statistics and the filters on command,
//! status and mailbox work from digests. Free text is searched in the messages themselves.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;

use super::index::{Index, Summary, start_us};
use super::lines::{self, Lines};
use super::session::{shown, type_name};
use crate::protocol::Kind;
use crate::transcript::format::{MessageRecord, PartRecord, Record};

/// How long a command's summary is.
const SUMMARY: usize = 120;

/// A session's commands with their answers.
#[derive(Debug, Clone, Serialize)]
pub struct Digest {
    pub name: String,
    pub client: String,
    pub user: Option<String>,
    pub start_us: i64,
    pub end_us: i64,
    pub open: bool,
    pub commands: Vec<Command>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Command {
    pub seq: u64,
    /// Microseconds from the session's start.
    pub t_us: u64,
    pub latency_us: Option<u64>,
    pub tag: Option<String>,
    pub name: Option<String>,
    pub status: Option<String>,
    pub summary: String,
    /// The mailbox selected when it was sent.
    pub mailbox: Option<String>,
}

/// A cached digest with the size and modification time it was read at.
type Cached = (u64, SystemTime, Arc<Digest>);

/// Digests by file, cached. See the module documentation.
#[derive(Default)]
pub struct Digests {
    cache: Mutex<HashMap<PathBuf, Cached>>,
}

impl Digests {
    pub fn get(&self, path: &Path, name: &str) -> Option<Arc<Digest>> {
        let meta = std::fs::metadata(path).ok()?;
        let (size, mtime) = (meta.len(), meta.modified().ok()?);
        if let Some((s, m, d)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            && *s == size
            && *m == mtime
        {
            return Some(d.clone());
        }
        let digest = Arc::new(digest(path, name)?);
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_path_buf(), (size, mtime, digest.clone()));
        Some(digest)
    }
}

/// Reads a session's commands and their answers (parts are skipped unread).
fn digest(path: &Path, name: &str) -> Option<Digest> {
    let mut lines = Lines::open(path, 0).ok()?;
    let mut d = Digest {
        name: name.to_string(),
        client: String::new(),
        user: None,
        start_us: 0,
        end_us: 0,
        open: true,
        commands: Vec::new(),
    };
    let mut by_seq: HashMap<u64, usize> = HashMap::new();
    let mut mailbox: Option<String> = None;
    let mut last_t = 0u64;
    while let Ok(Some((_, line))) = lines.next_line() {
        if lines::record_type(line) == Some(b"part") {
            continue;
        }
        let Ok(record) = serde_json::from_slice::<Record>(line) else {
            continue;
        };
        match record {
            Record::Session(s) => {
                d.client = s.client;
                d.start_us = start_us(&s.start);
            }
            Record::Message(m) => {
                last_t = last_t.max(m.t_us);
                if d.user.is_none() {
                    d.user = m.user.clone();
                }
                match m.kind {
                    Kind::Command => {
                        by_seq.insert(m.seq, d.commands.len());
                        d.commands.push(Command {
                            seq: m.seq,
                            t_us: m.t_us,
                            latency_us: None,
                            tag: m.tag.as_deref().map(String::from),
                            name: m.name.as_deref().map(String::from),
                            status: None,
                            summary: first_line(&m.payload.to_bytes().unwrap_or_default()),
                            mailbox: mailbox.clone(),
                        });
                    }
                    Kind::Completion => {
                        if let Some(&i) = m.reply_to.as_ref().and_then(|r| by_seq.get(r)) {
                            let c = &mut d.commands[i];
                            c.latency_us = m.latency_us;
                            c.status = m.status.map(|s| s.as_str().to_string());
                        }
                        if m.mailbox.is_some() {
                            mailbox = m.mailbox.clone();
                        }
                    }
                    _ => {}
                }
            }
            Record::End(e) => {
                d.open = false;
                last_t = last_t.max(e.t_us);
                if e.user.is_some() {
                    d.user = e.user;
                }
            }
            Record::Error(e) => last_t = last_t.max(e.t_us),
            _ => {}
        }
    }
    d.end_us = d.start_us + last_t as i64;
    Some(d)
}

/// The line of `text` where `q` (lower case) is found, cut to [`SUMMARY`] characters around
/// the match: a hit far along a long line shows the match, not the line's start.
fn around(text: &str, q: &str) -> String {
    let Some(line) = text.lines().find(|l| l.to_lowercase().contains(q)) else {
        return first_line(text.as_bytes());
    };
    let lower: Vec<char> = line.to_lowercase().chars().collect();
    let needle: Vec<char> = q.chars().collect();
    let at = lower
        .windows(needle.len().max(1))
        .position(|w| w == needle.as_slice())
        .unwrap_or(0);
    let chars: Vec<char> = line.chars().collect();
    let start = at.saturating_sub(SUMMARY / 4).min(chars.len());
    let shown: String = chars[start..].iter().take(SUMMARY).collect();
    let mut out = if start > 0 {
        format!("…{shown}")
    } else {
        shown
    };
    if chars.len() - start > SUMMARY {
        out.push('…');
    }
    out.trim_end().to_string()
}

/// The last `n` characters of `text` and a few more, where a match may start.
fn ending(text: &str, n: usize) -> String {
    let count = text.chars().count();
    text.chars().skip(count.saturating_sub(n + 4)).collect()
}

fn first_line(bytes: &[u8]) -> String {
    let end = memchr::memchr(b'\n', bytes).unwrap_or(bytes.len());
    let (text, _) = shown(&bytes[..end.min(SUMMARY * 4)]);
    let text = text.trim_end().to_string();
    if text.chars().count() > SUMMARY {
        text.chars().take(SUMMARY).collect::<String>() + "…"
    } else {
        text
    }
}

/// What the list, the statistics and the search can be narrowed to (the URL's parameters).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Filter {
    pub user: Option<String>,
    pub client: Option<String>,
    pub upstream: Option<String>,
    pub command: Option<String>,
    pub status: Option<String>,
    pub mailbox: Option<String>,
    pub q: Option<String>,
    /// Comma-separated session names: only these.
    pub names: Option<String>,
    pub limit: Option<usize>,
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn contains_ci(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

impl Filter {
    /// Whether the filter looks inside sessions (not only at their rows).
    fn looks_inside(&self) -> bool {
        given(&self.command).is_some()
            || given(&self.status).is_some()
            || given(&self.mailbox).is_some()
            || given(&self.q).is_some()
    }

    fn row_matches(&self, row: &Summary) -> bool {
        let names: Option<Vec<&str>> = given(&self.names).map(|n| n.split(',').collect());
        names.is_none_or(|n| n.contains(&row.name.as_str()))
            && given(&self.user)
                .is_none_or(|u| row.user.as_deref().is_some_and(|r| contains_ci(r, u)))
            && given(&self.client).is_none_or(|c| contains_ci(&row.client, c))
            && given(&self.upstream).is_none_or(|u| contains_ci(&row.upstream, u))
    }

    fn command_matches(&self, c: &Command) -> bool {
        given(&self.command).is_none_or(|n| {
            c.name
                .as_deref()
                .is_some_and(|name| name.eq_ignore_ascii_case(n))
        }) && given(&self.status).is_none_or(|s| {
            c.status
                .as_deref()
                .is_some_and(|st| st.eq_ignore_ascii_case(s))
        }) && given(&self.mailbox).is_none_or(|m| {
            c.mailbox
                .as_deref()
                .is_some_and(|mb| mb.eq_ignore_ascii_case(m))
        })
    }
}

/// The sessions the filter keeps, newest first.
pub fn sessions(index: &Index, digests: &Digests, filter: &Filter) -> Vec<Summary> {
    let rows: Vec<Summary> = index
        .sessions()
        .into_iter()
        .filter(|r| filter.row_matches(r))
        .collect();
    if !filter.looks_inside() {
        return rows;
    }
    rows.into_iter()
        .filter(|row| {
            let Some(path) = index.path_of(&row.name) else {
                return false;
            };
            let by_commands = given(&filter.command).is_none()
                && given(&filter.status).is_none()
                && given(&filter.mailbox).is_none()
                || digests
                    .get(&path, &row.name)
                    .is_some_and(|d| d.commands.iter().any(|c| filter.command_matches(c)));
            by_commands
                && given(&filter.q)
                    .is_none_or(|_| !search_file(&path, &row.name, filter, 1).is_empty())
        })
        .collect()
}

/// The waterfall's data.
pub fn timeline(index: &Index, digests: &Digests, filter: &Filter) -> Vec<Arc<Digest>> {
    sessions(index, digests, filter)
        .into_iter()
        .filter_map(|row| {
            let path = index.path_of(&row.name)?;
            digests.get(&path, &row.name)
        })
        .collect()
}

/// Per command name: count, NO, BAD, latency p50/p95/max.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CommandStats {
    pub name: String,
    pub count: u64,
    pub no: u64,
    pub bad: u64,
    pub p50_us: Option<u64>,
    pub p95_us: Option<u64>,
    pub max_us: Option<u64>,
}

pub fn stats(digests: &[Arc<Digest>]) -> Vec<CommandStats> {
    let mut by_name: HashMap<String, (u64, u64, u64, Vec<u64>)> = HashMap::new();
    for d in digests {
        for c in &d.commands {
            let name = c.name.clone().unwrap_or_else(|| "?".into());
            let e = by_name.entry(name).or_default();
            e.0 += 1;
            match c.status.as_deref() {
                Some("NO") => e.1 += 1,
                Some("BAD") => e.2 += 1,
                _ => {}
            }
            if let Some(l) = c.latency_us {
                e.3.push(l);
            }
        }
    }
    let mut out: Vec<CommandStats> = by_name
        .into_iter()
        .map(|(name, (count, no, bad, mut lat))| {
            lat.sort_unstable();
            let pick = |q: f64| {
                (!lat.is_empty()).then(|| lat[((lat.len() - 1) as f64 * q).round() as usize])
            };
            CommandStats {
                name,
                count,
                no,
                bad,
                p50_us: pick(0.5),
                p95_us: pick(0.95),
                max_us: lat.last().copied(),
            }
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));
    out
}

/// One message the search found.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub name: String,
    pub seq: u64,
    pub t_us: u64,
    pub from: crate::protocol::Side,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub tag: Option<String>,
    pub status: Option<String>,
    pub line: String,
}

/// Messages matching the filter across the sessions it keeps, at most `limit`; whether the
/// limit cut the list.
pub fn search(index: &Index, filter: &Filter) -> (Vec<Hit>, bool) {
    let limit = filter.limit.unwrap_or(200).clamp(1, 5000);
    let mut hits = Vec::new();
    for row in index.sessions() {
        if !filter.row_matches(&row) {
            continue;
        }
        let Some(path) = index.path_of(&row.name) else {
            continue;
        };
        hits.extend(search_file(
            &path,
            &row.name,
            filter,
            limit + 1 - hits.len(),
        ));
        if hits.len() > limit {
            hits.truncate(limit);
            return (hits, true);
        }
    }
    (hits, false)
}

/// Messages of one session matching the filter, at most `limit`.
fn search_file(path: &Path, name: &str, filter: &Filter, limit: usize) -> Vec<Hit> {
    let mut hits = Vec::new();
    let Ok(mut lines) = Lines::open(path, 0) else {
        return hits;
    };
    let q = given(&filter.q).map(str::to_lowercase);
    let mut mailbox: Option<String> = None;
    // A command's name, by seq, so its completion matches a filter on the command.
    let mut names: HashMap<u64, String> = HashMap::new();
    // Messages that pass the other filters, whose text so far holds no match but whose parts
    // are still to come (a literal over 256 KiB): their hit, and the end of the text so far
    // (a match may straddle two parts).
    let mut unmatched: HashMap<u64, (Hit, String)> = HashMap::new();
    while let Ok(Some((_, line))) = lines.next_line() {
        if lines::record_type(line) == Some(b"part") {
            let Some(q) = q.as_deref() else {
                continue;
            };
            let Some((seq, _)) = lines::part_header(line) else {
                continue;
            };
            let Some((_, before)) = unmatched.get(&seq) else {
                continue;
            };
            let Ok(part) = serde_json::from_slice::<PartRecord>(line) else {
                continue;
            };
            let (text, _) = shown(&part.payload.to_bytes().unwrap_or_default());
            let joined = format!("{before}{text}");
            if joined.to_lowercase().contains(q) {
                if let Some((mut hit, _)) = unmatched.remove(&seq) {
                    hit.line = around(&joined, q);
                    hits.push(hit);
                    if hits.len() >= limit {
                        break;
                    }
                }
            } else if let Some((_, before)) = unmatched.get_mut(&seq) {
                *before = ending(&joined, q.chars().count());
            }
            if part.last {
                unmatched.remove(&seq);
            }
            continue;
        }
        if lines::record_type(line) != Some(b"message") {
            continue;
        }
        let Ok(m) = serde_json::from_slice::<MessageRecord>(line) else {
            continue;
        };
        if m.kind == Kind::Command
            && let Some(n) = &m.name
        {
            names.insert(m.seq, n.to_string());
        }
        let command = match m.kind {
            Kind::Command => m.name.as_deref().map(String::from),
            _ => m
                .command
                .as_deref()
                .map(String::from)
                .or_else(|| m.reply_to.and_then(|r| names.get(&r).cloned())),
        };
        let status = m.status.map(|s| s.as_str().to_string());
        let selected = mailbox.clone();
        if m.mailbox.is_some() {
            mailbox = m.mailbox.clone();
        }
        let bytes = m.payload.to_bytes().unwrap_or_default();
        let (text, _) = shown(&bytes);
        let others = given(&filter.command).is_none_or(|c| {
            command
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(c))
        }) && given(&filter.status).is_none_or(|s| {
            status
                .as_deref()
                .is_some_and(|st| st.eq_ignore_ascii_case(s))
        }) && given(&filter.mailbox).is_none_or(|mb| {
            selected
                .as_deref()
                .or(m.mailbox.as_deref())
                .is_some_and(|x| x.eq_ignore_ascii_case(mb))
        });
        if !others {
            continue;
        }
        let mut hit = Hit {
            name: name.to_string(),
            seq: m.seq,
            t_us: m.t_us,
            from: m.from,
            kind: type_name(m.kind),
            tag: m.tag.as_deref().map(String::from),
            status,
            line: String::new(),
        };
        match q.as_deref() {
            Some(q) if !text.to_lowercase().contains(q) => {
                if m.partial {
                    unmatched.insert(m.seq, (hit, ending(&text, q.chars().count())));
                }
                continue;
            }
            Some(q) => hit.line = around(&text, q),
            None => hit.line = first_line(text.as_bytes()),
        }
        hits.push(hit);
        if hits.len() >= limit {
            break;
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(name: &str, status: &str, latency: u64) -> Command {
        Command {
            seq: 0,
            t_us: 0,
            latency_us: Some(latency),
            tag: None,
            name: Some(name.into()),
            status: Some(status.into()),
            summary: String::new(),
            mailbox: None,
        }
    }

    #[test]
    fn statistics_per_command() {
        let d = Digest {
            name: "x".into(),
            client: String::new(),
            user: None,
            start_us: 0,
            end_us: 0,
            open: false,
            commands: (1..=100)
                .map(|i| command("FETCH", if i == 7 { "NO" } else { "OK" }, i))
                .chain([command("LOGIN", "BAD", 5000)])
                .collect(),
        };
        let s = stats(&[Arc::new(d)]);
        assert_eq!(s[0].name, "FETCH");
        assert_eq!((s[0].count, s[0].no, s[0].bad), (100, 1, 0));
        assert_eq!(
            (s[0].p50_us, s[0].p95_us, s[0].max_us),
            (Some(51), Some(95), Some(100))
        );
        assert_eq!((s[1].name.as_str(), s[1].bad), ("LOGIN", 1));
    }

    #[test]
    fn text_is_found_in_the_parts_of_a_large_message_and_shown_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.jsonl");
        let head = "x".repeat(200);
        let lines = [
            r#"{"type":"session","version":1,"imapscope":"t","id":1,"client":"c","listen":"l","upstream":"u","start":"2026-11-27T10:00:00.000000Z","redaction":true}"#.to_string(),
            format!(r#"{{"type":"message","seq":2,"t_us":1,"from":"server","kind":"untagged","name":"FETCH","partial":true,"text":"* 1 FETCH (BODY[] {{900}}\r\n{head}"}}"#),
            format!(r#"{{"type":"part","seq":2,"t_us":2,"from":"server","text":"{head}nee","last":false}}"#),
            format!(r#"{{"type":"part","seq":2,"t_us":3,"from":"server","text":"dle and more{head})\r\n","last":true}}"#),
        ];
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let filter = Filter {
            q: Some("needle".into()),
            ..Filter::default()
        };
        let hits = search_file(&path, "big.jsonl", &filter, 10);
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(hits[0].seq, 2);
        assert!(hits[0].line.contains("needle and more"), "{}", hits[0].line);
        let none = Filter {
            q: Some("absent".into()),
            ..Filter::default()
        };
        assert!(search_file(&path, "big.jsonl", &none, 10).is_empty());
    }
}
