//! A transcript turned into something to play: the client's units in the order they were
//! sent, the server's messages whole, and the credentials put back where they were redacted.

use std::collections::HashMap;

use super::sasl::Mechanism;
use crate::protocol::message::parse_command;
use crate::protocol::{Kind, Side};
use crate::tls::TlsMode;
use crate::transcript::Transcript;
use crate::transcript::format::Record;

/// One thing a peer sent: a whole message, or a part of a client message (literal data sent
/// after a continuation request).
#[derive(Debug, Clone)]
pub struct Unit {
    pub from: Side,
    /// The message's seq (a part carries its message's).
    pub seq: u64,
    pub t_us: u64,
    pub kind: Kind,
    pub tag: Option<String>,
    pub name: Option<String>,
    pub bytes: Vec<u8>,
    /// This unit continues the message `seq` (it is not its head).
    pub is_part: bool,
    /// A server message the recording has only the start of: the connection closed before
    /// its end (a client killed in the middle of a large FETCH).
    pub cut_short: bool,
    pub reply_to: Option<u64>,
    pub in_flight: Vec<u64>,
    pub redacted: Vec<String>,
    /// The bytes as recorded (secrets hidden), for showing; `bytes` may hold credentials.
    pub shown: Vec<u8>,
    /// For an AUTHENTICATE whose exchange was redacted, and its SASL responses: how to log in
    /// in the new run, where a challenge-response mechanism answers the server's new challenge.
    pub sasl: Option<Box<SaslStep>>,
}

/// What the replayer needs to answer one step of a SASL exchange it rebuilds.
#[derive(Debug, Clone)]
pub struct SaslStep {
    pub mechanism: Mechanism,
    /// The mechanism as the client spelled it, for the command line.
    pub spelled: String,
    pub login: Login,
    /// The command carried an initial response (SASL-IR).
    pub initial_response: bool,
}

/// A transcript ready to be played.
#[derive(Debug, Clone)]
pub struct Script {
    pub name: String,
    pub greeting: Option<Unit>,
    /// Everything after the greeting, in the order it crossed the wire.
    pub timeline: Vec<Unit>,
    /// How the recorded session ended (`server closed`, `client closed`...).
    pub end_reason: Option<String>,
    /// The recording hid credentials.
    pub redacted: bool,
    /// The greeting was made up by `imapscope import` (a rawlog has none): not compared.
    pub synthesized_greeting: bool,
    /// When the recorded connection started (RFC 3339, UTC, as the session line has it).
    pub start: Option<String>,
    /// How each leg did TLS in the recording: a handshake before the greeting is implicit
    /// TLS, one after it is STARTTLS.
    pub upstream_tls: TlsMode,
    pub client_tls: TlsMode,
    /// The name imapscope's certificate for the client carried (its CN): the name the client
    /// accepted, which a fake server presents again to a client that sends no SNI.
    pub client_certificate_name: Option<String>,
    /// The user the recorded session logged in as, when the transcript says.
    pub user: Option<String>,
    /// Set by [`Script::with_login`] when the credentials given are another user's: the
    /// replay logs in as this user instead of the recorded one.
    pub login_as: Option<String>,
    /// Where each client command is in `timeline`, by its seq (a response names its command
    /// by seq; a session of a million responses must not search for it each time).
    pub command_at: HashMap<u64, usize>,
}

/// Why a transcript cannot be played.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("{0}: the transcript has no greeting: the recorded session never reached the server")]
    NoGreeting(String),
    #[error(
        "{0}: the recorded client sent no command (a port probe or a health check): nothing to play"
    )]
    NoCommand(String),
    #[error(
        "{name}: the recording hides credentials ({what}); give them with --login USER:PASS \
         or IMAPSCOPE_LOGIN=USER:PASS"
    )]
    NeedLogin { name: String, what: String },
    #[error("{name}: cannot rebuild the redacted {what}: {why}")]
    CannotRebuild {
        name: String,
        what: String,
        why: String,
    },
    #[error("{name}: damaged record: {why}")]
    Damaged { name: String, why: String },
}

impl ScriptError {
    /// A recording with nothing to play: skipped with a note, not an error of the run.
    pub fn is_empty_session(&self) -> bool {
        matches!(self, ScriptError::NoGreeting(_) | ScriptError::NoCommand(_))
    }
}

