//! Property tests beside the fuzz targets in `fuzz/` (which run only where cargo-fuzz builds):
//! arbitrary bytes and arbitrary framings through every pure component must never panic,
//! never allocate without bound, and redaction must remove every secret however the stream is
//! split. Inputs the fuzzers find become cases here.

use imapscope::protocol::message::{parse_command, parse_response, parse_response_head};
use imapscope::protocol::token::Tokenizer;
use imapscope::protocol::{Event, SessionTracker, Side};
use imapscope::replay::canon::{Bindings, canon, matches};
use imapscope::transcript::TranscriptWriter;
use imapscope::transcript::reader::parse_transcript;
use proptest::prelude::*;

/// Bytes that look like IMAP often enough to reach deep states, and like garbage otherwise.
fn imapish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"a1 LOGIN nell secret\r\n".to_vec()),
        Just(b"* 1 FETCH (BODY[] {4}\r\nabcd)\r\n".to_vec()),
        Just(b"a2 AUTHENTICATE PLAIN\r\n".to_vec()),
        Just(b"+ \r\n".to_vec()),
        Just(b"a3 IDLE\r\n".to_vec()),
        Just(b"DONE\r\n".to_vec()),
        Just(b"a4 STARTTLS\r\n".to_vec()),
        Just(b"a5 COMPRESS DEFLATE\r\n".to_vec()),
        Just(b"a5 OK\r\n".to_vec()),
        Just(b"a1 OK [CAPABILITY IMAP4rev1] x\r\n".to_vec()),
        Just(b"{99999999999}\r\n".to_vec()),
        Just(b"~{3}\r\n\x00\x01\x02".to_vec()),
        Just(b"((((\"\\".to_vec()),
        prop::collection::vec(any::<u8>(), 0..64),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn tokenizer_and_heads_never_panic(bytes in imapish()) {
        let _ = Tokenizer::new(&bytes).rest();
        let _ = parse_command(&bytes);
        let full = parse_response(&bytes);
        let _ = canon(&bytes);
        // The tracker's cheaper read says the same of the head; it only keeps fewer tokens.
        let head = parse_response_head(&bytes);
        prop_assert_eq!(
            (&head.tag, &head.name, head.number, head.status, &head.code, &head.error),
            (&full.tag, &full.name, full.number, full.status, &full.code, &full.error)
        );
    }

    #[test]
    fn tracker_never_panics_and_stays_bounded(
        client in imapish(),
        server in imapish(),
        cuts in prop::collection::vec(1usize..50, 1..10),
    ) {
        let mut tracker = SessionTracker::new();
        let mut events = Vec::new();
        let (mut c, mut s) = (&client[..], &server[..]);
        let mut i = 0;
        while !c.is_empty() || !s.is_empty() {
            let n = cuts[i % cuts.len()];
            i += 1;
            let take = n.min(s.len());
            tracker.on_bytes(Side::Server, i as u64, &s[..take], &mut events);
            s = &s[take..];
            let take = n.min(c.len());
            tracker.on_bytes(Side::Client, i as u64, &c[..take], &mut events);
            c = &c[take..];
        }
        tracker.finish(0, &mut events);
        for e in &events {
            if let Event::Message(m) = e {
                prop_assert!(m.bytes.len() <= imapscope::protocol::tracker::MESSAGE_HOLD_LIMIT);
            }
        }
    }

    #[test]
    fn matcher_never_panics(a in imapish(), b in imapish()) {
        let mut bindings = Bindings::default();
        let _ = matches(&canon(&a), &canon(&b), &mut bindings);
    }

    #[test]
    fn reader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_transcript(&bytes[..], "fuzz");
        let mut header = br#"{"type":"session","version":1,"imapscope":"x","id":1,"client":"c","listen":"l","upstream":"u","start":"s","redaction":true}"#.to_vec();
        header.push(b'\n');
        header.extend_from_slice(&bytes);
        let _ = parse_transcript(&header[..], "fuzz");
    }

    /// However LOGIN and AUTHENTICATE are framed and split, the password never reaches the
    /// transcript: atom, quoted, synchronizing literal, LITERAL+, SASL-IR, multi-step SASL,
    /// OAuth tokens (XOAUTH2 with SASL-IR, OAUTHBEARER after the server's `+`).
    #[test]
    fn redaction_removes_every_secret_whatever_the_framing(
        form in 0usize..8,
        cuts in prop::collection::vec(1usize..40, 1..8),
    ) {
        let secret = "S3cr3tPassw0rd";
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let plain = b64(&format!("\0nell\0{secret}"));
        let xoauth2 = b64(&format!("user=nell\x01auth=Bearer {secret}\x01\x01"));
        let bearer = b64(&format!("n,a=nell,\x01auth=Bearer {secret}\x01\x01"));
        let (client, server): (Vec<u8>, Vec<u8>) = match form {
            0 => (format!("a LOGIN nell {secret}\r\n").into_bytes(), b"* OK\r\na OK\r\n".to_vec()),
            1 => (format!("a LOGIN \"nell\" \"{secret}\"\r\n").into_bytes(), b"* OK\r\na OK\r\n".to_vec()),
            2 => (format!("a LOGIN {{4}}\r\nnell {{{}}}\r\n{secret}\r\n", secret.len()).into_bytes(),
                  b"* OK\r\n+ go\r\n+ go\r\na OK\r\n".to_vec()),
            3 => (format!("a LOGIN nell {{{}+}}\r\n{secret}\r\n", secret.len()).into_bytes(), b"* OK\r\na OK\r\n".to_vec()),
            4 => (format!("a AUTHENTICATE PLAIN {plain}\r\n").into_bytes(), b"* OK\r\na OK\r\n".to_vec()),
            6 => (format!("a AUTHENTICATE XOAUTH2 {xoauth2}\r\n").into_bytes(),
                  b"* OK\r\na OK\r\n".to_vec()),
            7 => (format!("a AUTHENTICATE OAUTHBEARER\r\n{bearer}\r\n").into_bytes(),
                  b"* OK\r\n+ \r\na OK\r\n".to_vec()),
            _ => (format!("a AUTHENTICATE LOGIN\r\n{}\r\n{}\r\n", b64("nell"), b64(secret)).into_bytes(),
                  b"* OK\r\n+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\na OK\r\n".to_vec()),
        };
        // Interleave as a real exchange would: each server line releases the next client piece.
        let mut tracker = SessionTracker::new();
        let mut events = Vec::new();
        let server_lines: Vec<&[u8]> = server.split_inclusive(|&b| b == b'\n').collect();
        let mut client_rest = &client[..];
        for (i, line) in server_lines.iter().enumerate() {
            tracker.on_bytes(Side::Server, 0, line, &mut events);
            // Client bytes up to the next line end (or all at the end), in arbitrary cuts.
            let upto = if i + 1 < server_lines.len() {
                client_rest.iter().position(|&b| b == b'\n').map_or(client_rest.len(), |p| p + 1)
            } else {
                client_rest.len()
            };
            let (now, later) = client_rest.split_at(upto);
            client_rest = later;
            let mut piece = now;
            let mut k = 0;
            while !piece.is_empty() {
                let n = cuts[k % cuts.len()].min(piece.len());
                k += 1;
                tracker.on_bytes(Side::Client, 0, &piece[..n], &mut events);
                piece = &piece[n..];
            }
        }
        tracker.finish(0, &mut events);
        let mut writer = TranscriptWriter::in_memory(true);
        for e in events {
            writer.event(e);
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(writer.flush()).unwrap();
        let text = String::from_utf8(writer.take_memory()).unwrap();
        prop_assert!(!text.contains(secret), "form {form}: {text}");
        prop_assert!(!text.contains(&plain), "form {form}: {text}");
        prop_assert!(!text.contains(&b64(secret)), "form {form}: {text}");
        prop_assert!(!text.contains(&xoauth2) && !text.contains(&bearer), "form {form}: {text}");
    }
}

