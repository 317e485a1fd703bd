use super::policy::{encode_threshold, final_decision, with_threshold, Decision::*};
use super::*;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};
use std::collections::BTreeSet;
use std::time::Duration;

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn trace_id(n: u64) -> Vec<u8> {
    let mut id = vec![0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    // Spread the randomness bytes so probabilistic rules see uniform ids.
    id[8..].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    id
}

/// A span of trace `trace`; span 0 is the root.
fn span(trace: u64, index: u8) -> Span {
    Span {
        trace_id: trace_id(trace),
        span_id: vec![index + 1; 8],
        parent_span_id: if index == 0 { Vec::new() } else { vec![1; 8] },
        name: format!("span-{index}"),
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_010_000_000,
        ..Default::default()
    }
}

fn batch_of(spans: Vec<Span>) -> Batch {
    Batch::from_traces(vec![ResourceSpans {
        resource: Some(Resource {
            attributes: vec![attribute(
                "service.name",
                Value::StringValue("checkout".into()),
            )],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }])
}

fn config(yaml: &str) -> TailSamplingConfig {
    let config: TailSamplingConfig = serde_yaml::from_str(yaml).expect("config parses");
    config.validate().expect("config is valid");
    config
}

fn sampler(config: TailSamplingConfig) -> (TailSampler, Arc<Telemetry>) {
    let telemetry = Telemetry::new();
    (
        TailSampler::new(config, "tail", &telemetry).unwrap(),
        telemetry,
    )
}

use std::sync::Arc;

/// Decodes output batches into the spans they carry.
fn spans_of(out: Vec<Batch>) -> Vec<Span> {
    let mut spans = Vec::new();
    for mut batch in out {
        let items = batch.items();
        let decoded: Vec<Span> = batch
            .traces_mut()
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| ss.spans.clone())
            .collect();
        assert_eq!(
            decoded.len(),
            items,
            "a batch's item count matches its spans"
        );
        spans.extend(decoded);
    }
    spans
}

fn kept_traces(spans: &[Span]) -> BTreeSet<u64> {
    spans
        .iter()
        .map(|s| u64::from_be_bytes(s.trace_id[..8].try_into().unwrap()))
        .collect()
}

/// Feeds the spans, lets every decision fall due, and returns what was kept.
fn run(sampler: &mut TailSampler, spans: Vec<Span>) -> Vec<Span> {
    let mut out = Vec::new();
    sampler.process(batch_of(spans), &mut out);
    assert!(out.is_empty(), "nothing leaves before its decision");
    sampler.on_tick(Instant::now() + Duration::from_secs(3600), &mut out);
    spans_of(out)
}

fn policy_keeps(policy_yaml: &str, spans: Vec<Span>) -> BTreeSet<u64> {
    let yaml = format!("policies:\n{policy_yaml}");
    let (mut s, _t) = sampler(config(&yaml));
    kept_traces(&run(&mut s, spans))
}

fn with_attribute(mut span: Span, key: &str, value: Value) -> Span {
    span.attributes.push(attribute(key, value));
    span
}

/// Asserts the sampler's telemetry holds this exposition line (or line prefix).
fn assert_metric(telemetry: &Telemetry, line: &str) {
    let text = telemetry.encode();
    assert!(text.contains(line), "{line} missing from:\n{text}");
}

/// An export request whose only span is `span_bytes`, framed by hand.
fn request_of_one_span(span_bytes: Vec<u8>) -> Vec<u8> {
    let mut scope = Vec::new();
    prost::encoding::bytes::encode(2, &span_bytes, &mut scope);
    let mut resource = Vec::new();
    prost::encoding::bytes::encode(2, &scope, &mut resource);
    let mut request = Vec::new();
    prost::encoding::bytes::encode(1, &resource, &mut request);
    request
}

#[test]
fn the_collector_decision_rule() {
    // (policy decisions, sampled?) — the collector's table.
    let table: &[(&[policy::Decision], bool)] = &[
        (&[Sampled], true),
        (&[NotSampled], false),
        (&[InvertSampled], true),
        (&[InvertNotSampled], false),
        (&[Dropped], false),
        (&[Sampled, NotSampled], true),
        (&[Sampled, InvertNotSampled], false),
        (&[Sampled, Dropped], false),
        (&[InvertSampled, NotSampled], false),
        (&[InvertSampled, Sampled], true),
        (&[InvertSampled, InvertSampled], true),
        (&[NotSampled, NotSampled], false),
        (&[Dropped, InvertSampled], false),
        (&[], false),
    ];
    for (decisions, expected) in table {
        assert_eq!(final_decision(decisions), *expected, "{decisions:?}");
    }
}

#[test]
fn a_trace_is_held_until_its_decision_and_then_sent_whole() {
    let (mut s, _t) = sampler(config(
        "decision_wait: 10s\npolicies: [{name: all, type: always_sample}]",
    ));
    let mut out = Vec::new();
    s.process(batch_of(vec![span(1, 0), span(2, 0)]), &mut out);
    s.process(batch_of(vec![span(1, 1), span(1, 2)]), &mut out);
    assert!(out.is_empty());
    assert_eq!(s.traces_held(), 2);
    let due = s.next_deadline().expect("a decision is scheduled");
    assert!(due > Instant::now() + Duration::from_secs(9));
    s.on_tick(Instant::now() + Duration::from_secs(1), &mut out);
    assert!(out.is_empty(), "not due yet");
    s.on_tick(due, &mut out);
    let spans = spans_of(out);
    assert_eq!(spans.len(), 4);
    let of_trace_1 = spans.iter().filter(|sp| sp.trace_id == trace_id(1)).count();
    assert_eq!(of_trace_1, 3, "every span of the trace arrives");
    assert_eq!(s.traces_held(), 0);
    assert_eq!(s.bytes_held(), 0, "memory accounting returns to zero");
}

#[test]
fn kept_spans_keep_their_resource_and_scope() {
    let (mut s, _t) = sampler(config("policies: [{name: all, type: always_sample}]"));
    let mut out = Vec::new();
    s.process(batch_of(vec![span(1, 0)]), &mut out);
    s.flush(&mut out);
    let mut batch = out.pop().unwrap();
    let resource_spans = batch.traces_mut();
    let resource = resource_spans[0].resource.as_ref().unwrap();
    assert_eq!(resource.attributes[0].key, "service.name");
    assert_eq!(resource_spans[0].scope_spans[0].spans[0], span(1, 0));
}

#[test]
fn encoded_spans_are_held_and_sent_as_the_bytes_that_arrived() {
    let (mut s, _t) = sampler(config("policies: [{name: all, type: always_sample}]"));
    let sent = batch_of(vec![span(1, 0), span(1, 1)]).to_bytes();
    let mut out = Vec::new();
    s.process(
        Batch::from_request(Signal::Traces, sent.clone())
            .unwrap()
            .batch,
        &mut out,
    );
    s.flush(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].items(), 2);
    assert_eq!(
        out[0].to_bytes(),
        sent,
        "one trace, one scope: the very same bytes"
    );
}

/// The edge check refuses such a span; the sampler copes anyway (defence in depth).
#[test]
fn a_malformed_status_reads_as_unset_and_keeps_the_span() {
    // A span whose status (field 15) holds a truncated varint for its code.
    let mut span_bytes = Vec::new();
    prost::encoding::bytes::encode(1, &trace_id(7), &mut span_bytes);
    prost::encoding::bytes::encode(15, &vec![0x18, 0xff], &mut span_bytes);
    let request = request_of_one_span(span_bytes);
    let yaml = "policies: [{name: unset, type: status_code, status_code: {status_codes: [UNSET]}}]";
    let (mut s, _t) = sampler(config(yaml));
    let mut out = Vec::new();
    let batch = Batch::from_encoded_parts(Signal::Traces, vec![request.into()], 1);
    s.process(batch, &mut out);
    s.flush(&mut out);
    assert_eq!(out.iter().map(Batch::items).sum::<usize>(), 1);
}

#[test]
fn latency_uses_the_earliest_start_and_latest_end() {
    let slow = |trace, index, start_ms: u64, end_ms: u64| Span {
        start_time_unix_nano: start_ms * 1_000_000,
        end_time_unix_nano: end_ms * 1_000_000,
        ..span(trace, index)
    };
    let spans = vec![
        slow(1, 0, 1000, 1100),
        slow(1, 1, 1050, 1600), // 600 ms in all
        slow(2, 0, 1000, 1200), // 200 ms
        slow(3, 0, 1000, 3000), // 2000 ms
    ];
    let policy = "  - {name: slow, type: latency, latency: {threshold_ms: 500}}";
    assert_eq!(policy_keeps(policy, spans.clone()), BTreeSet::from([1, 3]));
    let bounded =
        "  - {name: slow, type: latency, latency: {threshold_ms: 500, upper_threshold_ms: 1000}}";
    assert_eq!(policy_keeps(bounded, spans), BTreeSet::from([1]));
}

#[test]
fn status_code_samples_traces_with_a_listed_status() {
    let with_status = |trace, code: StatusCode| Span {
        status: Some(Status {
            code: code as i32,
            ..Default::default()
        }),
        ..span(trace, 1)
    };
    let spans = vec![
        span(1, 0),
        with_status(1, StatusCode::Error),
        with_status(2, StatusCode::Ok),
        span(3, 0),
    ];
    let errors = "  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}";
    assert_eq!(policy_keeps(errors, spans.clone()), BTreeSet::from([1]));
    let ok_or_unset = "  - {name: ok, type: status_code, status_code: {status_codes: [OK, UNSET]}}";
    assert_eq!(policy_keeps(ok_or_unset, spans), BTreeSet::from([1, 2, 3]));
}

#[test]
fn probabilistic_is_deterministic_and_near_its_rate() {
    let spans: Vec<Span> = (0..20_000).map(|t| span(t, 0)).collect();
    let policy = "  - {name: ten, type: probabilistic, probabilistic: {sampling_percentage: 10}}";
    let first = policy_keeps(policy, spans.clone());
    let second = policy_keeps(policy, spans.clone());
    assert_eq!(
        first, second,
        "the same ids give the same answer on every node"
    );
    // Binomial(20000, 0.1): mean 2000, sd ~42; 5 sd either side.
    assert!((1790..=2210).contains(&first.len()), "kept {}", first.len());
    let salted = policy_keeps(
        "  - {name: ten, type: probabilistic, probabilistic: {sampling_percentage: 10, hash_salt: abc}}",
        spans,
    );
    assert!(
        (1790..=2210).contains(&salted.len()),
        "kept {}",
        salted.len()
    );
    assert_ne!(salted, first, "a salt decorrelates the choice");
}

#[test]
fn probabilistic_keeps_carry_their_threshold_in_tracestate() {
    let spans: Vec<Span> = (0..200)
        .map(|t| Span {
            trace_state: "vendor=x".into(),
            ..span(t, 0)
        })
        .collect();
    let yaml =
        "policies: [{name: half, type: probabilistic, probabilistic: {sampling_percentage: 50}}]";
    let (mut s, _t) = sampler(config(yaml));
    let kept = run(&mut s, spans);
    assert!(!kept.is_empty());
    for span in kept {
        assert_eq!(span.trace_state, "ot=th:8,vendor=x");
    }
}

/// `bytes` as field `number` of a message (length-delimited).
fn framed(number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

#[test]
fn the_threshold_is_stamped_on_the_wire_as_on_decoded_spans() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    const UNKNOWN: [u8; 3] = [0xf8, 0x06, 0x01]; // field 111, varint 1
    let mut twice = Span {
        trace_state: "a=1".into(),
        ..span(1, 0)
    }
    .encode_to_vec();
    // a second trace state: decoders keep the last
    twice.extend_from_slice(&framed(3, b"b=2,ot=th:c"));
    twice.extend_from_slice(&UNKNOWN);
    let plain = span(1, 1).encode_to_vec();
    let resource = Resource {
        attributes: vec![attribute("service.name", Value::StringValue("shop".into()))],
        ..Default::default()
    };
    let scope = [framed(2, &twice), framed(2, &plain), UNKNOWN.to_vec()].concat();
    let resource_spans = [framed(1, &resource.encode_to_vec()), framed(2, &scope)].concat();
    let other = framed(2, &framed(2, &span(2, 0).encode_to_vec()));
    let request = [
        framed(1, &resource_spans),
        framed(1, &other),
        UNKNOWN.to_vec(),
    ]
    .concat();

    let stamped = ingest::stamp_threshold(&request, 1 << 55).unwrap();

    let mut expected = ExportTraceServiceRequest::decode(&request[..]).unwrap();
    expected
        .resource_spans
        .iter_mut()
        .flat_map(|rs| &mut rs.scope_spans)
        .flat_map(|ss| &mut ss.spans)
        .for_each(|s| s.trace_state = with_threshold(&s.trace_state, 1 << 55));
    let decoded = ExportTraceServiceRequest::decode(&stamped[..]).unwrap();
    assert_eq!(decoded, expected);
    let states: Vec<_> = decoded
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.trace_state.as_str())
        .collect();
    assert_eq!(states, ["ot=th:c,b=2", "ot=th:8", "ot=th:8"]);
    let unknown_fields = stamped.windows(3).filter(|w| *w == UNKNOWN).count();
    assert_eq!(
        unknown_fields, 3,
        "unknown fields are copied at every level"
    );
}

