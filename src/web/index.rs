//! The list of sessions under a directory, kept fresh and cheap to ask for.
//!
//! A session's row comes from its first lines (the session and `tls` lines) and its last (the
//! end line, which carries the counts), so listing 2,000 transcripts reads a few kilobytes of
//! each, whatever their size. A transcript still being written, or one from before the end
//! line carried counts, is read through once. Rows are cached by file size and modification
//! time, so asking again costs a directory walk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::lines::{self, Lines};
use crate::protocol::{Kind, Status};
use crate::transcript::format::{EndRecord, Record, SessionRecord, TlsRecord};

/// How much of a file's start is read for its session and `tls` lines.
const HEAD: usize = 64 * 1024;
/// How much of its end is read for the end line.
const TAIL: u64 = 64 * 1024;

/// One row of the session list (see docs/web.md).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub name: String,
    pub start: String,
    pub start_us: i64,
    pub duration_s: f64,
    pub client: String,
    pub user: Option<String>,
    pub upstream: String,
    pub tls: TlsLegs,
    pub compress: bool,
    pub commands: u64,
    pub no: u64,
    pub bad: u64,
    pub bytes_from_client: u64,
    pub bytes_from_server: u64,
    pub size: u64,
    pub open: bool,
    pub end_reason: Option<String>,
    pub errors: u64,
}

/// The TLS version of each leg, `None` for a plain one.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TlsLegs {
    pub client: Option<String>,
    pub upstream: Option<String>,
}

/// Every transcript under a directory, as rows. See the module documentation.
pub struct Index {
    dir: PathBuf,
    cache: Mutex<HashMap<PathBuf, (u64, SystemTime, Summary)>>,
    /// The last listing, shared by every live event stream: however many tabs are open,
    /// the directory is walked once per poll, and a tab whose last listing has the same
    /// generation compares nothing.
    latest: Mutex<Option<Snapshot>>,
}

/// One listing, when it was made, and a number that changes whenever a row did.
#[derive(Clone)]
pub struct Snapshot {
    pub generation: u64,
    pub rows: Arc<Vec<Summary>>,
    taken: Instant,
}

impl Index {
    pub fn new(dir: &Path) -> Index {
        Index {
            dir: dir.to_path_buf(),
            cache: Mutex::new(HashMap::new()),
            latest: Mutex::new(None),
        }
    }

    /// The listing, walked again only if the last one is older than `max_age`. Callers
    /// asking at once wait for one walk rather than making one each.
    pub fn snapshot(&self, max_age: Duration) -> Snapshot {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = latest.as_ref()
            && s.taken.elapsed() < max_age
        {
            return s.clone();
        }
        let rows = self.sessions();
        let generation = match latest.as_ref() {
            Some(s) if *s.rows == rows => s.generation,
            Some(s) => s.generation + 1,
            None => 0,
        };
        let snapshot = Snapshot {
            generation,
            rows: Arc::new(rows),
            taken: Instant::now(),
        };
        *latest = Some(snapshot.clone());
        snapshot
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every session, newest first.
    pub fn sessions(&self) -> Vec<Summary> {
        let files = transcript_files(&self.dir);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows = Vec::with_capacity(files.len());
        let mut seen = HashMap::with_capacity(files.len());
        for (path, size, mtime) in files {
            seen.insert(path.clone(), ());
            if let Some((s, m, row)) = cache.get(&path)
                && *s == size
                && *m == mtime
            {
                rows.push(row.clone());
                continue;
            }
            let name = self.name_of(&path);
            if let Some(row) = summarize(&path, name, size) {
                cache.insert(path, (size, mtime, row.clone()));
                rows.push(row);
            }
        }
        cache.retain(|p, _| seen.contains_key(p));
        rows.sort_by(|a, b| b.start_us.cmp(&a.start_us).then(b.name.cmp(&a.name)));
        rows
    }

    /// The path of a session by its name, only if it is a transcript under the directory.
    pub fn path_of(&self, name: &str) -> Option<PathBuf> {
        safe_path(&self.dir, name, ".jsonl")
    }

    fn name_of(&self, path: &Path) -> String {
        path.strip_prefix(&self.dir)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }
}

/// `DIR/NAME` when NAME is a plain relative path to an existing file ending in `suffix` that
/// resolves inside DIR (no `..`, no absolute path, no symlink out of it).
pub fn safe_path(dir: &Path, name: &str, suffix: &str) -> Option<PathBuf> {
    let relative = Path::new(name);
    let plain = relative
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain || !name.ends_with(suffix) || name.len() == suffix.len() {
        return None;
    }
    let path = dir.join(relative);
    let real = path.canonicalize().ok()?;
    let root = dir.canonicalize().ok()?;
    (real.starts_with(&root) && real.is_file()).then_some(path)
}

/// Every `.jsonl` under `dir` (recursively, not following hidden directories), with its size
/// and modification time.
fn transcript_files(dir: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() && !hidden {
                stack.push(path);
            } else if meta.is_file() && path.extension().is_some_and(|e| e == "jsonl") {
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((path, meta.len(), mtime));
            }
        }
    }
    out
}

