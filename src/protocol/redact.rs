//! Finds credentials in client messages: what to hide from disk and whose session it is.
//!
//! Pure functions over one message's bytes. The transcript writer is the only caller that
//! decides what reaches disk; the live log uses the same functions for its command summaries.
//!
//! Hidden by default: LOGIN's password (atom, quoted or literal), the initial response of
//! AUTHENTICATE (SASL-IR) and every line of SASL data the client sends during AUTHENTICATE
//! (PLAIN, LOGIN, XOAUTH2, OAUTHBEARER, anything else alike). The user name stays visible
//! because it is what a reader needs to tell sessions apart: it is taken out of the SASL data
//! of the mechanisms that carry it in clear (CRAM-MD5's and SCRAM's too) into the `user` field.

use std::ops::Range;

use base64::Engine;

use super::Kind;
use super::message::Head;
use super::token::{TokenKind, string_value};

/// What replaces a secret in the written bytes.
pub const PLACEHOLDER: &[u8] = b"<redacted>";

/// One secret found in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// Byte range in the message.
    pub range: Range<usize>,
    /// What it is: `password`, `sasl-ir`, `sasl-data`, `arguments`.
    pub what: &'static str,
}

/// The secrets in a client message. `complete` is false when `bytes` holds only the head of a
/// longer message: then everything after the command name is hidden, since the rest cannot be
/// seen to tell a user name from a password.
pub fn secrets(kind: Kind, head: &Head, bytes: &[u8], complete: bool) -> Vec<Secret> {
    match kind {
        Kind::SaslData => {
            let end = line_content_end(bytes);
            let line = &bytes[..end];
            // `*` cancels the exchange and an empty line is an empty response: no secret.
            if line.is_empty() || line == b"*" {
                Vec::new()
            } else {
                vec![Secret {
                    range: 0..end,
                    what: "sasl-data",
                }]
            }
        }
        Kind::Command => {
            let name = head.name.as_deref().unwrap_or("");
            let (index, what) = match name {
                "LOGIN" => (1, "password"),
                "AUTHENTICATE" => (1, "sasl-ir"),
                _ => return Vec::new(),
            };
            if !complete {
                // LOGIN's user name is no secret once a token follows it (`a LOGIN "nell" {6}`,
                // the password as a synchronizing literal): hide from the password on.
                let first_hidden = match (name, login_user_is_whole(head)) {
                    ("LOGIN", true) => head.args().get(1),
                    _ => head.args().first(),
                };
                let start = first_hidden.map_or(line_content_end(bytes), |t| t.span.start);
                return vec![Secret {
                    range: start..bytes.len(),
                    what: "arguments",
                }];
            }
            let args = head.args();
            // To the message's end, past any literal in it (`a LOGIN nell {6}` + `secret
            // extra`: the password is the literal's data, on the next line).
            let message_end = bytes.len()
                - if bytes.ends_with(b"\r\n") {
                    2
                } else {
                    usize::from(bytes.ends_with(b"\n"))
                };
            let to_end = |start: usize, what| {
                vec![Secret {
                    range: start..message_end.max(start),
                    what,
                }]
            };
            // Fail closed: where the line is not what the grammar says (a token the tokenizer
            // stopped in, a LOGIN with more than two arguments, a mechanism name that is none),
            // everything from the secret on is hidden, not only the token that was read.
            let malformed = head.error.is_some()
                || (name == "LOGIN" && args.len() > 2)
                || (name == "AUTHENTICATE"
                    && args
                        .first()
                        .is_some_and(|m| !is_mechanism(&bytes[m.span.clone()])));
            match args.get(index) {
                // `=` is an empty initial response: nothing to hide.
                Some(t) if what == "sasl-ir" && &bytes[t.span.clone()] == b"=" && !malformed => {
                    Vec::new()
                }
                Some(t) if malformed => to_end(t.span.start, what),
                Some(t) => vec![Secret {
                    range: t.span.clone(),
                    what,
                }],
                // No secret token where one may have been swallowed by the one before (`a
                // LOGIN ne[ll pw`), or not read at all: everything after the name.
                None if malformed || name == "LOGIN" => match args.first() {
                    Some(t) => to_end(t.span.start, "arguments"),
                    None => Vec::new(),
                },
                None => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

/// What a SASL mechanism's name may be made of (RFC 4422: upper-case letters, digits, `-`
/// and `_`; clients send lower case too).
fn is_mechanism(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= 20
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The bytes with every secret replaced by [`PLACEHOLDER`].
pub fn apply(bytes: &[u8], secrets: &[Secret]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    for s in secrets {
        out.extend_from_slice(&bytes[at..s.range.start]);
        out.extend_from_slice(PLACEHOLDER);
        at = s.range.end;
    }
    out.extend_from_slice(&bytes[at..]);
    out
}

/// The user named by a LOGIN command. It counts only if a token follows it: then it is whole
/// (`bytes` may be only the head of the command), and it is surely no token that ran on into
/// the password (`ne[ll pw`).
pub fn login_user(head: &Head, bytes: &[u8]) -> Option<String> {
    if !login_user_is_whole(head) {
        return None;
    }
    let t = head.args().first()?;
    string_value(bytes, t).map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// Whether a LOGIN head holds its whole user name: a token (the password, or its literal
/// announcement) follows it.
fn login_user_is_whole(head: &Head) -> bool {
    head.args().len() >= 2
}

/// The SASL mechanism and initial response of an AUTHENTICATE command.
pub fn authenticate_args(head: &Head, bytes: &[u8]) -> (Option<String>, Option<Vec<u8>>) {
    let mech = head
        .args()
        .first()
        .filter(|t| t.kind == TokenKind::Atom && is_mechanism(&bytes[t.span.clone()]))
        .map(|t| String::from_utf8_lossy(&bytes[t.span.clone()]).to_ascii_uppercase());
    let ir = head.args().get(1).map(|t| bytes[t.span.clone()].to_vec());
    (mech, ir)
}

/// The user inside a base64 SASL response, for the mechanisms that carry one in clear.
pub fn sasl_user(mechanism: &str, response: &[u8]) -> Option<String> {
    let response = response.trim_ascii();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(response)
        .ok()?;
    let user = match mechanism {
        // authzid NUL authcid NUL passwd
        "PLAIN" => decoded.split(|&b| b == 0).nth(1)?.to_vec(),
        // The first response of LOGIN is the user name.
        "LOGIN" => decoded,
        // user=NAME ^A auth=Bearer ... ^A^A
        "XOAUTH2" => decoded
            .split(|&b| b == 1)
            .find_map(|f| f.strip_prefix(b"user="))?
            .to_vec(),
        // NAME SP the 32 hex digits of the HMAC (RFC 2195): the name is in clear.
        "CRAM-MD5" => {
            let space = decoded.iter().rposition(|&b| b == b' ')?;
            let (user, digest) = (&decoded[..space], &decoded[space + 1..]);
            if digest.len() != 32 || !digest.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            user.to_vec()
        }
        // The client-first message: gs2 header, then n=NAME (`,` and `=` escaped as =2C, =3D).
        m if m.starts_with("SCRAM-") => {
            let name = decoded
                .split(|&b| b == b',')
                .skip(2)
                .find_map(|f| f.strip_prefix(b"n="))?;
            String::from_utf8_lossy(name)
                .replace("=2C", ",")
                .replace("=3D", "=")
                .into_bytes()
        }
        // gs2 header: n,a=NAME, ...
        "OAUTHBEARER" => decoded
            .split(|&b| b == b',' || b == 1)
            .find_map(|f| f.strip_prefix(b"a="))?
            .to_vec(),
        _ => return None,
    };
    (!user.is_empty()).then(|| String::from_utf8_lossy(&user).into_owned())
}

/// A server's continuation request that proves it knows the password: SCRAM's server-final
/// message (`v=` ServerSignature) or DIGEST-MD5's `rspauth=`. With the challenge before it,
/// anyone holding the transcript could test password guesses against it offline, so it is
/// hidden as the client's responses are. Other challenges (a nonce, a salt) prove nothing and
/// stay readable.
pub fn server_proof(bytes: &[u8]) -> Option<Secret> {
    let end = line_content_end(bytes);
    let payload = bytes[..end].strip_prefix(b"+ ")?;
    let start = end - payload.len();
    let decoded =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, payload).ok()?;
    let proves = decoded.starts_with(b"v=")
        || decoded
            .split(|&b| b == b',')
            .any(|item| item.trim_ascii_start().starts_with(b"rspauth="));
    proves.then_some(Secret {
        range: start..end,
        what: "sasl-server-proof",
    })
}

fn line_content_end(bytes: &[u8]) -> usize {
    let end = memchr::memchr(b'\n', bytes).unwrap_or(bytes.len());
    if end > 0 && bytes[end - 1] == b'\r' {
        end - 1
    } else {
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::parse_command;

    fn redacted(kind: Kind, msg: &[u8]) -> String {
        let head = parse_command(msg);
        String::from_utf8(apply(msg, &secrets(kind, &head, msg, true))).unwrap()
    }

    #[test]
    fn login_password_in_every_form() {
        assert_eq!(
            redacted(Kind::Command, b"A login nell ASecretPassword\r\n"),
            "A login nell <redacted>\r\n"
        );
        assert_eq!(
            redacted(Kind::Command, b"a LOGIN \"nell\" \"pa ss\\\"word\"\r\n"),
            "a LOGIN \"nell\" <redacted>\r\n"
        );
        assert_eq!(
            redacted(Kind::Command, b"a LOGIN {4}\r\nnell {6+}\r\nsecret\r\n"),
            "a LOGIN {4}\r\nnell <redacted>\r\n"
        );
        assert_eq!(
            redacted(Kind::Command, b"a SELECT INBOX\r\n"),
            "a SELECT INBOX\r\n"
        );
    }

    /// RFC 9051 allows `]` in an astring and `[`/`]` in a tag; a line the tokenizer reads
    /// otherwise than the grammar must still lose its password whole (fail closed).
    #[test]
    fn odd_tags_and_brackets_never_leak_a_password() {
        let cases: &[(&[u8], &str)] = &[
            (b"a] LOGIN nell Secret0\r\n", "a] LOGIN nell <redacted>\r\n"),
            (b"] LOGIN nell Secret1\r\n", "] LOGIN nell <redacted>\r\n"),
            (b"a[ LOGIN nell Secret3\r\n", "a[ LOGIN nell <redacted>\r\n"),
            (
                b"x[y]] LOGIN nell Secret4\r\n",
                "x[y]] LOGIN nell <redacted>\r\n",
            ),
            (
                b"a0 LOGIN nell pa]ssSECRET\r\n",
                "a0 LOGIN nell <redacted>\r\n",
            ),
            (
                b"a0 LOGIN nell ]ssSECRET\r\n",
                "a0 LOGIN nell <redacted>\r\n",
            ),
            (
                b"a0 LOGIN ne]ll SECRET\r\n",
                "a0 LOGIN ne]ll <redacted>\r\n",
            ),
            // The user name ran on into the password: both hidden.
            (b"a0 LOGIN ne[ll SECRET\r\n", "a0 LOGIN <redacted>\r\n"),
            (
                b"a0 LOGIN nell pa)ss SECRET\r\n",
                "a0 LOGIN nell <redacted>\r\n",
            ),
            (
                b"a0 LOGIN nell pass word\r\n",
                "a0 LOGIN nell <redacted>\r\n",
            ),
            (b"a0 LOGIN nell\r\n", "a0 LOGIN <redacted>\r\n"),
            // A literal password followed by more: the literal's data goes too.
            (
                b"a0 LOGIN nell {6}\r\nsecret extra\r\n",
                "a0 LOGIN nell <redacted>\r\n",
            ),
            (
                b"a] AUTHENTICATE PLAIN AG5lbGwAc2VjcmV0\r\n",
                "a] AUTHENTICATE PLAIN <redacted>\r\n",
            ),
            (
                b"a AUTHENTICATE PLAIN AG5l)bGwAc2VjcmV0\r\n",
                "a AUTHENTICATE PLAIN <redacted>\r\n",
            ),
            (
                b"a AUTHENTICATE PL[AIN AG5lbGwAc2VjcmV0\r\n",
                "a AUTHENTICATE <redacted>\r\n",
            ),
            // A well-formed line keeps what follows its initial response.
            (
                b"a AUTHENTICATE PLAIN AG5lbGwAc2VjcmV0 extra\r\n",
                "a AUTHENTICATE PLAIN <redacted> extra\r\n",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(
                redacted(Kind::Command, line),
                *want,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        let user = |line: &[u8]| login_user(&parse_command(line), line);
        assert_eq!(user(b"a] LOGIN nell Secret0\r\n").as_deref(), Some("nell"));
        assert_eq!(user(b"a LOGIN ne]ll pw\r\n").as_deref(), Some("ne]ll"));
        assert_eq!(user(b"a LOGIN ne[ll pw\r\n"), None);
    }

    #[test]
    fn a_server_proof_is_hidden_and_a_challenge_is_not() {
        // RFC 5802's example: server-first, then server-final.
        let first = b"+ cj1meWtvK3NXbmNYWWg0Z1dZQlZhdWVvcHR0Q25BcG56SkpvbmE4NnZYRlRHcThHRmhYcyxzPVFTWENSK1E2c2VrOGJmOTIsaT00MDk2\r\n";
        assert_eq!(server_proof(first), None);
        let last = b"+ dj1ybUY5cHFWOFM3c3VBb1pXamE0ZEpSa0ZzS1E9\r\n";
        let secret = server_proof(last).unwrap();
        assert_eq!(
            &last[secret.range],
            b"dj1ybUY5cHFWOFM3c3VBb1pXamE0ZEpSa0ZzS1E9"
        );
        let digest = b"+ cnNwYXV0aD1lYTQwZjYwMzM1YzQyN2I1NTI3Yjg0ZGJhYmNkZmZmZA==\r\n";
        assert!(server_proof(digest).is_some());
        assert_eq!(server_proof(b"+ Ready for literal data\r\n"), None);
        assert_eq!(server_proof(b"+ idling\r\n"), None);
        assert_eq!(server_proof(b"+\r\n"), None);
    }

    #[test]
    fn sasl() {
        assert_eq!(
            redacted(Kind::Command, b"a AUTHENTICATE PLAIN AG5lbGwAc2VjcmV0\r\n"),
            "a AUTHENTICATE PLAIN <redacted>\r\n"
        );
        assert_eq!(
            redacted(Kind::Command, b"a AUTHENTICATE PLAIN =\r\n"),
            "a AUTHENTICATE PLAIN =\r\n"
        );
        assert_eq!(
            redacted(Kind::SaslData, b"AG5lbGwAc2VjcmV0\r\n"),
            "<redacted>\r\n"
        );
        assert_eq!(redacted(Kind::SaslData, b"*\r\n"), "*\r\n");
        assert_eq!(
            sasl_user("PLAIN", b"AG5lbGwAc2VjcmV0").as_deref(),
            Some("nell")
        );
        assert_eq!(sasl_user("LOGIN", b"bmVsbA==").as_deref(), Some("nell"));
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let cram = b64("nell 4d2a2f2bc7fb0bb6e1ab0ad6a0ad1b34");
        assert_eq!(
            sasl_user("CRAM-MD5", cram.as_bytes()).as_deref(),
            Some("nell")
        );
        assert_eq!(sasl_user("CRAM-MD5", b64("nell").as_bytes()), None);
        let scram = b64("n,,n=ne=2Cll,r=fyko+d2lbbFgONRv9qkxdawL");
        assert_eq!(
            sasl_user("SCRAM-SHA-256", scram.as_bytes()).as_deref(),
            Some("ne,ll")
        );
    }

    #[test]
    fn oauth_tokens_are_hidden_and_the_user_kept() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let xoauth2 = b64("user=nell@example.org\x01auth=Bearer ya29.SeCrEtToKeN\x01\x01");
        let bearer = b64(
            "n,a=nell@example.org,\x01host=imap.example.org\x01port=993\x01auth=Bearer ya29.SeCrEtToKeN\x01\x01",
        );
        for (mech, ir) in [("XOAUTH2", &xoauth2), ("OAUTHBEARER", &bearer)] {
            let with_ir = format!("a AUTHENTICATE {mech} {ir}\r\n");
            assert_eq!(
                redacted(Kind::Command, with_ir.as_bytes()),
                format!("a AUTHENTICATE {mech} <redacted>\r\n")
            );
            // Without SASL-IR, the token comes as SASL data after the server's `+`.
            assert_eq!(
                redacted(Kind::SaslData, format!("{ir}\r\n").as_bytes()),
                "<redacted>\r\n"
            );
            assert_eq!(
                sasl_user(mech, ir.as_bytes()).as_deref(),
                Some("nell@example.org"),
                "{mech}"
            );
        }
    }

    #[test]
    fn partial_login_hides_all_arguments() {
        let msg = b"a LOGIN {4}\r\n";
        let head = parse_command(msg);
        let out = apply(msg, &secrets(Kind::Command, &head, msg, false));
        assert_eq!(out, b"a LOGIN <redacted>");
    }
}
