//! Which recording of a capture an incoming connection plays.
//!
//! A desktop client opens its connections within milliseconds of each other, in a different
//! order each run, and what each one does (namespace first, or COMPRESS; INBOX or Drafts)
//! varies too. So a connection is not handed "the next recording": it is played by every
//! unused recording at once, and each command it sends rules out those whose opening exchange
//! it does not follow, until one is left. What the client receives is always what the
//! remaining recordings agree on: where they answer differently, the earliest recorded
//! (in start order) is followed and the others are ruled out, so every recording still in
//! the running has sent exactly the bytes the client saw.
//!
//! A recording is claimed when it is the only one left, or when the connection ends having
//! sent a command; a connection that closes before its first command (a port probe, a health
//! check) claims nothing. Pure: the fake server's accept loop is the shell around it.

use std::sync::Arc;

use super::script::Script;
use super::serve::{MatchMode, Output, ServeSession, SessionOutcome};

/// The recordings of a capture and which of them are taken.
#[derive(Debug)]
pub struct Pool {
    scripts: Vec<Arc<Script>>,
    claimed: Vec<bool>,
}

impl Pool {
    pub fn new(scripts: Vec<Script>) -> Pool {
        let claimed = vec![false; scripts.len()];
        Pool {
            scripts: scripts.into_iter().map(Arc::new).collect(),
            claimed,
        }
    }

    pub fn len(&self) -> usize {
        self.scripts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scripts.is_empty()
    }

    pub fn all_claimed(&self) -> bool {
        self.claimed.iter().all(|c| *c)
    }

    /// Every recording is free again: the capture is served once more.
    pub fn reset(&mut self) {
        self.claimed.iter_mut().for_each(|c| *c = false);
    }

    /// The names of the recordings not claimed.
    pub fn unclaimed(&self) -> Vec<String> {
        self.scripts
            .iter()
            .zip(&self.claimed)
            .filter(|(_, c)| !**c)
            .map(|(s, _)| s.name.clone())
            .collect()
    }

    pub fn script(&self, index: usize) -> &Arc<Script> {
        &self.scripts[index]
    }

    /// The recording at `index` is taken; false if another connection took it first.
    fn claim(&mut self, index: usize) -> bool {
        !std::mem::replace(&mut self.claimed[index], true)
    }

    fn is_claimed(&self, index: usize) -> bool {
        self.claimed[index]
    }
}

/// One connection being matched with the recordings that could be playing it.
pub struct Dispatch {
    /// (recording index, its session), in start order.
    candidates: Vec<(usize, ServeSession)>,
    claimed: Option<usize>,
    /// Every recording this connection could be playing was taken by another one.
    stray: bool,
    commands_seen: bool,
}

/// How a connection ended.
#[derive(Debug)]
pub enum Ended {
    /// It sent no command: it consumed nothing.
    Probe,
    /// It played the recording at this index.
    Played(usize, SessionOutcome),
    /// No recording was left for it; the outcome of the one it followed says where it went.
    Stray(SessionOutcome),
}

impl Dispatch {
    /// A new connection: every recording not yet claimed is a candidate. `None` when every
    /// recording is taken.
    pub fn new(pool: &Pool, mode: MatchMode, speed: f64) -> Option<Dispatch> {
        let candidates: Vec<(usize, ServeSession)> = (0..pool.len())
            .filter(|&i| !pool.is_claimed(i))
            .map(|i| (i, ServeSession::new(pool.script(i).clone(), mode, speed)))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(Dispatch {
            candidates,
            claimed: None,
            stray: false,
            commands_seen: false,
        })
    }

    /// The greeting to send: the earliest candidate's; candidates that would greet
    /// differently are ruled out.
    pub fn greeting(&mut self) -> Vec<u8> {
        let greetings: Vec<Vec<u8>> = self
            .candidates
            .iter_mut()
            .map(|(_, s)| s.greeting())
            .collect();
        let first = greetings[0].clone();
        let mut keep = greetings.iter().map(|g| *g == first);
        self.candidates.retain(|_| keep.next().unwrap_or(false));
        first
    }