/// A user name and password for redacted logins, and a bearer token for XOAUTH2 and
/// OAUTHBEARER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub password: String,
    pub token: Option<String>,
}

impl Login {
    /// `USER:PASS` (the password may contain `:`).
    pub fn parse(text: &str) -> Option<Login> {
        let (user, password) = text.split_once(':')?;
        Some(Login {
            user: user.to_string(),
            password: password.to_string(),
            token: None,
        })
    }

    /// From `IMAPSCOPE_LOGIN`.
    pub fn from_env() -> Option<Login> {
        std::env::var("IMAPSCOPE_LOGIN")
            .ok()
            .and_then(|v| Login::parse(&v))
    }
}

/// The CN of a subject as the transcript writes it (`CN=127.0.0.1, O=imapscope`).
fn common_name(subject: &str) -> Option<String> {
    subject
        .split(',')
        .find_map(|part| part.trim().strip_prefix("CN="))
        .filter(|cn| !cn.is_empty())
        .map(String::from)
}

impl Script {
    /// Builds the script of a transcript. `name` is used in messages (the file name).
    pub fn from_transcript(name: &str, transcript: &Transcript) -> Result<Script, ScriptError> {
        let mut script = Script {
            name: name.to_string(),
            greeting: None,
            timeline: Vec::new(),
            end_reason: None,
            redacted: true,
            synthesized_greeting: false,
            start: None,
            upstream_tls: TlsMode::None,
            client_tls: TlsMode::None,
            client_certificate_name: None,
            user: None,
            login_as: None,
            command_at: HashMap::new(),
        };
        let damaged = |why: String| ScriptError::Damaged {
            name: name.to_string(),
            why,
        };
        // Where each server message's parts go (server messages are compared whole).
        let mut server_index: HashMap<u64, usize> = HashMap::new();
        let mut client_heads: HashMap<u64, usize> = HashMap::new();
        for record in &transcript.records {
            match record {
                Record::Session(s) => {
                    script.redacted = s.redaction;
                    script.start = Some(s.start.clone());
                }
                Record::Tls(t) => {
                    let mode = if script.greeting.is_some() {
                        TlsMode::Starttls
                    } else {
                        TlsMode::Tls
                    };
                    match t.leg.as_str() {
                        "upstream" => script.upstream_tls = mode,
                        "client" => {
                            script.client_tls = mode;
                            script.client_certificate_name =
                                t.subject.as_deref().and_then(common_name);
                        }
                        _ => {}
                    }
                }
                Record::Message(m) => {
                    if script.user.is_none() {
                        script.user = m.user.clone();
                    }
                    let bytes = m
                        .payload
                        .to_bytes()
                        .ok_or_else(|| damaged(format!("message {} has bad base64", m.seq)))?;
                    let unit = Unit {
                        from: m.from,
                        seq: m.seq,
                        t_us: m.t_us,
                        kind: m.kind,
                        tag: m.tag.as_deref().map(String::from),
                        name: m.name.as_deref().map(String::from),
                        shown: bytes.clone(),
                        bytes,
                        is_part: false,
                        // Until its last part says otherwise.
                        cut_short: m.from == Side::Server && m.partial,
                        reply_to: m.reply_to,
                        in_flight: m.in_flight.to_vec(),
                        redacted: m.redacted.clone(),
                        sasl: None,
                    };
                    if m.kind == Kind::Greeting {
                        script.synthesized_greeting = m
                            .notes
                            .iter()
                            .any(|n| n == crate::transcript::format::SYNTHESIZED);
                        script.greeting = Some(unit);
                        continue;
                    }
                    match m.from {
                        Side::Server => {
                            server_index.insert(m.seq, script.timeline.len());
                        }
                        Side::Client => {
                            client_heads.insert(m.seq, script.timeline.len());
                        }
                    }
                    script.timeline.push(unit);
                }
                Record::Part(p) => {
                    let bytes = p
                        .payload
                        .to_bytes()
                        .ok_or_else(|| damaged(format!("part of {} has bad base64", p.seq)))?;
                    match p.from {
                        Side::Server => {
                            if let Some(&i) = server_index.get(&p.seq) {
                                script.timeline[i].bytes.extend_from_slice(&bytes);
                                if p.last {
                                    script.timeline[i].cut_short = false;
                                }
                            }
                        }
                        // An empty part only ends its message (a literal the server
                        // refused): nothing to send, nothing to wait for.
                        Side::Client if bytes.is_empty() => {}
                        Side::Client => {
                            let head = client_heads
                                .get(&p.seq)
                                .map(|&i| script.timeline[i].clone());
                            let Some(head) = head else { continue };
                            script.timeline.push(Unit {
                                t_us: p.t_us,
                                shown: bytes.clone(),
                                bytes,
                                is_part: true,
                                redacted: if p.redacted {
                                    vec!["arguments".into()]
                                } else {
                                    Vec::new()
                                },
                                ..head
                            });
                        }
                    }
                }
                Record::End(e) => {
                    script.end_reason = Some(e.reason.clone());
                    script.user = script.user.take().or_else(|| e.user.clone());
                }
                _ => {}
            }
        }
        if script.greeting.is_none() {
            return Err(ScriptError::NoGreeting(name.to_string()));
        }
        if script.commands().next().is_none() {
            return Err(ScriptError::NoCommand(name.to_string()));
        }
        script.index_commands();
        Ok(script)
    }

