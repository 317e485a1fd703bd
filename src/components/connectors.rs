//! The connectors sieve has: the `connectors:` section's config enum, the signal pairs
//! each connects, and the build of each as an exporter of one pipeline (see
//! [`crate::connectors`]).

use crate::build::{BuildContext, BuildError};
use crate::config::{or_default, ComponentConfig, Connects, FieldError};
use crate::connectors::routing::RoutingConfig;
use crate::connectors::spanmetrics::SpanMetricsConfig;
use crate::connectors::spanmetrics_task::{Counters, SpanMetrics};
use crate::connectors::{routing, Connector, Downstream, Forward, Routing};
use crate::exporters::{retry, Built, SendingQueueConfig};
use crate::model::Signal;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Deserializer};
use std::sync::Arc;

/// `forward:` has no settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {}

/// The `connectors:` section, tagged by component type.
#[derive(Clone, Debug, PartialEq)]
pub enum ConnectorConfig {
    /// Passes data on to pipelines of the same signal.
    Forward(ForwardConfig),
    /// Routes items to pipelines by OTTL conditions.
    Routing(RoutingConfig),
    /// Request, error and duration metrics from spans.
    SpanMetrics(Box<SpanMetricsConfig>),
}

impl ComponentConfig for ConnectorConfig {
    const SECTION: &'static str = "connectors";
    const KINDS: &'static [&'static str] = &["forward", "routing", "spanmetrics"];

    fn deserialize_kind<'de, D: Deserializer<'de>>(kind: &str, d: D) -> Result<Self, D::Error> {
        match kind {
            "forward" => or_default(d).map(ConnectorConfig::Forward),
            "routing" => RoutingConfig::deserialize(d).map(ConnectorConfig::Routing),
            "spanmetrics" => {
                or_default(d).map(|c: SpanMetricsConfig| ConnectorConfig::SpanMetrics(Box::new(c)))
            }
            other => unreachable!("section checks kinds before deserializing `{other}`"),
        }
    }

    /// The signals on either side (pipelines check the pairs, see [`Connects`]).
    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }

    fn validate(&self) -> Result<(), FieldError> {
        match self {
            ConnectorConfig::Forward(_) => Ok(()),
            ConnectorConfig::Routing(c) => c.validate(),
            ConnectorConfig::SpanMetrics(c) => c.validate(),
        }
    }
}

impl Connects for ConnectorConfig {
    fn connects(&self, from: Signal, to: Signal) -> Result<(), String> {
        let same = || match from == to {
            true => Ok(()),
            false => Err(format!(
                "it hands on data of the signal it takes, and {from} are not {to}"
            )),
        };
        match self {
            ConnectorConfig::Forward(_) => same(),
            ConnectorConfig::Routing(c) => same().and_then(|()| c.routes(from)),
            ConnectorConfig::SpanMetrics(_) => match (from, to) {
                (Signal::Traces, Signal::Metrics) => Ok(()),
                _ => Err(format!(
                    "spanmetrics turns traces into metrics, not {from} into {to}"
                )),
            },
        }
    }

    fn named_pipelines(&self) -> Vec<(String, String)> {
        match self {
            ConnectorConfig::Routing(c) => c.named_pipelines(),
            _ => Vec::new(),
        }
    }
}

impl ConnectorConfig {
    /// Builds the connector as an exporter of the pipeline in `cx`, with the handle the
    /// topology points at its downstream pipelines.
    pub fn build(
        &self,
        cx: &BuildContext,
    ) -> Result<(Built<super::Exporter>, Arc<Downstream>), BuildError> {
        let downstream = Arc::new(Downstream::default());
        let (connector, decodes, downstream) = match self {
            ConnectorConfig::Forward(_) => {
                let forward = Forward {
                    downstream: Arc::clone(&downstream),
                };
                (Connector::Forward(forward), false, downstream)
            }
            ConnectorConfig::Routing(c) => {
                let router = routing::Router::new(c).map_err(|e| cx.error(&e.key, e.message))?;
                // routes on items divide the batch decoded: it comes decoded
                let decodes = router.reads_items();
                let routing = Routing {
                    downstream: Arc::clone(&downstream),
                    router,
                };
                (Connector::Routing(routing), decodes, downstream)
            }
            ConnectorConfig::SpanMetrics(c) => {
                // one instance for every pipeline exporting to it
                let (spanmetrics, downstream) =
                    SpanMetrics::shared(cx.id, c, || spanmetrics_counters(cx));
                (Connector::SpanMetrics(spanmetrics), false, downstream)
            }
        };
        let exporter = super::Exporter::Connector(Box::new(connector));
        let built = Built::new(cx, exporter, sending_queue(), never_give_up(), decodes);
        Ok((built, downstream))
    }
}

/// A connector's queue: batches wait here while a downstream queue refuses; one send
/// at a time keeps the order they came in.
fn sending_queue() -> SendingQueueConfig {
    SendingQueueConfig {
        num_consumers: 1,
        queue_size: 16,
        ..SendingQueueConfig::default()
    }
}

/// A connector's send never fails (it waits for room downstream instead); retrying is
/// off so that a defect cannot loop.
fn never_give_up() -> retry::RetryConfig {
    retry::RetryConfig {
        enabled: false,
        ..Default::default()
    }
}

/// The label of a connector's own series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ConnectorLabels {
    connector: String,
}

/// `sieve_connector_spanmetrics_*` series of one spanmetrics connector (shared by the
/// pipelines exporting to it).
fn spanmetrics_counters(cx: &BuildContext) -> Counters {
    let labels = ConnectorLabels {
        connector: cx.id.to_string(),
    };
    let counter = |name, help| {
        let family: Family<ConnectorLabels, Counter> = cx.telemetry.family(name, help);
        family.get_or_create_owned(&labels)
    };
    let series: Family<ConnectorLabels, Gauge> = cx.telemetry.family(
        "connector_spanmetrics_series",
        "Series a spanmetrics connector holds",
    );
    Counters {
        series: series.get_or_create_owned(&labels),
        overflowed: counter(
            "connector_spanmetrics_overflow_spans",
            "Spans counted into an otel.metric.overflow series (cardinality or memory limit reached)",
        ),
        evicted: counter(
            "connector_spanmetrics_evicted_resources",
            "Resources whose series were evicted when resource_metrics_cache_size was reached",
        ),
        ignored: counter(
            "connector_spanmetrics_ignored_spans",
            "Spans not counted because their resource has no service.name (as in the collector)",
        ),
        dropped_points: counter(
            "connector_spanmetrics_dropped_points",
            "Data points of flushes dropped because downstream refused them until the next flush",
        ),
    }
}