#[test]
fn certain_keeps_carry_no_threshold() {
    let yaml = "policies:
  - {name: half, type: probabilistic, probabilistic: {sampling_percentage: 50}}
  - {name: all, type: always_sample}";
    let (mut s, _t) = sampler(config(yaml));
    let kept = run(&mut s, (0..50).map(|t| span(t, 0)).collect());
    assert_eq!(kept.len(), 50);
    assert!(kept.iter().all(|s| s.trace_state.is_empty()));
}

#[test]
fn thresholds_encode_as_the_specification_says() {
    assert_eq!(encode_threshold(0), "0");
    assert_eq!(encode_threshold(1 << 55), "8");
    assert_eq!(
        encode_threshold(Probabilistic::new(10.0, "").threshold),
        "e6666666666666"
    );
    assert_eq!(
        encode_threshold(Probabilistic::new(25.0, "").threshold),
        "c"
    );
    assert_eq!(with_threshold("", 1 << 55), "ot=th:8");
    assert_eq!(with_threshold("ot=rv:abc;th:c", 1 << 55), "ot=th:c;rv:abc");
    assert_eq!(with_threshold("a=1,ot=th:4", 1 << 55), "ot=th:8,a=1");
}

#[test]
fn string_attribute_matches_resources_and_spans_exactly_or_by_regex() {
    let spans = vec![
        with_attribute(
            span(1, 1),
            "http.route",
            Value::StringValue("/checkout".into()),
        ),
        with_attribute(
            span(2, 0),
            "http.route",
            Value::StringValue("/health".into()),
        ),
        span(3, 0),
    ];
    let exact = "  - {name: s, type: string_attribute, string_attribute: {key: http.route, values: [/checkout]}}";
    assert_eq!(policy_keeps(exact, spans.clone()), BTreeSet::from([1]));
    let regex = "  - {name: s, type: string_attribute, string_attribute: {key: http.route, values: ['^/(check|heal)'], enabled_regex_matching: true}}";
    assert_eq!(policy_keeps(regex, spans.clone()), BTreeSet::from([1, 2]));
    let resource = "  - {name: s, type: string_attribute, string_attribute: {key: service.name, values: [checkout]}}";
    assert_eq!(
        policy_keeps(resource, spans.clone()),
        BTreeSet::from([1, 2, 3])
    );
    let inverted = "  - {name: s, type: string_attribute, string_attribute: {key: http.route, values: [/health], invert_match: true}}";
    assert_eq!(policy_keeps(inverted, spans), BTreeSet::from([1, 3]));
}

