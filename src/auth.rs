//! Who may send: the OpenTelemetry Collector's `bearertokenauth` and `basicauth`
//! extensions as server authenticators, named by a receiver protocol's
//! `auth.authenticator`, with the collector's option names.
//!
//! * `bearertokenauth`: `token`, `tokens` (several valid at once, for rotation), or
//!   `filename` (one token per line, read again when the file changes, so tokens rotate
//!   without a restart; the file wins over `token`, as in the collector), `scheme`
//!   (`Bearer`) and `header` (`Authorization`). The presented token and each valid one
//!   are compared as SHA-256 digests with a fold over every byte of every token, so the
//!   time taken says nothing about how much of a token matched, or which.
//! * `basicauth`: `htpasswd.file` and/or `htpasswd.inline`, lines of `user:hash` with the
//!   hashes the collector accepts: bcrypt (`$2a$`, `$2b$`, `$2y$`), `{SHA}` (base64 of
//!   SHA-1), `{SSHA}` (salted SHA-1), and plain text for a line with none of those
//!   prefixes (what `inline: ${env:USER}:${env:PASSWORD}` gives). bcrypt is slow on
//!   purpose: credentials that passed are remembered (as a SHA-256 digest, at most
//!   [`REMEMBERED`] of them), so a client pays it once, not per request.
//!
//! Client side, an HTTP exporter's `auth.authenticator` names a `bearertokenauth` (its
//! token, or the first line of its file, read again when it changes) or a `basicauth`
//! with `client_auth` ([`ClientAuth`]); the header is marked sensitive.
//!
//! * `oidc`: JWTs from an OpenID Connect issuer (see [`Oidc`]).
//!
//! A failure is `missing` (no credentials in the request) or `invalid`; receivers answer
//! gRPC `UNAUTHENTICATED` / HTTP 401 with `WWW-Authenticate`, count it by reason and log
//! it at most every ten seconds. No credential, token or hash appears in a log line, a
//! metric label or an error message.

mod oidc;

pub use oidc::{Oidc, OidcConfig};

use crate::config::{FieldError, Secret};
use base64::Engine;
use hyper::header::HeaderMap;
use parking_lot::Mutex;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// `extensions: bearertokenauth:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BearerTokenConfig {
    /// The word before the token in the header (`Bearer`); empty for a bare token.
    pub scheme: String,
    /// The header carrying the credential (gRPC metadata is the same header).
    pub header: String,
    /// The valid token (use `${env:...}` or `${file:...}`).
    pub token: Option<Secret>,
    /// Several valid tokens, for rotation.
    pub tokens: Vec<Secret>,
    /// A file of valid tokens, one per line, read again when it changes (checked at
    /// most once a second). Takes precedence over `token` and `tokens`.
    pub filename: Option<PathBuf>,
    /// Tokens with a name (beyond the collector): the name is the identity of a request
    /// presenting the token, which an `otlp` receiver's `bind_tenant` turns into its
    /// tenant. Valid beside `token`, `tokens` and `filename`.
    pub named_tokens: std::collections::BTreeMap<String, Secret>,
}

impl Default for BearerTokenConfig {
    fn default() -> Self {
        BearerTokenConfig {
            scheme: "Bearer".into(),
            header: "Authorization".into(),
            token: None,
            tokens: Vec::new(),
            filename: None,
            named_tokens: std::collections::BTreeMap::new(),
        }
    }
}

impl BearerTokenConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.filename.is_none()
            && self.token.is_none()
            && self.tokens.is_empty()
            && self.named_tokens.is_empty()
        {
            return Err(FieldError::new(
                "token",
                "set `token`, `tokens`, `filename` or `named_tokens`",
            ));
        }
        if let Some(file) = &self.filename {
            read_token_file(file).map_err(|e| FieldError::new("filename", e))?;
        }
        let token_char = |c: char| c.is_ascii_alphanumeric() || "-._~+/!#$%&'*^`|".contains(c);
        if !self.scheme.chars().all(token_char) {
            return Err(FieldError::new(
                "scheme",
                "must be one word of letters, digits or -._~+/",
            ));
        }
        if hyper::header::HeaderName::from_bytes(self.header.as_bytes()).is_err() {
            return Err(FieldError::new("header", "not a valid header name"));
        }
        Ok(())
    }
}

/// `extensions: basicauth:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BasicAuthConfig {
    /// The users a receiver accepts (server side).
    pub htpasswd: Option<HtpasswdConfig>,
    /// The credentials an exporter sends (client side).
    pub client_auth: Option<ClientAuthConfig>,
}

