//! The `filter` processor, the collector's current form: items matching any of the OTTL
//! conditions of their context are dropped — `traces.span` / `traces.spanevent`,
//! `metrics.metric` / `metrics.datapoint`, `logs.log_record` — and counted as removed
//! under `reason="filtered"`; a scope, resource or metric left with nothing is removed
//! with it. Conditions are parsed and type-checked at load ([`crate::ottl`]).
//!
//! `error_mode` (`propagate`, `ignore`, `silent`) is accepted as in the collector. sieve's
//! conditions cannot fail at run time — paths into absent or mistyped values read `nil`
//! — so the modes behave alike.

use super::Processor;
use crate::config::FieldError;
use crate::model::{Batch, Signal};
use crate::ottl::items::{retain_points, EventItem, LogItem, MetricItem, Owner, SpanItem};
use crate::ottl::{Condition, Context, Item};
use serde::Deserialize;

/// What a condition that fails to evaluate does (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ErrorMode {
    #[default]
    Propagate,
    Ignore,
    Silent,
}

/// `traces:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TracesConditions {
    /// Spans matching any of these are dropped.
    pub span: Vec<String>,
    /// Span events matching any of these are dropped.
    pub spanevent: Vec<String>,
}

/// `metrics:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConditions {
    /// Metrics matching any of these are dropped whole.
    pub metric: Vec<String>,
    /// Data points matching any of these are dropped.
    pub datapoint: Vec<String>,
}

/// `logs:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConditions {
    /// Log records matching any of these are dropped.
    pub log_record: Vec<String>,
}

/// `filter:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// `propagate` (default), `ignore` or `silent`.
    pub error_mode: ErrorMode,
    /// Conditions on spans (`span`) and span events (`spanevent`).
    pub traces: TracesConditions,
    /// Conditions on metrics (`metric`) and data points (`datapoint`).
    pub metrics: MetricsConditions,
    /// Conditions on log records (`log_record`).
    pub logs: LogsConditions,
}

fn compile(key: &str, list: &[String], context: Context) -> Result<Vec<Condition>, FieldError> {
    list.iter()
        .enumerate()
        .map(|(at, text)| {
            Condition::new(text, context)
                .map_err(|e| FieldError::new(format!("{key}[{at}]"), format!("`{text}` {e}")))
        })
        .collect()
}

impl FilterConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        FilterProcessor::new(self).map(|_| ())
    }
}

/// The compiled conditions.
pub struct FilterProcessor {
    spans: Vec<Condition>,
    span_events: Vec<Condition>,
    metrics: Vec<Condition>,
    data_points: Vec<Condition>,
    log_records: Vec<Condition>,
}

impl FilterProcessor {
    pub fn new(config: &FilterConfig) -> Result<Self, FieldError> {
        Ok(FilterProcessor {
            spans: compile("traces.span", &config.traces.span, Context::Span)?,
            span_events: compile(
                "traces.spanevent",
                &config.traces.spanevent,
                Context::SpanEvent,
            )?,
            metrics: compile("metrics.metric", &config.metrics.metric, Context::Metric)?,
            data_points: compile(
                "metrics.datapoint",
                &config.metrics.datapoint,
                Context::DataPoint,
            )?,
            log_records: compile("logs.log_record", &config.logs.log_record, Context::Log)?,
        })
    }

    fn has_conditions(&self, signal: Signal) -> bool {
        match signal {
            Signal::Traces => !self.spans.is_empty() || !self.span_events.is_empty(),
            Signal::Metrics => !self.metrics.is_empty() || !self.data_points.is_empty(),
            Signal::Logs => !self.log_records.is_empty(),
        }
    }

    fn traces(&self, batch: &mut Batch) {
        for rs in batch.traces_mut() {
            let resource = rs.resource.as_ref();
            for ss in &mut rs.scope_spans {
                let scope = ss.scope.as_ref();
                ss.spans.retain_mut(|span| {
                    let owner = Owner { resource, scope };
                    if any(&self.spans, &SpanItem { owner, span }) {
                        return false;
                    }
                    let (name, events) = (span.name.as_str(), &mut span.events);
                    events.retain(|event| {
                        !any(
                            &self.span_events,
                            &EventItem {
                                owner,
                                span: name,
                                event,
                            },
                        )
                    });
                    true
                });
            }
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        }
        batch.traces_mut().retain(|rs| !rs.scope_spans.is_empty());
    }

    fn logs(&self, batch: &mut Batch) {
        for rl in batch.logs_mut() {
            let resource = rl.resource.as_ref();
            for sl in &mut rl.scope_logs {
                let owner = Owner {
                    resource,
                    scope: sl.scope.as_ref(),
                };
                sl.log_records
                    .retain(|record| !any(&self.log_records, &LogItem { owner, record }));
            }
            rl.scope_logs.retain(|sl| !sl.log_records.is_empty());
        }
        batch.logs_mut().retain(|rl| !rl.scope_logs.is_empty());
    }

    fn metrics(&self, batch: &mut Batch) {
        for rm in batch.metrics_mut() {
            let resource = rm.resource.as_ref();
            for sm in &mut rm.scope_metrics {
                let owner = Owner {
                    resource,
                    scope: sm.scope.as_ref(),
                };
                sm.metrics.retain_mut(|metric| {
                    if any(
                        &self.metrics,
                        &MetricItem {
                            owner,
                            metric,
                            point: None,
                        },
                    ) {
                        return false;
                    }
                    if self.data_points.is_empty() {
                        return true;
                    }
                    retain_points(metric, |metric, point| {
                        !any(
                            &self.data_points,
                            &MetricItem {
                                owner,
                                metric,
                                point: Some(point),
                            },
                        )
                    })
                });
            }
            rm.scope_metrics.retain(|sm| !sm.metrics.is_empty());
        }
        batch
            .metrics_mut()
            .retain(|rm| !rm.scope_metrics.is_empty());
    }
}

fn any(conditions: &[Condition], item: &dyn Item) -> bool {
    conditions.iter().any(|c| c.matches(item))
}

impl Processor for FilterProcessor {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        if self.has_conditions(batch.signal()) {
            match batch.signal() {
                Signal::Traces => self.traces(&mut batch),
                Signal::Logs => self.logs(&mut batch),
                Signal::Metrics => self.metrics(&mut batch),
            }
            batch.recount();
        }
        if batch.items() > 0 || batch.lost() > 0 {
            out.push(batch);
        }
    }
}

#[cfg(test)]
mod tests;
