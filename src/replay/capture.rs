//! A capture: the connections one client made, as a set of transcripts.
//!
//! A desktop client opens several connections at once (Thunderbird five), so a recording of
//! what it did is a set of files, not one. A capture is named as a person has it at hand: files,
//! directories (their `*.jsonl`) or glob patterns. Its sessions are ordered by when they
//! started (the session line's `start`), not by file name, and sessions with nothing to play
//! (a port probe, a health check: no greeting or no command) are set aside with a note instead
//! of failing the run.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::script::{Script, ScriptError};
use crate::transcript::read_transcript;

/// The playable sessions of a capture, in the order they started.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    pub scripts: Vec<Script>,
    /// One line per session set aside, saying why.
    pub skipped: Vec<String>,
}

/// Why a capture cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{0}: no such file or directory, and no file matches it as a pattern")]
    NothingThere(String),
    #[error("{path}: {why}")]
    Unreadable { path: String, why: String },
    #[error("{0}")]
    Script(#[from] ScriptError),
    #[error("no session to play in {0}")]
    Empty(String),
}

impl Capture {
    /// Reads every transcript named by `paths` (files, directories, glob patterns).
    pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<Capture, CaptureError> {
        let mut files = Vec::new();
        for path in paths {
            files.extend(expand(path.as_ref())?);
        }
        files.sort();
        files.dedup();
        let mut capture = Capture::default();
        for file in &files {
            let name = file.display().to_string();
            let transcript = read_transcript(file).map_err(|e| CaptureError::Unreadable {
                path: name.clone(),
                why: e.to_string(),
            })?;
            match Script::from_transcript(&name, &transcript) {
                Ok(script) => capture.scripts.push(script),
                Err(e) if e.is_empty_session() => capture.skipped.push(format!("skipped {e}")),
                Err(e) => return Err(e.into()),
            }
        }
        capture
            .scripts
            .sort_by_key(|s| (started(s), s.name.clone()));
        if capture.scripts.is_empty() {
            let named: Vec<String> = paths
                .iter()
                .map(|p| p.as_ref().display().to_string())
                .collect();
            return Err(CaptureError::Empty(named.join(" ")));
        }
        Ok(capture)
    }

    /// Credentials put back where the recording hid them (see [`Script::with_login`]).
    pub fn with_login(mut self, logins: &[super::Login]) -> Result<Capture, ScriptError> {
        self.scripts = self
            .scripts
            .into_iter()
            .map(|s| s.with_login(logins))
            .collect::<Result<_, _>>()?;
        Ok(self)
    }

    /// When each session started, relative to the first.
    pub fn offsets(&self) -> Vec<Duration> {
        let first = self.scripts.iter().filter_map(started).min();
        self.scripts
            .iter()
            .map(|s| match (started(s), first) {
                (Some(t), Some(f)) => t.duration_since(f).unwrap_or_default(),
                _ => Duration::ZERO,
            })
            .collect()
    }
}

impl Capture {
    /// Whether two of the sessions were open at the same time in the recording: then what
    /// one did may show in the other, and only `--concurrent` replays them so.
    pub fn overlapping(&self) -> bool {
        let mut spans: Vec<(Duration, Duration)> = self
            .scripts
            .iter()
            .zip(self.offsets())
            .map(|(s, from)| {
                let last = s.timeline.last().map_or(0, |u| u.t_us);
                (from, from + Duration::from_micros(last))
            })
            .collect();
        spans.sort();
        spans.windows(2).any(|w| w[1].0 < w[0].1)
    }
}

fn started(script: &Script) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(script.start.as_deref()?.trim_end_matches('Z')).ok()
}

/// The transcript files one argument names: a file, a directory's `.jsonl` files, or a
/// glob pattern.
pub fn expand(path: &Path) -> Result<Vec<PathBuf>, CaptureError> {
    let shown = path.display().to_string();
    if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| CaptureError::Unreadable {
            path: shown.clone(),
            why: e.to_string(),
        })?;
        return Ok(entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "jsonl"))
            .collect());
    }
    if path.exists() {
        return Ok(vec![path.to_path_buf()]);
    }
    let matched: Vec<PathBuf> = glob::glob(&shown)
        .map_err(|e| CaptureError::Unreadable {
            path: shown.clone(),
            why: format!("not a usable pattern: {e}"),
        })?
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .collect();
    if matched.is_empty() {
        return Err(CaptureError::NothingThere(shown));
    }
    Ok(matched)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, start: &str, commands: bool) {
        let mut text = format!(
            "{{\"type\":\"session\",\"version\":1,\"imapscope\":\"test\",\"id\":1,\"client\":\"c\",\"listen\":\"l\",\"upstream\":\"u\",\"start\":\"{start}\",\"redaction\":true}}\n"
        );
        text.push_str("{\"type\":\"message\",\"seq\":1,\"t_us\":0,\"from\":\"server\",\"kind\":\"greeting\",\"text\":\"* OK ready\\r\\n\"}\n");
        if commands {
            text.push_str("{\"type\":\"message\",\"seq\":2,\"t_us\":5,\"from\":\"client\",\"kind\":\"command\",\"tag\":\"a\",\"name\":\"NOOP\",\"text\":\"a NOOP\\r\\n\"}\n");
        }
        std::fs::write(dir.join(name), text).unwrap();
    }

    /// Sessions that ran at the same time are told apart from ones that ran one after the
    /// other (a NOOP 5 µs after each start: a session lasts 5 µs here).
    #[test]
    fn sessions_open_at_once_are_found() {
        let apart = tempfile::tempdir().unwrap();
        write(apart.path(), "a.jsonl", "2026-11-27T10:00:00.000000Z", true);
        write(apart.path(), "b.jsonl", "2026-11-27T10:00:01.000000Z", true);
        assert!(
            !Capture::load(&[apart.path().to_path_buf()])
                .unwrap()
                .overlapping()
        );
        let together = tempfile::tempdir().unwrap();
        write(
            together.path(),
            "a.jsonl",
            "2026-11-27T10:00:00.000000Z",
            true,
        );
        write(
            together.path(),
            "b.jsonl",
            "2026-11-27T10:00:00.000002Z",
            true,
        );
        assert!(
            Capture::load(&[together.path().to_path_buf()])
                .unwrap()
                .overlapping()
        );
    }

    #[test]
    fn sessions_run_in_start_order_and_probes_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.jsonl", "2026-11-27T10:00:02.000000Z", true);
        write(dir.path(), "b.jsonl", "2026-11-27T10:00:00.500000Z", true);
        write(dir.path(), "c.jsonl", "2026-11-27T10:00:01.000000Z", false);
        std::fs::write(dir.path().join("notes.txt"), "not a transcript").unwrap();
        let capture = Capture::load(&[dir.path()]).unwrap();
        let names: Vec<_> = capture
            .scripts
            .iter()
            .map(|s| Path::new(&s.name).file_name().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["b.jsonl", "a.jsonl"]);
        assert_eq!(capture.skipped.len(), 1, "{:?}", capture.skipped);
        assert!(
            capture.skipped[0].contains("c.jsonl"),
            "{:?}",
            capture.skipped
        );
        assert_eq!(
            capture.offsets(),
            [Duration::ZERO, Duration::from_millis(1500)]
        );
        let pattern = dir.path().join("*.jsonl");
        assert_eq!(Capture::load(&[pattern]).unwrap().scripts.len(), 2);
        assert!(matches!(
            Capture::load(&[dir.path().join("nothing-*.jsonl")]),
            Err(CaptureError::NothingThere(_))
        ));
    }
}