/// The row of one transcript, or `None` if it is not one.
pub fn summarize(path: &Path, name: String, size: u64) -> Option<Summary> {
    let head = lines::head(path, HEAD).ok()?;
    let mut session: Option<SessionRecord> = None;
    let mut tls = TlsLegs::default();
    for line in head.split(|&b| b == b'\n') {
        match lines::record_type(line) {
            Some(b"session") => session = serde_json::from_slice(line).ok(),
            Some(b"tls") => {
                if let Ok(t) = serde_json::from_slice::<TlsRecord>(line) {
                    note_tls(&mut tls, &t);
                }
            }
            _ => {}
        }
    }
    // A format this imapscope does not know is not guessed at (docs/transcript.md), as `ls`
    // and `show` refuse it.
    let session = session.filter(|s| s.version == crate::transcript::FORMAT_VERSION)?;
    let mut row = Summary {
        name,
        start_us: start_us(&session.start),
        start: session.start,
        duration_s: 0.0,
        client: session.client,
        user: None,
        upstream: session.upstream,
        tls,
        compress: false,
        commands: 0,
        no: 0,
        bad: 0,
        bytes_from_client: 0,
        bytes_from_server: 0,
        size,
        open: true,
        end_reason: None,
        errors: 0,
    };
    let end = lines::last_line(path, TAIL)
        .ok()
        .flatten()
        .filter(|l| lines::record_type(l) == Some(b"end"))
        .and_then(|l| serde_json::from_slice::<EndRecord>(&l).ok());
    match end {
        Some(end) if end.counts.is_some() => apply_end(&mut row, &end),
        _ => scan(path, &mut row),
    }
    Some(row)
}

fn note_tls(legs: &mut TlsLegs, t: &TlsRecord) {
    let version = Some(t.version.clone());
    match t.leg.as_str() {
        "client" => legs.client = version,
        "upstream" => legs.upstream = version,
        _ => {}
    }
}

fn apply_end(row: &mut Summary, end: &EndRecord) {
    row.open = false;
    row.duration_s = end.t_us as f64 / 1e6;
    row.end_reason = Some(end.reason.clone());
    row.bytes_from_client = end.bytes_from_client;
    row.bytes_from_server = end.bytes_from_server;
    row.compress = end.compressed.is_some();
    if end.user.is_some() {
        row.user = end.user.clone();
    }
    if let Some(c) = &end.counts {
        row.commands = c.commands;
        row.no = c.no;
        row.bad = c.bad;
        row.errors = c.errors;
    }
}