    /// The client sent `bytes`: what to answer. Recordings claimed meanwhile by other
    /// connections are ruled out first.
    pub fn on_client(&mut self, bytes: &[u8], pool: &mut Pool) -> Vec<Output> {
        if self.claimed.is_none() && !self.stray {
            if self.candidates.iter().any(|(i, _)| !pool.is_claimed(*i)) {
                self.candidates.retain(|(i, _)| !pool.is_claimed(*i));
            } else {
                // Keep following what it followed, so its diagnostics say where it went.
                self.stray = true;
            }
        }
        let results: Vec<(Vec<Output>, usize)> = self
            .candidates
            .iter_mut()
            .map(|(_, s)| {
                let before = s.mismatches().len();
                let out = s.on_client(bytes);
                (out, s.mismatches().len() - before)
            })
            .collect();
        self.commands_seen |= self.candidates.iter().any(|(_, s)| s.commands() > 0);
        // The earliest recording that followed this without a mismatch leads; if none did,
        // the earliest one (its diagnostics are reported).
        let leader = results.iter().position(|(_, m)| *m == 0).unwrap_or(0);
        let (out, leader_mismatches) = results[leader].clone();
        let mut keep = results
            .iter()
            .map(|(o, m)| *o == out && *m == leader_mismatches);
        self.candidates.retain(|_| keep.next().unwrap_or(false));
        if self.claimed.is_none() && !self.stray && self.candidates.len() == 1 {
            self.claim_first(pool);
        }
        out
    }

    /// The session being followed (the earliest candidate left).
    pub fn leader(&self) -> Option<&ServeSession> {
        self.candidates.first().map(|(_, s)| s)
    }

    pub fn mismatches(&self) -> &[String] {
        self.leader().map_or(&[], |s| s.mismatches())
    }

    /// The recording has been played to its end and its server hung up.
    pub fn finished(&self) -> bool {
        self.leader().is_some_and(ServeSession::finished)
    }

    /// The name of the recording being followed.
    pub fn name(&self) -> &str {
        self.leader().map_or("", |s| s.name())
    }

    /// The connection ended: which recording it played, and how.
    pub fn finish(mut self, pool: &mut Pool) -> Ended {
        if self.claimed.is_none() && !self.stray {
            if !self.commands_seen {
                return Ended::Probe;
            }
            if self.candidates.iter().any(|(i, _)| !pool.is_claimed(*i)) {
                self.candidates.retain(|(i, _)| !pool.is_claimed(*i));
                self.claim_first(pool);
            }
        }
        match self.claimed {
            Some(index) => match self.candidates.into_iter().next() {
                Some((_, session)) => Ended::Played(index, session.finish()),
                None => Ended::Probe,
            },
            None => match self.candidates.into_iter().next() {
                Some((_, session)) => {
                    let mut outcome = session.finish();
                    outcome.error = Some(format!(
                        "no recording was left for this connection: it followed {}, which \
                         another connection played",
                        outcome.transcript
                    ));
                    Ended::Stray(outcome)
                }
                None => Ended::Probe,
            },
        }
    }

