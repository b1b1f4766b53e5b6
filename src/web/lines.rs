//! Reads a transcript line by line with each line's file offset, cheaply.
//!
//! The web view lists thousands of transcripts and opens ones holding 100 MB literals, so it
//! cannot parse every line of every file: a literal's parts are most of the bytes and say
//! little. [`Lines`] hands out raw lines with their offsets; [`part_header`] reads a part
//! line's seq and side without decoding its payload, and [`payload_len`] counts the bytes its
//! payload decodes to by scanning the JSON string, never allocating it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use memchr::memchr;

/// How much of a file is read at once.
const BUFFER: usize = 1 << 20;

/// The longest line held (see [`Lines::next_line`]). The recorder writes a message in parts
/// of 256 KiB, under 2 MB as JSON whatever the bytes.
pub const MAX_LINE: usize = 16 << 20;

/// The lines of a file from an offset, each with the offset it starts at.
pub struct Lines {
    reader: BufReader<File>,
    offset: u64,
    line: Vec<u8>,
}

impl Lines {
    pub fn open(path: &Path, from: u64) -> std::io::Result<Lines> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(from))?;
        Ok(Lines {
            reader: BufReader::with_capacity(BUFFER, file),
            offset: from,
            line: Vec::new(),
        })
    }

    /// The next complete line (without its `\n`) and its offset. A last line without `\n` is
    /// still being written (or was torn): it is not returned, and [`Lines::offset`] stays
    /// before it, so a reader following the file picks it up once it is complete.
    ///
    /// A line longer than [`MAX_LINE`] (no transcript writes one; any `.jsonl` in the
    /// directory is read) comes out empty, read through without being held.
    pub fn next_line(&mut self) -> std::io::Result<Option<(u64, &[u8])>> {
        self.line.clear();
        let mut n = 0u64;
        let mut too_long = false;
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            let (take, found) = match memchr(b'\n', buf) {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if !too_long && self.line.len() + take > MAX_LINE + 1 {
                too_long = true;
                self.line = Vec::new();
            }
            if !too_long {
                self.line.extend_from_slice(&buf[..take]);
            }
            n += take as u64;
            self.reader.consume(take);
            if found {
                break;
            }
        }
        let at = self.offset;
        self.offset += n;
        self.line.pop();
        Ok(Some((at, &self.line)))
    }

    /// Where the next complete line starts.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

