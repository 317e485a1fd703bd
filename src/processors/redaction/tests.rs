use super::*;
use crate::model::Signal;
use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

fn redactor() -> Redactor {
    Redactor::new(RedactionConfig {
        allow_all_keys: true,
        mask_style: MaskStyle::Typed,
        ..Default::default()
    })
    .unwrap()
}

fn redact(text: &str) -> String {
    let mut tally = Tally::default();
    redactor()
        .redact_text(text, &mut tally)
        .unwrap_or_else(|| text.to_string())
}

/// (detector, text with PII, expected result, near miss left unchanged)
const TABLE: &[(&str, &str, &str, &str)] = &[
    (
        "email",
        "mail jane.doe+x@mail.example.co.uk now",
        "mail <email> now",
        "user@localhost or @handle",
    ),
    (
        "credit_card",
        "card 4111 1111 1111 1111 ok",
        "card <credit_card> ok",
        "order 4111 1111 1111 1112 (fails Luhn)",
    ),
    (
        "credit_card",
        "card 5500-0000-0000-0004",
        "card <credit_card>",
        "id 1234567890123456",
    ),
    (
        "ipv4",
        "from 203.0.113.7:443",
        "from <ipv4>:443",
        "version 1.2.3.4 and v10.0.0.1",
    ),
    (
        "ipv4",
        "peer=10.1.2.3",
        "peer=<ipv4>",
        "oid 1.3.6.1.4.1 and 999.1.1.1",
    ),
    (
        "ipv6",
        "client 2001:db8::8a2e:370:7334 said",
        "client <ipv6> said",
        "at 12:30:45 mac 00:1a:2b:3c:4d:5e",
    ),
    (
        "us_ssn",
        "ssn 123-45-6789",
        "ssn <us_ssn>",
        "ids 000-12-3456 666-12-3456 123-00-4567",
    ),
    (
        "phone",
        "call +14155552671 or (415) 555-2671",
        "call <phone> or <phone>",
        "build 20240101 x",
    ),
    (
        "jwt",
        "t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl",
        "t=<jwt>",
        "eyJ alone",
    ),
    (
        "bearer_token",
        "Authorization: Bearer abcdef123456.xyz",
        "Authorization: <bearer_token>",
        "the bearer of news",
    ),
    (
        "aws_access_key",
        "key AKIAIOSFODNN7EXAMPLE",
        "key <aws_access_key>",
        "AKIA-short",
    ),
    (
        "iban",
        "pay GB82 WEST 1234 5698 7654 32 today",
        "pay <iban> today",
        "GB82 WEST 1234 5698 7654 33",
    ),
];

#[test]
fn each_detector_finds_its_pii_and_leaves_near_misses() {
    for (detector, pii, expected, near_miss) in TABLE {
        assert_eq!(redact(pii), *expected, "{detector} on `{pii}`");
        assert_eq!(
            redact(near_miss),
            *near_miss,
            "{detector} near miss `{near_miss}`"
        );
    }
}

#[test]
fn private_key_blocks_are_masked_whole() {
    let text =
        "k=-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK\n-----END RSA PRIVATE KEY----- end";
    assert_eq!(redact(text), "k=<private_key> end");
}

#[test]
fn private_ips_can_be_kept() {
    let r = Redactor::new(RedactionConfig {
        allow_all_keys: true,
        keep_private_ips: true,
        ..Default::default()
    })
    .unwrap();
    let mut tally = Tally::default();
    assert_eq!(r.redact_text("10.0.0.1 and 127.0.0.1", &mut tally), None);
    assert_eq!(
        r.redact_text("8.8.8.8", &mut tally).as_deref(),
        Some("****")
    );
}

#[test]
fn clean_text_is_not_copied() {
    let clean = [
        "GET /api/v1/items/{id}",
        "200 OK in 12ms",
        "service items-7d9f started",
        "v1.2.3.4 release",
        "2024-05-01T12:30:45Z",
    ];
    for text in clean {
        let mut tally = Tally::default();
        assert_eq!(redactor().redact_text(text, &mut tally), None, "{text}");
    }
}

