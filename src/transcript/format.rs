//! The records of a transcript file, as serde types. `docs/transcript.md` describes them for
//! readers in other languages; this file is the reference.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::protocol::message::Word;
use crate::protocol::{Kind, Side, Status};

/// Bumped when a record changes in a way old readers would misread.
pub const FORMAT_VERSION: u32 = 1;

/// One line of a transcript.
// Most records are messages, so boxing them would save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Record {
    Session(SessionRecord),
    Message(MessageRecord),
    Part(PartRecord),
    Opaque(OpaqueRecord),
    Tls(TlsRecord),
    Compress(CompressRecord),
    Dropped(DroppedRecord),
    Note(NoteRecord),
    Error(ErrorRecord),
    End(EndRecord),
}

/// The note on a message `imapscope import` made up (a rawlog has no greeting and no LOGIN):
/// the importer writes it, replay does not compare what carries it.
pub const SYNTHESIZED: &str = "synthesized by imapscope import: not in the rawlog";

/// The first line: who talked to whom, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub version: u32,
    pub imapscope: String,
    /// Connection number within the imapscope process that recorded it.
    pub id: u64,
    pub client: String,
    pub listen: String,
    pub upstream: String,
    /// RFC 3339, UTC, microseconds.
    pub start: String,
    /// False when recorded with `--record-secrets`.
    pub redaction: bool,
}

/// Exact bytes: as text when they are UTF-8, else base64.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Payload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
}

/// How many bytes padded base64 decodes to, without decoding it.
pub fn base64_len(encoded: &[u8]) -> usize {
    let pad = encoded.iter().rev().take_while(|&&c| c == b'=').count();
    (encoded.len() / 4 * 3).saturating_sub(pad)
}

impl Payload {
    pub fn from_bytes(bytes: Vec<u8>) -> Payload {
        match String::from_utf8(bytes) {
            Ok(text) => Payload {
                text: Some(text),
                base64: None,
            },
            Err(e) => {
                use base64::Engine;
                Payload {
                    text: None,
                    base64: Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
                }
            }
        }
    }

    /// How many bytes it holds, without decoding base64.
    pub fn len(&self) -> usize {
        match (&self.text, &self.base64) {
            (Some(t), _) => t.len(),
            (None, Some(b)) => base64_len(b.as_bytes()),
            (None, None) => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes back; `None` if the base64 is damaged.
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        use base64::Engine;
        match (&self.text, &self.base64) {
            (Some(t), _) => Some(t.as_bytes().to_vec()),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD.decode(b).ok(),
            (None, None) => Some(Vec::new()),
        }
    }
}

/// One IMAP message (or the head of one continued in [`PartRecord`]s).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MessageRecord {
    pub seq: u64,
    pub t_us: u64,
    pub from: Side,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<Word>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Word>,
    #[serde(flatten)]
    pub payload: Payload,
    /// More bytes follow in `part` records with this seq.
    #[serde(default, skip_serializing_if = "is_false")]
    pub partial: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Word>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Word>,
    #[serde(default, skip_serializing_if = "no_seqs")]
    pub in_flight: Arc<[u64]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    /// What was replaced by `<redacted>`: `password`, `sasl-ir`, `sasl-data`, `arguments`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// More bytes of a message whose head was written with `partial`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartRecord {
    pub seq: u64,
    pub t_us: u64,
    pub from: Side,
    #[serde(flatten)]
    pub payload: Payload,
    /// This part ends the message.
    pub last: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub redacted: bool,
}

/// Bytes that were relayed but are not IMAP text (TLS after STARTTLS): counted only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpaqueRecord {
    pub t_us: u64,
    pub from: Side,
    pub len: u64,
    pub what: String,
}

/// A finished TLS handshake on one leg.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TlsRecord {
    pub t_us: u64,
    /// `client` (imapscope's TLS server facing the client) or `upstream`.
    pub leg: String,
    /// `TLSv1_3`, `TLSv1_2`.
    pub version: String,
    /// `TLS13_AES_256_GCM_SHA384`...
    pub cipher: String,
    /// The name the client asked for (client leg) or that imapscope sent (upstream leg).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn: Option<String>,
    /// The certificate presented on this leg: the server's (upstream) or the minted one (client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sans: Vec<String>,
    /// SHA-256 fingerprint of that certificate, `AB:CD:...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Upstream leg: how the certificate was trusted (`chains to a trusted CA`, `pinned by
    /// --upstream-fingerprint`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<String>,
}

/// COMPRESS took effect: the relayed bytes are DEFLATE from here on; the messages that follow
/// are the inflated IMAP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompressRecord {
    pub t_us: u64,
    pub algorithm: String,
}

/// Byte counts of the compressed part of a session, each way.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CompressedCounts {
    /// DEFLATE bytes the client sent, and what they inflated to.
    pub client_compressed: u64,
    pub client_inflated: u64,
    pub server_compressed: u64,
    pub server_inflated: u64,
}

/// Bytes a peer sent that imapscope deliberately did not relay: plaintext after STARTTLS and
/// before the handshake (the CVE-2011-0411 command-injection class).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DroppedRecord {
    pub t_us: u64,
    pub from: Side,
    #[serde(flatten)]
    pub payload: Payload,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoteRecord {
    pub t_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Side>,
    pub note: String,
}

/// Something failed: connecting upstream, a socket error, the disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub t_us: u64,
    /// `upstream-connect`, `client-read`, `upstream-write`, `transcript-write`...
    pub during: String,
    pub message: String,
}

/// The last line.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EndRecord {
    pub t_us: u64,
    /// Human-readable: `client closed`, `server closed`, `imapscope shut down`...
    pub reason: String,
    pub bytes_from_client: u64,
    pub bytes_from_server: u64,
    pub messages: u64,
    /// Commands that never got their completion, by seq.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unanswered: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// After COMPRESS: compressed and inflated byte counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressed: Option<CompressedCounts>,
    /// Bytes the writer could not write (a full disk); the transcript has a gap.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lost_bytes: u64,
    /// What the transcript holds, counted by its writer, so a list of sessions needs only
    /// their last lines. Absent in transcripts written before it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
}

/// Commands, NO and BAD completions, and error lines of a transcript.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub commands: u64,
    pub no: u64,
    pub bad: u64,
    pub errors: u64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn no_seqs(seqs: &Arc<[u64]>) -> bool {
    seqs.is_empty()
}
