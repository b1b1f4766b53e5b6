//! Replay: recordings as regression tests.
//!
//! - [`capture`] reads the set of connections one client made, in the order they started.
//! - [`script`] turns a transcript into units to play, putting credentials back.
//! - [`canon`] and [`matcher`] compare server responses the way Dovecot's imaptest does
//!   (variables for volatile values, any order within a command) and render the diff.
//! - [`attribution`] tells which of several pipelined commands an untagged response answers.
//! - [`replayer`] plays the client side against a live server.
//! - [`serve`] plays the server side to a client under test: a fake IMAP server;
//!   [`pool`] holds a capture's exchanges, handed to whichever connection asks for one.
//!
//! The comparison and the serving decisions are pure; the replayer and the fake server are
//! thin async shells around them.

pub mod attribution;
pub mod canon;
pub mod capture;
pub mod matcher;
pub mod pool;
pub mod replayer;
pub mod sasl;
pub mod script;
pub mod serve;

pub use capture::{Capture, CaptureError};
pub use matcher::{Comparison, Extras, ShownDifferences};
pub use replayer::{ReplayOptions, ReplayReport, replay, replay_capture};
pub use script::{Login, Script, ScriptError};
pub use serve::{FakeServer, MatchMode, ServeOptions, ServeReport};
