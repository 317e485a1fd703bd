//! Conditions from the collector's documentation (filter processor, routing connector),
//! each with items that must and must not match; conditions sieve refuses, with where;
//! and a property test that the parser never panics.

use super::*;
use opentelemetry_proto::tonic::common::v1::KeyValueList;
use std::collections::HashMap;

/// An item made of named fields, for evaluating conditions without a batch.
#[derive(Default)]
struct Fake {
    fields: HashMap<String, Val<'static>>,
    attributes: Vec<KeyValue>,
    resource: Vec<KeyValue>,
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

impl Item for Fake {
    fn field(&self, field: &Field) -> Val<'_> {
        match field {
            Field::Attributes(keys) => Val::lookup(&self.attributes, keys),
            Field::ResourceAttributes(keys) => Val::lookup(&self.resource, keys),
            other => self
                .fields
                .get(&format!("{other:?}"))
                .cloned()
                .unwrap_or(Val::Nil),
        }
    }
}

fn span(name: &str, kind: i64, status: i64, attributes: Vec<KeyValue>) -> Fake {
    let mut fields = HashMap::new();
    fields.insert("Name".into(), Val::Str(Cow::Owned(name.into())));
    fields.insert("Kind".into(), Val::Int(kind));
    fields.insert("StatusCode".into(), Val::Int(status));
    fields.insert(
        "ScopeName".into(),
        Val::Str(Cow::Borrowed("io.opentelemetry.jdbc")),
    );
    Fake {
        fields,
        attributes,
        resource: vec![
            string("service.name", "checkout"),
            string("host.name", "node-1"),
        ],
    }
}

fn log(body: &str, severity: i64) -> Fake {
    let mut fields = HashMap::new();
    fields.insert("Body([])".into(), Val::Str(Cow::Owned(body.into())));
    fields.insert("SeverityNumber".into(), Val::Int(severity));
    fields.insert("SeverityText".into(), Val::Str(Cow::Borrowed("DEBUG")));
    Fake {
        fields,
        ..Default::default()
    }
}

fn metric(name: &str, kind: i64) -> Fake {
    let mut fields = HashMap::new();
    fields.insert("MetricName".into(), Val::Str(Cow::Owned(name.into())));
    fields.insert("MetricType".into(), Val::Int(kind));
    Fake {
        fields,
        ..Default::default()
    }
}