#[test]
fn an_inverted_match_vetoes_other_policies() {
    let spans = vec![
        with_attribute(
            span(1, 0),
            "http.route",
            Value::StringValue("/health".into()),
        ),
        span(2, 0),
    ];
    let policies = "  - {name: all, type: always_sample}
  - {name: no-health, type: string_attribute, string_attribute: {key: http.route, values: [/health], invert_match: true}}";
    assert_eq!(policy_keeps(policies, spans), BTreeSet::from([2]));
}

#[test]
fn numeric_and_boolean_attributes() {
    let spans = vec![
        with_attribute(span(1, 0), "http.status_code", Value::IntValue(503)),
        with_attribute(span(2, 0), "http.status_code", Value::IntValue(200)),
        with_attribute(span(3, 0), "debug", Value::BoolValue(true)),
    ];
    let numeric = "  - {name: n, type: numeric_attribute, numeric_attribute: {key: http.status_code, min_value: 500, max_value: 599}}";
    assert_eq!(policy_keeps(numeric, spans.clone()), BTreeSet::from([1]));
    let above = "  - {name: n, type: numeric_attribute, numeric_attribute: {key: http.status_code, min_value: 100}}";
    assert_eq!(policy_keeps(above, spans.clone()), BTreeSet::from([1, 2]));
    let inverted = "  - {name: n, type: numeric_attribute, numeric_attribute: {key: http.status_code, min_value: 500, invert_match: true}}";
    assert_eq!(
        policy_keeps(inverted, spans.clone()),
        BTreeSet::from([2, 3])
    );
    let boolean =
        "  - {name: b, type: boolean_attribute, boolean_attribute: {key: debug, value: true}}";
    assert_eq!(policy_keeps(boolean, spans), BTreeSet::from([3]));
}

