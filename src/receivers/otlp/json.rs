//! OTLP/JSON decoding, per the OTLP spec's JSON mapping: trace and span ids as hex,
//! enums as integers, 64-bit integers as strings or numbers, field names in lowerCamelCase
//! or as in the `.proto` files (snake_case).
//!
//! `opentelemetry-proto`'s serde support reads lowerCamelCase only and skips unknown keys
//! silently, so a snake_case body would lose data without an error. Keys are therefore
//! normalised to lowerCamelCase first (every object key in OTLP/JSON is a field name;
//! attribute names are values of `key`, so they are untouched).
//!
//! Spans and log records whose trace or span id has the wrong length are rejected
//! individually and reported through `partial_success`, as the spec allows.

use crate::model::{Batch, Signal};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde_json::Value;

/// Items dropped from an otherwise accepted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub signal: Signal,
    pub count: i64,
    pub message: String,
}

impl Rejected {
    pub fn response_protobuf(&self) -> Vec<u8> {
        match self.signal {
            Signal::Traces => ExportTraceServiceResponse {
                partial_success: Some(ExportTracePartialSuccess {
                    rejected_spans: self.count,
                    error_message: self.message.clone(),
                }),
            }
            .encode_to_vec(),
            Signal::Metrics => ExportMetricsServiceResponse {
                partial_success: Some(ExportMetricsPartialSuccess {
                    rejected_data_points: self.count,
                    error_message: self.message.clone(),
                }),
            }
            .encode_to_vec(),
            Signal::Logs => ExportLogsServiceResponse {
                partial_success: Some(ExportLogsPartialSuccess {
                    rejected_log_records: self.count,
                    error_message: self.message.clone(),
                }),
            }
            .encode_to_vec(),
        }
    }

    pub fn response_json(&self) -> String {
        let field = match self.signal {
            Signal::Traces => "rejectedSpans",
            Signal::Metrics => "rejectedDataPoints",
            Signal::Logs => "rejectedLogRecords",
        };
        serde_json::json!({ "partialSuccess": { field: self.count.to_string(), "errorMessage": self.message } }).to_string()
    }
}

/// Decodes an OTLP/JSON export request of `signal`.
pub fn decode(signal: Signal, body: &[u8]) -> Result<(Batch, Option<Rejected>), String> {
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    if !value.is_object() {
        return Err("an OTLP/JSON request must be a JSON object".into());
    }
    camel_case_keys(&mut value);
    let invalid = |e: serde_json::Error| format!("invalid OTLP/JSON {signal} request: {e}");
    match signal {
        Signal::Traces => {
            let mut request: ExportTraceServiceRequest =
                serde_json::from_value(value).map_err(invalid)?;
            let rejected = reject_bad_span_ids(&mut request);
            Ok((Batch::from_traces(request.resource_spans), rejected))
        }
        Signal::Metrics => {
            let request: ExportMetricsServiceRequest =
                serde_json::from_value(value).map_err(invalid)?;
            Ok((Batch::from_metrics(request.resource_metrics), None))
        }
        Signal::Logs => {
            let mut request: ExportLogsServiceRequest =
                serde_json::from_value(value).map_err(invalid)?;
            let rejected = reject_bad_log_ids(&mut request);
            Ok((Batch::from_logs(request.resource_logs), rejected))
        }
    }
}

fn reject_bad_span_ids(request: &mut ExportTraceServiceRequest) -> Option<Rejected> {
    let mut count = 0;
    for scope in request
        .resource_spans
        .iter_mut()
        .flat_map(|r| r.scope_spans.iter_mut())
    {
        let before = scope.spans.len();
        scope.spans.retain(|s| {
            s.trace_id.len() == 16
                && s.span_id.len() == 8
                && (s.parent_span_id.is_empty() || s.parent_span_id.len() == 8)
        });
        count += before - scope.spans.len();
    }
    (count > 0).then(|| Rejected {
        signal: Signal::Traces,
        count: count as i64,
        message: format!("{count} spans rejected: traceId must be 16 bytes and spanId/parentSpanId 8 bytes (32/16 hex digits)"),
    })
}