    /// Fills [`Script::command_at`] (again, once units were dropped).
    fn index_commands(&mut self) {
        self.command_at = self
            .timeline
            .iter()
            .enumerate()
            .filter(|(_, u)| u.from == Side::Client && u.kind == Kind::Command && !u.is_part)
            .map(|(i, u)| (u.seq, i))
            .collect();
    }

    /// Whether the recorded server accepted the command `seq` (answered it OK).
    pub fn accepted(&self, seq: u64) -> bool {
        self.timeline.iter().any(|u| {
            u.kind == Kind::Completion
                && u.reply_to == Some(seq)
                && crate::protocol::message::parse_response(&u.bytes).status
                    == Some(crate::protocol::Status::Ok)
        })
    }

    /// The recorded session ended with the server hanging up (after LOGOUT, with or without
    /// TLS close_notify), not the client.
    pub fn server_hung_up(&self) -> bool {
        self.end_reason
            .as_deref()
            .is_some_and(|r| r == "server closed" || r.starts_with("server closed without"))
    }

    /// Whether playing the client side needs credentials that were redacted.
    pub fn needs_login(&self) -> Option<String> {
        self.timeline
            .iter()
            .filter(|u| u.from == Side::Client)
            .flat_map(|u| u.redacted.iter())
            .next()
            .cloned()
    }