/// `basicauth: htpasswd:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HtpasswdConfig {
    /// An htpasswd file (read at start and on reload).
    pub file: Option<PathBuf>,
    /// htpasswd lines in the config (use `${env:...}`); added to the file's.
    pub inline: Option<Secret>,
}

/// `basicauth: client_auth:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientAuthConfig {
    pub username: String,
    pub password: Secret,
}

impl BasicAuthConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.htpasswd.is_none() && self.client_auth.is_none() {
            return Err(FieldError::new(
                "htpasswd",
                "set `htpasswd` (server) or `client_auth` (client)",
            ));
        }
        if let Some(htpasswd) = &self.htpasswd {
            Users::load(htpasswd).map_err(|e| FieldError::new("htpasswd", e))?;
        }
        Ok(())
    }
}

/// Why a request was not authenticated: the `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credentials in the request.
    Missing,
    /// Credentials that do not match.
    Invalid,
    /// The authenticator cannot judge yet (an OIDC issuer's keys have not loaded): the
    /// retryable refusal.
    Unavailable,
}

impl AuthFailure {
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Invalid => "invalid",
            AuthFailure::Unavailable => "keys_unavailable",
        }
    }
}

/// A built server authenticator.
pub enum Authenticator {
    Bearer(Bearer),
    Basic(Basic),
    Oidc(Oidc),
}

/// Who a request authenticated as, when the authenticator can say: a `named_tokens`
/// name, a basic-auth user, an OIDC claim.
pub type Identity = Option<String>;

impl Authenticator {
    /// Checks a request's headers; the identity it authenticated as.
    pub fn check(&self, headers: &HeaderMap) -> Result<Identity, AuthFailure> {
        match self {
            Authenticator::Bearer(bearer) => bearer.check(headers),
            Authenticator::Basic(basic) => basic.check(headers),
            Authenticator::Oidc(oidc) => oidc.check(headers),
        }
    }

    /// The `WWW-Authenticate` challenge of an HTTP 401.
    pub fn challenge(&self) -> String {
        match self {
            Authenticator::Bearer(b) if b.config.scheme.is_empty() => {
                "Bearer realm=\"sieve\"".into()
            }
            Authenticator::Bearer(b) => format!("{} realm=\"sieve\"", b.config.scheme),
            Authenticator::Basic(_) => "Basic realm=\"sieve\"".into(),
            Authenticator::Oidc(_) => "Bearer realm=\"sieve\"".into(),
        }
    }
}

/// The credential in `header` after `scheme` (matched without regard to case), if any.
fn credential<'h>(headers: &'h HeaderMap, header: &str, scheme: &str) -> Option<&'h [u8]> {
    let value = headers.get(header)?.as_bytes();
    if scheme.is_empty() {
        return Some(value);
    }
    let (word, rest) = value.split_at_checked(scheme.len())?;
    (word.eq_ignore_ascii_case(scheme.as_bytes()) && rest.first() == Some(&b' '))
        .then(|| rest[1..].trim_ascii())
}

/// Whether `digest` is one of `valid`, looking at every byte of every one of them.
fn digest_among(digest: &[u8; 32], valid: &[[u8; 32]]) -> bool {
    let mut found = 0u8;
    for candidate in valid {
        let difference = candidate
            .iter()
            .zip(digest)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        found |= u8::from(difference == 0);
    }
    found == 1
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// `bearertokenauth` on the server side.
pub struct Bearer {
    config: BearerTokenConfig,
    tokens: Mutex<Tokens>,
    /// `named_tokens`: each name and its token's digest.
    named: Vec<(String, [u8; 32])>,
}

/// The valid tokens' digests and, with a file, what it was when last read.
struct Tokens {
    digests: Vec<[u8; 32]>,
    file: Option<(Option<SystemTime>, u64)>,
    checked: Instant,
}

/// How often a token file is looked at for a change.
const FILE_CHECK_EVERY: Duration = Duration::from_secs(1);

fn read_token_file(path: &Path) -> Result<Vec<[u8; 32]>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let digests: Vec<[u8; 32]> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| sha256(line.as_bytes()))
        .collect();
    if digests.is_empty() {
        return Err(format!("{} holds no token", path.display()));
    }
    Ok(digests)
}

fn file_stamp(path: &Path) -> Option<(Option<SystemTime>, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok(), meta.len()))
}

