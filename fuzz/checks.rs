//! The invariants the fuzz targets assert, shared with the test that replays the corpus
//! (`tests/it/fuzz_corpus.rs`): each function takes arbitrary bytes and panics only when
//! an invariant is broken.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sieve::model::{validate, Batch, Signal};

/// Items prost decodes from `buf`, or `None` when it refuses them.
fn decoded_items(signal: Signal, buf: &[u8]) -> Option<usize> {
    Some(match signal {
        Signal::Traces => ExportTraceServiceRequest::decode(buf)
            .ok()?
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum(),
        Signal::Metrics => {
            let request = ExportMetricsServiceRequest::decode(buf).ok()?;
            let batch = Batch::from_metrics(request.resource_metrics);
            batch.items()
        }
        Signal::Logs => ExportLogsServiceRequest::decode(buf)
            .ok()?
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum(),
    })
}

/// The edge check, as receivers take requests (`Batch::from_request`): what it accepts
/// prost decodes, with the items it counted, and passes the check again whole.
pub fn wire(data: &[u8]) {
    for signal in Signal::ALL {
        let Ok(checked) = validate::check_request(signal, data) else {
            continue;
        };
        let Ok(admitted) = Batch::from_request(signal, bytes::Bytes::copy_from_slice(data)) else {
            assert_eq!(checked.accepted, 0, "refused while items were acceptable");
            continue;
        };
        assert_eq!(admitted.batch.items(), checked.accepted);
        let passed = admitted.batch.to_bytes();
        assert_eq!(decoded_items(signal, &passed), Some(checked.accepted));
        let again = validate::check_request(signal, &passed).expect("the copy is well framed");
        assert_eq!((again.accepted, again.refused), (checked.accepted, 0));
    }
}

/// The OTLP/JSON transcoder: what it accepts decodes, and its output is never more
/// than four times the body plus a little (packed 64-bit numbers are the worst case).
pub fn json(data: &[u8]) {
    for signal in Signal::ALL {
        let Ok(admitted) = sieve::receivers::otlp::json::decode(signal, data) else {
            continue;
        };
        let bytes = admitted.batch.to_bytes();
        assert!(
            bytes.len() <= 4 * data.len() + 64,
            "{} from {}",
            bytes.len(),
            data.len()
        );
        assert_eq!(decoded_items(signal, &bytes), Some(admitted.batch.items()));
    }
}

/// Syslog: both parsers take any text; the framing decoder, fed the bytes in two
/// pieces, never returns a message over its limit and always consumes what it reads.
pub fn syslog(data: &[u8]) {
    use sieve::receivers::syslog::framing::{Decoder, Frame, Oversize, Trailer};
    let text = String::from_utf8_lossy(data);
    let _ = sieve::receivers::syslog::parse::rfc5424(&text);
    let now = chrono::DateTime::from_timestamp(1_764_000_000, 0).expect("a valid time");
    let _ = sieve::receivers::syslog::parse::rfc3164(&text, chrono_tz::Europe::Berlin, now);
    const MAX: usize = 64;
    for oversize in [Oversize::Truncate, Oversize::Reject] {
        let mut decoder = Decoder::new(Trailer::LF, MAX, oversize);
        let split = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
        let mut buf = bytes::BytesMut::new();
        for piece in [&data[..split], &data[split..]] {
            buf.extend_from_slice(piece);
            loop {
                let before = buf.len();
                match decoder.decode(&mut buf) {
                    Ok(Some(Frame::Message { bytes, .. })) => assert!(bytes.len() <= MAX),
                    Ok(Some(Frame::Rejected)) => {}
                    Ok(None) | Err(_) => break,
                }
                assert!(buf.len() < before, "a frame consumes input");
            }
        }
        let _ = decoder.finish(&mut buf);
    }
}

/// A fixed environment for `${env:..}` and `${file:..}` references.
struct Fixed;

impl sieve::config::expand::Source for Fixed {
    fn env(&self, name: &str) -> Option<String> {
        name.len()
            .is_multiple_of(2)
            .then(|| format!("value-of-{name}: #x"))
    }
    fn file(&self, path: &str) -> std::io::Result<String> {
        Ok(format!("{path}\n"))
    }
}

/// The config loader and expander take any text without panicking, and an error never
/// shows an expanded value.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = sieve::components::Config::parse_with(text, "fuzz", &Fixed) {
        // an expanded value shows as `value-of-…`, unless the file itself says that
        assert!(
            text.contains("value-of-") || !error.to_string().contains("value-of-"),
            "an expanded value in: {error}"
        );
    }
}
