//! Compiled sampling policies and the collector's decision rule.
//!
//! Every collector policy that looks at spans asks "does any span (or its resource)
//! match?", so those questions are answered once per span as it arrives
//! ([`SpanPredicates`]), and a held trace keeps only a bit per question plus its span
//! count, time bounds and the status codes seen ([`TraceSummary`]). Deciding then needs no
//! decoding: a policy reads the summary.

use super::config::{status_bit, PolicyConfig, PolicyType};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use regex::RegexSet;
use std::collections::HashSet;

pub type TraceId = [u8; 16];

/// One policy's answer, as the collector names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Sampled,
    NotSampled,
    /// `invert_match` found no match.
    InvertSampled,
    /// `invert_match` found a match: an explicit "do not sample".
    InvertNotSampled,
    /// A `drop` policy's sub-policies all sampled: an explicit "do not sample".
    Dropped,
}

impl Decision {
    pub const ALL: [Decision; 5] = [
        Decision::Sampled,
        Decision::NotSampled,
        Decision::InvertSampled,
        Decision::InvertNotSampled,
        Decision::Dropped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Sampled => "sampled",
            Decision::NotSampled => "not_sampled",
            Decision::InvertSampled => "inverted_sampled",
            Decision::InvertNotSampled => "inverted_not_sampled",
            Decision::Dropped => "dropped",
        }
    }

    /// Inside `and`, `drop` and `composite`, inverted answers count as plain ones.
    fn plain(self) -> Decision {
        match self {
            Decision::InvertSampled => Decision::Sampled,
            Decision::InvertNotSampled => Decision::NotSampled,
            other => other,
        }
    }
}

/// The collector's rule: an explicit drop (`drop`, or an inverted match) wins, then any
/// sample, then an inverted sample when no policy said "not sampled"; else not sampled.
pub fn final_decision(decisions: &[Decision]) -> bool {
    let any = |d: Decision| decisions.contains(&d);
    if any(Decision::Dropped) || any(Decision::InvertNotSampled) {
        return false;
    }
    any(Decision::Sampled) || (any(Decision::InvertSampled) && !any(Decision::NotSampled))
}

/// What is known of a held trace when it is decided.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceSummary {
    pub spans: u32,
    pub min_start: u64,
    pub max_end: u64,
    /// Bits from [`status_code_bit`] of every span's status code.
    pub statuses: u8,
    /// Bit `i` set when some span (or its resource) matched predicate `i`.
    pub matched: u64,
}

impl TraceSummary {
    /// Adds one span: its times, its status bit ([`status_code_bit`]) and the predicates
    /// it matched.
    pub fn add_span(&mut self, start: u64, end: u64, status: u8, matched: u64) {
        if self.spans == 0 || start < self.min_start {
            self.min_start = start;
        }
        self.max_end = self.max_end.max(end);
        self.spans += 1;
        self.statuses |= status;
        self.matched |= matched;
    }

    fn duration_ms(&self) -> u64 {
        self.max_end.saturating_sub(self.min_start) / 1_000_000
    }
}

/// The status-mask bit of an OTLP `Status.code` (0 unset, 1 ok, 2 error).
pub fn status_code_bit(code: u64) -> u8 {
    match code {
        1 => 2,
        2 => 4,
        _ => 1,
    }
}

/// A question asked of every span as it arrives.
enum Predicate {
    String {
        key: String,
        matcher: StringMatcher,
    },
    Numeric {
        key: String,
        min: i64,
        max: i64,
    },
    Boolean {
        key: String,
        value: bool,
    },
    TraceState {
        key: String,
        values: HashSet<String>,
    },
}

enum StringMatcher {
    Exact(HashSet<String>),
    Regex(RegexSet),
}

impl Predicate {
    fn matches_attributes(&self, attributes: &[KeyValue]) -> bool {
        let value_of = |key: &str| {
            attributes
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| v.value.as_ref())
        };
        match self {
            Predicate::String { key, matcher } => match value_of(key) {
                Some(Value::StringValue(s)) => match matcher {
                    StringMatcher::Exact(values) => values.contains(s.as_str()),
                    StringMatcher::Regex(set) => set.is_match(s),
                },
                _ => false,
            },
            Predicate::Numeric { key, min, max } => {
                matches!(value_of(key), Some(Value::IntValue(i)) if (*min..=*max).contains(i))
            }
            Predicate::Boolean { key, value } => {
                matches!(value_of(key), Some(Value::BoolValue(b)) if b == value)
            }
            Predicate::TraceState { .. } => false,
        }
    }

    fn matches_trace_state(&self, trace_state: &str) -> bool {
        let Predicate::TraceState { key, values } = self else {
            return false;
        };
        trace_state.split(',').any(|member| {
            member
                .trim()
                .split_once('=')
                .is_some_and(|(k, v)| k == key && values.contains(v))
        })
    }
}

