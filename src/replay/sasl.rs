//! The client side of the SASL mechanisms a replay logs in with, when the recording hid the
//! credentials.
//!
//! PLAIN and LOGIN answers could be rebuilt from the user name and password alone; CRAM-MD5 and
//! SCRAM answer the challenge the server sends in *this* run, so the replayer asks this module
//! for each response as the challenge arrives. XOAUTH2 and OAUTHBEARER carry a bearer token
//! given on the command line. The cryptography comes from the RustCrypto crates; only the
//! message formats (RFC 2195, RFC 5802, RFC 7628, Google's XOAUTH2) are written here. Pure: bytes
//! in, bytes out; the nonce is passed in.

use hmac::{Hmac, KeyInit, Mac};

use super::script::Login;
use sha2::Digest;

/// A mechanism this module can answer for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
    CramMd5,
    ScramSha1,
    ScramSha256,
    XOAuth2,
    OAuthBearer,
}

impl Mechanism {
    /// From the name in `AUTHENTICATE NAME` (any case).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Some(match name.to_ascii_uppercase().as_str() {
            "PLAIN" => Mechanism::Plain,
            "LOGIN" => Mechanism::Login,
            "CRAM-MD5" => Mechanism::CramMd5,
            "SCRAM-SHA-1" => Mechanism::ScramSha1,
            "SCRAM-SHA-256" => Mechanism::ScramSha256,
            "XOAUTH2" => Mechanism::XOAuth2,
            "OAUTHBEARER" => Mechanism::OAuthBearer,
            _ => return None,
        })
    }

    pub fn needs_token(self) -> bool {
        matches!(self, Mechanism::XOAuth2 | Mechanism::OAuthBearer)
    }
}

/// One SASL exchange, client side.
#[derive(Debug, Clone)]
pub struct SaslClient {
    mechanism: Mechanism,
    login: Login,
    nonce: String,
    /// Responses given so far.
    step: usize,
    /// SCRAM: the client-first-message-bare, kept for the proof.
    first_bare: String,
}

impl SaslClient {
    /// `nonce`: random printable characters without `,` (SCRAM's client nonce).
    pub fn new(mechanism: Mechanism, login: Login, nonce: String) -> SaslClient {
        SaslClient {
            mechanism,
            login,
            nonce,
            step: 0,
            first_bare: String::new(),
        }
    }

    /// With a nonce from the system's random source.
    pub fn with_random_nonce(mechanism: Mechanism, login: Login) -> SaslClient {
        let mut raw = [0u8; 18];
        // Without randomness SCRAM would still work, only with a predictable nonce.
        let _ = getrandom::fill(&mut raw);
        let nonce = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw);
        SaslClient::new(mechanism, login, nonce)
    }

    /// The response sent with the command (SASL-IR), for mechanisms that speak first.
    pub fn initial_response(&mut self) -> Option<Vec<u8>> {
        if self.step != 0 || matches!(self.mechanism, Mechanism::Login | Mechanism::CramMd5) {
            return None;
        }
        Some(self.respond(b""))
    }

    /// The response to send with the command when the recorded client sent one. LOGIN does
    /// not speak first by itself, but clients that send the user name with the command
    /// (neomutt does) are answered by servers as if it had come after "Username:", and the
    /// recorded exchange then has one response fewer.
    pub fn initial_response_as_recorded(&mut self) -> Vec<u8> {
        if self.step == 0 && self.mechanism == Mechanism::Login {
            return self.respond(b"");
        }
        self.initial_response().unwrap_or_default()
    }

    /// The response to the server's (decoded) challenge.
    pub fn respond(&mut self, challenge: &[u8]) -> Vec<u8> {
        let step = self.step;
        self.step += 1;
        let c = &self.login;
        match (self.mechanism, step) {
            (Mechanism::Plain, 0) => format!("\0{}\0{}", c.user, c.password).into_bytes(),
            (Mechanism::Login, 0) => c.user.clone().into_bytes(),
            (Mechanism::Login, 1) => c.password.clone().into_bytes(),
            (Mechanism::CramMd5, 0) => {
                let mut mac = <Hmac<md5::Md5> as KeyInit>::new_from_slice(c.password.as_bytes())
                    .expect("HMAC takes a key of any length");
                mac.update(challenge);
                let digest = mac.finalize().into_bytes();
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                format!("{} {hex}", c.user).into_bytes()
            }
            (Mechanism::ScramSha1 | Mechanism::ScramSha256, 0) => {
                self.first_bare = format!("n={},r={}", scram_name(&c.user), self.nonce);
                format!("n,,{}", self.first_bare).into_bytes()
            }
            (Mechanism::ScramSha1, 1) => self.scram_final::<sha1::Sha1>(challenge),
            (Mechanism::ScramSha256, 1) => self.scram_final::<sha2::Sha256>(challenge),
            (Mechanism::XOAuth2, 0) => format!(
                "user={}\x01auth=Bearer {}\x01\x01",
                c.user,
                c.token.as_deref().unwrap_or_default()
            )
            .into_bytes(),
            (Mechanism::OAuthBearer, 0) => format!(
                "n,a={},\x01auth=Bearer {}\x01\x01",
                scram_name(&c.user),
                c.token.as_deref().unwrap_or_default()
            )
            .into_bytes(),
            // SCRAM's server-final, an OAuth error: an empty response ends the exchange.
            _ => Vec::new(),
        }
    }

    /// SCRAM's client-final-message for the server-first-message `challenge` (RFC 5802 3).
    fn scram_final<H>(&self, challenge: &[u8]) -> Vec<u8>
    where
        H: hmac::EagerHash + Digest,
        Hmac<H>: KeyInit + Mac + Clone + Sync,
    {
        let server_first = String::from_utf8_lossy(challenge).into_owned();
        let field = |key: &str| {
            server_first
                .split(',')
                .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
                .unwrap_or_default()
                .to_string()
        };
        let (nonce, salt, rounds) = (field("r"), field("s"), field("i"));
        let b64 = &base64::engine::general_purpose::STANDARD;
        let salt = base64::Engine::decode(b64, salt.as_bytes()).unwrap_or_default();
        let rounds: u32 = rounds.parse().unwrap_or(4096);
        let salted = salted_password::<H>(&self.login.password, &salt, rounds);
        let hmac = hmac_of::<H>;
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = H::digest(&client_key);
        let without_proof = format!("c={},r={nonce}", base64::Engine::encode(b64, b"n,,"));
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        format!("{without_proof},p={}", base64::Engine::encode(b64, proof)).into_bytes()
    }
}

