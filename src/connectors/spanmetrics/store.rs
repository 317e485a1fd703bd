//! The series the connector holds, and their bounds.
//!
//! Resources (by their key attributes) hold one table of series per metric group (see
//! [`super::plan::TableKind`]); a table maps series keys to series. Every bound is
//! checked where something new would be created:
//! * a table holds at most `aggregation_cardinality_limit` series; the spans of further
//!   series go to the table's overflow series (attribute `otel.metric.overflow=true`);
//! * at most `resource_metrics_cache_size` resources are live: a new one evicts the
//!   least recently used, which stays until the next flush sends it once more (a span
//!   for it before then takes it back), as the collector's cache does;
//! * the estimated bytes of everything held stay under `max_memory_mib`: past it, new
//!   series go to their table's overflow series and new resources' spans to one
//!   overflow resource without attributes. Overflow series themselves are created past
//!   the bound (one per table and resource held, small and bounded by the other limits).

use super::config::Temporality;
use super::emit;
use super::histogram::{Explicit, Exponential, Histogram};
use super::plan::{HistogramPlan, Plan, TableKind};
use foldhash::fast::RandomState;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use prost::Message;
use std::collections::HashMap;
use std::mem::size_of;

/// Estimated bytes of a series beyond its key, attributes, buckets and exemplars: the
/// struct, its map entry and the map's spare room.
const SERIES_BYTES: usize = size_of::<Series>() + size_of::<Box<[u8]>>() + 64;
/// Estimated bytes of a resource beyond its key and attributes.
const RESOURCE_BYTES: usize = size_of::<Resource>() + size_of::<Box<[u8]>>() + 64;

/// One span's contribution to a series.
pub struct Observation {
    pub duration_ns: u64,
    /// The duration in the histogram's unit.
    pub value: f64,
    /// The span's adjusted count.
    pub weight: f64,
    pub exemplar: Option<Ids>,
    pub now: u64,
}

/// A span's trace and span ids, for an exemplar.
#[derive(Clone, Copy, Debug)]
pub struct Ids {
    pub trace_id: [u8; 16],
    pub span_id: Option<[u8; 8]>,
}

#[derive(Clone, Copy, Debug)]
pub struct Exemplar {
    pub ids: Ids,
    pub value: f64,
}

/// What is held, against the memory bound, and what the bounds did.
#[derive(Debug, Default)]
pub struct Budget {
    pub held: usize,
    pub max: usize,
    pub series: usize,
    pub overflowed: u64,
    pub evicted: u64,
    seq: u64,
}

impl Budget {
    fn full(&self) -> bool {
        self.held >= self.max
    }

    /// A number increasing with every series and resource created (their output order).
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn add_series(&mut self, series: &Series) {
        self.held += series.bytes;
        self.series += 1;
    }

    fn release_series(&mut self, series: &Series) {
        self.held -= series.bytes;
        self.series -= 1;
    }
}

/// The aggregation of one set of dimensions.
#[derive(Debug)]
pub struct Series {
    pub attributes: Vec<KeyValue>,
    /// Start of the data point's interval: creation, or with delta the last flush.
    pub start: u64,
    last_seen: u64,
    seq: u64,
    /// Spans (or events) counted, by adjusted count.
    pub calls: f64,
    pub histogram: Option<Histogram>,
    pub exemplars: Vec<Exemplar>,
    /// Whether spans came since the last flush.
    pub touched: bool,
    /// Not flushed yet (a new cumulative `calls` series is sent as 0 first).
    pub first: bool,
    bytes: usize,
}

impl Series {
    fn new(
        attributes: Vec<KeyValue>,
        key: usize,
        kind: TableKind,
        plan: &Plan,
        now: u64,
    ) -> Series {
        let (histogram, buckets) = match (&plan.histogram, kind.duration()) {
            (HistogramPlan::Explicit { bounds_ns, .. }, true) => (
                Some(Histogram::Explicit(Explicit::new(bounds_ns.len()))),
                bounds_ns.len() + 1,
            ),
            (HistogramPlan::Exponential { max_size }, true) => {
                (Some(Histogram::Exponential(Exponential::new())), *max_size)
            }
            _ => (None, 0),
        };
        let bytes = SERIES_BYTES
            + key
            + attributes_bytes(&attributes)
            + buckets * size_of::<f64>()
            + plan.exemplars * size_of::<Exemplar>();
        Series {
            attributes,
            start: now,
            last_seen: now,
            seq: 0,
            calls: 0.0,
            histogram,
            exemplars: Vec::new(),
            touched: false,
            first: true,
            bytes,
        }
    }

