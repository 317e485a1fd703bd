//! `spanmetrics`: request, error and duration (R.E.D.) metrics from spans — the
//! OpenTelemetry Collector contrib's `connector/spanmetricsconnector` (same options,
//! metric names, attributes and temporality rules; see [`config`]), the aggregation core
//! that the connector task (`connectors::spanmetrics_task`) feeds and flushes.
//!
//! * Every span counts once (or by its adjusted count, see [`sampling`]) into the series
//!   of its resource named by `service.name`, `span.name`, `span.kind`
//!   (`SPAN_KIND_SERVER`, ...), `status.code` (`STATUS_CODE_ERROR`, ...) and the
//!   configured `dimensions`: `<namespace>.calls` counts spans, `<namespace>.duration`
//!   is the histogram of their durations (explicit buckets, upper bounds inclusive, or
//!   exponential), `<namespace>.events` counts span events when enabled. Metrics are
//!   grouped per resource (all its attributes, or `resource_metrics_key_attributes`)
//!   and sent under the first such resource's attributes. Spans whose resource has no
//!   `service.name` are skipped, as in the collector (see [`Aggregator::take_ignored`]).
//! * Reading: an encoded batch is read off the wire ([`read`]): only the span fields
//!   used and the attributes a dimension names are looked at, nothing is decoded but a
//!   resource's attributes when it is first seen and a series' dimension values when it
//!   is created. A span finds its series by a key built in a reused buffer (see
//!   [`plan`]); nothing is allocated per span unless a series is created.
//! * Bounds (see [`store`]): series per metric and resource
//!   (`aggregation_cardinality_limit`, default 5000 here, unlimited in the collector),
//!   resources (`resource_metrics_cache_size`, least recently used evicted) and the
//!   estimated memory of everything held (`max_memory_mib`, sieve's own). Spans that
//!   find no room go to an overflow series carrying only `otel.metric.overflow=true`,
//!   as the SDKs' cardinality limit does, so totals stay right; they are counted
//!   ([`Aggregator::take_overflowed`]), as are evictions ([`Aggregator::take_evicted`]).
//! * Flushing: cumulative sends every live series with its start time (a new `calls`
//!   or `events` series as 0 the first time, as the collector does); delta sends what
//!   came since the last flush with the previous flush as start time, and forgets series
//!   that had nothing. `metrics_expiration` and `series_expiration` forget idle
//!   resources and series (cumulative). Exemplars are the first `max_per_data_point`
//!   spans of each interval.
//!
//! Where sieve differs from the collector, and why:
//! * finite default bounds (above), and a memory bound, so that no input can grow the
//!   connector without limit;
//! * adjusted counts add up as fractions and are rounded when sent, where the collector
//!   rounds each span's count at random: same expectation, no noise;
//! * dimension values are compared as values (an integer 200 and a string "200" are two
//!   series; the collector compares their text), and the instrumentation scope is part
//!   of the series key when included (the collector keys without it and labels the
//!   series with the first scope seen);
//! * the collector's feature gates are not offered: `collector.instance.id` is not added
//!   (its beta gate adds it there; sieve has no instance id), resource attributes are
//!   always copied and `status.code` keeps its name;
//! * an expired resource or series is not sent at the flush that finds it expired (the
//!   collector sends it once more).

pub mod config;
mod emit;
mod histogram;
mod plan;
mod read;
pub mod sampling;
mod store;

pub use config::SpanMetricsConfig;

use crate::model::wire::{Fields, Value as Wire};
use crate::model::{Batch, Payload};
use plan::{AttrValue, Plan, SpanParts, TableKind};
use prost::encoding::encode_varint;
use read::{ResourceInput, SpanInput, Spans};
use std::time::{SystemTime, UNIX_EPOCH};
use store::{Budget, Ids, Observation, Resource, Store};

/// Aggregates spans into span metrics; see the module docs.
#[derive(Debug)]
pub struct Aggregator {
    plan: Plan,
    store: Store,
    /// Reused for every series key.
    key: Vec<u8>,
    /// Reused for every resource key.
    resource_key: Vec<u8>,
    ignored: u64,
}

