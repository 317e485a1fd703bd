use super::*;
use hyper::header::HeaderValue;

fn headers(name: &str, value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
        HeaderValue::from_str(value).unwrap(),
    );
    headers
}

fn bearer(token: &str) -> Bearer {
    Bearer::new(&BearerTokenConfig {
        token: Some(Secret(token.into())),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn a_bearer_token_is_checked_with_its_scheme() {
    let auth = bearer("s3cret");
    assert_eq!(
        auth.check(&headers("authorization", "Bearer s3cret")),
        Ok(None)
    );
    assert_eq!(
        auth.check(&headers("authorization", "bearer s3cret")),
        Ok(None)
    );
    assert_eq!(
        auth.check(&headers("authorization", "Bearer s3cre")),
        Err(AuthFailure::Invalid)
    );
    assert_eq!(
        auth.check(&headers("authorization", "Basic s3cret")),
        Err(AuthFailure::Missing)
    );
    assert_eq!(auth.check(&HeaderMap::new()), Err(AuthFailure::Missing));
    assert_eq!(
        auth.check(&headers("authorization", "Bearer ")),
        Err(AuthFailure::Missing)
    );
}

#[test]
fn several_tokens_are_valid_at_once() {
    let auth = Bearer::new(&BearerTokenConfig {
        tokens: vec![Secret("old".into()), Secret("new".into())],
        ..Default::default()
    })
    .unwrap();
    for token in ["old", "new"] {
        assert_eq!(
            auth.check(&headers("authorization", &format!("Bearer {token}"))),
            Ok(None)
        );
    }
}

#[test]
fn a_custom_header_and_no_scheme() {
    let auth = Bearer::new(&BearerTokenConfig {
        token: Some(Secret("k".into())),
        scheme: String::new(),
        header: "X-Api-Key".into(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(auth.check(&headers("x-api-key", "k")), Ok(None));
    assert_eq!(
        auth.check(&headers("authorization", "Bearer k")),
        Err(AuthFailure::Missing)
    );
}

#[test]
fn a_token_file_is_read_again_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "first\n").unwrap();
    let auth = Bearer::new(&BearerTokenConfig {
        filename: Some(path.clone()),
        token: Some(Secret("ignored when a file is named".into())),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        auth.check(&headers("authorization", "Bearer first")),
        Ok(None)
    );
    std::fs::write(&path, "second token\n").unwrap();
    // the file is looked at once a second at most
    let deadline = Instant::now() + Duration::from_secs(10);
    while auth
        .check(&headers("authorization", "Bearer second token"))
        .is_err()
    {
        assert!(Instant::now() < deadline, "the new token never took");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        auth.check(&headers("authorization", "Bearer first")),
        Err(AuthFailure::Invalid),
        "the old token is gone"
    );
    std::fs::write(&path, "").unwrap();
    std::thread::sleep(FILE_CHECK_EVERY + Duration::from_millis(100));
    assert_eq!(
        auth.check(&headers("authorization", "Bearer second token")),
        Ok(None),
        "an empty file keeps the tokens there were"
    );
}

#[test]
fn constant_time_membership_finds_only_exact_digests() {
    let valid = [sha256(b"a"), sha256(b"b")];
    assert!(digest_among(&sha256(b"b"), &valid));
    assert!(!digest_among(&sha256(b"c"), &valid));
    assert!(!digest_among(&sha256(b"a"), &[]));
}

fn basic_header(user: &str, password: &str) -> HeaderMap {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    headers("authorization", &format!("Basic {encoded}"))
}

#[test]
fn htpasswd_accepts_bcrypt_sha_ssha_and_plain_lines() {
    let bcrypt = bcrypt::hash("pw-bcrypt", 4).unwrap();
    let sha = base64::engine::general_purpose::STANDARD
        .encode(<sha1::Sha1 as sha1::Digest>::digest(b"pw-sha"));
    let salted = {
        let mut hasher = <sha1::Sha1 as sha1::Digest>::new();
        sha1::Digest::update(&mut hasher, b"pw-ssha");
        sha1::Digest::update(&mut hasher, b"salt");
        let mut bytes = sha1::Digest::finalize(hasher).to_vec();
        bytes.extend_from_slice(b"salt");
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let inline =
        format!("# users\nann:{bcrypt}\nbob:{{SHA}}{sha}\ncid:{{SSHA}}{salted}\ndee:pw-plain\n");
    let basic = Basic::new(&HtpasswdConfig {
        file: None,
        inline: Some(Secret(inline)),
    })
    .unwrap();
    for (user, password) in [
        ("ann", "pw-bcrypt"),
        ("bob", "pw-sha"),
        ("cid", "pw-ssha"),
        ("dee", "pw-plain"),
    ] {
        assert_eq!(
            basic.check(&basic_header(user, password)),
            Ok(Some(user.to_string())),
            "{user}"
        );
        assert_eq!(
            basic.check(&basic_header(user, "wrong")),
            Err(AuthFailure::Invalid),
            "{user}"
        );
        // again: from the remembered digests
        assert_eq!(
            basic.check(&basic_header(user, password)),
            Ok(Some(user.to_string())),
            "{user}"
        );
    }
    assert_eq!(
        basic.check(&basic_header("eve", "pw-plain")),
        Err(AuthFailure::Invalid)
    );
    assert_eq!(basic.check(&HeaderMap::new()), Err(AuthFailure::Missing));
    assert_eq!(
        basic.check(&headers("authorization", "Basic !!!")),
        Err(AuthFailure::Invalid)
    );
}

#[test]
fn bad_htpasswd_lines_are_named_without_their_content() {
    let error = BasicAuthConfig {
        htpasswd: Some(HtpasswdConfig {
            file: None,
            inline: Some(Secret("ann:$1$md5crypt$secretish\n".into())),
        }),
        client_auth: None,
    }
    .validate()
    .unwrap_err();
    assert_eq!(error.key, "htpasswd");
    assert!(error.message.contains("line 1"), "{}", error.message);
    assert!(!error.message.contains("secretish"), "{}", error.message);
    let missing = BasicAuthConfig::default().validate().unwrap_err();
    assert!(missing.message.contains("htpasswd"));
}

#[test]
fn headers_setter_follows_its_actions_and_falls_back_to_its_default() {
    let config: HeadersSetterConfig = serde_yaml::from_str(
        "headers:
  - {key: X-Scope-OrgID, from_context: x-scope-orgid, default_value: anonymous}
  - {key: X-Static, value: fixed, action: insert}
  - {key: X-Only-If-Set, value: replaced, action: update}
  - {key: X-Remove, action: delete}
",
    )
    .unwrap();
    config.validate().unwrap();
    let metadata = crate::model::Metadata::from_pairs([("X-Scope-OrgID".into(), "team-a".into())]);
    let mut request = headers("x-static", "from-the-exporter");
    request.insert("x-remove", HeaderValue::from_static("gone"));
    config.apply(&mut request, Some(&metadata));
    assert_eq!(request["x-scope-orgid"], "team-a");
    assert_eq!(
        request["x-static"], "from-the-exporter",
        "insert keeps what is there"
    );
    assert!(
        !request.contains_key("x-only-if-set"),
        "update sets only what is there"
    );
    assert!(!request.contains_key("x-remove"));
    assert!(request["x-scope-orgid"].is_sensitive());
    let mut bare = HeaderMap::new();
    config.apply(&mut bare, None);
    assert_eq!(bare["x-scope-orgid"], "anonymous");
    assert_eq!(bare["x-static"], "fixed");
}

#[test]
fn headers_setter_needs_exactly_one_source() {
    let both: HeadersSetterConfig =
        serde_yaml::from_str("headers: [{key: X-A, value: v, from_context: a}]").unwrap();
    assert_eq!(both.validate().unwrap_err().key, "headers.0.value");
    let neither: HeadersSetterConfig = serde_yaml::from_str("headers: [{key: X-A}]").unwrap();
    assert!(neither.validate().is_err());
    let bad_name: HeadersSetterConfig =
        serde_yaml::from_str("headers: [{key: \"bad key\", value: v}]").unwrap();
    assert_eq!(bad_name.validate().unwrap_err().key, "headers.0.key");
}

#[test]
fn named_tokens_say_who_presented_them() {
    let auth = Bearer::new(&BearerTokenConfig {
        token: Some(Secret("shared".into())),
        named_tokens: [
            ("team-a".to_string(), Secret("token-a".into())),
            ("team-b".to_string(), Secret("token-b".into())),
        ]
        .into(),
        ..Default::default()
    })
    .unwrap();
    let check = |token: &str| auth.check(&headers("authorization", &format!("Bearer {token}")));
    assert_eq!(check("token-b"), Ok(Some("team-b".into())));
    assert_eq!(check("token-a"), Ok(Some("team-a".into())));
    assert_eq!(check("shared"), Ok(None), "a token without a name");
    assert_eq!(check("token-c"), Err(AuthFailure::Invalid));
}