#[test]
fn span_count_and_trace_state() {
    let mut spans: Vec<Span> = (0..5).map(|i| span(1, i)).collect();
    spans.push(span(2, 0));
    spans.push(Span {
        trace_state: "team=payments,ot=th:0".into(),
        ..span(3, 0)
    });
    let count = "  - {name: c, type: span_count, span_count: {min_spans: 2}}";
    assert_eq!(policy_keeps(count, spans.clone()), BTreeSet::from([1]));
    let bounded = "  - {name: c, type: span_count, span_count: {min_spans: 1, max_spans: 1}}";
    assert_eq!(policy_keeps(bounded, spans.clone()), BTreeSet::from([2, 3]));
    let state = "  - {name: t, type: trace_state, trace_state: {key: team, values: [payments]}}";
    assert_eq!(policy_keeps(state, spans), BTreeSet::from([3]));
}

#[test]
fn rate_limiting_caps_spans_per_second_in_whole_traces() {
    let spans: Vec<Span> = (0..10)
        .flat_map(|t| (0..3).map(move |i| span(t, i)))
        .collect();
    let policy = "  - {name: r, type: rate_limiting, rate_limiting: {spans_per_second: 10}}";
    assert_eq!(
        policy_keeps(policy, spans).len(),
        3,
        "three traces of three spans fit in ten"
    );
}

#[test]
fn and_needs_every_sub_policy_and_drop_vetoes() {
    let spans = vec![
        with_attribute(
            with_attribute(span(1, 0), "a", Value::BoolValue(true)),
            "b",
            Value::BoolValue(true),
        ),
        with_attribute(span(2, 0), "a", Value::BoolValue(true)),
        span(3, 0),
    ];
    let and = "  - name: both
    type: and
    and:
      and_sub_policy:
        - {name: a, type: boolean_attribute, boolean_attribute: {key: a, value: true}}
        - {name: b, type: boolean_attribute, boolean_attribute: {key: b, value: true}}";
    assert_eq!(policy_keeps(and, spans.clone()), BTreeSet::from([1]));
    let drop = "  - {name: all, type: always_sample}
  - name: no-a
    type: drop
    drop:
      drop_sub_policy:
        - {name: a, type: boolean_attribute, boolean_attribute: {key: a, value: true}}";
    assert_eq!(policy_keeps(drop, spans), BTreeSet::from([3]));
}

#[test]
fn composite_allocates_rates_in_policy_order() {
    // 10 error traces and 10 plain ones, one span each; 10 spans/s in all, 40 % to errors.
    let error = |t| Span {
        status: Some(Status {
            code: StatusCode::Error as i32,
            ..Default::default()
        }),
        ..span(t, 0)
    };
    let mut spans: Vec<Span> = (0..10).map(error).collect();
    spans.extend((100..110).map(|t| span(t, 0)));
    let composite = "  - name: c
    type: composite
    composite:
      max_total_spans_per_second: 10
      policy_order: [errors, rest]
      composite_sub_policy:
        - {name: rest, type: always_sample}
        - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
      rate_allocation:
        - {policy: errors, percent: 40}";
    let kept = policy_keeps(composite, spans);
    assert_eq!(kept.len(), 10, "the total cap holds: {kept:?}");
    let errors = kept.iter().filter(|t| **t < 100).count();
    // Errors get their 4 first; the rest share what the allocation leaves, and errors
    // past their share fall through to `rest`.
    assert!(errors >= 4, "errors kept: {errors}");
}

