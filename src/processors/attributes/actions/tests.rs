//! A table of the collector's actions (its README's examples and `attraction` rules):
//! each action on given attributes and the attributes it leaves; and a table of
//! configurations the collector refuses, with what the message must say.

use super::*;

/// Attributes from a YAML map, typed as YAML types them, sorted for comparison.
fn attributes(yaml: &str) -> Vec<KeyValue> {
    let map: serde_yaml::Mapping = serde_yaml::from_str(yaml).unwrap();
    let mut list: Vec<KeyValue> = map
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.as_str().unwrap().to_string(),
            value: Some(any_value(v).unwrap()),
            ..Default::default()
        })
        .collect();
    list.sort_by(|a, b| a.key.cmp(&b.key));
    list
}

fn actions(yaml: &str) -> Result<Actions, FieldError> {
    let configs: Vec<ActionConfig> =
        serde_yaml::from_str(yaml).map_err(|e| FieldError::new("yaml", e.to_string()))?;
    Actions::new("actions", &configs)
}

const TENANT: &str = "x-tenant";

/// (actions, attributes before, attributes after, whether the request carried metadata)
const CASES: &[(&str, &str, &str, bool)] = &[
    // insert: only where the key is absent
    ("[{key: account_id, value: 2245, action: insert}]", "{}", "{account_id: 2245}", false),
    ("[{key: account_id, value: 2245, action: insert}]", "{account_id: 1}", "{account_id: 1}", false),
    ("[{key: account_id, value: 2245, action: INSERT}]", "{}", "{account_id: 2245}", false),
    // update: only where the key is present
    ("[{key: copy_key, from_attribute: key_original, action: update}]", "{copy_key: a, key_original: b}", "{copy_key: b, key_original: b}", false),
    ("[{key: copy_key, from_attribute: key_original, action: update}]", "{key_original: b}", "{key_original: b}", false),
    ("[{key: copy_key, from_attribute: key_original, action: update}]", "{copy_key: a}", "{copy_key: a}", false),
    // upsert: both
    ("[{key: redacted_span, value: true, action: upsert}]", "{}", "{redacted_span: true}", false),
    ("[{key: redacted_span, value: true, action: upsert}]", "{redacted_span: no}", "{redacted_span: true}", false),
    ("[{key: ratio, value: 0.5, action: upsert}]", "{}", "{ratio: 0.5}", false),
    ("[{key: tags, value: [a, b], action: upsert}]", "{}", "{tags: [a, b]}", false),
    // default_value when the source has none
    ("[{key: region, from_attribute: cloud.region, default_value: us-east-1, action: insert}]", "{}", "{region: us-east-1}", false),
    ("[{key: region, from_attribute: cloud.region, default_value: us-east-1, action: insert}]", "{cloud.region: eu-west-1}", "{cloud.region: eu-west-1, region: eu-west-1}", false),
    // from_context: the request's metadata
    ("[{key: tenant_id, from_context: metadata.x-tenant, default_value: default-tenant, action: upsert}]", "{}", "{tenant_id: acme}", true),
    ("[{key: tenant_id, from_context: metadata.x-tenant, default_value: default-tenant, action: upsert}]", "{}", "{tenant_id: default-tenant}", false),
    ("[{key: tenant_id, from_context: X-Tenant, action: upsert}]", "{}", "{tenant_id: acme}", true),
    ("[{key: tenant_id, from_context: metadata.x-other, action: upsert}]", "{}", "{}", true),
    // from_context: the client's address
    ("[{key: net.peer.ip, from_context: client.address, action: insert}]", "{}", "{net.peer.ip: 10.1.2.3}", true),
    ("[{key: net.peer.ip, from_context: client.address, action: insert}]", "{}", "{}", false),
    // delete: by key and by pattern
    ("[{key: db.table, action: delete}]", "{db.table: users, db.system: pg}", "{db.system: pg}", false),
    ("[{pattern: '^account_', action: delete}]", "{account_password: x, account_email: y, user: z}", "{user: z}", false),
    ("[{key: missing, action: delete}]", "{user: z}", "{user: z}", false),
    // hash: SHA-256 of the value's bytes, as hex
    ("[{key: account_email, action: hash}]", "{account_email: jane@example.com}", "{account_email: 8c87b489ce35cf2e2f39f80e282cb2e804932a56a213983eeeb428407d43b52d}", false),
    ("[{pattern: '_id$', action: hash}]", "{account_id: 2245, flag_id: true, name: n}", "{account_id: 91df0e58e24451873e480a434ac913ec45d00603e21470511a89c1e850e58c87, flag_id: 4bf5122f344554c53bde2ebb8cd2b7e3d1600ad631c385a5d7cce23c7785459a, name: n}", false),
    // extract: one attribute per named group, the source left as it is
    (
        r"[{key: http.url, pattern: '^(?P<http_protocol>[a-z]+)://(?P<http_domain>[^/]+)/(?P<http_path>[^?]*)(?:\?(?P<http_query_params>.*))?$', action: extract}]",
        "{http.url: 'http://example.com/path/a?x=1&y=2', http_domain: old}",
        "{http.url: 'http://example.com/path/a?x=1&y=2', http_domain: example.com, http_path: path/a, http_protocol: http, http_query_params: 'x=1&y=2'}",
        false,
    ),
    (
        r"[{key: http.url, pattern: '^(?P<http_protocol>[a-z]+)://(?P<http_domain>[^/]+)/(?P<http_path>[^?]*)(?:\?(?P<http_query_params>.*))?$', action: extract}]",
        "{http.url: 'http://example.com/p'}",
        "{http.url: 'http://example.com/p', http_domain: example.com, http_path: p, http_protocol: http, http_query_params: ''}",
        false,
    ),
    (r"[{key: n, pattern: '(?P<digits>\d+)', action: extract}]", "{n: 12}", "{n: 12}", false),
    (r"[{key: n, pattern: '(?P<digits>\d+)', action: extract}]", "{n: abc}", "{n: abc}", false),
    // convert: what converts does, the rest stays
    ("[{key: http.status_code, action: convert, converted_type: int}]", "{http.status_code: '200'}", "{http.status_code: 200}", false),
    ("[{key: http.status_code, action: convert, converted_type: int}]", "{http.status_code: ' 200'}", "{http.status_code: ' 200'}", false),
    ("[{key: v, action: convert, converted_type: int}]", "{v: 1.9}", "{v: 1}", false),
    ("[{key: v, action: convert, converted_type: int}]", "{v: true}", "{v: 1}", false),
    ("[{key: v, action: convert, converted_type: double}]", "{v: '2.5'}", "{v: 2.5}", false),
    ("[{key: v, action: convert, converted_type: double}]", "{v: 3}", "{v: 3.0}", false),
    ("[{key: v, action: convert, converted_type: string}]", "{v: 3}", "{v: '3'}", false),
    ("[{key: v, action: convert, converted_type: string}]", "{v: false}", "{v: 'false'}", false),
    // lists and maps as JSON, as the collector's AsString writes them
    ("[{key: v, action: convert, converted_type: string}]", "{v: [a, 1, true]}", r#"{v: '["a",1,true]'}"#, false),
    ("[{key: v, action: convert, converted_type: string}]", "{v: {k: x, n: 2}}", r#"{v: '{"k":"x","n":2}'}"#, false),
    // actions run in order
    ("[{key: a, value: 1, action: insert}, {key: b, from_attribute: a, action: insert}, {key: a, action: delete}]", "{}", "{b: 1}", false),
];

#[test]
fn each_action_does_what_the_collector_documents() {
    let metadata = Metadata::from_pairs([(TENANT.to_string(), "acme".to_string())]);
    for (at, (list, before, after, with_metadata)) in CASES.iter().enumerate() {
        let actions =
            actions(list).unwrap_or_else(|e| panic!("case {at}: {}: {}", e.key, e.message));
        let mut attrs = attributes(before);
        let context = Context {
            metadata: with_metadata.then_some(&metadata),
            client: with_metadata.then(|| "10.1.2.3".parse().unwrap()),
        };
        actions.apply(&mut attrs, context);
        attrs.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(attrs, attributes(after), "case {at}: {list} on {before}");
    }
}

/// (actions, what the message must say): the collector's refusals, and sieve's own
/// for context values it does not keep.
const REFUSED: &[(&str, &str)] = &[
    ("[{value: 1, action: insert}]", "needs a `key`"),
    (
        "[{key: a, action: insert}]",
        "needs one of `value`, `from_attribute`, `from_context` or `default_value`",
    ),
    (
        "[{key: a, value: 1, from_attribute: b, action: upsert}]",
        "only one of",
    ),
    (
        "[{key: a, value: 1, pattern: x, action: insert}]",
        "`pattern` does not go with `action: insert`",
    ),
    (
        "[{key: a, value: 1, action: delete}]",
        "`value` does not go with `action: delete`",
    ),
    ("[{action: hash}]", "needs a `key` or a `pattern`"),
    (
        "[{key: a, pattern: '(', action: delete}]",
        "not a regular expression",
    ),
    (
        r"[{key: a, pattern: '(\d+)', action: extract}]",
        "no named capture group",
    ),
    (
        r"[{key: a, pattern: '(?P<x>\d+)(a|b)', action: extract}]",
        "must name every capture group",
    ),
    ("[{key: a, action: extract}]", "needs a `pattern`"),
    ("[{key: a, action: convert}]", "needs `converted_type`"),
    (
        "[{key: a, action: convert, converted_type: int, value: 1}]",
        "`value` does not go",
    ),
    (
        "[{key: a, converted_type: int, action: upsert, value: 1}]",
        "`converted_type` does not go",
    ),
    ("[{key: a, action: explode}]", "unknown action `explode`"),
    (
        "[{key: a, action: upsert, from_context: auth.groups}]",
        "not `auth.groups`",
    ),
    ("[{key: a, action: upsert, value: null}]", "needs one of"),
    (
        "[{key: a, action: upsert, value: [1, null]}]",
        "must not be empty",
    ),
    (
        "[{key: a, action: upsert, value: 1, colour: red}]",
        "unknown field `colour`",
    ),
];

#[test]
fn configurations_the_collector_refuses_are_refused_with_the_reason() {
    for (list, expected) in REFUSED {
        let error = actions(list)
            .err()
            .unwrap_or_else(|| panic!("{list} was accepted"));
        let message = format!("{}: {}", error.key, error.message);
        assert!(message.contains(expected), "{list}: {message}");
    }
    let error = actions("[{key: a, value: 1, action: insert}, {key: b, action: insert}]")
        .err()
        .unwrap();
    assert_eq!(error.key, "actions[1]");
}