/// Inputs the fuzzers found (`fuzz/regressions/`), replayed as the `tracker` fuzz target
/// reads them: the transcript written for them must read back whole.
#[test]
fn fuzz_regressions_write_transcripts_that_read_back() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/tracker");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/regressions/tracker") {
        let data = std::fs::read(entry.expect("entry").path()).expect("readable");
        let mut tracker = SessionTracker::new();
        let mut writer = TranscriptWriter::in_memory(true);
        let mut events = Vec::new();
        let mut rest = &data[..];
        let mut t_us = 0;
        while let Some((&control, tail)) = rest.split_first() {
            let side = if control & 1 == 0 {
                Side::Client
            } else {
                Side::Server
            };
            let len = (usize::from(control >> 1) + 1).min(tail.len());
            let (chunk, after) = tail.split_at(len);
            rest = after;
            t_us += 7;
            tracker.on_bytes(side, t_us, chunk, &mut events);
        }
        tracker.finish(t_us, &mut events);
        for e in events {
            writer.event(e);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(writer.flush()).unwrap();
        let mut file = br#"{"type":"session","version":1,"imapscope":"x","id":1,"client":"c","listen":"l","upstream":"u","start":"s","redaction":true}"#.to_vec();
        file.push(b'\n');
        file.extend_from_slice(&writer.take_memory());
        let transcript = parse_transcript(&file[..], "regression").expect("reads back");
        assert!(!transcript.torn_last_line);
        assert!(transcript.records.len() > 1);
        seen += 1;
    }
    assert!(seen > 0, "no regression inputs in {}", dir.display());
}