/// SCRAM's SaltedPassword (RFC 5802 3): PBKDF2 with HMAC-H.
fn salted_password<H>(password: &str, salt: &[u8], rounds: u32) -> Vec<u8>
where
    H: hmac::EagerHash + Digest,
    Hmac<H>: KeyInit + Mac + Clone + Sync,
{
    let mut salted = vec![0u8; <H as Digest>::output_size()];
    pbkdf2::pbkdf2::<Hmac<H>>(password.as_bytes(), salt, rounds, &mut salted)
        .expect("PBKDF2 takes a key of any length");
    salted
}

fn hmac_of<H>(key: &[u8], data: &[u8]) -> Vec<u8>
where
    H: hmac::EagerHash + Digest,
    Hmac<H>: KeyInit + Mac,
{
    let mut mac =
        <Hmac<H> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The server side of SCRAM-SHA-1 / SCRAM-SHA-256, for `serve --login`: a SCRAM client checks
/// the server's proof of its password (`v=`), which no recording holds, so a fake server must
/// make it. It takes any client proof, as `serve` takes any password.
#[derive(Debug, Clone)]
pub struct ScramServer {
    mechanism: Mechanism,
    password: String,
    salt: Vec<u8>,
    rounds: u32,
    nonce: String,
    /// The client-first-message-bare and the server-first-message, for the AuthMessage.
    client_first_bare: String,
    server_first: String,
}

impl ScramServer {
    /// `None` for a mechanism that is not SCRAM. `nonce`: the server's part of the nonce.
    pub fn new(mechanism: Mechanism, password: &str, salt: Vec<u8>, nonce: String) -> Option<Self> {
        matches!(mechanism, Mechanism::ScramSha1 | Mechanism::ScramSha256).then(|| ScramServer {
            mechanism,
            password: password.to_string(),
            salt,
            rounds: 4096,
            nonce,
            client_first_bare: String::new(),
            server_first: String::new(),
        })
    }

    /// With a salt and nonce from the system's random source.
    pub fn with_random_nonce(mechanism: Mechanism, password: &str) -> Option<Self> {
        let mut raw = [0u8; 34];
        let _ = getrandom::fill(&mut raw);
        let nonce = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &raw[..18]);
        ScramServer::new(mechanism, password, raw[18..].to_vec(), nonce)
    }

    /// The answer to the client's (decoded) message: the server-first-message to its first,
    /// the server-final-message (`v=`) to its last; `None` to anything else.
    pub fn respond(&mut self, client: &[u8]) -> Option<Vec<u8>> {
        let text = String::from_utf8_lossy(client).into_owned();
        let b64 = &base64::engine::general_purpose::STANDARD;
        if self.server_first.is_empty() {
            // gs2-header (`n,,` or `y,,` or `n,a=user,`), then the bare message.
            let bare = text.splitn(3, ',').nth(2)?.to_string();
            let client_nonce = bare.split(',').find_map(|kv| kv.strip_prefix("r="))?;
            self.server_first = format!(
                "r={client_nonce}{},s={},i={}",
                self.nonce,
                base64::Engine::encode(b64, &self.salt),
                self.rounds
            );
            self.client_first_bare = bare;
            return Some(self.server_first.clone().into_bytes());
        }
        let without_proof = text.rsplit_once(",p=")?.0;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let signature = match self.mechanism {
            Mechanism::ScramSha1 => self.server_signature::<sha1::Sha1>(&auth_message),
            _ => self.server_signature::<sha2::Sha256>(&auth_message),
        };
        Some(format!("v={}", base64::Engine::encode(b64, signature)).into_bytes())
    }

    fn server_signature<H>(&self, auth_message: &str) -> Vec<u8>
    where
        H: hmac::EagerHash + Digest,
        Hmac<H>: KeyInit + Mac + Clone + Sync,
    {
        let salted = salted_password::<H>(&self.password, &self.salt, self.rounds);
        let server_key = hmac_of::<H>(&salted, b"Server Key");
        hmac_of::<H>(&server_key, auth_message.as_bytes())
    }
}