    #[inline]
    fn record(&mut self, observation: &Observation, plan: &Plan) {
        let weight = observation.weight;
        self.calls += weight;
        match (&mut self.histogram, &plan.histogram) {
            (Some(Histogram::Explicit(h)), HistogramPlan::Explicit { bounds_ns, .. }) => h.record(
                bounds_ns,
                observation.duration_ns,
                observation.value,
                weight,
            ),
            (Some(Histogram::Exponential(h)), HistogramPlan::Exponential { max_size }) => {
                h.record(observation.value, weight, *max_size)
            }
            _ => {}
        }
        if let Some(ids) = observation.exemplar {
            if self.exemplars.len() < plan.exemplars {
                self.exemplars.push(Exemplar {
                    ids,
                    value: observation.value,
                });
            }
        }
        self.last_seen = observation.now;
        self.touched = true;
    }

    /// After a flush: exemplars go; with delta the counts start again from `now`.
    fn flushed(&mut self, temporality: Temporality, now: u64) {
        self.exemplars.clear();
        self.touched = false;
        self.first = false;
        if temporality == Temporality::Delta {
            self.start = now;
            self.calls = 0.0;
            self.histogram = match self.histogram.take() {
                Some(Histogram::Explicit(h)) => {
                    Some(Histogram::Explicit(Explicit::new(h.counts.len() - 1)))
                }
                Some(Histogram::Exponential(_)) => Some(Histogram::Exponential(Exponential::new())),
                None => None,
            };
        }
    }
}

/// Estimated bytes of decoded attributes.
fn attributes_bytes(attributes: &[KeyValue]) -> usize {
    attributes
        .iter()
        .map(|a| {
            size_of::<KeyValue>() + a.key.len() + a.value.as_ref().map_or(0, |v| v.encoded_len())
        })
        .sum()
}

/// The series of one metric group of one resource.
#[derive(Debug, Default)]
pub struct Table {
    series: HashMap<Box<[u8]>, Series, RandomState>,
    overflow: Option<Series>,
}

impl Table {
    /// Adds an observation to the series `key` (its attributes from `attributes` if it
    /// is new), or to the overflow series when no new series may be created. Returns
    /// whether it went to the overflow series.
    #[inline]
    fn record(
        &mut self,
        key: &[u8],
        attributes: impl FnOnce() -> Vec<KeyValue>,
        observation: &Observation,
        new: NewSeries<'_>,
        budget: &mut Budget,
    ) -> bool {
        if let Some(series) = self.series.get_mut(key) {
            series.record(observation, new.plan);
            return false;
        }
        let limit = new.plan.cardinality_limit;
        let over_limit = limit > 0 && self.series.len() >= limit;
        if new.overflow_only || over_limit || budget.full() {
            let overflow = self.overflow.get_or_insert_with(|| {
                let mut series = Series::new(
                    vec![emit::overflow_attribute()],
                    0,
                    new.kind,
                    new.plan,
                    observation.now,
                );
                series.seq = u64::MAX;
                budget.add_series(&series);
                series
            });
            overflow.record(observation, new.plan);
            return true;
        }
        let mut series = Series::new(attributes(), key.len(), new.kind, new.plan, observation.now);
        series.seq = budget.next_seq();
        series.record(observation, new.plan);
        budget.add_series(&series);
        self.series.insert(key.into(), series);
        false
    }

    /// The series in creation order, the overflow series last.
    fn ordered(&self) -> Vec<&Series> {
        let mut series: Vec<&Series> = self.series.values().collect();
        series.sort_unstable_by_key(|s| s.seq);
        series.extend(&self.overflow);
        series
    }

    fn is_empty(&self) -> bool {
        self.series.is_empty() && self.overflow.is_none()
    }

