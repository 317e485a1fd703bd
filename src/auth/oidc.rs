//! `oidc`: the collector's OIDC authenticator. A request carries `Bearer <JWT>`; the token
//! must be signed with RS256 or ES256 by a key of the issuer's JWKS (found through
//! `{issuer_url}/.well-known/openid-configuration`), name the issuer (`iss`) and the
//! `audience` (`aud`), and be within its `exp` and `nbf` (60 s of leeway). `alg: none`,
//! HMAC algorithms and a key used with another algorithm than its own are refused.
//!
//! Keys are fetched in the background: sieve starts whether or not the issuer answers
//! (the collector's does not, contrib #45206), and until keys arrive requests get the
//! retryable refusal (`UNAVAILABLE` / 503, reason `keys_unavailable`) while it retries
//! with backoff (1 s doubling to 1 min). Keys are fetched again every hour, and at most
//! every 10 s when a token names a key id the set does not have (that token is refused;
//! its retry finds the new key).

use super::AuthFailure;
use crate::tls::TlsClientConfig;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// `extensions: oidc:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer: tokens' `iss` must be exactly this, and its
    /// `/.well-known/openid-configuration` names the keys.
    pub issuer_url: String,
    /// A PEM CA bundle for an issuer served with a private certificate.
    #[serde(default)]
    pub issuer_ca_path: Option<PathBuf>,
    /// The `aud` a token must carry.
    pub audience: String,
    /// The claim naming the user (the identity a tenant can be bound to).
    #[serde(default)]
    pub username_claim: Option<String>,
    /// The claim listing the user's groups.
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// The header carrying `Bearer <token>`.
    #[serde(default = "authorization")]
    pub attribute: String,
}

fn authorization() -> String {
    "authorization".into()
}

impl OidcConfig {
    pub fn validate(&self) -> Result<(), crate::config::FieldError> {
        use crate::config::FieldError;
        let url: hyper::Uri = self
            .issuer_url
            .parse()
            .map_err(|_| FieldError::new("issuer_url", "not a URL"))?;
        if !matches!(url.scheme_str(), Some("http" | "https")) {
            return Err(FieldError::new("issuer_url", "must be an http(s) URL"));
        }
        if self.audience.is_empty() {
            return Err(FieldError::new("audience", "must be set"));
        }
        hyper::header::HeaderName::from_bytes(self.attribute.as_bytes())
            .map_err(|_| FieldError::new("attribute", "not a valid header name"))?;
        Ok(())
    }
}

/// Keys by id, each with the one algorithm it verifies.
type KeySet = HashMap<String, (DecodingKey, Algorithm)>;

/// The OIDC authenticator: the keys, and the task that keeps them.
pub struct Oidc {
    config: OidcConfig,
    keys: Arc<RwLock<Option<KeySet>>>,
    refresh: Arc<Notify>,
    last_refresh_request: Mutex<Option<Instant>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Oidc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How often an unknown key id may ask for the keys again.
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(10);
/// How often the keys are fetched again anyway.
const REFETCH_EVERY: Duration = Duration::from_secs(3600);

impl Oidc {
    /// Starts fetching the keys (on the current tokio runtime); never fails for an
    /// issuer that does not answer.
    pub fn start(config: &OidcConfig) -> Result<Oidc, String> {
        let tls = TlsClientConfig {
            ca_file: config
                .issuer_ca_path
                .as_ref()
                .map(|p| p.display().to_string()),
            ..Default::default()
        };
        let client = crate::exporters::http_core::client(&tls, Duration::from_secs(10), false)?;
        let keys = Arc::new(RwLock::new(None));
        let refresh = Arc::new(Notify::new());
        let task = tokio::spawn(keep_keys(
            client,
            config.issuer_url.clone(),
            Arc::clone(&keys),
            Arc::clone(&refresh),
        ));
        Ok(Oidc {
            config: config.clone(),
            keys,
            refresh,
            last_refresh_request: Mutex::new(None),
            task,
        })
    }