/// The predicates of all attribute and trace-state policies, one bit each.
#[derive(Default)]
pub struct SpanPredicates(Vec<Predicate>);

/// Predicates are bits of a `u64`.
pub const MAX_PREDICATES: usize = 64;

impl SpanPredicates {
    /// The bit of a new predicate; fails past [`MAX_PREDICATES`] (validation refuses
    /// such configs, this keeps a build from overflowing the mask anyway).
    fn add(&mut self, predicate: Predicate) -> Result<u8, String> {
        if self.0.len() >= MAX_PREDICATES {
            return Err(format!(
                "more than {MAX_PREDICATES} attribute and trace_state policies"
            ));
        }
        self.0.push(predicate);
        Ok(self.0.len() as u8 - 1)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether some predicate looks at attribute `key`.
    pub fn asks_about(&self, key: &str) -> bool {
        self.0.iter().any(|p| match p {
            Predicate::String { key: k, .. }
            | Predicate::Numeric { key: k, .. }
            | Predicate::Boolean { key: k, .. } => k == key,
            Predicate::TraceState { .. } => false,
        })
    }

    /// Bits of the predicates a resource's attributes match.
    pub fn resource_bits(&self, attributes: &[KeyValue]) -> u64 {
        self.bits(|p| p.matches_attributes(attributes))
    }

    /// Bits of the predicates a span matches (its attributes and trace state).
    pub fn span_bits(&self, attributes: &[KeyValue], trace_state: &str) -> u64 {
        self.bits(|p| p.matches_attributes(attributes) || p.matches_trace_state(trace_state))
    }

    fn bits(&self, matches: impl Fn(&Predicate) -> bool) -> u64 {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, p)| matches(p))
            .fold(0, |bits, (i, _)| bits | 1 << i)
    }
}

/// Counts spans sampled within the current second.
#[derive(Debug, Default)]
struct SecondWindow {
    second: u64,
    used: u64,
}

impl SecondWindow {
    fn fits(&mut self, now_second: u64, spans: u64, limit: u64) -> bool {
        if self.second != now_second {
            self.second = now_second;
            self.used = 0;
        }
        self.used + spans <= limit
    }

    fn take(&mut self, spans: u64) {
        self.used += spans;
    }
}

enum Rule {
    Always,
    Latency {
        lower_ms: u64,
        upper_ms: u64,
    },
    Status {
        mask: u8,
    },
    Probabilistic(Probabilistic),
    Predicate {
        bit: u8,
        invert: bool,
    },
    SpanCount {
        min: u32,
        max: u32,
    },
    RateLimiting {
        per_second: u64,
        window: SecondWindow,
    },
    And(Vec<Policy>),
    Drop(Vec<Policy>),
    Composite(Composite),
}

/// Deterministic on the trace id: the W3C trace id's 56 random bits (or, with a salt, a
/// hash of salt and id) compared with a rejection threshold, as in the OpenTelemetry
/// consistent probability sampling specification: kept when `randomness >= threshold`.
pub struct Probabilistic {
    pub threshold: u64,
    salt: Option<Vec<u8>>,
}

/// 2^56: randomness and thresholds are 56-bit.
pub const MAX_THRESHOLD: u64 = 1 << 56;

impl Probabilistic {
    pub fn new(percentage: f64, salt: &str) -> Probabilistic {
        let keep = (percentage / 100.0).clamp(0.0, 1.0);
        let kept = (keep * MAX_THRESHOLD as f64).round() as u64;
        Probabilistic {
            threshold: MAX_THRESHOLD - kept.min(MAX_THRESHOLD),
            salt: (!salt.is_empty()).then(|| salt.as_bytes().to_vec()),
        }
    }

    pub fn samples(&self, id: &TraceId) -> bool {
        self.randomness(id) >= self.threshold
    }

    /// Whether its keeps can be stated as a W3C `ot=th:` threshold (no salt).
    pub fn is_consistent(&self) -> bool {
        self.salt.is_none()
    }

