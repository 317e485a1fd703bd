//! Receiver authentication with real clients: the OpenTelemetry Rust SDK over gRPC and
//! HTTP with and without the right bearer token, basic auth from an htpasswd file, and a
//! token file rotated while sieve runs.

use crate::harness::Sieve;
use crate::sink::Sink;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// A config whose OTLP protocols both require the authenticator `auth`, defined by
/// `extension` (an `extensions:` entry).
fn config(sink: &str, extension: &str, auth: &str) -> String {
    config_with(sink, extension, auth, auth)
}

/// The same with an authenticator for each protocol.
fn config_with(sink: &str, extensions: &str, grpc: &str, http: &str) -> String {
    let enabled = if grpc == http {
        grpc.to_string()
    } else {
        format!("{grpc}, {http}")
    };
    format!(
        "extensions:
{extensions}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{{grpc}}
        auth:
          authenticator: {grpc}
      http:
        endpoint: 127.0.0.1:{{http}}
        auth:
          authenticator: {http}
exporters:
  otlp:
    endpoint: {sink}
service:
  extensions: [{enabled}]
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics}}
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
"
    )
}

/// Sends `spans` spans through the SDK with `authorization` (if any) as a header.
fn send_with_sdk(port: u16, grpc: bool, authorization: Option<&str>, spans: usize) {
    let header = authorization.map(|value| ("authorization", value));
    crate::harness::sdk_send_spans(port, grpc, header, "span", spans);
}

/// POSTs a 1-span OTLP/HTTP request with `authorization`; the status and the
/// `www-authenticate` header.
async fn post_with(port: u16, authorization: Option<&str>) -> (u16, Option<String>) {
    let headers: Vec<(&str, &str)> = authorization
        .map(|value| ("authorization", value))
        .into_iter()
        .collect();
    let (status, response) = crate::harness::post_traces(port, &headers, 0, 1).await;
    let challenge = response
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    (status, challenge)
}

fn refused(sieve: &Sieve, transport: &str, reason: &str) -> f64 {
    sieve.metric(
        "sieve_receiver_unauthenticated_requests_total",
        &[("transport", transport), ("reason", reason)],
    )
}

