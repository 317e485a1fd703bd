//! `tail_sampling`: holds each trace's spans until it can be judged whole, then keeps or
//! drops the trace by policies — the OpenTelemetry Collector's `tail_sampling` processor
//! (same configuration, policy types and decision rule; see [`policy::final_decision`]),
//! with memory as the budget.
//!
//! * Spans are never decoded: arriving requests are read off the wire ([`ingest`]), and
//!   each group of spans of one trace is appended to the trace's buffer, as the bytes that
//!   arrived, in a `resource_spans` entry of an `ExportTraceServiceRequest`. A held span
//!   costs its protobuf size plus a small share of bookkeeping, and a kept trace is sent
//!   on as those bytes. Every span-level question of the policies (attributes, status,
//!   trace state, times) is answered once on arrival into the trace's
//!   [`policy::TraceSummary`].
//! * Decisions are due `decision_wait` after a trace's first span; traces are held in a
//!   queue in arrival order (the wait is the same for all, so the order is the deadline
//!   order) and a tick decides what is due from its front, without scanning the others.
//!   A table maps each held trace's id to its place in the queue: deciding reads the
//!   queue in order, where a table of whole traces (several MiB at `num_traces`) would
//!   cost a cache miss or two per decision; a decided trace leaves an empty place until
//!   it reaches the front (its bytes counted until then). With
//!   `decision_wait_after_root`, a second queue decides a trace that long after its root
//!   span arrived, if sooner. An idle worker may decide late by up to a tenth of the
//!   shorter wait, at most 100 ms ([`Processor::deadline_slack`]), so that a steady
//!   trickle of requests does not wake it once per request just to decide; a busy one
//!   decides as traces fall due. The collector decides once a second.
//! * Budget: bytes held (buffer capacity plus a fixed per-trace overhead) are limited by
//!   `max_memory_mib` and traces by `num_traces`. Past either, the oldest traces are
//!   decided early on what they have (trigger `decided_early`), never dropped unjudged.
//!   When that cuts traces short of half their `decision_wait`, the load is more than
//!   the budget can hold: new traces are then decided on arrival by the deterministic
//!   probabilistic rule on the trace id at `fallback_sampling_percentage`, without
//!   buffering (`sieve_tail_sampling_fallback_active` counts the shards doing so, one per worker), until the bytes held fall
//!   below half the budget. Traces already held keep buffering meanwhile.
//! * Late spans: a span of a trace no longer held follows the decision recorded in the
//!   decision caches ([`cache`]); without one it starts a new trace, as in the collector.
//! * Kept traces carry their sampling probability as the W3C `tracestate` `ot=th:`
//!   threshold (OpenTelemetry's consistent probability sampling) when only unsalted
//!   probabilistic policies kept them; traces kept by any other policy were kept with
//!   certainty and are left unchanged.
//! * On flush (shutdown, reload) every held trace is decided at once (trigger `shutdown`).

pub mod cache;
pub mod config;
pub mod ingest;
pub mod policy;
mod shared;

use super::Processor;
use crate::config::FieldError;
use crate::model::wire;
use crate::model::{oldest, Batch, Metadata, Payload, Signal};
use crate::telemetry::{ProcessorLabels, Telemetry};
use bytes::Bytes;
use cache::{id_hash, FingerprintFilter, SampledCache};
pub use config::TailSamplingConfig;
use ingest::{ScopeGroup, SpanFacts};
use parking_lot::Mutex;
use policy::{
    evaluate_all, Decision, Policy, Probabilistic, SpanPredicates, TraceId, TraceSummary,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
pub use shared::Shared;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What triggered a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    DecisionWait,
    Root,
    DecidedEarly,
    Shutdown,
    Fallback,
}

impl Trigger {
    const ALL: [Trigger; 5] = [
        Trigger::DecisionWait,
        Trigger::Root,
        Trigger::DecidedEarly,
        Trigger::Shutdown,
        Trigger::Fallback,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Trigger::DecisionWait => "decision_wait",
            Trigger::Root => "root",
            Trigger::DecidedEarly => "decided_early",
            Trigger::Shutdown => "shutdown",
            Trigger::Fallback => "fallback",
        }
    }
}