#[test]
fn late_spans_follow_cached_decisions() {
    let yaml = "decision_cache: {sampled_cache_size: 100, non_sampled_cache_size: 100}
policies: [{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}]";
    let (mut s, t) = sampler(config(yaml));
    let error = Span {
        status: Some(Status {
            code: StatusCode::Error as i32,
            ..Default::default()
        }),
        ..span(1, 0)
    };
    let kept = run(&mut s, vec![error, span(2, 0)]);
    assert_eq!(kept_traces(&kept), BTreeSet::from([1]));
    let mut out = Vec::new();
    s.process(batch_of(vec![span(1, 5), span(2, 5)]), &mut out);
    let late = spans_of(out);
    assert_eq!(
        late.len(),
        1,
        "the late span of the kept trace passes at once"
    );
    assert_eq!(late[0].trace_id, trace_id(1));
    assert_eq!(s.traces_held(), 0, "no late span is held");
    assert_metric(
        &t,
        "sieve_tail_sampling_late_spans_total{processor=\"tail\",decision=\"sampled\"} 1",
    );
    assert_metric(
        &t,
        "sieve_tail_sampling_late_spans_total{processor=\"tail\",decision=\"not_sampled\"} 1",
    );
}

#[test]
fn without_caches_a_late_span_starts_a_new_trace() {
    let (mut s, _t) = sampler(config("policies: [{name: all, type: always_sample}]"));
    run(&mut s, vec![span(1, 0)]);
    let mut out = Vec::new();
    s.process(batch_of(vec![span(1, 1)]), &mut out);
    assert!(out.is_empty());
    assert_eq!(s.traces_held(), 1);
}

#[test]
fn deadlines_are_exact_and_an_idle_worker_may_meet_them_a_tick_late() {
    let (mut s, _t) = sampler(config(
        "decision_wait: 2s\npolicies: [{name: all, type: always_sample}]",
    ));
    assert_eq!(s.deadline_slack(), Duration::from_millis(100));
    let mut out = Vec::new();
    let before = Instant::now();
    s.process(batch_of(vec![span(1, 0)]), &mut out);
    let after = Instant::now();
    let due = s.next_deadline().unwrap();
    assert!(
        due >= before + Duration::from_secs(2),
        "never before decision_wait"
    );
    assert!(
        due <= after + Duration::from_secs(2),
        "exact: a busy worker is not late"
    );
    s.on_tick(due, &mut out);
    assert_eq!(kept_traces(&spans_of(out)), BTreeSet::from([1]));
    let short = "decision_wait: 2s\ndecision_wait_after_root: 50ms\npolicies: [{name: all, type: always_sample}]";
    assert_eq!(
        sampler(config(short)).0.deadline_slack(),
        Duration::from_millis(5)
    );
    let shared = Shared::for_workers(&config(short), 2, "tail", &Telemetry::new()).unwrap();
    assert_eq!(shared[0].deadline_slack(), Duration::from_millis(5));
}