/// Writes `contents` to a file and starts sieve with `authenticator` configured by
/// `key: <that file>` (the key may hold `{}` for the path, as in `${file:{}}`).
fn start_with_file(
    sink: &Sink,
    authenticator: &str,
    key: &str,
    contents: &str,
) -> (tempfile::TempDir, std::path::PathBuf, Sieve) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credentials");
    std::fs::write(&file, contents).unwrap();
    let setting = key.replace("{}", &file.display().to_string());
    let extension = format!("  {authenticator}:\n    {setting}");
    let sieve = Sieve::start(&config(&sink.grpc_endpoint(), &extension, authenticator));
    (dir, file, sieve)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_gets_in_with_the_right_bearer_token_only() {
    let sink = Sink::start().await;
    let (_dir, _, sieve) = start_with_file(
        &sink,
        "bearertokenauth",
        "token: ${file:{}}",
        "t0ken-for-it",
    );
    for (grpc, port, transport) in [(true, sieve.grpc, "grpc"), (false, sieve.http, "http")] {
        tokio::task::spawn_blocking(move || {
            send_with_sdk(port, grpc, Some("Bearer t0ken-for-it"), 3);
            send_with_sdk(port, grpc, Some("Bearer wrong"), 2);
            send_with_sdk(port, grpc, None, 2);
        })
        .await
        .unwrap();
        assert_eq!(refused(&sieve, transport, "invalid"), 2.0, "{transport}");
        assert_eq!(refused(&sieve, transport, "missing"), 2.0, "{transport}");
    }
    sink.wait_for(WAIT, "the authenticated spans", |r| r.span_count() == 6)
        .await;
    let (status, challenge) = post_with(sieve.http, Some("Bearer nope")).await;
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some("Bearer realm=\"sieve\""));
    let log = sieve.log();
    assert!(!log.contains("t0ken-for-it"), "the token was logged");
    assert!(!log.contains("nope"), "a presented credential was logged");
    assert!(
        !sieve.metrics_text().contains("t0ken"),
        "the token is in a metric"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_file_takes_effect_without_a_restart() {
    let sink = Sink::start().await;
    let (_dir, file, sieve) =
        start_with_file(&sink, "bearertokenauth/rotating", "filename: {}", "first\n");
    assert_eq!(post_with(sieve.http, Some("Bearer first")).await.0, 200);
    std::fs::write(&file, "second\n").unwrap();
    let deadline = Instant::now() + WAIT;
    while post_with(sieve.http, Some("Bearer second")).await.0 != 200 {
        assert!(Instant::now() < deadline, "the new token never took");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(post_with(sieve.http, Some("Bearer first")).await.0, 401);
    assert!(sieve.log().contains("tokens read again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_from_an_htpasswd_file() {
    use base64::Engine;
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join(".htpasswd");
    let hash = bcrypt::hash("correct horse", 4).unwrap();
    std::fs::write(&htpasswd, format!("ops:{hash}\n")).unwrap();
    let extension = format!(
        "  basicauth/server:\n    htpasswd:\n      file: {}",
        htpasswd.display()
    );
    let sieve = Sieve::start(&config(
        &sink.grpc_endpoint(),
        &extension,
        "basicauth/server",
    ));
    let basic = |credentials: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    };
    let (good, bad) = (basic("ops:correct horse"), basic("ops:battery staple"));
    assert_eq!(post_with(sieve.http, Some(&good)).await.0, 200);
    let (status, challenge) = post_with(sieve.http, Some(&bad)).await;
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some("Basic realm=\"sieve\""));
    let port = sieve.grpc;
    tokio::task::spawn_blocking(move || {
        send_with_sdk(port, true, Some(&good), 2);
        send_with_sdk(port, true, Some(&bad), 1);
    })
    .await
    .unwrap();
    assert_eq!(refused(&sieve, "grpc", "invalid"), 1.0);
    sink.wait_for(WAIT, "three spans", |r| r.span_count() == 3)
        .await;
}

/// An agent sieve sends to a gateway sieve that requires credentials: the agent's
/// exporters authenticate with the collector's client extensions, a bearer token over
/// gRPC (read from a file, rotated while running) and basic auth over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_authenticates_to_a_gateway_with_client_extensions() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (server_tokens, client_token) = (dir.path().join("valid"), dir.path().join("mine"));
    std::fs::write(&server_tokens, "gateway-token\n").unwrap();
    std::fs::write(&client_token, "gateway-token\n").unwrap();
    let gateway = Sieve::start(&config_with(
        &sink.grpc_endpoint(),
        &format!(
            "  bearertokenauth:\n    filename: {}\n  basicauth/server:\n    htpasswd:\n      inline: \"agent:agent-pass\"",
            server_tokens.display()
        ),
        "bearertokenauth",
        "basicauth/server",
    ));
    let agent_config = format!(
        "extensions:
  bearertokenauth/client:
    filename: {}
  basicauth/client:
    client_auth:
      username: agent
      password: agent-pass
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{{http}}
exporters:
  otlp:
    endpoint: http://127.0.0.1:{}
    auth:
      authenticator: bearertokenauth/client
    retry_on_failure:
      enabled: false
  otlphttp:
    endpoint: http://127.0.0.1:{}
    auth:
      authenticator: basicauth/client
    retry_on_failure:
      enabled: false
service:
  extensions: [bearertokenauth/client, basicauth/client]
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics}}
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp, otlphttp]
",
        client_token.display(),
        gateway.grpc,
        gateway.http
    );
    let agent = Sieve::start(&agent_config);
    assert_eq!(post_with(agent.http, None).await.0, 200);
    sink.wait_for(WAIT, "the span through both exporters", |r| {
        r.span_count() == 2
    })
    .await;
    assert_eq!(refused(&gateway, "grpc", "invalid"), 0.0);
    assert_eq!(refused(&gateway, "http", "invalid"), 0.0);
    // the agent's token file now holds a token the gateway does not take
    std::fs::write(&client_token, "stale-token\n").unwrap();
    let deadline = Instant::now() + WAIT;
    while refused(&gateway, "grpc", "invalid") == 0.0 {
        assert!(
            Instant::now() < deadline,
            "the rotated client token never went out"
        );
        assert_eq!(post_with(agent.http, None).await.0, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!agent.log().contains("agent-pass") && !agent.log().contains("stale-token"));
}

/// A local OpenID Connect issuer: discovery and a JWKS, served on `listener` once
/// started.
async fn serve_issuer(listener: tokio::net::TcpListener, jwks: String) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let jwks = jwks.clone();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut request = vec![0u8; 4096];
            let n = stream.read(&mut request).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&request[..n]);
            let body = if request.starts_with("GET /.well-known/openid-configuration") {
                format!("{{\"issuer\":\"http://127.0.0.1:{port}\",\"jwks_uri\":\"http://127.0.0.1:{port}/jwks\"}}")
            } else {
                jwks
            };
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

/// An ES256 key pair: the signing key and its JWK (`kid` as given).
fn es256_key(kid: &str) -> (jsonwebtoken::EncodingKey, String) {
    use base64::Engine;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = pair.public_key().as_ref();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let jwk = format!(
        "{{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"{kid}\",\"use\":\"sig\",\"x\":\"{}\",\"y\":\"{}\"}}",
        b64(&point[1..33]),
        b64(&point[33..65])
    );
    (jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()), jwk)
}

