//! Reads a transcript back, tolerating what a crash can leave: a torn last line.

use std::io::BufRead;
use std::path::Path;

use super::format::{FORMAT_VERSION, Record};

/// A transcript read from disk.
#[derive(Debug, Default)]
pub struct Transcript {
    pub records: Vec<Record>,
    /// The last line was cut short (imapscope was killed while writing it).
    pub torn_last_line: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not an imapscope transcript (the first line is not a session record)")]
    NotATranscript { path: String },
    #[error(
        "{path}: transcript format version {found}, this imapscope reads version {FORMAT_VERSION}"
    )]
    Version { path: String, found: u32 },
    #[error("{path}:{line}: {reason}")]
    BadLine {
        path: String,
        line: usize,
        reason: String,
    },
}

/// Reads a whole transcript file.
pub fn read_transcript(path: &Path) -> Result<Transcript, ReadError> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| ReadError::Io {
        path: shown.clone(),
        source,
    })?;
    parse_transcript(std::io::BufReader::new(file), &shown)
}

/// Reads a transcript from any reader; `name` is used in errors.
pub fn parse_transcript(reader: impl BufRead, name: &str) -> Result<Transcript, ReadError> {
    let mut transcript = Transcript::default();
    let mut lines = reader.split(b'\n').enumerate().peekable();
    while let Some((index, line)) = lines.next() {
        let line = line.map_err(|source| ReadError::Io {
            path: name.into(),
            source,
        })?;
        let is_last = lines.peek().is_none();
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Record>(&line) {
            Ok(record) => {
                if transcript.records.is_empty() {
                    match &record {
                        Record::Session(s) if s.version != FORMAT_VERSION => {
                            return Err(ReadError::Version {
                                path: name.into(),
                                found: s.version,
                            });
                        }
                        Record::Session(_) => {}
                        _ => {
                            return Err(ReadError::NotATranscript { path: name.into() });
                        }
                    }
                }
                transcript.records.push(record);
            }
            Err(_) if transcript.records.is_empty() && index == 0 => {
                return Err(ReadError::NotATranscript { path: name.into() });
            }
            // A line cut short by a crash, or by a failed write that a gap note follows.
            Err(e) if is_last || e.is_eof() => {
                if is_last {
                    transcript.torn_last_line = true;
                }
            }
            Err(e) => {
                return Err(ReadError::BadLine {
                    path: name.into(),
                    line: index + 1,
                    reason: e.to_string(),
                });
            }
        }
    }
    if transcript.records.is_empty() {
        return Err(ReadError::NotATranscript { path: name.into() });
    }
    Ok(transcript)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = r#"{"type":"session","version":1,"imapscope":"0.1.0","id":1,"client":"c","listen":"l","upstream":"u","start":"2026-11-25T00:00:00Z","redaction":true}"#;

    #[test]
    fn torn_last_line_is_reported_not_fatal() {
        let text = format!(
            "{HEADER}\n{}\n{}",
            r#"{"type":"message","seq":1,"t_us":5,"from":"server","kind":"greeting","text":"* OK\r\n"}"#,
            r#"{"type":"message","seq":2,"t_us":9,"from":"cli"#
        );
        let t = parse_transcript(text.as_bytes(), "t").unwrap();
        assert_eq!(t.records.len(), 2);
        assert!(t.torn_last_line);
    }

    #[test]
    fn refuses_what_is_not_a_transcript() {
        assert!(matches!(
            parse_transcript(&b"hello\n"[..], "x"),
            Err(ReadError::NotATranscript { .. })
        ));
        let v2 = HEADER.replace("\"version\":1", "\"version\":2");
        assert!(matches!(
            parse_transcript(v2.as_bytes(), "x"),
            Err(ReadError::Version { found: 2, .. })
        ));
    }
}