/// (context, condition, items that match, items that do not)
fn table() -> Vec<(Context, &'static str, Vec<Fake>, Vec<Fake>)> {
    vec![
        (
            Context::Span,
            r#"attributes["http.route"] == "/healthz""#,
            vec![span("GET", 2, 0, vec![string("http.route", "/healthz")])],
            vec![
                span("GET", 2, 0, vec![string("http.route", "/api")]),
                span("GET", 2, 0, vec![]),
            ],
        ),
        (
            Context::Span,
            r#"name == "app_3""#,
            vec![span("app_3", 1, 0, vec![])],
            vec![span("app_4", 1, 0, vec![])],
        ),
        (
            Context::Span,
            "kind == SPAN_KIND_SERVER and status.code != STATUS_CODE_ERROR",
            vec![span("a", 2, 0, vec![]), span("a", 2, 1, vec![])],
            vec![span("a", 2, 2, vec![]), span("a", 3, 0, vec![])],
        ),
        (
            Context::Span,
            r#"resource.attributes["service.name"] == "checkout" and not IsMatch(name, "^GET")"#,
            vec![span("POST /pay", 2, 0, vec![])],
            vec![span("GET /", 2, 0, vec![])],
        ),
        (
            Context::Span,
            r#"attributes["container.name"] == "app_container_1" or attributes["http.status_code"] >= 500"#,
            vec![
                span("a", 0, 0, vec![int("http.status_code", 503)]),
                span("a", 0, 0, vec![string("container.name", "app_container_1")]),
            ],
            vec![span("a", 0, 0, vec![int("http.status_code", 200)])],
        ),
        (
            Context::Span,
            r#"attributes["http.status_code"] > 499.5"#,
            vec![span("a", 0, 0, vec![int("http.status_code", 500)])],
            vec![span("a", 0, 0, vec![int("http.status_code", 499)])],
        ),
        (
            Context::Span,
            r#"attributes["missing"] == nil"#,
            vec![span("a", 0, 0, vec![])],
            vec![span("a", 0, 0, vec![string("missing", "")])],
        ),
        (
            Context::Span,
            r#"attributes["missing"] != nil"#,
            vec![span("a", 0, 0, vec![string("missing", "x")])],
            vec![span("a", 0, 0, vec![])],
        ),
        (
            Context::Span,
            r#"IsString(attributes["v"]) and Len(attributes["v"]) > 3"#,
            vec![span("a", 0, 0, vec![string("v", "long")])],
            vec![
                span("a", 0, 0, vec![string("v", "abc")]),
                span("a", 0, 0, vec![int("v", 12345)]),
            ],
        ),
        (
            Context::Span,
            r#"IsInt(attributes["v"])"#,
            vec![span("a", 0, 0, vec![int("v", 1)])],
            vec![span("a", 0, 0, vec![string("v", "1")])],
        ),
        (
            Context::Span,
            r#"HasPrefix(name, "health") or HasSuffix(name, "/ready")"#,
            vec![
                span("healthz", 0, 0, vec![]),
                span("GET /ready", 0, 0, vec![]),
            ],
            vec![span("GET /", 0, 0, vec![])],
        ),
        (
            Context::Span,
            r#"instrumentation_scope.name == "io.opentelemetry.jdbc""#,
            vec![span("a", 0, 0, vec![])],
            vec![],
        ),
        (
            Context::Span,
            r#"(name == "a" or name == "b") and kind == 2"#,
            vec![span("b", 2, 0, vec![])],
            vec![span("b", 1, 0, vec![]), span("c", 2, 0, vec![])],
        ),
        (
            Context::Span,
            r#"attributes["nested"]["inner"] == "x""#,
            vec![span(
                "a",
                0,
                0,
                vec![KeyValue {
                    key: "nested".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::KvlistValue(KeyValueList {
                            values: vec![string("inner", "x")],
                        })),
                    }),
                    ..Default::default()
                }],
            )],
            vec![span("a", 0, 0, vec![string("nested", "x")])],
        ),
        (
            Context::Log,
            r#"IsMatch(body, ".*password.*")"#,
            vec![log("my password is x", 9)],
            vec![log("hello", 9)],
        ),
        (
            Context::Log,
            "severity_number < SEVERITY_NUMBER_WARN",
            vec![log("x", 9), log("x", 0)],
            vec![log("x", 13), log("x", 17)],
        ),
        (
            Context::Log,
            r#"severity_text == "DEBUG""#,
            vec![log("x", 5)],
            vec![],
        ),
        (
            Context::Metric,
            r#"name == "k8s.replicaset.available""#,
            vec![metric("k8s.replicaset.available", 1)],
            vec![metric("other", 1)],
        ),
        (
            Context::Metric,
            r#"metric.name == "x" and type == METRIC_DATA_TYPE_HISTOGRAM"#,
            vec![metric("x", 3)],
            vec![metric("x", 2)],
        ),
        (
            Context::DataPoint,
            r#"metric.name == "x" and attributes["tier"] == "debug""#,
            vec![{
                let mut m = metric("x", 2);
                m.attributes = vec![string("tier", "debug")];
                m
            }],
            vec![metric("x", 2)],
        ),
        (
            Context::Resource,
            r#"attributes["host.name"] == "node-1""#,
            vec![Fake {
                attributes: vec![string("host.name", "node-1")],
                ..Default::default()
            }],
            vec![Fake::default()],
        ),
    ]
}

#[test]
fn documented_conditions_match_what_they_say() {
    for (context, text, matching, not_matching) in table() {
        let condition = Condition::new(text, context).unwrap_or_else(|e| panic!("{text}: {e}"));
        for item in &matching {
            assert!(
                condition.matches(item),
                "{text} should match {:?}",
                item.fields
            );
        }
        for item in &not_matching {
            assert!(
                !condition.matches(item),
                "{text} should not match {:?} {:?}",
                item.fields,
                item.attributes
            );
        }
    }
}