/// An RS256 key made with the `openssl` command, and its JWK.
fn rs256_key(kid: &str, dir: &std::path::Path) -> (jsonwebtoken::EncodingKey, String) {
    use base64::Engine;
    let path = dir.join(format!("{kid}.pem"));
    let made = std::process::Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&path)
        .arg("2048")
        .output()
        .unwrap();
    assert!(made.status.success());
    let modulus = std::process::Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&path)
        .output()
        .unwrap();
    let hex = String::from_utf8(modulus.stdout).unwrap();
    let hex = hex.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let jwk = format!(
        "{{\"kty\":\"RSA\",\"kid\":\"{kid}\",\"alg\":\"RS256\",\"n\":\"{}\",\"e\":\"AQAB\"}}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(n)
    );
    let pem = std::fs::read(&path).unwrap();
    (jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(), jwk)
}

fn jwt(
    algorithm: jsonwebtoken::Algorithm,
    kid: &str,
    key: &jsonwebtoken::EncodingKey,
    issuer: &str,
    audience: &str,
    expires_in: i64,
) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut header = jsonwebtoken::Header::new(algorithm);
    header.kid = Some(kid.into());
    let claims = serde_json::json!({
        "iss": issuer, "aud": audience, "sub": "svc", "exp": now + expires_in, "nbf": now - 5,
    });
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

/// OIDC: sieve starts while the issuer is down and refuses with the retryable answer,
/// loads the keys once the issuer is up, then takes RS256 and ES256 tokens and refuses
/// expired ones, a wrong audience, a wrong key and `alg: none`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_tokens_from_an_issuer_that_comes_up_late() {
    use jsonwebtoken::Algorithm::{ES256, RS256};
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let issuer_port = crate::harness::free_port();
    let issuer = format!("http://127.0.0.1:{issuer_port}");
    let extension =
        format!("  oidc:\n    issuer_url: {issuer}\n    audience: sieve\n    username_claim: sub");
    let sieve = Sieve::start(&config(&sink.grpc_endpoint(), &extension, "oidc"));
    let (es_key, es_jwk) = es256_key("es-1");
    let (rs_key, rs_jwk) = rs256_key("rs-1", dir.path());
    let good = jwt(ES256, "es-1", &es_key, &issuer, "sieve", 300);
    assert_eq!(
        post_with(sieve.http, Some(&format!("Bearer {good}")))
            .await
            .0,
        503,
        "keys not loaded yet: the retryable refusal"
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", issuer_port))
        .await
        .unwrap();
    tokio::spawn(serve_issuer(
        listener,
        format!("{{\"keys\":[{es_jwk},{rs_jwk}]}}"),
    ));
    let deadline = Instant::now() + WAIT;
    while post_with(sieve.http, Some(&format!("Bearer {good}")))
        .await
        .0
        != 200
    {
        assert!(Instant::now() < deadline, "the keys never loaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rs = jwt(RS256, "rs-1", &rs_key, &issuer, "sieve", 300);
    assert_eq!(
        post_with(sieve.http, Some(&format!("Bearer {rs}"))).await.0,
        200
    );
    let (other_key, _) = es256_key("es-1");
    let unsigned = {
        use base64::Engine;
        let b64 = |t: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
        format!(
            "{}.{}.",
            b64("{\"alg\":\"none\",\"typ\":\"JWT\"}"),
            b64(&format!(
                "{{\"iss\":\"{issuer}\",\"aud\":\"sieve\",\"exp\":9999999999}}"
            ))
        )
    };
    for (what, token) in [
        (
            "expired",
            jwt(ES256, "es-1", &es_key, &issuer, "sieve", -600),
        ),
        (
            "another audience",
            jwt(ES256, "es-1", &es_key, &issuer, "other", 300),
        ),
        (
            "another issuer",
            jwt(ES256, "es-1", &es_key, "http://evil", "sieve", 300),
        ),
        (
            "a key the issuer does not have",
            jwt(ES256, "es-1", &other_key, &issuer, "sieve", 300),
        ),
        (
            "an RS256 key used as ES256",
            jwt(ES256, "rs-1", &es_key, &issuer, "sieve", 300),
        ),
        ("alg none", unsigned),
    ] {
        let (status, challenge) = post_with(sieve.http, Some(&format!("Bearer {token}"))).await;
        assert_eq!(status, 401, "{what}");
        assert_eq!(
            challenge.as_deref(),
            Some("Bearer realm=\"sieve\""),
            "{what}"
        );
    }
    let port = sieve.grpc;
    tokio::task::spawn_blocking(move || {
        send_with_sdk(port, true, Some(&format!("Bearer {good}")), 2)
    })
    .await
    .unwrap();
    sink.wait_for(WAIT, "the spans with valid tokens", |r| r.span_count() == 4)
        .await;
    assert!(refused(&sieve, "http", "keys_unavailable") >= 1.0);
    assert_eq!(refused(&sieve, "http", "invalid"), 6.0);
}
