//! The `attributes` processor, as the collector's (contrib `attributesprocessor`): a
//! list of [`actions`] applied in order to the attributes of every span, log record and
//! metric data point, optionally only to the items `include` selects and `exclude` does
//! not ([`matching`]; `include` is checked first).
//!
//! Spans, log records and data points each carry their own attribute list, so the
//! processor works on the decoded batch; the `resource` processor, which touches one
//! small message per resource, works on the wire ([`super::resource`]).

pub mod actions;
pub mod matching;

use super::Processor;
use crate::config::FieldError;
use crate::model::{Batch, Signal};
use actions::{ActionConfig, Actions, Context};
use matching::{Item, ItemKind, MatchConfig, Matcher};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use serde::Deserialize;

/// `attributes:` as the collector writes it.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AttributesConfig {
    /// The actions, applied in order to each selected item's attributes.
    #[serde(default)]
    pub actions: Vec<ActionConfig>,
    /// Only items matching these properties are changed.
    #[serde(default)]
    pub include: Option<Box<MatchConfig>>,
    /// Items matching these properties are left alone (checked after `include`).
    #[serde(default)]
    pub exclude: Option<Box<MatchConfig>>,
}

impl AttributesConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.actions.is_empty() {
            return Err(FieldError::new(
                "actions",
                "the `attributes` processor needs at least one action",
            ));
        }
        AttributesProcessor::new(self).map(|_| ())?;
        if self.signals().is_empty() {
            return Err(FieldError::new(
                "include",
                "`include` and `exclude` name properties of different signals (span, log and metric properties do not mix)",
            ));
        }
        Ok(())
    }

    /// The signals the match properties can describe.
    pub fn signals(&self) -> &'static [Signal] {
        let allowed = |signal: Signal| {
            [&self.include, &self.exclude]
                .iter()
                .all(|m| m.as_ref().is_none_or(|m| m.signals().contains(&signal)))
        };
        matching::signal_set(
            allowed(Signal::Traces),
            allowed(Signal::Logs),
            allowed(Signal::Metrics),
        )
    }
}

/// Applies the actions to the selected items.
pub struct AttributesProcessor {
    actions: Actions,
    include: Option<Matcher>,
    exclude: Option<Matcher>,
}

impl AttributesProcessor {
    pub fn new(config: &AttributesConfig) -> Result<Self, FieldError> {
        let matcher = |field: &str, m: &Option<Box<MatchConfig>>| {
            m.as_ref().map(|m| Matcher::new(field, m)).transpose()
        };
        Ok(AttributesProcessor {
            actions: Actions::new("actions", &config.actions)?,
            include: matcher("include", &config.include)?,
            exclude: matcher("exclude", &config.exclude)?,
        })
    }

    fn selects(&self, item: &Item) -> bool {
        self.include.as_ref().is_none_or(|m| m.matches(item))
            && !self.exclude.as_ref().is_some_and(|m| m.matches(item))
    }

    fn spans(&self, batch: &mut Batch, context: Context) {
        for rs in batch.traces_mut() {
            let resource = resource_attributes(&rs.resource);
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    let item = Item {
                        resource,
                        scope: ss.scope.as_ref(),
                        attributes: &span.attributes,
                        kind: ItemKind::Span {
                            name: &span.name,
                            kind: span.kind,
                        },
                    };
                    if self.selects(&item) {
                        self.actions.apply(&mut span.attributes, context);
                    }
                }
            }
        }
    }

    fn logs(&self, batch: &mut Batch, context: Context) {
        for rl in batch.logs_mut() {
            let resource = resource_attributes(&rl.resource);
            for sl in &mut rl.scope_logs {
                for record in &mut sl.log_records {
                    let item = Item {
                        resource,
                        scope: sl.scope.as_ref(),
                        attributes: &record.attributes,
                        kind: ItemKind::Log {
                            body: record.body.as_ref(),
                            severity_text: &record.severity_text,
                            severity_number: record.severity_number,
                        },
                    };
                    if self.selects(&item) {
                        self.actions.apply(&mut record.attributes, context);
                    }
                }
            }
        }
    }

    /// Metrics are selected whole (by name and resource); the actions change the
    /// attributes of each of their data points.
    fn metrics(&self, batch: &mut Batch, context: Context) {
        for rm in batch.metrics_mut() {
            let resource = resource_attributes(&rm.resource);
            for sm in &mut rm.scope_metrics {
                for metric in &mut sm.metrics {
                    let item = Item {
                        resource,
                        scope: sm.scope.as_ref(),
                        attributes: &[],
                        kind: ItemKind::Metric { name: &metric.name },
                    };
                    if self.selects(&item) {
                        for attributes in point_attributes(metric.data.as_mut()) {
                            self.actions.apply(attributes, context);
                        }
                    }
                }
            }
        }
    }
}

fn resource_attributes(
    resource: &Option<opentelemetry_proto::tonic::resource::v1::Resource>,
) -> &[KeyValue] {
    resource.as_ref().map_or(&[], |r| &r.attributes[..])
}

/// The attribute list of every data point of a metric.
fn point_attributes(data: Option<&mut Data>) -> Vec<&mut Vec<KeyValue>> {
    match data {
        Some(Data::Gauge(g)) => g
            .data_points
            .iter_mut()
            .map(|p| &mut p.attributes)
            .collect(),
        Some(Data::Sum(s)) => s
            .data_points
            .iter_mut()
            .map(|p| &mut p.attributes)
            .collect(),
        Some(Data::Histogram(h)) => h
            .data_points
            .iter_mut()
            .map(|p| &mut p.attributes)
            .collect(),
        Some(Data::ExponentialHistogram(h)) => h
            .data_points
            .iter_mut()
            .map(|p| &mut p.attributes)
            .collect(),
        Some(Data::Summary(s)) => s
            .data_points
            .iter_mut()
            .map(|p| &mut p.attributes)
            .collect(),
        None => Vec::new(),
    }
}

impl Processor for AttributesProcessor {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        let metadata = batch.metadata().cloned();
        let context = Context {
            metadata: metadata.as_ref(),
            client: batch.client(),
        };
        match batch.signal() {
            Signal::Traces => self.spans(&mut batch, context),
            Signal::Logs => self.logs(&mut batch, context),
            Signal::Metrics => self.metrics(&mut batch, context),
        }
        out.push(batch);
    }
}

#[cfg(test)]
mod tests;