    fn randomness(&self, id: &TraceId) -> u64 {
        match &self.salt {
            None => id[9..].iter().fold(0, |r, &b| r << 8 | u64::from(b)),
            Some(salt) => {
                // FNV-1a, 64 bit, over salt then id; the top 56 bits.
                let hash = salt
                    .iter()
                    .chain(id)
                    .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                    });
                hash >> 8
            }
        }
    }
}

struct Composite {
    max_total: u64,
    total: SecondWindow,
    /// Sub-policies in evaluation order, each with its spans-per-second share.
    subs: Vec<(Policy, u64, SecondWindow)>,
}

/// A compiled policy.
pub struct Policy {
    pub name: String,
    rule: Rule,
}

/// What a top-level evaluation found: each policy's decision and, when the trace is kept
/// only by consistent probabilistic policies, the threshold to record on its spans.
pub struct Outcome {
    pub decisions: Vec<Decision>,
    pub sampled: bool,
    pub threshold: Option<u64>,
}

impl Policy {
    /// Compiles `config`, registering its span predicates; fails on a regex that does
    /// not compile.
    pub fn compile(
        config: &PolicyConfig,
        predicates: &mut SpanPredicates,
    ) -> Result<Policy, String> {
        let rule = match config.kind {
            PolicyType::AlwaysSample => Rule::Always,
            PolicyType::Latency => {
                let c = config.latency.clone().unwrap_or_default();
                Rule::Latency {
                    lower_ms: c.threshold_ms,
                    upper_ms: c.upper_threshold_ms,
                }
            }
            PolicyType::StatusCode => Rule::Status {
                mask: config
                    .status_code
                    .iter()
                    .flat_map(|c| &c.status_codes)
                    .filter_map(|code| status_bit(code))
                    .fold(0, |mask, bit| mask | bit),
            },
            PolicyType::Probabilistic => {
                let c = config.probabilistic.clone().unwrap_or_default();
                Rule::Probabilistic(Probabilistic::new(c.sampling_percentage, &c.hash_salt))
            }
            PolicyType::StringAttribute => {
                let c = config.string_attribute.clone().unwrap_or_default();
                let matcher = if c.enabled_regex_matching {
                    StringMatcher::Regex(RegexSet::new(&c.values).map_err(|e| e.to_string())?)
                } else {
                    StringMatcher::Exact(c.values.into_iter().collect())
                };
                predicate_rule(
                    predicates,
                    Predicate::String {
                        key: c.key,
                        matcher,
                    },
                    c.invert_match,
                )?
            }
            PolicyType::NumericAttribute => {
                let c = config.numeric_attribute.clone().unwrap_or_default();
                let predicate = Predicate::Numeric {
                    key: c.key,
                    min: c.min_value.unwrap_or(i64::MIN),
                    max: c.max_value.unwrap_or(i64::MAX),
                };
                predicate_rule(predicates, predicate, c.invert_match)?
            }
            PolicyType::BooleanAttribute => {
                let c = config.boolean_attribute.clone().unwrap_or_default();
                let predicate = Predicate::Boolean {
                    key: c.key,
                    value: c.value,
                };
                predicate_rule(predicates, predicate, c.invert_match)?
            }
            PolicyType::TraceState => {
                let c = config.trace_state.clone().unwrap_or_default();
                let predicate = Predicate::TraceState {
                    key: c.key,
                    values: c.values.into_iter().collect(),
                };
                predicate_rule(predicates, predicate, false)?
            }
            PolicyType::SpanCount => {
                let c = config.span_count.clone().unwrap_or_default();
                Rule::SpanCount {
                    min: c.min_spans,
                    max: c.max_spans,
                }
            }
            PolicyType::RateLimiting => Rule::RateLimiting {
                per_second: config
                    .rate_limiting
                    .as_ref()
                    .map_or(0, |c| c.spans_per_second),
                window: SecondWindow::default(),
            },
            PolicyType::And => Rule::And(compile_all(
                config.and.iter().flat_map(|c| &c.and_sub_policy),
                predicates,
            )?),
            PolicyType::Drop => Rule::Drop(compile_all(
                config.drop.iter().flat_map(|c| &c.drop_sub_policy),
                predicates,
            )?),
            PolicyType::Composite => Rule::Composite(compile_composite(config, predicates)?),
        };
        Ok(Policy {
            name: config.name.clone(),
            rule,
        })
    }