impl Aggregator {
    pub fn new(config: &SpanMetricsConfig) -> Aggregator {
        let plan = Plan::new(config);
        Aggregator {
            store: Store::new(&plan),
            plan,
            key: Vec::with_capacity(256),
            resource_key: Vec::with_capacity(256),
            ignored: 0,
        }
    }

    /// Adds the spans of a traces batch, encoded or decoded; returns the spans read.
    /// Reading an encoded part stops at its first malformed field (the spans before it
    /// count).
    pub fn add(&mut self, batch: &Batch) -> usize {
        self.add_at(batch, unix_nanos())
    }

    /// [`Aggregator::add`] at time `now` (Unix nanoseconds), which new series take as
    /// their start and expiration measures from.
    pub fn add_at(&mut self, batch: &Batch, now: u64) -> usize {
        match batch.payload() {
            Payload::Encoded(parts) => parts.iter().map(|part| self.add_encoded(part, now)).sum(),
            Payload::Traces(resource_spans) => resource_spans
                .iter()
                .map(|rs| {
                    self.add_resource(read::proto_resource(rs), Spans::Proto(rs), now)
                        .0
                })
                .sum(),
            Payload::Metrics(_) | Payload::Logs(_) => 0,
        }
    }

    /// Adds the spans of one serialized `ExportTraceServiceRequest`.
    fn add_encoded(&mut self, buf: &[u8], now: u64) -> usize {
        let mut read = 0;
        for field in Fields::new(buf, 0..buf.len()) {
            let Ok(field) = field else { break };
            let (1, Wire::Delimited(record), _) = field else {
                continue;
            };
            let Ok(resource) = read::wire_resource(buf, record.clone()) else {
                break;
            };
            let (spans, complete) = self.add_resource(resource, Spans::Wire { buf, record }, now);
            read += spans;
            if !complete {
                break;
            }
        }
        read
    }

    /// Adds the spans of one resource; returns how many were read and whether all were.
    fn add_resource<'a>(
        &mut self,
        mut input: ResourceInput<'a>,
        spans: Spans<'a>,
        now: u64,
    ) -> (usize, bool) {
        let Aggregator {
            plan,
            store,
            key,
            resource_key,
            ignored,
        } = self;
        let mut read = 0;
        let Some(service) = input
            .get(config::SERVICE_NAME.as_bytes())
            .map(read::string_of)
        else {
            let complete = spans.walk(plan, &mut |_| read += 1).is_ok();
            *ignored += read as u64;
            return (read, complete);
        };
        let resource_dims = input.dims(plan);
        write_resource_key(plan, &mut input.attributes, resource_key);
        let (resource, budget) = store.resource(resource_key, || input.decode(), plan, now);
        let mut event_dims = vec![None; plan.names.len()];
        let mut context = Context {
            plan,
            resource,
            budget,
            key,
            service,
            resource_dims: &resource_dims,
            event_dims: &mut event_dims,
            now,
        };
        let complete = spans
            .walk(plan, &mut |span| {
                read += 1;
                context.aggregate(span);
            })
            .is_ok();
        (read, complete)
    }

    /// The metrics to send now, `None` when there are none; see the module docs.
    /// The flush when the connector goes: as [`Aggregator::flush`], except that series
    /// never flushed before send their counts, not the first 0 (nothing would follow).
    pub fn flush_last(&mut self, now_unix_nano: u64) -> Option<Batch> {
        self.store.no_first_points();
        self.flush(now_unix_nano)
    }

    pub fn flush(&mut self, now_unix_nano: u64) -> Option<Batch> {
        let resource_metrics = self.store.flush(&self.plan, now_unix_nano);
        (!resource_metrics.is_empty()).then(|| Batch::from_metrics(resource_metrics))
    }

    /// Live series (overflow series included).
    pub fn series(&self) -> usize {
        self.store.budget.series
    }

    /// The estimated bytes held, against `max_memory_mib`.
    pub fn held_bytes(&self) -> usize {
        self.store.budget.held
    }

    /// Spans counted into an overflow series (a cardinality or memory bound) since the
    /// last call.
    pub fn take_overflowed(&mut self) -> u64 {
        std::mem::take(&mut self.store.budget.overflowed)
    }

    /// Resources evicted (`resource_metrics_cache_size` reached) since the last call.
    pub fn take_evicted(&mut self) -> u64 {
        std::mem::take(&mut self.store.budget.evicted)
    }

    /// Spans skipped because their resource has no `service.name`, since the last call.
    pub fn take_ignored(&mut self) -> u64 {
        std::mem::take(&mut self.ignored)
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A resource's key: its (key) attributes sorted by name, each name and encoded value
/// length-prefixed, so that the order they came in does not matter.
fn write_resource_key<'a>(
    plan: &Plan,
    attributes: &mut [(&'a [u8], AttrValue<'a>)],
    key: &mut Vec<u8>,
) {
    key.clear();
    attributes.sort_by(|a, b| a.0.cmp(b.0));
    let wanted = |name: &[u8]| {
        plan.key_attributes.is_empty() || plan.key_attributes.iter().any(|k| **k == *name)
    };
    for (name, value) in attributes.iter().filter(|(name, _)| wanted(name)) {
        encode_varint(name.len() as u64, key);
        key.extend_from_slice(name);
        value.write_key(key);
    }
}