fn reject_bad_log_ids(request: &mut ExportLogsServiceRequest) -> Option<Rejected> {
    let mut count = 0;
    for scope in request
        .resource_logs
        .iter_mut()
        .flat_map(|r| r.scope_logs.iter_mut())
    {
        let before = scope.log_records.len();
        scope
            .log_records
            .retain(|l| matches!(l.trace_id.len(), 0 | 16) && matches!(l.span_id.len(), 0 | 8));
        count += before - scope.log_records.len();
    }
    (count > 0).then(|| Rejected {
        signal: Signal::Logs,
        count: count as i64,
        message: format!("{count} log records rejected: traceId must be empty or 16 bytes and spanId empty or 8 bytes"),
    })
}

/// Renames every `snake_case` object key to `lowerCamelCase`, recursively.
fn camel_case_keys(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('_')) {
                let entries = std::mem::take(map);
                for (key, child) in entries {
                    map.insert(to_camel(&key), child);
                }
            }
            map.values_mut().for_each(camel_case_keys);
        }
        Value::Array(items) => items.iter_mut().for_each(camel_case_keys),
        _ => {}
    }
}

fn to_camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPAN: &str = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"a","kind":2,
         "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
         "attributes":[{"key":"n","value":{"intValue":"42"}}]}]}]}]}"#;

    fn first_span(batch: &mut Batch) -> opentelemetry_proto::tonic::trace::v1::Span {
        batch.traces_mut().unwrap()[0].scope_spans[0].spans[0].clone()
    }

    #[test]
    fn decodes_hex_ids_integers_as_strings_or_numbers_and_enums() {
        let (mut batch, rejected) = decode(Signal::Traces, SPAN.as_bytes()).unwrap();
        assert_eq!(rejected, None);
        let span = first_span(&mut batch);
        assert_eq!(span.trace_id.len(), 16);
        assert_eq!(
            span.span_id,
            vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]
        );
        assert_eq!(span.kind, 2);
        assert_eq!(span.start_time_unix_nano, 1544712660000000000);
        assert_eq!(span.end_time_unix_nano, 1544712661000000000);
        let value = span.attributes[0].value.as_ref().unwrap().value.clone();
        assert_eq!(
            value,
            Some(opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(42))
        );
    }

    #[test]
    fn snake_case_field_names_decode_the_same() {
        let snake = SPAN
            .replace("resourceSpans", "resource_spans")
            .replace("scopeSpans", "scope_spans")
            .replace("traceId", "trace_id")
            .replace("spanId", "span_id")
            .replace("startTimeUnixNano", "start_time_unix_nano")
            .replace("intValue", "int_value");
        let (mut a, _) = decode(Signal::Traces, SPAN.as_bytes()).unwrap();
        let (mut b, _) = decode(Signal::Traces, snake.as_bytes()).unwrap();
        assert_eq!(first_span(&mut a), first_span(&mut b));
    }

    #[test]
    fn spans_with_bad_ids_are_rejected_partially() {
        let body = SPAN.replace(
            r#""spans":["#,
            r#""spans":[{"traceId":"abcd","spanId":"eee19b7ec3c1b174","name":"bad"},"#,
        );
        let (batch, rejected) = decode(Signal::Traces, body.as_bytes()).unwrap();
        assert_eq!(batch.items(), 1);
        assert_eq!(rejected.unwrap().count, 1);
    }

    #[test]
    fn malformed_json_names_the_problem() {
        assert!(decode(Signal::Logs, b"{\"resourceLogs\": [")
            .unwrap_err()
            .contains("invalid JSON"));
        assert!(decode(Signal::Logs, b"[]")
            .unwrap_err()
            .contains("JSON object"));
        assert!(decode(
            Signal::Traces,
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#
        )
        .is_err());
    }

    #[test]
    fn partial_success_json_uses_the_signal_field() {
        let r = Rejected {
            signal: Signal::Metrics,
            count: 2,
            message: "m".into(),
        };
        assert_eq!(
            r.response_json(),
            r#"{"partialSuccess":{"errorMessage":"m","rejectedDataPoints":"2"}}"#
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            for signal in Signal::ALL {
                let _ = decode(signal, &bytes);
            }
        }

        #[test]
        fn arbitrary_json_shapes_never_panic(text in r#"\{("(resourceSpans|resource_logs|scopeSpans|spans|traceId|intValue|value|key)":(\[|\{|"[0-9a-f]{0,34}"|-?[0-9]{1,20}|null|true),?){0,8}\}*\]*\}"#) {
            for signal in Signal::ALL {
                let _ = decode(signal, text.as_bytes());
            }
        }
    }
}