#[test]
fn switched_off_detectors_do_not_run() {
    let config = RedactionConfig {
        allow_all_keys: true,
        detectors: Detectors {
            email: false,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut tally = Tally::default();
    assert_eq!(
        Redactor::new(config)
            .unwrap()
            .redact_text("a@b.example", &mut tally),
        None
    );
}

fn kv(key: &str, value: &str) -> KeyValue {
    crate::model::tests::text_attribute(key, value)
}

fn string_of(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

#[test]
fn allow_list_mode_fails_closed() {
    let config = RedactionConfig {
        allowed_keys: vec!["http.route".into()],
        ..Default::default()
    };
    let mut attributes = vec![kv("http.route", "/a"), kv("user.name", "jane")];
    Redactor::new(config)
        .unwrap()
        .redact_attributes(&mut attributes, &mut Tally::default());
    assert_eq!(
        attributes
            .iter()
            .map(|a| a.key.as_str())
            .collect::<Vec<_>>(),
        vec!["http.route"]
    );
}

#[test]
fn ignored_keys_blocked_keys_and_authorization() {
    let config = RedactionConfig {
        allow_all_keys: true,
        ignored_keys: vec!["trusted".into()],
        blocked_key_patterns: vec!["(?i)password".into()],
        ..Default::default()
    };
    let mut attributes = vec![
        kv("trusted", "jane@example.com"),
        kv("db.password", "hunter2"),
        kv("Authorization", "Basic dXNlcjpwYXNz"),
    ];
    Redactor::new(config)
        .unwrap()
        .redact_attributes(&mut attributes, &mut Tally::default());
    assert_eq!(
        attributes.iter().map(string_of).collect::<Vec<_>>(),
        vec!["jane@example.com", "****", "****"]
    );
}

#[test]
fn hash_correlates_without_revealing() {
    let config = RedactionConfig {
        allow_all_keys: true,
        action: Action::Hash,
        hash_key: Some(Secret("0123456789abcdef".into())),
        ..Default::default()
    };
    let r = Redactor::new(config).unwrap();
    let mut tally = Tally::default();
    let a = r.redact_text("user jane@example.com", &mut tally).unwrap();
    let b = r.redact_text("again jane@example.com", &mut tally).unwrap();
    assert!(!a.contains("jane"));
    assert_eq!(
        a.trim_start_matches("user "),
        b.trim_start_matches("again ")
    );
    assert_eq!(a.len(), "user ".len() + 16);
}

#[test]
fn hash_needs_a_key() {
    let config = RedactionConfig {
        action: Action::Hash,
        ..Default::default()
    };
    assert_eq!(config.validate().unwrap_err().key, "hash_key");
}

#[test]
fn drop_removes_the_attribute_and_nested_values_are_scanned() {
    let config = RedactionConfig {
        allow_all_keys: true,
        action: Action::Drop,
        ..Default::default()
    };
    let nested = AnyValue {
        value: Some(Value::KvlistValue(KeyValueList {
            values: vec![kv("inner", "call +14155552671"), kv("ok", "fine")],
        })),
    };
    let array = AnyValue {
        value: Some(Value::ArrayValue(ArrayValue {
            values: vec![AnyValue {
                value: Some(Value::StringValue("4111111111111111".into())),
            }],
        })),
    };
    let mut attributes = vec![
        kv("keep", "nothing here"),
        KeyValue {
            key: "map".into(),
            value: Some(nested),
            ..Default::default()
        },
        KeyValue {
            key: "list".into(),
            value: Some(array),
            ..Default::default()
        },
    ];
    Redactor::new(config)
        .unwrap()
        .redact_attributes(&mut attributes, &mut Tally::default());
    let keys: Vec<&str> = attributes.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(keys, vec!["keep", "map"]);
    let Some(Value::KvlistValue(inner)) =
        attributes[1].value.as_ref().and_then(|v| v.value.as_ref())
    else {
        panic!("map kept")
    };
    assert_eq!(
        inner
            .values
            .iter()
            .map(|k| k.key.as_str())
            .collect::<Vec<_>>(),
        vec!["ok"]
    );
}

#[test]
fn summary_counts_what_changed() {
    let config = RedactionConfig {
        allow_all_keys: true,
        summary: Summary::Debug,
        ..Default::default()
    };
    let mut attributes = vec![kv("email", "a@b.example"), kv("clean", "x")];
    Redactor::new(config)
        .unwrap()
        .redact_item(&mut attributes, Tally::default());
    let get = |k: &str| attributes.iter().find(|a| a.key == k).map(string_of);
    assert_eq!(
        get("redaction.masked.count"),
        Some("Some(IntValue(1))".into())
    );
    assert_eq!(get("redaction.masked.keys"), Some("email".into()));
}

#[test]
fn traces_logs_and_metrics_are_redacted_everywhere() {
    use crate::model::tests::resource_spans;
    let mut spans = resource_spans(1, 1);
    let span = &mut spans[0].scope_spans[0].spans[0];
    span.name = "GET /users/jane@example.com".into();
    span.attributes.push(kv("peer", "203.0.113.9"));
    span.events
        .push(opentelemetry_proto::tonic::trace::v1::span::Event {
            name: "login a@b.example".into(),
            attributes: vec![kv("ssn", "123-45-6789")],
            ..Default::default()
        });
    spans[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .push(kv("owner", "ops@example.com"));
    let mut batch = Batch::from_traces(spans);
    redactor().redact_batch(&mut batch);
    let text = format!("{:?}", batch.traces_mut());
    for pii in [
        "jane@example.com",
        "203.0.113.9",
        "a@b.example",
        "123-45-6789",
        "ops@example.com",
    ] {
        assert!(!text.contains(pii), "{pii} survived in {text}");
    }
    assert_eq!(batch.signal(), Signal::Traces);
}

#[test]
fn bearer_tokens_with_underscores_are_masked_whole() {
    assert_eq!(
        redact("auth Bearer sk_live_abcdef123456 end"),
        "auth <bearer_token> end"
    );
}

mod prefilter {
    use super::*;
    use proptest::prelude::*;

    /// The detectors and two user patterns, one with a literal start.
    fn filtered() -> Redactor {
        Redactor::new(RedactionConfig {
            allow_all_keys: true,
            blocked_values: vec!["session=[A-Za-z0-9]{16,}".into(), "(?i)token-[0-9]+".into()],
            ..Default::default()
        })
        .unwrap()
    }

    /// The same rules with every pattern tried on every string.
    fn unfiltered() -> Redactor {
        let mut redactor = filtered();
        for rule in &mut redactor.rules {
            rule.prefilter = None;
            rule.prefixes = None;
        }
        redactor
    }

    fn both(text: &str) -> (Option<String>, Option<String>) {
        let (mut a, mut b) = (Tally::default(), Tally::default());
        (
            filtered().redact_text(text, &mut a),
            unfiltered().redact_text(text, &mut b),
        )
    }

    /// The shortest text each detector finds, so a prefilter demanding one byte more
    /// than its pattern needs fails here.
    const SHORTEST: &[&str] = &[
        "a@b.cc",
        "4222222222222",
        "1.1.1.1",
        "::1",
        "123-45-6789",
        "+14155552",
        "555-123-4567",
        "eyJhbGci.abcde.",
        "bearer abcdefgh",
        "AKIAABCDEFGHIJKLMNOP",
        "-----BEGIN PRIVATE KEY-----x-----END PRIVATE KEY-----",
        "NO9386011117947",
        "session=abcdefghijklmnop",
        "ToKeN-1",
    ];

    #[test]
    fn a_user_pattern_with_a_literal_start_needs_that_literal() {
        assert_eq!(
            detectors::required_prefixes("session=[A-Za-z0-9]{16,}"),
            Some(vec!["session=".to_string()])
        );
        assert_eq!(
            detectors::required_prefixes("id-(a|b)"),
            Some(vec!["id-a".to_string(), "id-b".to_string()])
        );
        assert_eq!(
            detectors::required_prefixes(".*secret"),
            None,
            "no literal start"
        );
        assert_eq!(
            detectors::required_prefixes("x?y*"),
            None,
            "may match empty"
        );
    }

    #[test]
    fn every_detector_example_passes_the_prefilter() {
        for (_, pii, _, near_miss) in TABLE {
            assert_eq!(both(pii).0, both(pii).1, "{pii}");
            assert_eq!(both(near_miss).0, both(near_miss).1, "{near_miss}");
        }
        for text in SHORTEST {
            let (filtered, all) = both(text);
            assert!(all.is_some(), "{text} is found");
            assert_eq!(filtered, all, "{text}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The prefilter only skips patterns that cannot match: with it and without
        /// it, any text comes out the same.
        #[test]
        fn the_prefilter_never_hides_a_match(
            before in "[ -~]{0,30}",
            pii in prop_oneof![
                prop::sample::select(TABLE).prop_map(|row| row.1),
                prop::sample::select(SHORTEST),
            ],
            after in "[ -~]{0,30}",
            noise in "[0-9A-Fa-f .:@+()=-]{0,40}",
        ) {
            let text = format!("{before}{pii}{after}");
            let (filtered, all) = both(&text);
            prop_assert_eq!(filtered, all);
            let (filtered, all) = both(&noise);
            prop_assert_eq!(filtered, all);
        }
    }
}

#[test]
fn key_rules_are_remembered_only_for_short_keys() {
    let redactor = Redactor::new(RedactionConfig {
        allow_all_keys: true,
        ..Default::default()
    })
    .unwrap();
    let long_key = "k".repeat(KEY_REMEMBERED_BYTES + 1);
    assert_eq!(redactor.key_rule(&long_key), KeyRule::Scan);
    assert_eq!(redactor.key_rule("user.email"), KeyRule::Scan);
    let remembered = redactor.key_rules.borrow();
    assert_eq!(remembered.len(), 1);
    assert!(remembered.contains_key(&b"user.email"[..]));
}

#[test]
fn a_string_that_comes_again_gets_the_same_answer_and_only_clean_ones_are_remembered() {
    let redactor = redactor();
    let strings = [
        "GET",
        "jane@example.com",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        "from 203.0.113.7",
    ];
    for round in 0..3 {
        for text in strings {
            let mut tally = Tally::default();
            let first = redactor.redact_text(text, &mut tally);
            let fresh = redact(text);
            assert_eq!(
                first.as_deref().unwrap_or(text),
                fresh,
                "round {round}: {text}"
            );
            assert_eq!(tally.detections, usize::from(first.is_some()), "{text}");
            let remembered = redactor
                .clean
                .borrow()
                .hash(text.as_bytes())
                .is_some_and(|hash| redactor.clean.borrow().contains(hash, text.as_bytes()));
            assert_eq!(remembered, first.is_none(), "{text} remembered as clean");
        }
    }
}