impl Bearer {
    pub fn new(config: &BearerTokenConfig) -> Result<Bearer, String> {
        let digests = match &config.filename {
            Some(path) => read_token_file(path)?,
            None => config
                .token
                .iter()
                .chain(&config.tokens)
                .map(|t| sha256(t.0.as_bytes()))
                .collect(),
        };
        let file = config.filename.as_deref().and_then(file_stamp);
        let named = config
            .named_tokens
            .iter()
            .map(|(name, token)| (name.clone(), sha256(token.0.as_bytes())))
            .collect();
        Ok(Bearer {
            named,
            config: config.clone(),
            tokens: Mutex::new(Tokens {
                digests,
                file,
                checked: Instant::now(),
            }),
        })
    }

    fn check(&self, headers: &HeaderMap) -> Result<Identity, AuthFailure> {
        let presented = credential(headers, &self.config.header, &self.config.scheme)
            .filter(|c| !c.is_empty())
            .ok_or(AuthFailure::Missing)?;
        let digest = sha256(presented);
        // every named token is compared, wherever the match is
        let mut named = None;
        for (name, token) in &self.named {
            if digest_among(&digest, std::slice::from_ref(token)) {
                named = Some(name.clone());
            }
        }
        let mut tokens = self.tokens.lock();
        self.refresh(&mut tokens);
        let anonymous = digest_among(&digest, &tokens.digests);
        match (named, anonymous) {
            (Some(name), _) => Ok(Some(name)),
            (None, true) => Ok(None),
            (None, false) => Err(AuthFailure::Invalid),
        }
    }

    /// Reads the token file again if it changed since it was last read. A file that
    /// cannot be read or holds no token leaves the tokens as they were (logged).
    fn refresh(&self, tokens: &mut Tokens) {
        let Some(path) = &self.config.filename else {
            return;
        };
        if tokens.checked.elapsed() < FILE_CHECK_EVERY {
            return;
        }
        tokens.checked = Instant::now();
        let stamp = file_stamp(path);
        if stamp.is_none() || stamp == tokens.file {
            return;
        }
        match read_token_file(path) {
            Ok(digests) => {
                tokens.digests = digests;
                tokens.file = stamp;
                tracing::info!(file = %path.display(), "bearertokenauth: tokens read again");
            }
            Err(error) => {
                tracing::warn!(%error, "bearertokenauth: keeping the previous tokens");
            }
        }
    }
}

/// The most credentials `basicauth` remembers as verified.
pub const REMEMBERED: usize = 1024;

/// `basicauth` on the server side.
pub struct Basic {
    users: Users,
    /// Digests of `user:password` pairs that passed, and the user.
    verified: Mutex<lru::LruCache<[u8; 32], String>>,
}

/// htpasswd users and their hashes.
struct Users(Vec<(String, PasswordHash)>);

enum PasswordHash {
    Bcrypt(String),
    Sha1([u8; 20]),
    SaltedSha1 { digest: [u8; 20], salt: Vec<u8> },
    Plain([u8; 32]),
}

impl Users {
    fn load(config: &HtpasswdConfig) -> Result<Users, String> {
        let mut text = String::new();
        if let Some(file) = &config.file {
            text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            text.push('\n');
        }
        if let Some(inline) = &config.inline {
            text.push_str(&inline.0);
        }
        let users = text
            .lines()
            .map(str::trim)
            .enumerate()
            .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
            .map(|(at, line)| {
                let (user, hash) = line
                    .split_once(':')
                    .ok_or_else(|| format!("line {} is not `user:hash`", at + 1))?;
                Ok((user.to_string(), PasswordHash::parse(hash, at + 1)?))
            })
            .collect::<Result<Vec<_>, String>>()?;
        if users.is_empty() {
            return Err("no users".into());
        }
        Ok(Users(users))
    }
}

impl PasswordHash {
    fn parse(hash: &str, line: usize) -> Result<PasswordHash, String> {
        let base64 = |text: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| format!("line {line}: the hash is not base64"))
        };
        if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
            return Ok(PasswordHash::Bcrypt(hash.to_string()));
        }
        if let Some(encoded) = hash.strip_prefix("{SHA}") {
            let digest = base64(encoded)?
                .try_into()
                .map_err(|_| format!("line {line}: a {{SHA}} hash is 20 bytes"))?;
            return Ok(PasswordHash::Sha1(digest));
        }
        if let Some(encoded) = hash.strip_prefix("{SSHA}") {
            let decoded = base64(encoded)?;
            if decoded.len() <= 20 {
                return Err(format!(
                    "line {line}: an {{SSHA}} hash is 20 bytes and a salt"
                ));
            }
            let (digest, salt) = decoded.split_at(20);
            return Ok(PasswordHash::SaltedSha1 {
                digest: digest.try_into().expect("20 bytes"),
                salt: salt.to_vec(),
            });
        }
        if hash.starts_with('$') {
            return Err(format!(
                "line {line}: unsupported hash (bcrypt, {{SHA}}, {{SSHA}} or plain text)"
            ));
        }
        Ok(PasswordHash::Plain(sha256(hash.as_bytes())))
    }

    fn verify(&self, password: &[u8]) -> bool {
        use sha1::Sha1;
        let same = |a: &[u8], b: &[u8]| digest_among(&sha256(a), &[sha256(b)]);
        match self {
            PasswordHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            PasswordHash::Sha1(digest) => same(&Sha1::digest(password), digest),
            PasswordHash::SaltedSha1 { digest, salt } => {
                let mut hasher = Sha1::new();
                hasher.update(password);
                hasher.update(salt);
                same(&hasher.finalize(), digest)
            }
            PasswordHash::Plain(digest) => digest_among(&sha256(password), &[*digest]),
        }
    }
}

