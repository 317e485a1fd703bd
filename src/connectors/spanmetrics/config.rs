//! The `spanmetrics` configuration, in the OpenTelemetry Collector's shape (its
//! `connector/spanmetricsconnector/config.go`) so existing configs load unchanged, plus
//! sieve's memory budget (`max_memory_mib`). Defaults that differ from the collector's
//! are marked on their field.

use crate::config::{duration, FieldError};
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// The dimensions every metric has unless `exclude_dimensions` names them.
pub const SERVICE_NAME: &str = "service.name";
pub const SPAN_NAME: &str = "span.name";
pub const SPAN_KIND: &str = "span.kind";
pub const STATUS_CODE: &str = "status.code";
const BUILT_IN: [&str; 4] = [SERVICE_NAME, SPAN_NAME, SPAN_KIND, STATUS_CODE];
/// A dimension the collector adds by default (feature gate
/// `connector.spanmetrics.includeCollectorInstanceID`) and sieve does not.
const COLLECTOR_INSTANCE_ID: &str = "collector.instance.id";

/// `connectors: spanmetrics:`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpanMetricsConfig {
    /// Dimensions added to every metric after `service.name`, `span.name`, `span.kind` and
    /// `status.code`: each is the span's attribute of that name, else the resource's,
    /// else `default`; without a default a missing dimension is left out.
    pub dimensions: Vec<Dimension>,
    /// Dimensions added to the `calls` metric only (after `dimensions`).
    pub calls_dimensions: Vec<Dimension>,
    /// Built-in dimensions to leave out: any of `service.name`, `span.name`, `span.kind`
    /// and `status.code` (`collector.instance.id` is accepted too: sieve never adds it).
    pub exclude_dimensions: Vec<String>,
    /// Deprecated in the collector in favour of `aggregation_cardinality_limit`; accepted
    /// and ignored (sieve keeps no separate dimensions cache).
    pub dimensions_cache_size: usize,
    /// Resources (distinct resource attribute sets) held at most. When a new resource
    /// arrives with this many held, the least recently used one is evicted: its series
    /// are sent once more with the next flush and then forgotten (counted as evicted).
    pub resource_metrics_cache_size: usize,
    /// The resource attributes that tell resources apart (empty: all of them). Use it
    /// when some resource attribute changes on restart (a process id) and would start
    /// new cumulative series.
    pub resource_metrics_key_attributes: Vec<String>,
    /// `AGGREGATION_TEMPORALITY_CUMULATIVE` (every flush sends the totals since each
    /// series started) or `AGGREGATION_TEMPORALITY_DELTA` (each flush sends what came
    /// since the previous one).
    pub aggregation_temporality: Temporality,
    /// The `duration` histogram.
    pub histogram: HistogramConfig,
    /// How often the metrics are sent downstream.
    #[serde(with = "duration")]
    pub metrics_flush_interval: Duration,
    /// Cumulative only: a resource that has had no span for this long is no longer sent
    /// and is forgotten (0: never).
    #[serde(with = "duration")]
    pub metrics_expiration: Duration,
    /// Cumulative only: a series that has had no span for this long is no longer sent
    /// and is forgotten (0: never).
    #[serde(with = "duration")]
    pub series_expiration: Duration,
    /// Delta only, in the collector the size of its cache of each series' last flush
    /// time. Sieve keeps that time on the series itself, so the series bounds below bound
    /// it; accepted for compatibility (it must be positive when set).
    pub metric_timestamp_cache_size: Option<usize>,
    /// Prefix of the metric names, joined with a dot: `<namespace>.calls`,
    /// `<namespace>.duration`, `<namespace>.events` (empty: no prefix).
    pub namespace: String,
    /// Exemplars: trace and span ids of some of the spans counted, on the data points.
    pub exemplars: ExemplarsConfig,
    /// The `events` metric: span events counted by dimensions of their own.
    pub events: EventsConfig,
    /// Instrumentation scope names whose spans get `span.instrumentation.scope.name` and
    /// `span.instrumentation.scope.version` dimensions.
    pub include_instrumentation_scope: Vec<String>,
    /// Series held per metric and resource; the spans of further series are counted
    /// into one overflow series whose only attribute is `otel.metric.overflow=true`.
    /// Default 5000 (the collector's is 0, unlimited): a span attribute with unbounded
    /// values used as a dimension would otherwise grow the connector without bound.
    /// 0 removes this limit; `max_memory_mib` still bounds the total.
    pub aggregation_cardinality_limit: usize,
    /// Copy the spans' resource attributes onto the metrics' resource. Sieve always
    /// does (the collector's behaviour unless its alpha feature gate
    /// `connector.spanmetrics.excludeResourceMetrics` is on); accepted for compatibility.
    pub add_resource_attributes: bool,
    /// Adds `sampling.method`: `extrapolated` for spans whose trace state carries a
    /// sampling threshold (counted by their adjusted count), `counted` for the others.
    pub enable_metrics_sampling_method: bool,
    /// Sieve only: the memory the connector's series may take, in MiB (estimated from
    /// what each series holds: its key, attribute names and values, buckets and
    /// exemplar slots). Past it, spans of new series go to their resource's overflow
    /// series, and spans of new resources to one overflow resource without attributes.
    pub max_memory_mib: usize,
}