    /// Drops the series `drop` selects.
    fn drop_series(&mut self, budget: &mut Budget, drop: impl Fn(&Series) -> bool) {
        self.series.retain(|_, series| {
            let dropped = drop(series);
            if dropped {
                budget.release_series(series);
            }
            !dropped
        });
        if self.overflow.as_ref().is_some_and(&drop) {
            budget.release_series(&self.overflow.take().expect("checked"));
        }
    }

    fn release_all(&mut self, budget: &mut Budget) {
        self.drop_series(budget, |_| true);
    }
}

/// How a table creates series.
#[derive(Clone, Copy)]
pub struct NewSeries<'p> {
    pub plan: &'p Plan,
    pub kind: TableKind,
    overflow_only: bool,
}

/// One resource's tables.
#[derive(Debug)]
pub struct Resource {
    pub attributes: Vec<KeyValue>,
    tables: Vec<Table>,
    last_seen: u64,
    last_used: u64,
    seq: u64,
    evicted: bool,
    /// The resource of spans whose own resource could not be held: overflow series only.
    overflow_only: bool,
    bytes: usize,
}

impl Resource {
    fn new(attributes: Vec<KeyValue>, key: usize, plan: &Plan, now: u64) -> Resource {
        let bytes = RESOURCE_BYTES + key + attributes_bytes(&attributes);
        Resource {
            attributes,
            tables: plan.tables.iter().map(|_| Table::default()).collect(),
            last_seen: now,
            last_used: 0,
            seq: 0,
            evicted: false,
            overflow_only: false,
            bytes,
        }
    }

    /// Adds an observation to table `table`'s series `key`; returns whether it went to
    /// an overflow series.
    #[inline]
    pub fn record(
        &mut self,
        table: usize,
        key: &[u8],
        attributes: impl FnOnce() -> Vec<KeyValue>,
        observation: &Observation,
        plan: &Plan,
        budget: &mut Budget,
    ) -> bool {
        let new = NewSeries {
            plan,
            kind: plan.tables[table].kind,
            overflow_only: self.overflow_only,
        };
        self.tables[table].record(key, attributes, observation, new, budget)
    }

    fn is_empty(&self) -> bool {
        self.tables.iter().all(Table::is_empty)
    }

    fn release(&mut self, budget: &mut Budget) {
        for table in &mut self.tables {
            table.release_all(budget);
        }
        budget.held -= self.bytes;
    }

    /// The data points to send now, with the tables' plans.
    fn metrics(&self, plan: &Plan, now: u64) -> Option<ResourceMetrics> {
        let mut points = emit::Points::default();
        for (table, table_plan) in self.tables.iter().zip(&plan.tables) {
            for series in table.ordered() {
                if plan.temporality == Temporality::Delta && !series.touched {
                    continue;
                }
                points.add(series, table_plan.kind, plan, now);
            }
        }
        points.into_resource_metrics(&self.attributes, plan)
    }

    /// After a flush: with delta, series that had no span since the previous flush go.
    fn flushed(&mut self, plan: &Plan, now: u64, budget: &mut Budget) {
        for table in &mut self.tables {
            if plan.temporality == Temporality::Delta {
                table.drop_series(budget, |s| !s.touched);
            }
            table
                .series
                .values_mut()
                .for_each(|s| s.flushed(plan.temporality, now));
            if let Some(overflow) = &mut table.overflow {
                overflow.flushed(plan.temporality, now);
            }
        }
    }
}

/// Every resource held.
#[derive(Debug)]
pub struct Store {
    resources: HashMap<Box<[u8]>, Resource, RandomState>,
    overflow: Option<Resource>,
    pub budget: Budget,
    live: usize,
    tick: u64,
}

impl Store {
    pub fn new(plan: &Plan) -> Store {
        Store {
            resources: HashMap::default(),
            overflow: None,
            budget: Budget {
                max: plan.max_bytes,
                ..Budget::default()
            },
            live: 0,
            tick: 0,
        }
    }