    fn claim_first(&mut self, pool: &mut Pool) {
        if let Some((i, _)) = self.candidates.first()
            && pool.claim(*i)
        {
            self.claimed = Some(*i);
            self.candidates.truncate(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::reader::parse_transcript;

    /// A recording: greeting, `a1 CAPABILITY`, `a2 SELECT mailbox`, `a3 LOGOUT`.
    fn recording(name: &str, mailbox: &str, exists: u32) -> Script {
        let lines = [
            r#"{"type":"session","version":1,"imapscope":"t","id":1,"client":"c","listen":"l","upstream":"u","start":"2026-11-27T10:00:00.000000Z","redaction":true}"#.to_string(),
            r#"{"type":"message","seq":1,"t_us":0,"from":"server","kind":"greeting","text":"* OK ready\r\n"}"#.to_string(),
            r#"{"type":"message","seq":2,"t_us":1,"from":"client","kind":"command","tag":"a1","name":"CAPABILITY","text":"a1 CAPABILITY\r\n"}"#.to_string(),
            r#"{"type":"message","seq":3,"t_us":2,"from":"server","kind":"untagged","name":"CAPABILITY","text":"* CAPABILITY IMAP4rev1\r\n","in_flight":[2]}"#.to_string(),
            r#"{"type":"message","seq":4,"t_us":3,"from":"server","kind":"completion","tag":"a1","name":"OK","text":"a1 OK done\r\n","status":"OK","reply_to":2}"#.to_string(),
            format!(r#"{{"type":"message","seq":5,"t_us":4,"from":"client","kind":"command","tag":"a2","name":"SELECT","text":"a2 SELECT {mailbox}\r\n"}}"#),
            format!(r#"{{"type":"message","seq":6,"t_us":5,"from":"server","kind":"untagged","name":"EXISTS","text":"* {exists} EXISTS\r\n","in_flight":[5]}}"#),
            r#"{"type":"message","seq":7,"t_us":6,"from":"server","kind":"completion","tag":"a2","name":"OK","text":"a2 OK selected\r\n","status":"OK","reply_to":5}"#.to_string(),
        ];
        let text = lines.join("\n");
        let transcript = parse_transcript(text.as_bytes(), name).unwrap();
        Script::from_transcript(name, &transcript).unwrap()
    }

    fn bytes(outputs: &[Output]) -> Vec<u8> {
        outputs
            .iter()
            .flat_map(|o| match o {
                Output::Bytes { bytes, .. } => bytes.clone(),
                Output::StartTls => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn a_connection_plays_the_recording_it_follows_whatever_the_arrival_order() {
        let mut pool = Pool::new(vec![
            recording("inbox", "INBOX", 3),
            recording("drafts", "Drafts", 0),
        ]);
        // A probe: connects, is greeted, closes. It consumes nothing.
        let mut probe = Dispatch::new(&pool, MatchMode::Strict, 1.0).unwrap();
        probe.greeting();
        assert!(matches!(probe.finish(&mut pool), Ended::Probe));
        assert!(!pool.all_claimed());

        // Two connections at once; the first to arrive does what "drafts" recorded.
        let mut first = Dispatch::new(&pool, MatchMode::Strict, 1.0).unwrap();
        let mut second = Dispatch::new(&pool, MatchMode::Strict, 1.0).unwrap();
        assert_eq!(first.greeting(), b"* OK ready\r\n");
        second.greeting();
        let out = first.on_client(b"7 capability\r\n", &mut pool);
        assert_eq!(bytes(&out), b"* CAPABILITY IMAP4rev1\r\n7 OK done\r\n");
        let out = second.on_client(b"9 CAPABILITY\r\n", &mut pool);
        assert_eq!(bytes(&out), b"* CAPABILITY IMAP4rev1\r\n9 OK done\r\n");
        // Both recordings still fit both connections: nothing is claimed yet.
        assert!(pool.unclaimed().len() == 2);
        let out = first.on_client(b"8 select Drafts\r\n", &mut pool);
        assert_eq!(bytes(&out), b"* 0 EXISTS\r\n8 OK selected\r\n");
        assert_eq!(pool.unclaimed(), ["inbox"]);
        let out = second.on_client(b"10 SELECT INBOX\r\n", &mut pool);
        assert_eq!(bytes(&out), b"* 3 EXISTS\r\n10 OK selected\r\n");
        assert!(pool.all_claimed());
        assert!(second.mismatches().is_empty() && first.mismatches().is_empty());
        let Ended::Played(i, outcome) = first.finish(&mut pool) else {
            panic!("the first connection played nothing")
        };
        assert_eq!((i, outcome.ok()), (1, true), "{}", outcome.render());
        let Ended::Played(i, outcome) = second.finish(&mut pool) else {
            panic!("the second connection played nothing")
        };
        assert_eq!((i, outcome.ok()), (0, true), "{}", outcome.render());
        assert!(Dispatch::new(&pool, MatchMode::Strict, 1.0).is_none());
    }

    #[test]
    fn identical_recordings_are_claimed_when_the_connection_ends() {
        let mut pool = Pool::new(vec![
            recording("one", "INBOX", 3),
            recording("two", "INBOX", 3),
        ]);
        let mut a = Dispatch::new(&pool, MatchMode::Strict, 1.0).unwrap();
        let mut b = Dispatch::new(&pool, MatchMode::Strict, 1.0).unwrap();
        for d in [&mut a, &mut b] {
            d.greeting();
            d.on_client(b"1 CAPABILITY\r\n2 SELECT INBOX\r\n", &mut pool);
        }
        assert!(matches!(b.finish(&mut pool), Ended::Played(0, _)));
        assert!(matches!(a.finish(&mut pool), Ended::Played(1, _)));
    }

    #[test]
    fn a_connection_no_recording_fits_is_told_and_reported() {
        let mut pool = Pool::new(vec![recording("inbox", "INBOX", 3)]);
        let mut d = Dispatch::new(&pool, MatchMode::Strict, 1.0).unwrap();
        d.greeting();
        let out = d.on_client(b"1 NOOP\r\n", &mut pool);
        assert!(bytes(&out).starts_with(b"1 BAD [CLIENTBUG]"));
        assert_eq!(d.mismatches().len(), 1);
        let Ended::Played(_, outcome) = d.finish(&mut pool) else {
            panic!("expected the recording to be charged with the mismatch")
        };
        assert!(!outcome.ok());
    }
}