impl Default for SpanMetricsConfig {
    fn default() -> Self {
        SpanMetricsConfig {
            dimensions: Vec::new(),
            calls_dimensions: Vec::new(),
            exclude_dimensions: Vec::new(),
            dimensions_cache_size: 1000,
            resource_metrics_cache_size: 1000,
            resource_metrics_key_attributes: Vec::new(),
            aggregation_temporality: Temporality::Cumulative,
            histogram: HistogramConfig::default(),
            metrics_flush_interval: Duration::from_secs(60),
            metrics_expiration: Duration::ZERO,
            series_expiration: Duration::ZERO,
            metric_timestamp_cache_size: None,
            namespace: "traces.span.metrics".into(),
            exemplars: ExemplarsConfig::default(),
            events: EventsConfig::default(),
            include_instrumentation_scope: Vec::new(),
            aggregation_cardinality_limit: 5000,
            add_resource_attributes: false,
            enable_metrics_sampling_method: false,
            max_memory_mib: 16,
        }
    }
}

/// A dimension: an attribute name and the value to use when a span has none.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dimension {
    /// The attribute looked up on the span (or its event), then on its resource.
    pub name: String,
    /// The value when neither has the attribute; without one the dimension is left out.
    #[serde(default)]
    pub default: Option<String>,
}

/// How sums and histograms accumulate between flushes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Temporality {
    #[default]
    #[serde(rename = "AGGREGATION_TEMPORALITY_CUMULATIVE")]
    Cumulative,
    #[serde(rename = "AGGREGATION_TEMPORALITY_DELTA")]
    Delta,
}

/// `histogram:`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistogramConfig {
    /// No `duration` metric at all.
    pub disable: bool,
    /// The unit durations are recorded in: `ms` (default) or `s`.
    pub unit: Unit,
    /// Exponential buckets (an OTLP exponential histogram) instead of explicit ones.
    pub exponential: Option<ExponentialConfig>,
    /// Explicit bucket bounds.
    pub explicit: Option<ExplicitConfig>,
    /// Dimensions added to the `duration` metric only (after `dimensions`).
    pub dimensions: Vec<Dimension>,
}

/// The unit of the `duration` histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Unit {
    #[default]
    #[serde(rename = "ms")]
    Milliseconds,
    #[serde(rename = "s")]
    Seconds,
}

impl Unit {
    /// The unit as OTLP metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Milliseconds => "ms",
            Unit::Seconds => "s",
        }
    }

    /// Nanoseconds in one unit.
    pub fn nanos(self) -> f64 {
        match self {
            Unit::Milliseconds => 1e6,
            Unit::Seconds => 1e9,
        }
    }
}

/// `histogram: exponential:`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExponentialConfig {
    /// Buckets at most (the histogram lowers its scale to fit); 0 means the default, 160.
    pub max_size: i32,
}

impl Default for ExponentialConfig {
    fn default() -> Self {
        ExponentialConfig { max_size: 160 }
    }
}

/// `histogram: explicit:`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExplicitConfig {
    /// Bucket upper bounds (inclusive), increasing, e.g. `[2ms, 4ms, 1s]`. Default:
    /// 2, 4, 6, 8, 10, 50, 100, 200, 400, 800 ms, 1, 1.4, 2, 5, 10, 15 s.
    #[serde(deserialize_with = "durations")]
    pub buckets: Option<Vec<Duration>>,
}

/// `exemplars:`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExemplarsConfig {
    /// Attach the trace and span ids of the first spans of each flush interval to the
    /// data points (`calls`, `duration` and `events`).
    pub enabled: bool,
    /// Exemplars per data point and flush interval. Default 5 (the collector keeps them
    /// all when unset); it must be at least 1.
    pub max_per_data_point: usize,
}

impl Default for ExemplarsConfig {
    fn default() -> Self {
        ExemplarsConfig {
            enabled: false,
            max_per_data_point: 5,
        }
    }
}