impl Basic {
    pub fn new(config: &HtpasswdConfig) -> Result<Basic, String> {
        Ok(Basic {
            users: Users::load(config)?,
            verified: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(REMEMBERED).expect("not zero"),
            )),
        })
    }

    fn check(&self, headers: &HeaderMap) -> Result<Identity, AuthFailure> {
        let encoded = credential(headers, "authorization", "Basic").ok_or(AuthFailure::Missing)?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| AuthFailure::Invalid)?;
        let pair = sha256(&decoded);
        if let Some(user) = self.verified.lock().get(&pair) {
            return Ok(Some(user.clone()));
        }
        let colon = decoded
            .iter()
            .position(|&b| b == b':')
            .ok_or(AuthFailure::Invalid)?;
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let known = self
            .users
            .0
            .iter()
            .find(|(name, _)| name.as_bytes() == user)
            .is_some_and(|(_, hash)| hash.verify(password));
        if !known {
            return Err(AuthFailure::Invalid);
        }
        let user = String::from_utf8_lossy(user).into_owned();
        self.verified.lock().put(pair, user.clone());
        Ok(Some(user))
    }
}

/// `extensions: headers_setter:`: headers an exporter sets on each request, from the
/// request metadata its data carries (`from_context`) or fixed (`value`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersSetterConfig {
    pub headers: Vec<HeaderSetting>,
}

/// One header of `headers_setter`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderSetting {
    /// The header to set.
    pub key: String,
    /// `upsert` (default: set it), `insert` (only if the request has none, e.g. from
    /// the exporter's `headers`), `update` (only if it has one) or `delete`.
    #[serde(default)]
    pub action: HeaderAction,
    /// A fixed value (a secret: use `${env:..}`).
    pub value: Option<Secret>,
    /// The request metadata name whose value is sent (kept by a receiver's
    /// `include_metadata`, and past a `batch` processor only if in its `metadata_keys`).
    pub from_context: Option<String>,
    /// Sent when the data carries no `from_context` value; without it the header is
    /// left unset.
    pub default_value: Option<Secret>,
}

/// What `headers_setter` does with a header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderAction {
    Insert,
    Update,
    #[default]
    Upsert,
    Delete,
}

impl HeadersSetterConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        for (at, header) in self.headers.iter().enumerate() {
            let key = |field: &str| format!("headers.{at}.{field}");
            hyper::header::HeaderName::from_bytes(header.key.as_bytes())
                .map_err(|_| FieldError::new(key("key"), "not a valid header name"))?;
            let sources =
                usize::from(header.value.is_some()) + usize::from(header.from_context.is_some());
            if header.action != HeaderAction::Delete && sources != 1 {
                return Err(FieldError::new(
                    key("value"),
                    "set one of `value` and `from_context`",
                ));
            }
            for (field, text) in [
                ("value", &header.value),
                ("default_value", &header.default_value),
            ] {
                let invalid = text
                    .as_ref()
                    .is_some_and(|t| hyper::header::HeaderValue::try_from(t.0.as_str()).is_err());
                if invalid {
                    return Err(FieldError::new(key(field), "not a valid header value"));
                }
            }
        }
        Ok(())
    }

    /// Sets this extension's headers on a request carrying `metadata`.
    fn apply(&self, headers: &mut HeaderMap, metadata: Option<&crate::model::Metadata>) {
        for setting in &self.headers {
            let Ok(name) = hyper::header::HeaderName::from_bytes(setting.key.as_bytes()) else {
                continue;
            };
            let present = headers.contains_key(&name);
            let wanted = match setting.action {
                HeaderAction::Delete => {
                    headers.remove(&name);
                    continue;
                }
                HeaderAction::Insert => !present,
                HeaderAction::Update => present,
                HeaderAction::Upsert => true,
            };
            let from_context = setting
                .from_context
                .as_deref()
                .and_then(|n| metadata?.get(n));
            let value = setting
                .value
                .as_ref()
                .map(|v| v.0.as_str())
                .or(from_context)
                .or(setting.default_value.as_ref().map(|v| v.0.as_str()));
            if let (true, Some(Ok(mut value))) =
                (wanted, value.map(hyper::header::HeaderValue::try_from))
            {
                value.set_sensitive(true);
                headers.insert(name, value);
            }
        }
    }
}