    /// This policy's decision on a trace. `now_second` drives the rate limits.
    pub fn evaluate(&mut self, id: &TraceId, trace: &TraceSummary, now_second: u64) -> Decision {
        let sampled = |yes: bool| {
            if yes {
                Decision::Sampled
            } else {
                Decision::NotSampled
            }
        };
        match &mut self.rule {
            Rule::Always => Decision::Sampled,
            Rule::Latency { lower_ms, upper_ms } => {
                let ms = trace.duration_ms();
                sampled(ms >= *lower_ms && (*upper_ms == 0 || ms <= *upper_ms))
            }
            Rule::Status { mask } => sampled(trace.statuses & *mask != 0),
            Rule::Probabilistic(p) => sampled(p.samples(id)),
            Rule::Predicate { bit, invert } => {
                let matched = trace.matched & (1 << *bit) != 0;
                match (invert, matched) {
                    (false, m) => sampled(m),
                    (true, true) => Decision::InvertNotSampled,
                    (true, false) => Decision::InvertSampled,
                }
            }
            Rule::SpanCount { min, max } => {
                sampled(trace.spans >= *min && (*max == 0 || trace.spans <= *max))
            }
            Rule::RateLimiting { per_second, window } => {
                let spans = u64::from(trace.spans);
                let fits = window.fits(now_second, spans, *per_second);
                if fits {
                    window.take(spans);
                }
                sampled(fits)
            }
            Rule::And(subs) => sampled(all_sample(subs, id, trace, now_second)),
            Rule::Drop(subs) => {
                if all_sample(subs, id, trace, now_second) {
                    Decision::Dropped
                } else {
                    Decision::NotSampled
                }
            }
            Rule::Composite(c) => sampled(c.evaluate(id, trace, now_second)),
        }
    }

    fn probabilistic(&self) -> Option<&Probabilistic> {
        match &self.rule {
            Rule::Probabilistic(p) => Some(p),
            _ => None,
        }
    }
}

fn predicate_rule(
    predicates: &mut SpanPredicates,
    predicate: Predicate,
    invert: bool,
) -> Result<Rule, String> {
    Ok(Rule::Predicate {
        bit: predicates.add(predicate)?,
        invert,
    })
}

fn compile_all<'a>(
    configs: impl Iterator<Item = &'a PolicyConfig>,
    predicates: &mut SpanPredicates,
) -> Result<Vec<Policy>, String> {
    configs.map(|c| Policy::compile(c, predicates)).collect()
}

fn all_sample(subs: &mut [Policy], id: &TraceId, trace: &TraceSummary, now_second: u64) -> bool {
    subs.iter_mut()
        .all(|p| p.evaluate(id, trace, now_second).plain() == Decision::Sampled)
}

fn compile_composite(
    config: &PolicyConfig,
    predicates: &mut SpanPredicates,
) -> Result<Composite, String> {
    let c = config.composite.clone().unwrap_or_default();
    let total = c.max_total_spans_per_second;
    let equal_share = total / c.composite_sub_policy.len().max(1) as u64;
    let allocated: u64 = c
        .rate_allocation
        .iter()
        .map(|a| a.percent * total / 100)
        .sum();
    let share = |name: &str| match c.rate_allocation.iter().find(|a| a.policy == name) {
        Some(a) if a.percent > 0 => a.percent * total / 100,
        Some(_) => equal_share,
        None => total.saturating_sub(allocated),
    };
    let mut order: Vec<&PolicyConfig> = c
        .policy_order
        .iter()
        .filter_map(|name| c.composite_sub_policy.iter().find(|p| &p.name == name))
        .collect();
    for sub in &c.composite_sub_policy {
        if !c.policy_order.contains(&sub.name) {
            order.push(sub);
        }
    }
    Ok(Composite {
        max_total: total,
        total: SecondWindow::default(),
        subs: order
            .into_iter()
            .map(|sub| {
                let policy = Policy::compile(sub, predicates)?;
                Ok((policy, share(&sub.name), SecondWindow::default()))
            })
            .collect::<Result<_, String>>()?,
    })
}