#[test]
fn a_trace_decided_at_its_root_keeps_its_place_counted_until_the_place_is_due() {
    let yaml = "decision_wait: 30s
decision_wait_after_root: 2s
policies: [{name: all, type: always_sample}]";
    let (mut s, _t) = sampler(config(yaml));
    let mut out = Vec::new();
    s.process(batch_of(vec![span(1, 0)]), &mut out);
    s.process(batch_of(vec![span(2, 1)]), &mut out);
    let root_due = s.next_deadline().unwrap();
    s.on_tick(root_due, &mut out);
    assert_eq!(
        kept_traces(&spans_of(std::mem::take(&mut out))),
        BTreeSet::from([1])
    );
    assert_eq!(s.traces_held(), 1);
    let with_place = s.bytes_held();
    let place_due = s
        .next_deadline()
        .expect("trace 1's place is first in the queue");
    assert!(place_due > root_due + Duration::from_secs(20));
    s.on_tick(place_due, &mut out);
    assert!(out.is_empty(), "the empty place decides nothing");
    assert!(
        s.bytes_held() < with_place,
        "leaving, the place gives its bytes back"
    );
    let trace_due = s.next_deadline().unwrap();
    s.on_tick(trace_due, &mut out);
    assert_eq!(kept_traces(&spans_of(out)), BTreeSet::from([2]));
    assert_eq!(s.bytes_held(), 0, "memory accounting returns to zero");
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn a_root_span_brings_the_decision_forward() {
    let yaml = "decision_wait: 30s
decision_wait_after_root: 2s
policies: [{name: all, type: always_sample}]";
    let (mut s, t) = sampler(config(yaml));
    let mut out = Vec::new();
    s.process(batch_of(vec![span(1, 1), span(2, 1)]), &mut out);
    s.process(batch_of(vec![span(1, 0)]), &mut out);
    let due = s.next_deadline().unwrap();
    assert!(due < Instant::now() + Duration::from_secs(3));
    s.on_tick(due, &mut out);
    assert_eq!(kept_traces(&spans_of(out)), BTreeSet::from([1]));
    assert_eq!(s.traces_held(), 1, "trace 2 has no root and waits");
    assert_metric(&t, "sieve_tail_sampling_traces_decided_total{processor=\"tail\",decision=\"sampled\",trigger=\"root\"} 1");
}

#[test]
fn over_num_traces_the_oldest_is_decided_early_and_new_ones_on_arrival() {
    let yaml = "num_traces: 10
fallback_sampling_percentage: 100
policies: [{name: all, type: always_sample}]";
    let (mut s, t) = sampler(config(yaml));
    let mut out = Vec::new();
    for trace in 0..15 {
        s.process(batch_of(vec![span(trace, 0)]), &mut out);
    }
    assert_eq!(s.traces_held(), 10, "traces 1 to 10 are held");
    assert!(s.fallback_active(), "trace 0 was cut short: overload");
    let kept = kept_traces(&spans_of(out));
    assert_eq!(kept, [0, 11, 12, 13, 14].into());
    assert_metric(&t, "sieve_tail_sampling_traces_decided_total{processor=\"tail\",decision=\"sampled\",trigger=\"decided_early\"} 1");
    assert_metric(&t, "sieve_tail_sampling_traces_decided_total{processor=\"tail\",decision=\"sampled\",trigger=\"fallback\"} 4");
}

#[test]
fn the_memory_budget_decides_early_then_falls_back_to_sampling_on_arrival() {
    let yaml = "max_memory_mib: 1
fallback_sampling_percentage: 100
policies: [{name: all, type: always_sample}]";
    let (mut s, t) = sampler(config(yaml));
    let mut out = Vec::new();
    let big = |trace| Span {
        name: "x".repeat(2000),
        ..span(trace, 0)
    };
    let mut sent = 0;
    for chunk in 0..100 {
        let spans: Vec<Span> = (0..20).map(|i| big(chunk * 20 + i)).collect();
        sent += spans.len();
        s.process(batch_of(spans), &mut out);
        assert!(s.bytes_held() <= 1 << 20, "held {} bytes", s.bytes_held());
    }
    assert!(
        s.fallback_active(),
        "a flood cut short of decision_wait is overload"
    );
    s.flush(&mut out);
    assert_eq!(
        spans_of(out).len(),
        sent,
        "every trace was judged, none lost unjudged"
    );
    assert_metric(
        &t,
        "sieve_tail_sampling_fallback_active{processor=\"tail\"} 1",
    );
    assert_metric(
        &t,
        "sieve_tail_sampling_fallback_activations_total{processor=\"tail\"} 1",
    );
    assert_metric(&t, "trigger=\"fallback\"");
}

#[test]
fn flush_decides_every_held_trace() {
    let yaml = "policies: [{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}, {name: all, type: always_sample}]";
    let (mut s, t) = sampler(config(yaml));
    let mut out = Vec::new();
    s.process(batch_of((0..7).map(|t| span(t, 0)).collect()), &mut out);
    s.flush(&mut out);
    assert_eq!(spans_of(out).len(), 7);
    assert_eq!(s.traces_held(), 0);
    assert_metric(&t, "sieve_tail_sampling_policy_decisions_total{processor=\"tail\",policy=\"errors\",decision=\"not_sampled\"} 7");
    assert_metric(&t, "sieve_tail_sampling_spans_held{processor=\"tail\"} 0");
}

#[test]
fn other_signals_and_bad_trace_ids_are_handled() {
    let (mut s, _t) = sampler(config("policies: [{name: all, type: always_sample}]"));
    let mut out = Vec::new();
    s.process(Batch::from_logs(Vec::new()), &mut out);
    assert_eq!(out.len(), 1, "non-trace data passes");
    out.clear();
    let bad = Span {
        trace_id: vec![1, 2, 3],
        ..span(1, 0)
    };
    s.process(batch_of(vec![bad]), &mut out);
    assert_eq!(s.traces_held(), 0);
    assert!(out.is_empty(), "removed: neither held nor emitted");
    assert_eq!(s.held_items(), 0);
}

#[test]
fn config_errors_name_the_policy_field() {
    let error = |yaml: &str| {
        serde_yaml::from_str::<TailSamplingConfig>(yaml)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                c.validate()
                    .map_err(|e| format!("{}: {}", e.key, e.message))
            })
            .unwrap_err()
    };
    assert!(error("policies: []").starts_with("policies"));
    assert!(error("policies: [{name: l, type: latency}]").starts_with("policies.0.latency"));
    assert!(error("policies: [{name: p, type: nope}]").contains("unknown variant"));
    assert!(
        error("policies: [{name: s, type: status_code, status_code: {status_codes: [BAD]}}]")
            .contains("BAD")
    );
    assert!(
        error("policies: [{name: a, type: always_sample}, {name: a, type: always_sample}]")
            .contains("used twice")
    );
    assert!(error(
        "policies: [{name: s, type: string_attribute, string_attribute: {key: k, values: ['('], enabled_regex_matching: true}}]"
    )
    .starts_with("policies.0.string_attribute.values"));
    assert!(
        error("decision_wait: 0\npolicies: [{name: a, type: always_sample}]")
            .starts_with("decision_wait")
    );
    assert!(error("policies: [{name: a, type: always_sample, colour: red}]").contains("colour"));
}