    /// Puts credentials back into the client's units. Units whose bytes were hidden whole
    /// (a LOGIN split over literals) are rebuilt as one line, and their later parts, and the
    /// continuation requests that answered them, are dropped.
    ///
    /// Of `logins`, the one for the user the session logged in as is used; without one, a
    /// single login stands for any user (a recording replayed on another account, which the
    /// report then says), and several are an error that names the user wanted.
    pub fn with_login(mut self, logins: &[Login]) -> Result<Script, ScriptError> {
        if self.needs_login().is_none() {
            return Ok(self);
        }
        let recorded = self.user.as_deref();
        let login = match (logins, recorded) {
            (_, Some(user)) if logins.iter().any(|l| l.user == user) => {
                logins.iter().find(|l| l.user == user)
            }
            ([only], _) => Some(only),
            _ => None,
        };
        let Some(login) = login else {
            let what = self.needs_login().unwrap_or_default();
            return Err(ScriptError::NeedLogin {
                name: self.name.clone(),
                what: match recorded {
                    _ if logins.is_empty() => what,
                    Some(user) => format!("{what} of {user}, for whom no --login was given"),
                    None => format!(
                        "{what}; the recording does not say whose, so one --login must serve"
                    ),
                },
            });
        };
        if recorded.is_some_and(|user| user != login.user) {
            self.login_as = Some(login.user.clone());
        }
        // A login that failed in the recording must fail again: it gets a wrong password.
        let failed: Vec<u64> = self
            .timeline
            .iter()
            .filter(|u| {
                u.kind == Kind::Completion
                    && crate::protocol::message::parse_response(&u.bytes).status
                        == Some(crate::protocol::Status::No)
            })
            .filter_map(|u| u.reply_to)
            .collect();
        let wrong = Login {
            user: login.user.clone(),
            password: format!("{}-imapscope-replay-wrong", login.password),
            token: login
                .token
                .as_ref()
                .map(|t| format!("{t}-imapscope-replay-wrong")),
        };
        let login_for = |seq: u64| if failed.contains(&seq) { &wrong } else { login };
        // The AUTHENTICATEs whose exchange was redacted (initial response or SASL responses).
        let redacted_auth: Vec<u64> = self
            .timeline
            .iter()
            .filter(|u| !u.redacted.is_empty())
            .filter_map(|u| match u.kind {
                Kind::Command if u.name.as_deref() == Some("AUTHENTICATE") => Some(u.seq),
                Kind::SaslData => u.reply_to,
                _ => None,
            })
            .collect();
        // Each AUTHENTICATE's plan, by its seq: its SASL responses are answered from it.
        let mut plans: HashMap<u64, Box<SaslStep>> = HashMap::new();
        let mut rebuilt_whole: Vec<u64> = Vec::new();
        let mut out = Vec::with_capacity(self.timeline.len());
        for mut unit in std::mem::take(&mut self.timeline) {
            if unit.from == Side::Server {
                // The rebuilt LOGIN is one line: no continuation will answer its literals.
                if unit.kind == Kind::ContinuationRequest
                    && unit.reply_to.is_some_and(|r| rebuilt_whole.contains(&r))
                {
                    continue;
                }
                out.push(unit);
                continue;
            }
            if unit.is_part && rebuilt_whole.contains(&unit.seq) {
                continue;
            }
            if unit.kind == Kind::Command && unit.name.as_deref() == Some("AUTHENTICATE") {
                let head = parse_command(&unit.bytes);
                let spelled = head
                    .args()
                    .first()
                    .map(|t| String::from_utf8_lossy(&unit.bytes[t.span.clone()]).into_owned())
                    .unwrap_or_default();
                if redacted_auth.contains(&unit.seq) {
                    let mechanism = Mechanism::from_name(&spelled).ok_or_else(|| {
                        ScriptError::CannotRebuild {
                            name: self.name.clone(),
                            what: format!("AUTHENTICATE {spelled} exchange"),
                            why: "imapscope can log in with PLAIN, LOGIN, CRAM-MD5, \
                                  SCRAM-SHA-1, SCRAM-SHA-256, XOAUTH2 and OAUTHBEARER"
                                .into(),
                        }
                    })?;
                    let login = login_for(unit.seq);
                    if mechanism.needs_token() && login.token.is_none() {
                        return Err(ScriptError::NeedLogin {
                            name: self.name.clone(),
                            what: format!(
                                "the AUTHENTICATE {spelled} bearer token; give it with \
                                 --oauth-token or IMAPSCOPE_OAUTH_TOKEN"
                            ),
                        });
                    }
                    let plan = Box::new(SaslStep {
                        mechanism,
                        spelled,
                        login: login.clone(),
                        initial_response: unit.redacted.iter().any(|r| r == "sasl-ir"),
                    });
                    plans.insert(unit.seq, plan.clone());
                    unit.sasl = Some(plan);
                }
            } else if unit.kind == Kind::Command && unit.name.as_deref() == Some("LOGIN") {
                if !unit.redacted.is_empty() {
                    let login = login_for(unit.seq);
                    let verb = command_word(&unit.bytes).unwrap_or_else(|| "LOGIN".into());
                    unit.bytes = format!(
                        "{} {verb} {} {}\r\n",
                        unit.tag.clone().unwrap_or_default(),
                        crate::protocol::token::quote(&login.user),
                        crate::protocol::token::quote(&login.password)
                    )
                    .into_bytes();
                    rebuilt_whole.push(unit.seq);
                }
            } else if unit.kind == Kind::SaslData {
                unit.sasl = unit.reply_to.and_then(|auth| plans.get(&auth).cloned());
            }
            out.push(unit);
        }
        self.timeline = out;
        self.index_commands();
        Ok(self)
    }

    /// The client's command units (heads only), in order.
    pub fn commands(&self) -> impl Iterator<Item = &Unit> {
        self.timeline
            .iter()
            .filter(|u| u.from == Side::Client && u.kind == Kind::Command && !u.is_part)
    }
}

/// The command word as the client spelled it (`login`, `LOGIN`).
pub(crate) fn command_word(bytes: &[u8]) -> Option<String> {
    let head = parse_command(bytes);
    let t = head.tokens.get(1)?;
    Some(String::from_utf8_lossy(&bytes[t.span.clone()]).into_owned())
}
