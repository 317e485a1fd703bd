//! `debug` exporter: writes what it receives to stdout, as the collector's debug exporter
//! (`verbosity: basic | normal | detailed`).
//!
//! * `basic`: one line per batch with the signal and item count;
//! * `normal`: one line per item (span name, metric name, log body);
//! * `detailed`: the whole batch as OTLP/JSON.

use super::{ExportError, Exported};
use crate::model::{Batch, Signal};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde::Deserialize;
use std::io::Write;

/// How much the debug exporter prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    /// One line per batch.
    #[default]
    Basic,
    /// One line per item.
    Normal,
    /// Everything, as OTLP/JSON.
    Detailed,
}

/// `exporters: debug:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// `basic` (default), `normal` or `detailed`.
    pub verbosity: Verbosity,
}

pub struct DebugExporter {
    config: DebugConfig,
}

impl DebugExporter {
    pub fn new(config: DebugConfig) -> Self {
        DebugExporter { config }
    }

    pub fn export(&self, batch: &Batch) -> Result<Exported, ExportError> {
        let text = match self.config.verbosity {
            Verbosity::Basic => format!(
                "{}: {} {}\n",
                batch.signal(),
                batch.items(),
                batch.signal().item_name()
            ),
            Verbosity::Normal => describe_items(batch),
            Verbosity::Detailed => detailed(batch),
        };
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .map_err(|e| ExportError {
                retryable: false,
                retry_after: None,
                reason: "stdout",
                message: e.to_string(),
            })?;
        Ok(Exported::default())
    }
}

fn describe_items(batch: &Batch) -> String {
    let mut batch = batch.clone();
    let mut out = format!(
        "{}: {} {}\n",
        batch.signal(),
        batch.items(),
        batch.signal().item_name()
    );
    match batch.signal() {
        Signal::Traces => {
            let v = batch.traces_mut();
            for span in v.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans) {
                out.push_str(&format!(
                    "  span {} trace={} id={}\n",
                    span.name,
                    hex(&span.trace_id),
                    hex(&span.span_id)
                ));
            }
        }
        Signal::Metrics => {
            let v = batch.metrics_mut();
            for metric in v
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
            {
                out.push_str(&format!(
                    "  metric {} ({} points)\n",
                    metric.name,
                    crate::model::data_point_count(metric.data.as_ref())
                ));
            }
        }
        Signal::Logs => {
            let v = batch.logs_mut();
            for log in v
                .iter()
                .flat_map(|r| &r.scope_logs)
                .flat_map(|s| &s.log_records)
            {
                out.push_str(&format!(
                    "  log {} {:?}\n",
                    log.severity_text,
                    log.body.as_ref().and_then(|b| b.value.as_ref())
                ));
            }
        }
    }
    out
}

fn detailed(batch: &Batch) -> String {
    let mut batch = batch.clone();
    let json = match batch.signal() {
        Signal::Traces => serde_json::to_string_pretty(&ExportTraceServiceRequest {
            resource_spans: std::mem::take(batch.traces_mut()),
        }),
        Signal::Metrics => serde_json::to_string_pretty(&ExportMetricsServiceRequest {
            resource_metrics: std::mem::take(batch.metrics_mut()),
        }),
        Signal::Logs => serde_json::to_string_pretty(&ExportLogsServiceRequest {
            resource_logs: std::mem::take(batch.logs_mut()),
        }),
    };
    match json {
        Ok(text) => text + "\n",
        Err(e) => format!("{}: cannot print as JSON: {e}\n", batch.signal()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