#[test]
fn the_collectors_example_config_loads() {
    config(
        "decision_wait: 10s
num_traces: 100
expected_new_traces_per_sec: 10
decision_cache: {sampled_cache_size: 100000, non_sampled_cache_size: 100000}
policies:
  [
    {name: test-policy-1, type: always_sample},
    {name: test-policy-2, type: latency, latency: {threshold_ms: 5000, upper_threshold_ms: 10000}},
    {name: test-policy-3, type: numeric_attribute, numeric_attribute: {key: key1, min_value: 50, max_value: 100}},
    {name: test-policy-4, type: probabilistic, probabilistic: {sampling_percentage: 10}},
    {name: test-policy-5, type: status_code, status_code: {status_codes: [ERROR, UNSET]}},
    {name: test-policy-6, type: string_attribute, string_attribute: {key: key2, values: [value1, value2]}},
    {name: test-policy-7, type: string_attribute, string_attribute: {key: key2, values: [value1, val*], enabled_regex_matching: true, cache_max_size: 10}},
    {name: test-policy-8, type: rate_limiting, rate_limiting: {spans_per_second: 35}},
    {name: test-policy-10, type: span_count, span_count: {min_spans: 2, max_spans: 20}},
    {name: test-policy-11, type: trace_state, trace_state: {key: key3, values: [value1, value2]}},
    {name: test-policy-12, type: boolean_attribute, boolean_attribute: {key: key4, value: true}},
    {name: and-policy-1, type: and, and: {and_sub_policy: [
      {name: test-and-policy-1, type: numeric_attribute, numeric_attribute: {key: key1, min_value: 50, max_value: 100}},
      {name: test-and-policy-2, type: string_attribute, string_attribute: {key: key2, values: [value1, value2]}}]}},
    {name: composite-policy-1, type: composite, composite: {
      max_total_spans_per_second: 1000,
      policy_order: [test-composite-policy-1, test-composite-policy-2, test-composite-policy-3],
      composite_sub_policy: [
        {name: test-composite-policy-1, type: numeric_attribute, numeric_attribute: {key: key1, min_value: 50}},
        {name: test-composite-policy-2, type: string_attribute, string_attribute: {key: key2, values: [value1, value2]}},
        {name: test-composite-policy-3, type: always_sample}],
      rate_allocation: [{policy: test-composite-policy-1, percent: 50}, {policy: test-composite-policy-2, percent: 25}]}}
  ]",
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn arbitrary_span() -> impl Strategy<Value = Span> {
        (0u64..6, 0u8..20, any::<bool>(), "[a-z]{0,12}", 0i32..3).prop_map(
            |(trace, index, error, route, code)| {
                let mut span =
                    with_attribute(span(trace, index), "http.route", Value::StringValue(route));
                if error {
                    span.status = Some(Status {
                        code,
                        ..Default::default()
                    });
                }
                span
            },
        )
    }

    proptest! {
        /// Whatever the mix of traces, resources and policies' answers, an always-sample
        /// run hands on exactly the spans that came in.
        #[test]
        fn every_span_in_comes_out_once(
            groups in proptest::collection::vec(proptest::collection::vec(arbitrary_span(), 0..12), 1..5)
        ) {
            let (mut s, _t) = sampler(config(
                "policies: [{name: all, type: always_sample}, {name: r, type: string_attribute, string_attribute: {key: http.route, values: [abc]}}]",
            ));
            let mut expected: Vec<Span> = Vec::new();
            let mut out = Vec::new();
            for spans in groups {
                expected.extend(spans.clone());
                let encoded = batch_of(spans).to_bytes();
                s.process(Batch::from_request(Signal::Traces, encoded).unwrap().batch, &mut out);
            }
            s.flush(&mut out);
            let mut got = spans_of(out);
            let key = |s: &Span| (s.trace_id.clone(), s.span_id.clone(), s.name.clone(), format!("{:?}", s.attributes));
            got.sort_by_key(key);
            expected.sort_by_key(key);
            prop_assert_eq!(got, expected);
            prop_assert_eq!(s.bytes_held(), 0);
        }

        /// Whatever a span's bytes hold, if their framing lets them be counted the sampler
        /// does not panic (they are framed as a request's only span here, and bypass the
        /// edge check, which would refuse most of them).
        #[test]
        fn arbitrary_span_bytes_never_panic(
            id in proptest::collection::vec(any::<u8>(), 16),
            rest in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut span_bytes = Vec::new();
            prost::encoding::bytes::encode(1, &id, &mut span_bytes);
            span_bytes.extend(rest);
            let request = request_of_one_span(span_bytes);
            if let Ok(items) = crate::model::wire::count_items(Signal::Traces, &request) {
                let batch = Batch::from_encoded_parts(Signal::Traces, vec![request.into()], items);
                let (mut s, _t) = sampler(config(
                    "policies: [{name: s, type: string_attribute, string_attribute: {key: k, values: [v]}}]",
                ));
                let mut out = Vec::new();
                s.process(batch, &mut out);
                s.flush(&mut out);
            }
        }
    }
}

/// With a persistent queue, a held trace keeps its log record: the sampler reports the
/// oldest record it holds, and what it emits carries the oldest record in it.
#[test]
fn held_traces_keep_their_log_records_until_emitted() {
    let (mut s, _t) = sampler(config(
        "decision_wait: 1h\npolicies: [{name: all, type: always_sample}]",
    ));
    let mut out = Vec::new();
    let mut first = batch_of(vec![span(1, 0)]);
    first.set_record(Some(7));
    s.process(first, &mut out);
    let mut second = batch_of(vec![span(2, 0), span(1, 1)]);
    second.set_record(Some(9));
    s.process(second, &mut out);
    assert!(out.is_empty(), "held for decision_wait");
    assert_eq!(s.oldest_record(), Some(7));
    s.flush(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].record(),
        Some(7),
        "the emitted batch holds record 7's spans"
    );
}

