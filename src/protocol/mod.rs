//! The IMAP protocol core: pure code, bytes and timestamps in, events out.
//!
//! Nothing here touches a socket, a file or a clock, so every piece is tested by feeding it
//! bytes. The flow is [`framer`] (lines and literals) -> [`token`] (the generic token tree) ->
//! [`message`] (tag, name, status of one message) -> [`tracker`] (the session: pairing,
//! state, exchanges). [`redact`] finds the credentials that must not reach disk; [`starttls`]
//! finds the exact STARTTLS boundary for a relay that terminates TLS itself.
//!
//! What must not live here: I/O, async code, transcript encoding.

pub mod compress;
pub mod framer;
pub mod message;
pub mod redact;
pub mod starttls;
pub mod token;
pub mod tracker;

pub use framer::{Fragment, Framer};
pub use message::Status;
pub use tracker::{Detail, Event, Message, SessionTracker};

/// Which peer sent the bytes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    #[default]
    Client,
    Server,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }

    /// The other peer.
    pub fn peer(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

/// What role a message plays in the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The server's first message.
    Greeting,
    /// A tagged client command.
    #[default]
    Command,
    /// The server's `+` asking for more.
    ContinuationRequest,
    /// A client line inside AUTHENTICATE.
    SaslData,
    /// `* ...` from the server.
    Untagged,
    /// The server's tagged OK/NO/BAD for a command.
    Completion,
    /// The client's `DONE` ending IDLE.
    IdleDone,
    /// A server line that fits none of the above.
    Unknown,
}