/// Reads the whole transcript for what its end line does not say (parts are skipped unread).
fn scan(path: &Path, row: &mut Summary) {
    let Ok(mut lines) = Lines::open(path, 0) else {
        return;
    };
    let (mut commands, mut no, mut bad, mut errors) = (0, 0, 0, 0);
    let (mut from_client, mut from_server) = (0u64, 0u64);
    let mut last_t = 0u64;
    while let Ok(Some((_, line))) = lines.next_line() {
        match lines::record_type(line) {
            Some(b"part") => {
                // A session cut off inside a large literal lasted until its last part.
                last_t = last_t.max(lines::t_us(line).unwrap_or(0));
                let len = lines::payload_len(line);
                match lines::part_header(line) {
                    Some((_, true)) => from_server += len,
                    _ => from_client += len,
                }
            }
            Some(b"message" | b"end" | b"error" | b"compress" | b"tls" | b"note") => {
                let Ok(record) = serde_json::from_slice::<Record>(line) else {
                    continue;
                };
                match &record {
                    Record::Message(m) => {
                        last_t = last_t.max(m.t_us);
                        let len = m.payload.len() as u64;
                        match m.from {
                            crate::protocol::Side::Client => from_client += len,
                            crate::protocol::Side::Server => from_server += len,
                        }
                        if m.kind == Kind::Command {
                            commands += 1;
                        }
                        if m.kind == Kind::Completion {
                            match m.status {
                                Some(Status::No) => no += 1,
                                Some(Status::Bad) => bad += 1,
                                _ => {}
                            }
                        }
                        if row.user.is_none() {
                            row.user = m.user.clone();
                        }
                    }
                    Record::Error(e) => {
                        errors += 1;
                        last_t = last_t.max(e.t_us);
                    }
                    Record::Compress(_) => row.compress = true,
                    Record::Tls(t) => note_tls(&mut row.tls, t),
                    Record::End(end) => apply_end(row, end),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    row.commands = commands;
    row.no = no;
    row.bad = bad;
    row.errors = errors;
    if row.open {
        row.duration_s = last_t as f64 / 1e6;
        row.bytes_from_client = from_client;
        row.bytes_from_server = from_server;
    }
}

/// Microseconds since the epoch of an RFC 3339 time (0 if unreadable).
pub fn start_us(start: &str) -> i64 {
    humantime::parse_rfc3339(start)
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_leave_the_directory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.jsonl"), "x").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.jsonl"), "x").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        assert!(safe_path(dir.path(), "sub/a.jsonl", ".jsonl").is_some());
        for bad in [
            "",
            "../secret.jsonl",
            "sub/../../secret.jsonl",
            "/etc/passwd",
            "link/secret.jsonl",
            "sub",
            "missing.jsonl",
            "notes.txt",
            ".jsonl",
        ] {
            assert_eq!(safe_path(dir.path(), bad, ".jsonl"), None, "{bad}");
        }
    }

    #[test]
    fn an_unknown_format_is_not_listed_and_an_open_session_lasts_to_its_last_part() {
        let dir = tempfile::tempdir().unwrap();
        let session = |version: u32| {
            format!(
                r#"{{"type":"session","version":{version},"imapscope":"t","id":1,"client":"c","listen":"l","upstream":"u","start":"2026-11-27T10:00:00.000000Z","redaction":true}}"#
            )
        };
        let lines = [
            session(1),
            r#"{"type":"message","seq":2,"t_us":1000,"from":"server","kind":"untagged","partial":true,"text":"* 1 FETCH (BODY[] {9}\r\nabc"}"#.to_string(),
            r#"{"type":"part","seq":2,"t_us":488000,"from":"server","text":"def","last":false}"#.to_string(),
        ];
        let open = dir.path().join("open.jsonl");
        std::fs::write(&open, lines.join("\n") + "\n").unwrap();
        let row = summarize(&open, "open.jsonl".into(), 0).unwrap();
        assert!(row.open);
        assert_eq!(row.duration_s, 0.488);
        let future = dir.path().join("future.jsonl");
        std::fs::write(&future, session(99) + "\n").unwrap();
        assert!(summarize(&future, "future.jsonl".into(), 0).is_none());
    }
}