    /// The resource of key `key` (its attributes from `attributes` when new), or the
    /// overflow resource when a new one cannot be held; and the budget to record with.
    pub fn resource(
        &mut self,
        key: &[u8],
        attributes: impl FnOnce() -> Vec<KeyValue>,
        plan: &Plan,
        now: u64,
    ) -> (&mut Resource, &mut Budget) {
        self.tick += 1;
        let tick = self.tick;
        match self.resources.get_mut(key) {
            Some(resource) => {
                resource.last_used = tick;
                resource.last_seen = now;
                if std::mem::replace(&mut resource.evicted, false) {
                    self.live += 1;
                    self.evict_beyond(plan.max_resources);
                }
            }
            None if self.budget.full() => return self.overflow_resource(plan, now),
            None => {
                self.evict_beyond(plan.max_resources - 1);
                let mut resource = Resource::new(attributes(), key.len(), plan, now);
                resource.last_used = tick;
                resource.seq = self.budget.next_seq();
                self.budget.held += resource.bytes;
                self.resources.insert(key.into(), resource);
                self.live += 1;
            }
        }
        let resource = self
            .resources
            .get_mut(key)
            .expect("found or inserted above");
        (resource, &mut self.budget)
    }

    fn overflow_resource(&mut self, plan: &Plan, now: u64) -> (&mut Resource, &mut Budget) {
        let budget = &mut self.budget;
        let resource = self.overflow.get_or_insert_with(|| {
            let mut resource = Resource::new(Vec::new(), 0, plan, now);
            resource.overflow_only = true;
            resource.seq = u64::MAX;
            budget.held += resource.bytes;
            resource
        });
        resource.last_seen = now;
        (resource, budget)
    }

    /// Evicts least recently used resources until at most `live` are live.
    fn evict_beyond(&mut self, live: usize) {
        while self.live > live {
            let oldest = self
                .resources
                .values_mut()
                .filter(|r| !r.evicted)
                .min_by_key(|r| r.last_used);
            let Some(oldest) = oldest else { return };
            oldest.evicted = true;
            self.live -= 1;
            self.budget.evicted += 1;
        }
    }

    /// The metrics to send now; then expired, evicted and (delta) idle data goes.
    /// Marks every series as flushed before, so that the next flush sends each one's
    /// count (the last flush: no later one would carry it).
    pub fn no_first_points(&mut self) {
        for resource in self.resources.values_mut().chain(self.overflow.as_mut()) {
            for table in &mut resource.tables {
                table.series.values_mut().for_each(|s| s.first = false);
                if let Some(overflow) = &mut table.overflow {
                    overflow.first = false;
                }
            }
        }
    }

    pub fn flush(&mut self, plan: &Plan, now: u64) -> Vec<ResourceMetrics> {
        if plan.temporality == Temporality::Cumulative {
            self.expire(plan, now);
        }
        let mut resources: Vec<&mut Resource> = self.resources.values_mut().collect();
        resources.sort_unstable_by_key(|r| r.seq);
        resources.extend(self.overflow.as_mut());
        let mut out = Vec::new();
        for resource in resources {
            out.extend(resource.metrics(plan, now));
            resource.flushed(plan, now, &mut self.budget);
        }
        let delta = plan.temporality == Temporality::Delta;
        self.drop_resources(|r| r.evicted || (delta && r.is_empty()));
        out
    }

    /// Cumulative expiration: resources, then series, without a span for their time.
    fn expire(&mut self, plan: &Plan, now: u64) {
        let (resources, series) = (plan.metrics_expiration_ns, plan.series_expiration_ns);
        if resources > 0 {
            self.drop_resources(|r| now.saturating_sub(r.last_seen) >= resources);
        }
        if series > 0 {
            let budget = &mut self.budget;
            let held = self.resources.values_mut().chain(self.overflow.as_mut());
            for table in held.flat_map(|r| &mut r.tables) {
                table.drop_series(budget, |s| now.saturating_sub(s.last_seen) >= series);
            }
        }
    }

    /// Forgets the resources (the overflow resource included) `drop` selects.
    fn drop_resources(&mut self, drop: impl Fn(&Resource) -> bool) {
        let (budget, live) = (&mut self.budget, &mut self.live);
        self.resources.retain(|_, resource| {
            let dropped = drop(resource);
            if dropped {
                *live -= usize::from(!resource.evicted);
                resource.release(budget);
            }
            !dropped
        });
        if self.overflow.as_ref().is_some_and(&drop) {
            self.overflow.take().expect("checked").release(budget);
        }
    }
}