/// Trace ids are random: their own bits make the table hash.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        if let Ok(id) = TraceId::try_from(bytes) {
            self.0 = id_hash(&id);
        } else {
            self.0 = bytes
                .iter()
                .fold(self.0, |h, &b| h.rotate_left(8) ^ u64::from(b));
        }
    }
}

/// The held traces by id: the sequence number of each one's [`Arrival`].
type TraceTable = HashMap<TraceId, u64, BuildHasherDefault<IdHasher>>;

/// A held trace.
struct Trace {
    /// Encoded `resource_spans` entries: an `ExportTraceServiceRequest` of its spans.
    buffer: Vec<u8>,
    summary: TraceSummary,
    root_seen: bool,
    /// The request metadata its first spans came with (a tenant), which it leaves with.
    metadata: Option<Metadata>,
}

/// A trace's place in arrival order: the trace itself until it is decided, then an
/// empty place until it reaches the front of the queue.
struct Arrival {
    /// When the trace is due: `decision_wait` after its first spans.
    at: Instant,
    id: TraceId,
    /// The log record its first spans came from (with a persistent queue).
    record: Option<u64>,
    trace: Option<Trace>,
}

/// Kept data waiting to be emitted with one request metadata: whole traces, and
/// `passing` (late or fallback spans that go straight through), with their span count
/// and the oldest log record among them (with a persistent queue).
#[derive(Default)]
struct Outgoing {
    parts: Vec<Bytes>,
    passing: Vec<u8>,
    items: usize,
    record: Option<u64>,
}

/// A decision due after a root span (`decision_wait_after_root`).
#[derive(Clone, Copy)]
struct Due {
    at: Instant,
    /// The sequence number of the trace's [`Arrival`].
    seq: u64,
}

/// Bytes a held trace costs besides its buffer and its arrival place: its table slot
/// (with the table's spare room) and a root deadline.
const TRACE_OVERHEAD: usize =
    (std::mem::size_of::<(TraceId, u64)>() + 1) * 8 / 7 + std::mem::size_of::<Due>();