/// What aggregating one resource's spans works with.
struct Context<'c, 'a> {
    plan: &'c Plan,
    resource: &'c mut Resource,
    budget: &'c mut Budget,
    key: &'c mut Vec<u8>,
    service: &'a [u8],
    resource_dims: &'c [Option<AttrValue<'a>>],
    event_dims: &'c mut Vec<Option<AttrValue<'a>>>,
    now: u64,
}

impl<'a> Context<'_, 'a> {
    /// Counts one span into its series of every table.
    fn aggregate(&mut self, span: &SpanInput<'a, '_>) {
        let plan = self.plan;
        let view = &span.view;
        let duration_ns = view.end.saturating_sub(view.start);
        let adjusted = sampling::adjusted_count(view.trace_state);
        let observation = Observation {
            duration_ns,
            value: duration_ns as f64 / plan.unit.nanos(),
            weight: adjusted.unwrap_or(1.0),
            exemplar: exemplar_ids(plan, view.trace_id, view.span_id),
            now: self.now,
        };
        let parts = SpanParts {
            service: self.service,
            name: view.name,
            kind: view.kind,
            status: view.status,
            scope: span.scope,
            adjusted: adjusted.is_some(),
        };
        let mut overflowed = false;
        for (at, table) in plan.tables.iter().enumerate() {
            if table.kind == TableKind::Events {
                overflowed |= self.count_events(at, span, &parts, &observation);
                continue;
            }
            let layers: [&[_]; 2] = [span.dims, self.resource_dims];
            plan.write_key(self.key, &parts, &table.extra, &layers);
            let attributes = || plan.attributes(&parts, &table.extra, &layers);
            overflowed |=
                self.resource
                    .record(at, self.key, attributes, &observation, plan, self.budget);
        }
        self.budget.overflowed += u64::from(overflowed);
    }

    /// Counts a span's events into the events table `at`; returns whether any went to
    /// an overflow series.
    fn count_events(
        &mut self,
        at: usize,
        span: &SpanInput<'a, '_>,
        parts: &SpanParts<'a>,
        observation: &Observation,
    ) -> bool {
        let plan = self.plan;
        let extra = &plan.tables[at].extra;
        let mut overflowed = false;
        for event in 0..span.events.len() {
            span.events.dims(event, plan, self.event_dims);
            let layers: [&[_]; 3] = [span.dims, self.event_dims, self.resource_dims];
            plan.write_key(self.key, parts, extra, &layers);
            let attributes = || plan.attributes(parts, extra, &layers);
            overflowed |=
                self.resource
                    .record(at, self.key, attributes, observation, plan, self.budget);
        }
        overflowed
    }
}

/// A span's ids for an exemplar, when exemplars are on and its trace id is set.
fn exemplar_ids(plan: &Plan, trace_id: &[u8], span_id: &[u8]) -> Option<Ids> {
    if plan.exemplars == 0 {
        return None;
    }
    let trace_id: [u8; 16] = trace_id.try_into().ok()?;
    if trace_id == [0; 16] {
        return None;
    }
    Some(Ids {
        trace_id,
        span_id: span_id.try_into().ok(),
    })
}

#[cfg(test)]
mod tests;