/// Workers share one sampler: the spans of a trace that reach it through different
/// workers are judged together (an error span through one worker keeps the trace's
/// other spans, which came through the other), the budget is the processor's, and each
/// worker's stage counts exactly what it removed.
#[test]
fn workers_share_whole_traces_and_their_counts_add_up() {
    use crate::processors::Stage;
    use crate::telemetry::Count;
    let telemetry = Telemetry::new();
    let errors = config(
        "decision_wait: 1h\npolicies: [{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}]",
    );
    let mut workers: Vec<Stage> = Shared::for_workers(&errors, 2, "tail", &telemetry)
        .unwrap()
        .into_iter()
        .map(|shared| Stage {
            processor: Box::new(shared),
            removed: Count::default(),
        })
        .collect();
    let error = |trace| Span {
        status: Some(Status {
            code: StatusCode::Error as i32,
            ..Default::default()
        }),
        ..span(trace, 2)
    };
    let undecodable = Count::default();
    let mut out = Vec::new();
    // traces 0..100: root and child through worker 0; 0..50 get an error span
    // through worker 1
    let first: Vec<Span> = (0..100).flat_map(|t| [span(t, 0), span(t, 1)]).collect();
    let second: Vec<Span> = (0..50).map(error).collect();
    for (worker, spans) in [(0, first), (1, second)] {
        let batch = batch_of(spans);
        let items = batch.items();
        out.extend(workers[worker].call(items, &undecodable, |p, out| p.process(batch, out)));
    }
    assert!(out.is_empty(), "held for decision_wait");
    let held: i64 = workers.iter().map(|w| w.processor.held_items()).sum();
    assert_eq!(held, 250, "the workers' balances add up to what is held");
    // worker 1 decides everything, including what worker 0 admitted
    out.extend(workers[1].call(0, &undecodable, |p, out| p.flush(out)));
    let kept = spans_of(out);
    assert_eq!(kept_traces(&kept), (0..50).collect());
    assert_eq!(
        kept.len(),
        150,
        "each kept trace is whole: root, child, error"
    );
    let removed: u64 = workers.iter().map(|w| w.removed.get()).sum();
    assert_eq!(
        removed, 100,
        "the 50 traces without an error, two spans each"
    );
    assert_metric(
        &telemetry,
        "sieve_tail_sampling_spans_held{processor=\"tail\"} 0",
    );
}

/// The shards divide the budget: together they hold no more traces than `num_traces`.
#[test]
fn shards_hold_the_processors_budget_not_one_each() {
    let telemetry = Telemetry::new();
    let all =
        config("decision_wait: 1h\nnum_traces: 100\npolicies: [{name: all, type: always_sample}]");
    let mut workers = Shared::for_workers(&all, 2, "tail", &telemetry).unwrap();
    let mut out = Vec::new();
    // past its share a shard decides its oldest traces early, then falls back to
    // deciding new traces on arrival
    for (at, chunk) in (0..1000u64).collect::<Vec<_>>().chunks(100).enumerate() {
        let spans = chunk.iter().map(|&t| span(t, 0)).collect();
        workers[at % 2].process(batch_of(spans), &mut out);
    }
    let held: i64 = workers.iter().map(|w| w.held_items()).sum();
    assert!(
        (51..=100).contains(&held),
        "held {held} traces of one span: num_traces is the processor's, filled by both shards"
    );
}

/// Kept traces leave with the request metadata (the tenant) their spans came with, one
/// batch per tenant.
#[test]
fn kept_traces_leave_with_their_tenant() {
    let (mut s, _t) = sampler(config(
        "decision_wait: 1h\npolicies: [{name: all, type: always_sample}]",
    ));
    let tenant = |name: &str| {
        crate::model::Metadata::from_pairs([("x-scope-orgid".to_string(), name.to_string())])
    };
    let mut out = Vec::new();
    for (trace, name) in [(1, "a"), (2, "b"), (3, "a")] {
        let mut batch = batch_of(vec![span(trace, 0)]);
        batch.set_metadata(Some(tenant(name)));
        s.process(batch, &mut out);
    }
    s.flush(&mut out);
    let mut by_tenant: Vec<(String, BTreeSet<u64>)> = out
        .into_iter()
        .map(|batch| {
            let name = batch
                .metadata()
                .unwrap()
                .get("x-scope-orgid")
                .unwrap()
                .to_string();
            (name, kept_traces(&spans_of(vec![batch])))
        })
        .collect();
    by_tenant.sort();
    assert_eq!(
        by_tenant,
        [
            ("a".to_string(), BTreeSet::from([1, 3])),
            ("b".to_string(), BTreeSet::from([2]))
        ]
    );
}