/// Bytes an arrival place costs, from its trace's arrival until it leaves the queue.
const ARRIVAL_OVERHEAD: usize = std::mem::size_of::<Arrival>();

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct PolicyDecisionLabels {
    processor: String,
    policy: String,
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct TraceDecisionLabels {
    processor: String,
    decision: String,
    trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct LateSpanLabels {
    processor: String,
    decision: String,
}

/// The tail sampler's own metric families, registered when the first one is built.
struct Families {
    traces_held: Family<ProcessorLabels, Gauge>,
    spans_held: Family<ProcessorLabels, Gauge>,
    bytes_held: Family<ProcessorLabels, Gauge>,
    policy_decisions: Family<PolicyDecisionLabels, Counter>,
    traces_decided: Family<TraceDecisionLabels, Counter>,
    late_spans: Family<LateSpanLabels, Counter>,
    fallback_active: Family<ProcessorLabels, Gauge>,
    fallback_activations: Family<ProcessorLabels, Counter>,
}

impl Families {
    fn register(t: &Telemetry) -> Families {
        Families {
            traces_held: t.family(
                "tail_sampling_traces_held",
                "Traces buffered by a tail sampler, undecided",
            ),
            spans_held: t.family(
                "tail_sampling_spans_held",
                "Spans buffered by a tail sampler",
            ),
            bytes_held: t.family(
                "tail_sampling_bytes_held",
                "Bytes a tail sampler counts against max_memory_mib",
            ),
            policy_decisions: t.family(
                "tail_sampling_policy_decisions",
                "Decisions of each top-level tail sampling policy",
            ),
            traces_decided: t.family(
                "tail_sampling_traces_decided",
                "Final tail sampling decisions, by trigger",
            ),
            late_spans: t.family(
                "tail_sampling_late_spans",
                "Spans arriving for traces already decided",
            ),
            fallback_active: t.family(
                "tail_sampling_fallback_active",
                "Shards of a tail sampler (one per worker) deciding new traces on arrival (overload)",
            ),
            fallback_activations: t.family(
                "tail_sampling_fallback_activations",
                "Times a tail sampler switched to deciding on arrival",
            ),
        }
    }
}

/// A shard's part of a gauge that the shards of a [`Shared`] sampler add up to.
struct GaugePart {
    gauge: Gauge,
    part: i64,
}

impl GaugePart {
    fn new(gauge: Gauge) -> GaugePart {
        GaugePart { gauge, part: 0 }
    }

    fn set(&mut self, value: i64) {
        self.gauge.inc_by(value - self.part);
        self.part = value;
    }
}

struct Metrics {
    traces_held: GaugePart,
    spans_held: GaugePart,
    bytes_held: GaugePart,
    /// Shards deciding new traces on arrival (1 for the whole processor on one worker).
    fallback_active: GaugePart,
    fallback_activations: Counter,
    /// Per top-level policy, per [`Decision::ALL`].
    policy_decisions: Vec<[Counter; 5]>,
    /// Per [`Trigger::ALL`], sampled then not sampled.
    traces_decided: [[Counter; 2]; 5],
    late_sampled: Counter,
    late_not_sampled: Counter,
}

impl Metrics {
    fn new(telemetry: &Telemetry, processor: &str, policies: &[Policy]) -> Metrics {
        let families = Families::register(telemetry);
        let labels = ProcessorLabels {
            processor: processor.into(),
        };
        let decided = |trigger: Trigger, decision: &str| {
            families
                .traces_decided
                .get_or_create_owned(&TraceDecisionLabels {
                    processor: processor.into(),
                    decision: decision.into(),
                    trigger: trigger.as_str().into(),
                })
        };
        let late = |decision: &str| {
            families.late_spans.get_or_create_owned(&LateSpanLabels {
                processor: processor.into(),
                decision: decision.into(),
            })
        };
        Metrics {
            traces_held: GaugePart::new(families.traces_held.get_or_create_owned(&labels)),
            spans_held: GaugePart::new(families.spans_held.get_or_create_owned(&labels)),
            bytes_held: GaugePart::new(families.bytes_held.get_or_create_owned(&labels)),
            fallback_active: GaugePart::new(families.fallback_active.get_or_create_owned(&labels)),
            fallback_activations: families.fallback_activations.get_or_create_owned(&labels),
            policy_decisions: policies
                .iter()
                .map(|p| {
                    Decision::ALL.map(|d| {
                        families
                            .policy_decisions
                            .get_or_create_owned(&PolicyDecisionLabels {
                                processor: processor.into(),
                                policy: p.name.clone(),
                                decision: d.as_str().into(),
                            })
                    })
                })
                .collect(),
            traces_decided: Trigger::ALL
                .map(|t| [decided(t, "sampled"), decided(t, "not_sampled")]),
            late_sampled: late("sampled"),
            late_not_sampled: late("not_sampled"),
        }
    }
}

pub struct TailSampler {
    config: TailSamplingConfig,
    /// Shared by the shards of a [`Shared`] sampler: a policy's state (a rate limit's
    /// spans this second) is the processor's, not a shard's.
    policies: SharedPolicies,
    predicates: Arc<SpanPredicates>,
    traces: TraceTable,
    /// Every trace in arrival order, which is the order they fall due (the wait is the
    /// same for all); `arrivals[i]` has sequence number `first_seq + i`.
    arrivals: VecDeque<Arrival>,
    first_seq: u64,
    by_root: VecDeque<Due>,
    bytes_held: usize,
    spans_held: usize,
    budget_bytes: usize,
    sampled: SampledCache,
    not_sampled: FingerprintFilter,
    fallback: Option<Probabilistic>,
    started: Instant,
    /// How late an idle worker may decide.
    slack: Duration,
    /// Kept data waiting to be emitted, per request metadata (tenants leave apart).
    out: HashMap<Option<Metadata>, Outgoing>,
    /// The log record and the request metadata of the batch being processed.
    current_record: Option<u64>,
    current_metadata: Option<Metadata>,
    metrics: Metrics,
}

impl TailSampler {
    /// Fails on a policy regex that does not compile.
    pub fn new(
        config: TailSamplingConfig,
        id: &str,
        telemetry: &Telemetry,
    ) -> Result<TailSampler, FieldError> {
        let (policies, predicates) = compile(&config)?;
        Ok(TailSampler::shard(
            &config, 1, id, telemetry, policies, predicates,
        ))
    }

    /// One of `shards` samplers that divide the traces among them: each gets that share
    /// of the budgets (`max_memory_mib`, `num_traces`, the decision caches).
    fn shard(
        config: &TailSamplingConfig,
        shards: usize,
        id: &str,
        telemetry: &Telemetry,
        policies: SharedPolicies,
        predicates: Arc<SpanPredicates>,
    ) -> TailSampler {
        let share = |n: usize| n.div_ceil(shards);
        let mut config = config.clone();
        config.num_traces = share(config.num_traces);
        config.expected_new_traces_per_sec = share(config.expected_new_traces_per_sec);
        let caches = &mut config.decision_cache;
        caches.sampled_cache_size = share(caches.sampled_cache_size);
        caches.non_sampled_cache_size = share(caches.non_sampled_cache_size);
        let expected = config
            .expected_new_traces_per_sec
            .saturating_mul(config.decision_wait.as_secs() as usize);
        let metrics = Metrics::new(telemetry, id, &policies.lock());
        TailSampler {
            traces: TraceTable::with_capacity_and_hasher(
                expected.min(config.num_traces),
                Default::default(),
            ),
            arrivals: VecDeque::new(),
            first_seq: 0,
            by_root: VecDeque::new(),
            bytes_held: 0,
            spans_held: 0,
            budget_bytes: config.max_memory_mib.saturating_mul(1 << 20) / shards,
            sampled: SampledCache::new(config.decision_cache.sampled_cache_size),
            not_sampled: FingerprintFilter::new(config.decision_cache.non_sampled_cache_size),
            fallback: None,
            started: Instant::now(),
            slack: slack_of(&config),
            out: HashMap::new(),
            current_record: None,
            current_metadata: None,
            metrics,
            policies,
            predicates,
            config,
        }
    }

    /// Reads every chunk of a batch ([`read_chunks`]), then admits its spans grouped by
    /// trace.
    fn ingest(&mut self, chunks: &[Bytes], now: Instant) {
        let groups = read_chunks(chunks, &self.predicates);
        for (at, group) in &groups {
            for same_trace in group.spans.chunk_by(|a, b| a.trace_id == b.trace_id) {
                self.admit(&chunks[*at], group, same_trace, now);
            }
        }
    }

    /// Takes the spans of one trace from one resource and scope.
    fn admit(&mut self, source: &[u8], group: &ScopeGroup, spans: &[SpanFacts], now: Instant) {
        let Some(id) = spans[0].trace_id else {
            tracing::warn!(
                spans = spans.len(),
                "tail_sampling: dropping spans without a 16-byte trace id"
            );
            return;
        };
        let held = self.traces.get(&id).copied();
        if held.is_none() {
            if let Some(sampled) = self.cached_decision(&id) {
                let late = if sampled {
                    &self.metrics.late_sampled
                } else {
                    &self.metrics.late_not_sampled
                };
                late.inc_by(spans.len() as u64);
                if sampled {
                    self.pass(source, group, spans);
                }
                return;
            }
            if let Some(rule) = &self.fallback {
                let sampled = rule.samples(&id);
                self.record(id, sampled, Trigger::Fallback);
                if sampled {
                    self.pass(source, group, spans);
                }
                return;
            }
        }
        let seq = held.unwrap_or_else(|| self.hold_new(id, now));
        let Some(trace) = self
            .arrivals
            .get_mut((seq - self.first_seq) as usize)
            .and_then(|arrival| arrival.trace.as_mut())
        else {
            debug_assert!(false, "the trace table names held traces only");
            return;
        };
        let capacity_before = trace.buffer.capacity();
        ingest::encode_group(&mut trace.buffer, group, source, spans);
        self.bytes_held += trace.buffer.capacity() - capacity_before;
        self.spans_held += spans.len();
        let mut root_arrived = false;
        for span in spans {
            trace
                .summary
                .add_span(span.start, span.end, span.status, span.matched);
            root_arrived |= span.root;
        }
        if root_arrived && !trace.root_seen && !self.config.decision_wait_after_root.is_zero() {
            trace.root_seen = true;
            self.by_root.push_back(Due {
                at: now + self.config.decision_wait_after_root,
                seq,
            });
        }
    }

    /// Starts holding a trace not held: its arrival place and its table entry.
    fn hold_new(&mut self, id: TraceId, now: Instant) -> u64 {
        let seq = self.first_seq + self.arrivals.len() as u64;
        self.arrivals.push_back(Arrival {
            at: now + self.config.decision_wait,
            id,
            record: self.current_record,
            trace: Some(Trace {
                buffer: Vec::new(),
                summary: TraceSummary::default(),
                root_seen: false,
                metadata: self.current_metadata.clone(),
            }),
        });
        self.traces.insert(id, seq);
        self.bytes_held += TRACE_OVERHEAD + ARRIVAL_OVERHEAD;
        seq
    }

    /// Takes the trace of arrival `seq` out of those held, if it is not decided yet.
    fn take(&mut self, seq: u64) -> Option<(TraceId, Option<u64>, Trace)> {
        let arrival = self
            .arrivals
            .get_mut(seq.checked_sub(self.first_seq)? as usize)?;
        let trace = arrival.trace.take()?;
        self.traces.remove(&arrival.id);
        Some((arrival.id, arrival.record, trace))
    }

    /// Takes the oldest arrival place off the queue, with its trace if not decided yet.
    fn pop_oldest(&mut self) -> Option<Arrival> {
        let arrival = self.arrivals.pop_front()?;
        self.first_seq += 1;
        self.bytes_held -= ARRIVAL_OVERHEAD;
        if arrival.trace.is_some() {
            self.traces.remove(&arrival.id);
        }
        Some(arrival)
    }

    fn cached_decision(&mut self, id: &TraceId) -> Option<bool> {
        if self.sampled.contains(id) {
            Some(true)
        } else if self.not_sampled.contains(id) {
            Some(false)
        } else {
            None
        }
    }

    /// Sends spans on without holding them.
    fn pass(&mut self, source: &[u8], group: &ScopeGroup, spans: &[SpanFacts]) {
        let outgoing = self.out.entry(self.current_metadata.clone()).or_default();
        ingest::encode_group(&mut outgoing.passing, group, source, spans);
        outgoing.items += spans.len();
        outgoing.record = oldest(outgoing.record, self.current_record);
    }

    /// Remembers a decision and counts it.
    fn record(&mut self, id: TraceId, sampled: bool, trigger: Trigger) {
        if sampled {
            self.sampled.insert(id);
        } else {
            self.not_sampled.insert(&id);
        }
        let trigger_at = Trigger::ALL.iter().position(|t| *t == trigger).unwrap_or(0);
        self.metrics.traces_decided[trigger_at][usize::from(!sampled)].inc();
    }

    /// Decides a trace taken out of those held, whose first spans came from `record`.
    fn decide(
        &mut self,
        id: TraceId,
        record: Option<u64>,
        trace: Trace,
        trigger: Trigger,
        now: Instant,
    ) {
        self.bytes_held -= trace.buffer.capacity() + TRACE_OVERHEAD;
        self.spans_held -= trace.summary.spans as usize;
        let now_second = now.duration_since(self.started).as_secs();
        let outcome = evaluate_all(&mut self.policies.lock(), &id, &trace.summary, now_second);
        for (counters, decision) in self.metrics.policy_decisions.iter().zip(&outcome.decisions) {
            let at = Decision::ALL
                .iter()
                .position(|d| d == decision)
                .unwrap_or(0);
            counters[at].inc();
        }
        self.record(id, outcome.sampled, trigger);
        if outcome.sampled {
            let bytes = match outcome.threshold {
                Some(threshold) => stamp_threshold(&trace.buffer, threshold),
                None => trace.buffer,
            };
            let outgoing = self.out.entry(trace.metadata).or_default();
            outgoing.parts.push(Bytes::from(bytes));
            outgoing.items += trace.summary.spans as usize;
            outgoing.record = oldest(outgoing.record, record);
        }
    }

    /// Decides the oldest traces while over `num_traces` or the memory budget.
    fn enforce_budget(&mut self, now: Instant) {
        while self.traces.len() > self.config.num_traces || self.bytes_held > self.budget_bytes {
            let Some(arrival) = self.pop_oldest() else {
                break;
            };
            let Some(trace) = arrival.trace else {
                continue;
            };
            self.decide(
                arrival.id,
                arrival.record,
                trace,
                Trigger::DecidedEarly,
                now,
            );
            let waited = self
                .config
                .decision_wait
                .saturating_sub(arrival.at.saturating_duration_since(now));
            if waited < self.config.decision_wait / 2 && self.fallback.is_none() {
                self.start_fallback();
            }
        }
        if self.fallback.is_some()
            && self.bytes_held <= self.budget_bytes / 2
            && self.traces.len() <= self.config.num_traces / 2
        {
            tracing::info!("tail_sampling: load back within budget, buffering new traces again");
            self.fallback = None;
            self.metrics.fallback_active.set(0);
        }
    }

    fn start_fallback(&mut self) {
        tracing::warn!(
            budget_mib = self.config.max_memory_mib,
            num_traces = self.config.num_traces,
            percentage = self.config.fallback_sampling_percentage,
            "tail_sampling: traces arrive faster than the budget can hold them for decision_wait; \
             deciding new traces on arrival by trace id until the load falls"
        );
        self.fallback = Some(Probabilistic::new(
            self.config.fallback_sampling_percentage,
            "",
        ));
        self.metrics.fallback_activations.inc();
        self.metrics.fallback_active.set(1);
    }

    /// Decides every queued trace due by `now`.
    fn decide_due_traces(&mut self, now: Instant) {
        while let Some(due) = self.by_root.front().filter(|d| d.at <= now).copied() {
            self.by_root.pop_front();
            if let Some((id, record, trace)) = self.take(due.seq) {
                self.decide(id, record, trace, Trigger::Root, now);
            }
        }
        while self.arrivals.front().is_some_and(|a| a.at <= now) {
            if let Some(Arrival {
                id,
                record,
                trace: Some(trace),
                ..
            }) = self.pop_oldest()
            {
                self.decide(id, record, trace, Trigger::DecisionWait, now);
            }
        }
    }

    /// Emits what was kept, one batch per request metadata, and updates the gauges.
    fn emit(&mut self, out: &mut Vec<Batch>) {
        for (metadata, mut outgoing) in self.out.drain() {
            if !outgoing.passing.is_empty() {
                outgoing.parts.push(Bytes::from(outgoing.passing));
            }
            let mut batch =
                Batch::from_encoded_parts(Signal::Traces, outgoing.parts, outgoing.items);
            batch.set_record(outgoing.record);
            batch.set_metadata(metadata);
            out.push(batch);
        }
        self.metrics.traces_held.set(self.traces.len() as i64);
        self.metrics.spans_held.set(self.spans_held as i64);
        self.metrics.bytes_held.set(self.bytes_held as i64);
    }

    /// Bytes counted against the budget (for tests and benchmarks).
    pub fn bytes_held(&self) -> usize {
        self.bytes_held
    }

    /// Traces held, undecided.
    pub fn traces_held(&self) -> usize {
        self.traces.len()
    }

    /// Whether new traces are being decided on arrival.
    pub fn fallback_active(&self) -> bool {
        self.fallback.is_some()
    }
}

/// The policies, shared by the shards of a [`Shared`] sampler.
type SharedPolicies = Arc<Mutex<Vec<Policy>>>;

/// Compiles the policies and the span predicates they ask about.
fn compile(
    config: &TailSamplingConfig,
) -> Result<(SharedPolicies, Arc<SpanPredicates>), FieldError> {
    let mut predicates = SpanPredicates::default();
    let policies: Vec<Policy> = config
        .policies
        .iter()
        .map(|p| Policy::compile(p, &mut predicates))
        .collect::<Result<_, _>>()
        .map_err(|e| FieldError::new("policies", e))?;
    Ok((Arc::new(Mutex::new(policies)), Arc::new(predicates)))
}

/// Reads every chunk of a batch: its scope groups, each with its spans sorted by trace,
/// and the chunk each came from. A chunk that does not parse (the edge check makes that
/// a defect) is dropped whole and logged, before anything of it is held; the other
/// chunks go on. Like sampled-out spans, its items are counted by the pipeline as
/// `dropped{reason="tail_sampling"}`.
fn read_chunks(chunks: &[Bytes], predicates: &SpanPredicates) -> Vec<(usize, ScopeGroup)> {
    let mut groups = Vec::new();
    for (at, chunk) in chunks.iter().enumerate() {
        let mut found = Vec::new();
        match ingest::read_request(chunk, predicates, |group| found.push((at, group))) {
            Ok(()) => groups.append(&mut found),
            Err(error) => {
                let items = wire::count_items(Signal::Traces, chunk).unwrap_or(0);
                tracing::warn!(%error, items, "tail_sampling: dropping a malformed request");
            }
        }
    }
    for (_, group) in &mut groups {
        group.spans.sort_by_key(|span| span.trace_id);
    }
    groups
}

/// A batch's chunks, as the sampler reads them.
fn chunks_of(batch: &Batch) -> Vec<Bytes> {
    match batch.payload() {
        Payload::Encoded(chunks) => chunks.clone(),
        _ => vec![batch.to_bytes()],
    }
}

impl Processor for TailSampler {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) {
        if batch.signal() != Signal::Traces {
            out.push(batch);
            return;
        }
        let chunks = chunks_of(&batch);
        let now = Instant::now();
        self.current_record = batch.record();
        self.current_metadata = batch.metadata().cloned();
        self.ingest(&chunks, now);
        self.enforce_budget(now);
        self.emit(out);
    }

    fn held_items(&self) -> i64 {
        self.spans_held as i64
    }

    /// The oldest arrival entry's record: entries are in arrival order, so no held
    /// trace came from an older record (a decided trace's entry only makes it older).
    fn oldest_record(&self) -> Option<u64> {
        self.arrivals.front().and_then(|arrival| arrival.record)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let root = self.by_root.front().map(|d| d.at);
        let arrival = self.arrivals.front().map(|a| a.at);
        root.into_iter().chain(arrival).min()
    }

    fn deadline_slack(&self) -> Duration {
        self.slack
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Batch>) {
        self.decide_due_traces(now);
        self.enforce_budget(now);
        self.emit(out);
    }

    fn flush(&mut self, out: &mut Vec<Batch>) {
        let now = Instant::now();
        self.by_root.clear();
        while let Some(arrival) = self.pop_oldest() {
            if let Some(trace) = arrival.trace {
                self.decide(arrival.id, arrival.record, trace, Trigger::Shutdown, now);
            }
        }
        self.emit(out);
    }
}

/// How late an idle worker may decide: a tenth of the shorter wait, 1 to 100 ms.
pub(super) fn slack_of(config: &TailSamplingConfig) -> Duration {
    let after_root = Some(config.decision_wait_after_root).filter(|d| !d.is_zero());
    let shortest = after_root.map_or(config.decision_wait, |d| d.min(config.decision_wait));
    (shortest / 10).clamp(Duration::from_millis(1), Duration::from_millis(100))
}

/// A kept trace with `ot=th:` on every span. The buffer was built from checked spans
/// ([`ingest::encode_group`]), so its walk cannot fail; if it did, the trace would go on
/// as it came.
fn stamp_threshold(buffer: &[u8], threshold: u64) -> Vec<u8> {
    ingest::stamp_threshold(buffer, threshold).unwrap_or_else(|_| buffer.to_vec())
}

#[cfg(test)]
mod tests;