    /// Checks the token; the identity is its `username_claim` (or `sub`) when a string.
    pub fn check(&self, headers: &HeaderMap) -> Result<super::Identity, AuthFailure> {
        let token = super::credential(headers, &self.config.attribute, "Bearer")
            .filter(|t| !t.is_empty())
            .and_then(|t| std::str::from_utf8(t).ok())
            .ok_or(AuthFailure::Missing)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthFailure::Invalid)?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(AuthFailure::Invalid);
        }
        let keys = self.keys.read();
        let keys = keys.as_ref().ok_or(AuthFailure::Unavailable)?;
        let key = match &header.kid {
            Some(kid) => keys.get(kid),
            None if keys.len() == 1 => keys.values().next(),
            None => None,
        };
        let Some((key, algorithm)) = key else {
            self.ask_for_keys();
            return Err(AuthFailure::Invalid);
        };
        if *algorithm != header.alg {
            return Err(AuthFailure::Invalid);
        }
        let mut validation = Validation::new(*algorithm);
        validation.set_audience(&[&self.config.audience]);
        validation.set_issuer(&[&self.config.issuer_url]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = 60;
        let claims = jsonwebtoken::decode::<serde_json::Value>(token, key, &validation)
            .map_err(|_| AuthFailure::Invalid)?
            .claims;
        let claim = self.config.username_claim.as_deref().unwrap_or("sub");
        Ok(claims
            .get(claim)
            .and_then(|v| v.as_str())
            .map(str::to_string))
    }

    /// Wakes the key task, at most every [`REFRESH_AT_MOST_EVERY`].
    fn ask_for_keys(&self) {
        let mut last = self.last_refresh_request.lock();
        if last.is_none_or(|at| at.elapsed() >= REFRESH_AT_MOST_EVERY) {
            *last = Some(Instant::now());
            self.refresh.notify_one();
        }
    }
}

/// Fetches the keys until they come, then again every hour or when asked.
async fn keep_keys(
    client: crate::exporters::http_core::HttpClient,
    issuer: String,
    keys: Arc<RwLock<Option<KeySet>>>,
    refresh: Arc<Notify>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match fetch_keys(&client, &issuer).await {
            Ok(fetched) => {
                tracing::info!(issuer = %issuer, keys = fetched.len(), "oidc: signing keys loaded");
                *keys.write() = Some(fetched);
                backoff = Duration::from_secs(1);
                let _ = tokio::time::timeout(REFETCH_EVERY, refresh.notified()).await;
            }
            Err(error) => {
                tracing::warn!(issuer = %issuer, %error, retry_in = ?backoff, "oidc: cannot load the signing keys; requests are refused until they load");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

#[derive(Deserialize)]
struct Discovery {
    jwks_uri: String,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// The RS256 and ES256 signing keys the issuer publishes.
async fn fetch_keys(
    client: &crate::exporters::http_core::HttpClient,
    issuer: &str,
) -> Result<KeySet, String> {
    let discovery_url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let discovery: Discovery = get_json(client, &discovery_url).await?;
    let jwks: Jwks = get_json(client, &discovery.jwks_uri).await?;
    let mut keys = KeySet::new();
    for (at, jwk) in jwks.keys.into_iter().enumerate() {
        if jwk.usage.as_deref().is_some_and(|u| u != "sig") {
            continue;
        }
        let key = match (jwk.kty.as_str(), jwk.alg.as_deref()) {
            ("RSA", None | Some("RS256")) => match (&jwk.n, &jwk.e) {
                (Some(n), Some(e)) => DecodingKey::from_rsa_components(n, e)
                    .ok()
                    .map(|k| (k, Algorithm::RS256)),
                _ => None,
            },
            ("EC", None | Some("ES256")) if jwk.crv.as_deref() == Some("P-256") => {
                match (&jwk.x, &jwk.y) {
                    (Some(x), Some(y)) => DecodingKey::from_ec_components(x, y)
                        .ok()
                        .map(|k| (k, Algorithm::ES256)),
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(key) = key {
            keys.insert(jwk.kid.unwrap_or_else(|| format!("#{at}")), key);
        }
    }
    if keys.is_empty() {
        return Err("the JWKS holds no RS256 or ES256 signing key".into());
    }
    Ok(keys)
}

async fn get_json<T: serde::de::DeserializeOwned>(
    client: &crate::exporters::http_core::HttpClient,
    url: &str,
) -> Result<T, String> {
    let request = hyper::Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("{url}: {e}"))?;
    let fetch = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status()));
        }
        let body = Limited::new(response.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
    };
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .map_err(|_| format!("{url}: no answer within 10 s"))?
}