/// The first `len` bytes of a file (fewer if it is shorter).
pub fn head(path: &Path, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    File::open(path)?.take(len as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The last complete line of a file, if it fits in its last `window` bytes.
pub fn last_line(path: &Path, window: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let from = len.saturating_sub(window);
    file.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::with_capacity((len - from) as usize);
    file.read_to_end(&mut buf)?;
    if buf.last() != Some(&b'\n') {
        return Ok(None);
    }
    buf.pop();
    let start = buf.iter().rposition(|&b| b == b'\n').map(|i| i + 1);
    match start {
        Some(s) => Ok(Some(buf[s..].to_vec())),
        None if from == 0 => Ok(Some(buf)),
        None => Ok(None),
    }
}

/// The record type of a line: `session`, `message`, `part`... (the writer puts `type` first).
pub fn record_type(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_prefix(b"{\"type\":\"")?;
    let end = memchr(b'"', rest)?;
    Some(&rest[..end])
}

/// A part line's seq and whether it is the server's, read from its first fields.
pub fn part_header(line: &[u8]) -> Option<(u64, bool)> {
    let seq = number_after(line, b"\"seq\":")?;
    let from = find(line, b"\"from\":\"")?;
    let server = line[from + 8..].starts_with(b"server");
    Some((seq, server))
}

/// A line's `t_us`, read from its fields without parsing it.
pub fn t_us(line: &[u8]) -> Option<u64> {
    number_after(line, b"\"t_us\":")
}

fn number_after(line: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(line, key)? + key.len();
    let digits: &[u8] = &line[at..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// How many bytes the payload of a message or part line decodes to (its `text` JSON string,
/// or its `base64`), without decoding it.
pub fn payload_len(line: &[u8]) -> u64 {
    if let Some(at) = find(line, b"\"text\":\"") {
        return json_string_len(&line[at + 8..]);
    }
    if let Some(at) = find(line, b"\"base64\":\"") {
        let rest = &line[at + 10..];
        let end = memchr(b'"', rest).unwrap_or(rest.len());
        return crate::transcript::format::base64_len(&rest[..end]) as u64;
    }
    0
}

/// The decoded UTF-8 length of the JSON string starting just after its opening quote.
fn json_string_len(s: &[u8]) -> u64 {
    let mut len = 0u64;
    let mut i = 0;
    while i < s.len() {
        let Some(stop) = memchr::memchr2(b'"', b'\\', &s[i..]) else {
            return len + (s.len() - i) as u64;
        };
        len += stop as u64;
        i += stop;
        if s[i] == b'"' {
            return len;
        }
        // An escape.
        match s.get(i + 1) {
            Some(b'u') => {
                let code = s
                    .get(i + 2..i + 6)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .unwrap_or(0);
                i += 6;
                len += match code {
                    0..=0x7f => 1,
                    0x80..=0x7ff => 2,
                    // A high surrogate: with its low half, one 4-byte character.
                    0xd800..=0xdbff if s.get(i..i + 2) == Some(b"\\u") => {
                        i += 6;
                        4
                    }
                    _ => 3,
                };
            }
            Some(_) => {
                i += 2;
                len += 1;
            }
            None => return len,
        }
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_lengths_match_what_decodes() {
        for text in [
            "a1 OK done\r\n",
            "quote \" backslash \\ tab \t nul \u{0} é € 😀",
            "",
        ] {
            let line = serde_json::json!({"type": "part", "seq": 3, "from": "client", "text": text, "last": true})
                .to_string();
            assert_eq!(payload_len(line.as_bytes()), text.len() as u64, "{line}");
        }
        let line =
            r#"{"type":"part","seq":9,"t_us":1,"from":"server","base64":"/wABAg==","last":false}"#;
        assert_eq!(payload_len(line.as_bytes()), 4);
        assert_eq!(part_header(line.as_bytes()), Some((9, true)));
        assert_eq!(record_type(line.as_bytes()), Some(&b"part"[..]));
    }

    #[test]
    fn lines_carry_their_offsets_and_skip_an_unfinished_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        std::fs::write(&path, b"one\ntwo\nthr").unwrap();
        let mut lines = Lines::open(&path, 0).unwrap();
        assert_eq!(lines.next_line().unwrap(), Some((0, &b"one"[..])));
        assert_eq!(lines.next_line().unwrap(), Some((4, &b"two"[..])));
        assert_eq!(lines.next_line().unwrap(), None);
        assert_eq!(lines.offset(), 8);
        assert_eq!(last_line(&path, 64).unwrap(), None);
        std::fs::write(&path, b"one\ntwo\n").unwrap();
        assert_eq!(last_line(&path, 64).unwrap(), Some(b"two".to_vec()));
        assert_eq!(head(&path, 5).unwrap(), b"one\nt");
    }

    #[test]
    fn a_line_too_long_to_hold_is_read_through_not_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.jsonl");
        let mut bytes = vec![b'x'; MAX_LINE + 10];
        bytes.extend_from_slice(b"\n{\"type\":\"end\"}\n{\"torn");
        std::fs::write(&path, &bytes).unwrap();
        let mut lines = Lines::open(&path, 0).unwrap();
        assert_eq!(lines.next_line().unwrap(), Some((0, &b""[..])));
        let at = (MAX_LINE + 11) as u64;
        assert_eq!(
            lines.next_line().unwrap(),
            Some((at, &b"{\"type\":\"end\"}"[..]))
        );
        assert_eq!(lines.next_line().unwrap(), None);
        assert_eq!(lines.offset(), at + 15);
        assert!(lines.line.capacity() < MAX_LINE);
    }
}