/// `events:`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Count span events in an `events` metric.
    pub enabled: bool,
    /// Dimensions of the `events` metric, after `dimensions` (required when enabled):
    /// each is the span's attribute, else the event's, else the resource's, else its
    /// default.
    pub dimensions: Vec<Dimension>,
}

/// Reads a list of durations such as `[2ms, 1s]`.
fn durations<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<Duration>>, D::Error> {
    let texts = Option::<Vec<String>>::deserialize(deserializer)?;
    texts
        .map(|texts| {
            texts
                .iter()
                .map(|text| duration::parse(text).map_err(serde::de::Error::custom))
                .collect()
        })
        .transpose()
}

/// The largest exponential histogram the connector keeps (as the collector's
/// histogram library caps it).
pub const MAX_EXPONENTIAL_SIZE: i32 = 16_384;

impl SpanMetricsConfig {
    /// How often the aggregator is flushed.
    pub fn flush_interval(&self) -> Duration {
        self.metrics_flush_interval
    }

    /// Checks ranges and combinations the types cannot express.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.validate_dimensions()?;
        self.validate_histogram()?;
        if self.metrics_flush_interval.is_zero() {
            return Err(FieldError::new(
                "metrics_flush_interval",
                "must be longer than 0",
            ));
        }
        if self.resource_metrics_cache_size == 0 {
            return Err(FieldError::new(
                "resource_metrics_cache_size",
                "must be at least 1",
            ));
        }
        if self.metric_timestamp_cache_size == Some(0) {
            return Err(FieldError::new(
                "metric_timestamp_cache_size",
                "must be at least 1",
            ));
        }
        if self.exemplars.enabled && self.exemplars.max_per_data_point == 0 {
            return Err(FieldError::new(
                "exemplars.max_per_data_point",
                "must be at least 1 (exemplars are kept per data point, bounded)",
            ));
        }
        if self.max_memory_mib == 0 {
            return Err(FieldError::new("max_memory_mib", "must be at least 1"));
        }
        Ok(())
    }

    fn validate_dimensions(&self) -> Result<(), FieldError> {
        for name in &self.exclude_dimensions {
            if !BUILT_IN.contains(&name.as_str()) && name != COLLECTOR_INSTANCE_ID {
                return Err(FieldError::new(
                    "exclude_dimensions",
                    format!(
                        "`{name}` is not a built-in dimension; these are {}",
                        BUILT_IN.join(", ")
                    ),
                ));
            }
        }
        unique("dimensions", &self.dimensions, &[])?;
        unique("calls_dimensions", &self.calls_dimensions, &self.dimensions)?;
        unique(
            "histogram.dimensions",
            &self.histogram.dimensions,
            &self.dimensions,
        )?;
        if self.events.enabled && self.events.dimensions.is_empty() {
            return Err(FieldError::new(
                "events.dimensions",
                "at least one dimension is required when events are enabled",
            ));
        }
        unique(
            "events.dimensions",
            &self.events.dimensions,
            &self.dimensions,
        )
    }

    fn validate_histogram(&self) -> Result<(), FieldError> {
        let histogram = &self.histogram;
        if histogram.explicit.is_some() && histogram.exponential.is_some() {
            return Err(FieldError::new(
                "histogram",
                "use either `explicit` or `exponential` buckets, not both",
            ));
        }
        if let Some(exponential) = &histogram.exponential {
            let size = exponential.max_size;
            if size != 0 && !(2..=MAX_EXPONENTIAL_SIZE).contains(&size) {
                return Err(FieldError::new(
                    "histogram.exponential.max_size",
                    format!("must be from 2 to {MAX_EXPONENTIAL_SIZE} (0: the default, 160)"),
                ));
            }
        }
        let buckets = histogram.explicit.as_ref().and_then(|e| e.buckets.as_ref());
        if buckets.is_some_and(|b| b.windows(2).any(|w| w[0] >= w[1])) {
            return Err(FieldError::new(
                "histogram.explicit.buckets",
                "bucket bounds must increase",
            ));
        }
        Ok(())
    }
}

/// Checks that `dimensions` (at `key`) repeat neither a built-in dimension, nor each
/// other, nor one of `shared` (the dimensions they are added to).
fn unique(key: &str, dimensions: &[Dimension], shared: &[Dimension]) -> Result<(), FieldError> {
    for (at, dimension) in dimensions.iter().enumerate() {
        let name = dimension.name.as_str();
        let repeated = BUILT_IN.contains(&name)
            || shared.iter().any(|d| d.name == name)
            || dimensions[..at].iter().any(|d| d.name == name);
        if repeated {
            return Err(FieldError::new(
                format!("{key}[{at}].name"),
                format!("duplicate dimension name `{name}`"),
            ));
        }
    }
    Ok(())
}
