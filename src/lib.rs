//! imapscope: an IMAP relay that records annotated, replayable transcripts.
//!
//! The crate is laid out in the order a byte travels:
//!
//! - [`protocol`]: the sans-I/O core. Framing, the token tree, the session tracker and
//!   redaction. Bytes and timestamps in, events out; no sockets, no clocks.
//! - [`transcript`]: the JSON Lines format, the one writer every record goes through (it
//!   applies redaction, so nothing can bypass it) and a reader that tolerates a torn last line.
//! - [`tls`]: imapscope's certificate authority, both legs' TLS configurations and the facts
//!   of each handshake. No sockets.
//! - [`relay`]: the thin async shell. Accepts clients, connects upstream, copies bytes both
//!   ways as they arrive and hands a copy to a per-connection recorder; graceful shutdown.
//!
//! - [`replay`]: recordings as regression tests: replay the client side against a live
//!   server and diff the answers, or serve the server side to a client under test.
//!
//! - [`show`]: transcripts for people (`show`, `show --stats`, `ls`).
//! - [`import`]: other tools' logs (Dovecot's rawlog) as transcripts.
//! - [`private_dir`]: the directories for transcripts and the CA key, kept owner-only.
//!
//! The `imapscope` binary (`src/main.rs`) turns command-line options into these pieces.

pub mod import;
pub mod private_dir;
pub mod protocol;
pub mod relay;
pub mod replay;
pub mod show;
pub mod tls;
pub mod transcript;
pub mod web;