/// What an exporter's `auth.authenticator` names, resolved from `extensions:` when its
/// pipeline is built (a change of the extension rebuilds the pipeline).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientCredentials {
    Bearer(BearerTokenConfig),
    Basic(ClientAuthConfig),
    Headers(HeadersSetterConfig),
}

/// The header value an exporter sends now, and its token file as last read.
struct Current {
    value: hyper::header::HeaderValue,
    stamp: Option<(Option<SystemTime>, u64)>,
    checked: Instant,
}

/// The credential an exporter sends: a header set on every request. A bearer token from
/// `filename` is read again when the file changes (looked at once a second at most), so
/// the client side rotates as the server side does.
pub struct ClientAuth {
    header: hyper::header::HeaderName,
    credentials: ClientCredentials,
    current: Mutex<Current>,
}

impl ClientAuth {
    pub fn new(credentials: &ClientCredentials) -> Result<ClientAuth, String> {
        let header = match credentials {
            ClientCredentials::Bearer(c) => {
                hyper::header::HeaderName::from_bytes(c.header.as_bytes())
                    .map_err(|_| "not a valid header name".to_string())?
            }
            ClientCredentials::Basic(_) | ClientCredentials::Headers(_) => {
                hyper::header::AUTHORIZATION
            }
        };
        let stamp = match credentials {
            ClientCredentials::Bearer(c) => c.filename.as_deref().and_then(file_stamp),
            ClientCredentials::Basic(_) | ClientCredentials::Headers(_) => None,
        };
        let value = Self::value(credentials)?;
        Ok(ClientAuth {
            header,
            credentials: credentials.clone(),
            current: Mutex::new(Current {
                value,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The header value, marked sensitive so that it is never logged.
    fn value(credentials: &ClientCredentials) -> Result<hyper::header::HeaderValue, String> {
        let text = match credentials {
            // set per request from its metadata: see [`ClientAuth::apply`]
            ClientCredentials::Headers(_) => String::new(),
            ClientCredentials::Basic(c) => {
                let pair = format!("{}:{}", c.username, c.password.0);
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
            ClientCredentials::Bearer(c) => {
                let token = match &c.filename {
                    Some(path) => std::fs::read_to_string(path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                        .lines()
                        .map(str::trim)
                        .find(|l| !l.is_empty())
                        .ok_or_else(|| format!("{} holds no token", path.display()))?
                        .to_string(),
                    None => c
                        .token
                        .as_ref()
                        .or(c.tokens.first())
                        .map(|t| t.0.clone())
                        .ok_or("no token")?,
                };
                if c.scheme.is_empty() {
                    token
                } else {
                    format!("{} {token}", c.scheme)
                }
            }
        };
        let mut value = hyper::header::HeaderValue::try_from(text)
            .map_err(|_| "the credential is not a valid header value".to_string())?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// Sets the credential (or `headers_setter`'s headers, from `metadata`) on a request.
    pub fn apply(&self, headers: &mut HeaderMap, metadata: Option<&crate::model::Metadata>) {
        if let ClientCredentials::Headers(setter) = &self.credentials {
            return setter.apply(headers, metadata);
        }
        let (name, value) = self.header();
        headers.insert(name, value);
    }

    /// The header to set on a request now.
    fn header(&self) -> (hyper::header::HeaderName, hyper::header::HeaderValue) {
        let mut current = self.current.lock();
        if let ClientCredentials::Bearer(BearerTokenConfig {
            filename: Some(path),
            ..
        }) = &self.credentials
        {
            if current.checked.elapsed() >= FILE_CHECK_EVERY {
                current.checked = Instant::now();
                let stamp = file_stamp(path);
                if stamp.is_some() && stamp != current.stamp {
                    match Self::value(&self.credentials) {
                        Ok(value) => {
                            current.value = value;
                            current.stamp = stamp;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "bearertokenauth: keeping the previous token")
                        }
                    }
                }
            }
        }
        (self.header.clone(), current.value.clone())
    }
}

#[cfg(test)]
mod tests;