/// A SCRAM/GS2 saslname: `=` and `,` escaped.
fn scram_name(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &str, password: &str) -> Login {
        Login {
            user: user.into(),
            password: password.into(),
            token: Some("ya29.token".into()),
        }
    }

    #[test]
    fn scram_server_answers_rfc_5802_and_its_proof_satisfies_our_client() {
        // RFC 5802's example, from the server's side: its nonce and salt, the same messages.
        let mut server = ScramServer::new(
            Mechanism::ScramSha1,
            "pencil",
            base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                "QSXCR+Q6sek8bf92",
            )
            .unwrap(),
            "3rfcNHYJY1ZVvWVs7j".into(),
        )
        .unwrap();
        let first = server
            .respond(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
            .unwrap();
        assert_eq!(
            first,
            b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
        );
        let last = server
            .respond(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
            .unwrap();
        assert_eq!(last, b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
        // SHA-256 against this module's own client, with fresh nonces.
        let mut server = ScramServer::with_random_nonce(Mechanism::ScramSha256, "pencil").unwrap();
        let mut client = SaslClient::new(
            Mechanism::ScramSha256,
            creds("user", "pencil"),
            "abc".into(),
        );
        let first = server.respond(&client.respond(b"")).unwrap();
        let last = server.respond(&client.respond(&first)).unwrap();
        assert!(last.starts_with(b"v="));
        assert!(ScramServer::with_random_nonce(Mechanism::Plain, "x").is_none());
    }

    #[test]
    fn cram_md5_answers_the_rfc_2195_example() {
        let mut c = SaslClient::new(
            Mechanism::CramMd5,
            creds("tim", "tanstaaftanstaaf"),
            "x".into(),
        );
        assert_eq!(c.initial_response(), None);
        assert_eq!(
            c.respond(b"<1896.697170952@postoffice.reston.mci.net>"),
            b"tim b913a602c7eda7a495b4e6e7334d3890".to_vec()
        );
    }

    #[test]
    fn scram_sha_1_follows_the_rfc_5802_example() {
        let mut c = SaslClient::new(
            Mechanism::ScramSha1,
            creds("user", "pencil"),
            "fyko+d2lbbFgONRv9qkxdawL".into(),
        );
        assert_eq!(
            c.initial_response().unwrap(),
            b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL".to_vec()
        );
        let last =
            c.respond(b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096");
        assert_eq!(
            String::from_utf8(last).unwrap(),
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        assert!(c.respond(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=").is_empty());
    }

    #[test]
    fn scram_sha_256_follows_the_rfc_7677_example() {
        let mut c = SaslClient::new(
            Mechanism::ScramSha256,
            creds("user", "pencil"),
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        c.initial_response();
        let last = c.respond(
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        );
        assert_eq!(
            String::from_utf8(last).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
    }

    #[test]
    fn plain_login_and_bearer_tokens() {
        let mut p = SaslClient::new(Mechanism::Plain, creds("nell", "pw"), "x".into());
        assert_eq!(p.initial_response().unwrap(), b"\0nell\0pw".to_vec());
        let mut l = SaslClient::new(Mechanism::Login, creds("nell", "pw"), "x".into());
        assert_eq!(l.respond(b"Username:"), b"nell".to_vec());
        assert_eq!(l.respond(b"Password:"), b"pw".to_vec());
        // A client that sent the user name with the command answers only "Password:".
        let mut l = SaslClient::new(Mechanism::Login, creds("nell", "pw"), "x".into());
        assert_eq!(l.initial_response_as_recorded(), b"nell".to_vec());
        assert_eq!(l.respond(b"Password:"), b"pw".to_vec());
        let mut x = SaslClient::new(Mechanism::XOAuth2, creds("nell", "pw"), "x".into());
        assert_eq!(
            x.initial_response().unwrap(),
            b"user=nell\x01auth=Bearer ya29.token\x01\x01".to_vec()
        );
        let mut o = SaslClient::new(Mechanism::OAuthBearer, creds("nell", "pw"), "x".into());
        assert_eq!(
            o.initial_response().unwrap(),
            b"n,a=nell,\x01auth=Bearer ya29.token\x01\x01".to_vec()
        );
        assert_eq!(
            Mechanism::from_name("scram-sha-256"),
            Some(Mechanism::ScramSha256)
        );
        assert_eq!(Mechanism::from_name("GSSAPI"), None);
    }
}