/// (context, condition, column of the error, words of the message)
const REFUSED: &[(Context, &str, usize, &str)] = &[
    (
        Context::Span,
        r#"attributes["a"] = "b""#,
        17,
        "expected `==`",
    ),
    (Context::Span, r#"name == "open"#, 9, "not closed"),
    (
        Context::Span,
        "body == \"x\"",
        1,
        "not a path of the span context",
    ),
    (
        Context::Log,
        "kind == SPAN_KIND_SERVER",
        1,
        "not a path of the log context",
    ),
    (Context::Span, r#"IsMatch(name)"#, 1, "takes 2 arguments"),
    (
        Context::Span,
        r#"IsMatch(name, name)"#,
        15,
        "pattern as a string literal",
    ),
    (
        Context::Span,
        r#"IsMatch(name, "(")"#,
        15,
        "not a regular expression",
    ),
    (
        Context::Span,
        r#"Concat(name, "x") == "y""#,
        1,
        "not a converter sieve has",
    ),
    (
        Context::Span,
        "name == SPAN_KIND_NOPE",
        9,
        "not an enum or converter",
    ),
    (Context::Span, r#"name == "a" and"#, 16, "expected a value"),
    (Context::Span, r#"name == "a")"#, 12, "unexpected `)`"),
    (Context::Span, r#"(name == "a""#, 13, "expected `)`"),
    (
        Context::Span,
        r#"attributes[0] == "a""#,
        12,
        "expected a string key",
    ),
    (
        Context::Span,
        r#"name == "a" # comment"#,
        13,
        "unexpected `#`",
    ),
    (
        Context::Span,
        r#"set(attributes["a"], "b")"#,
        1,
        "not a converter sieve has",
    ),
    (
        Context::Span,
        r#"trace_id == TraceID(0x0102)"#,
        21,
        "16-byte literal",
    ),
    (
        Context::Span,
        "name == 0x123",
        9,
        "even number of hex digits",
    ),
];

#[test]
fn unsupported_or_malformed_conditions_are_refused_where_they_go_wrong() {
    for (context, text, column, words) in REFUSED {
        let error = Condition::new(text, *context)
            .err()
            .unwrap_or_else(|| panic!("{text} was accepted"));
        assert!(error.message.contains(words), "{text}: {error}");
        assert_eq!(error.position + 1, *column, "{text}: {error}");
    }
}

#[test]
fn ids_compare_as_bytes_or_as_hex() {
    let mut item = span("a", 0, 0, vec![]);
    item.fields
        .insert("TraceId".into(), Val::Bytes(Cow::Owned(vec![1; 16])));
    let by_bytes = Condition::new(
        "trace_id == TraceID(0x01010101010101010101010101010101)",
        Context::Span,
    )
    .unwrap();
    assert!(by_bytes.matches(&item));
    let other = Condition::new(
        "trace_id == TraceID(0x02010101010101010101010101010101)",
        Context::Span,
    )
    .unwrap();
    assert!(!other.matches(&item));
}

#[test]
fn nesting_and_length_are_bounded() {
    let deep = format!("{}name == \"a\"{}", "(".repeat(100), ")".repeat(100));
    assert!(Condition::new(&deep, Context::Span)
        .unwrap_err()
        .message
        .contains("nested more than"));
    let long = format!("name == \"{}\"", "a".repeat(9000));
    assert!(Condition::new(&long, Context::Span)
        .unwrap_err()
        .message
        .contains("at most"));
    let nots = format!("{}true", "not ".repeat(100));
    assert!(Condition::new(&nots, Context::Span).is_err());
}

proptest::proptest! {
    #[test]
    fn the_parser_never_panics(text in ".{0,80}") {
        let _ = Condition::new(&text, Context::Span);
    }

    #[test]
    fn the_parser_never_panics_on_near_misses(parts in proptest::collection::vec(
        proptest::sample::select(vec!["name", "==", "!=", "<", "(", ")", "\"x\"", "and", "or", "not",
            "attributes", "[", "]", "\"k\"", "IsMatch", ",", "1", "1.5", "0x00", "nil", "SPAN_KIND_SERVER", ".", "Len"]),
        0..20)) {
        let text = parts.join(" ");
        if let Ok(condition) = Condition::new(&text, Context::Span) {
            let _ = condition.matches(&span("a", 2, 0, vec![]));
        }
    }
}