impl Composite {
    fn evaluate(&mut self, id: &TraceId, trace: &TraceSummary, now_second: u64) -> bool {
        let spans = u64::from(trace.spans);
        for (policy, share, window) in &mut self.subs {
            if policy.evaluate(id, trace, now_second).plain() != Decision::Sampled {
                continue;
            }
            if window.fits(now_second, spans, *share)
                && self.total.fits(now_second, spans, self.max_total)
            {
                window.take(spans);
                self.total.take(spans);
                return true;
            }
        }
        false
    }
}

/// Runs every top-level policy (each sees every trace, as rate limits count what they
/// sample) and applies [`final_decision`].
pub fn evaluate_all(
    policies: &mut [Policy],
    id: &TraceId,
    trace: &TraceSummary,
    now_second: u64,
) -> Outcome {
    let decisions: Vec<Decision> = policies
        .iter_mut()
        .map(|p| p.evaluate(id, trace, now_second))
        .collect();
    let sampled = final_decision(&decisions);
    let threshold = sampled
        .then(|| probabilistic_only(policies, &decisions))
        .flatten();
    Outcome {
        decisions,
        sampled,
        threshold,
    }
}

/// The smallest threshold of the consistent probabilistic policies, when only such
/// policies sampled the trace (a keep by chance, not by certainty).
fn probabilistic_only(policies: &[Policy], decisions: &[Decision]) -> Option<u64> {
    let mut threshold = None;
    for (policy, decision) in policies.iter().zip(decisions) {
        if *decision != Decision::Sampled && *decision != Decision::InvertSampled {
            continue;
        }
        match policy.probabilistic() {
            Some(p) if p.is_consistent() => {
                threshold = Some(threshold.map_or(p.threshold, |t: u64| t.min(p.threshold)));
            }
            _ => return None,
        }
    }
    threshold
}

/// Whether policies need more than `MAX_PREDICATES` predicates.
pub fn predicate_count(policies: &[PolicyConfig]) -> usize {
    policies
        .iter()
        .map(|p| match p.kind {
            PolicyType::StringAttribute
            | PolicyType::NumericAttribute
            | PolicyType::BooleanAttribute
            | PolicyType::TraceState => 1,
            PolicyType::And => predicate_count(p.and.as_ref().map_or(&[], |c| &c.and_sub_policy)),
            PolicyType::Drop => {
                predicate_count(p.drop.as_ref().map_or(&[], |c| &c.drop_sub_policy))
            }
            PolicyType::Composite => predicate_count(
                p.composite
                    .as_ref()
                    .map_or(&[], |c| &c.composite_sub_policy),
            ),
            _ => 0,
        })
        .sum()
}

/// Writes `threshold` into a W3C `tracestate` as the OpenTelemetry `ot=th:` sub-key,
/// keeping a stricter threshold already there (consistent samplers compose by maximum).
pub fn with_threshold(trace_state: &str, threshold: u64) -> String {
    if trace_state.is_empty() {
        return format!("ot=th:{}", encode_threshold(threshold));
    }
    let mut members: Vec<&str> = trace_state
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    let ot_at = members.iter().position(|m| m.starts_with("ot="));
    let ot = ot_at.map(|i| members.remove(i)).unwrap_or("ot=");
    let mut sub_keys: Vec<&str> = ot[3..].split(';').filter(|s| !s.is_empty()).collect();
    let existing = sub_keys
        .iter()
        .position(|s| s.starts_with("th:"))
        .map(|i| sub_keys.remove(i));
    let existing = existing.and_then(|th| parse_threshold(&th[3..]));
    let threshold = existing.map_or(threshold, |t| t.max(threshold));
    let th = format!("th:{}", encode_threshold(threshold));
    let mut ot = String::from("ot=");
    ot.push_str(&th);
    for key in sub_keys {
        ot.push(';');
        ot.push_str(key);
    }
    std::iter::once(ot.as_str())
        .chain(members)
        .collect::<Vec<_>>()
        .join(",")
}

/// 14 hex digits with trailing zeros removed (`0` for keep-all), as the specification says.
pub fn encode_threshold(threshold: u64) -> String {
    if threshold == 0 {
        return "0".into();
    }
    let digits = format!("{:014x}", threshold.min(MAX_THRESHOLD - 1));
    digits.trim_end_matches('0').to_string()
}

fn parse_threshold(hex: &str) -> Option<u64> {
    if hex.is_empty() || hex.len() > 14 {
        return None;
    }
    let value = u64::from_str_radix(hex, 16).ok()?;
    Some(value << (4 * (14 - hex.len())))
}
