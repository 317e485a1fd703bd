//! The `tail_sampling` configuration, in the OpenTelemetry Collector's shape (its
//! `processor/tailsamplingprocessor/config.go`) so existing configs load unchanged, plus
//! sieve's memory budget (`max_memory_mib`), `decision_wait_after_root` and
//! `fallback_sampling_percentage`.

use crate::config::{duration, FieldError};
use regex::Regex;
use serde::Deserialize;
use std::time::Duration;

/// `processors: tail_sampling:`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailSamplingConfig {
    /// How long after a trace's first span its decision is made.
    #[serde(with = "duration")]
    pub decision_wait: Duration,
    /// If set, a trace whose root span (no parent) has arrived is decided this long after
    /// the root, when that is sooner than `decision_wait`.
    #[serde(with = "duration")]
    pub decision_wait_after_root: Duration,
    /// Traces held at most; past it the oldest undecided trace is decided early.
    pub num_traces: usize,
    /// Expected new traces per second: sizes the trace table up front.
    pub expected_new_traces_per_sec: usize,
    /// Memory for buffered spans, in MiB (encoded spans plus per-trace bookkeeping); past
    /// it the oldest undecided traces are decided early.
    pub max_memory_mib: usize,
    /// Under sustained overload, new traces are decided on arrival by this percentage,
    /// deterministically on the trace id, without buffering.
    pub fallback_sampling_percentage: f64,
    /// Remembers decisions after a trace leaves memory, so late spans follow them.
    pub decision_cache: DecisionCacheConfig,
    /// Sampling policies; see the module docs for the decision rule.
    pub policies: Vec<PolicyConfig>,
}

impl Default for TailSamplingConfig {
    fn default() -> Self {
        TailSamplingConfig {
            decision_wait: Duration::from_secs(30),
            decision_wait_after_root: Duration::ZERO,
            num_traces: 50_000,
            expected_new_traces_per_sec: 0,
            max_memory_mib: 256,
            fallback_sampling_percentage: 10.0,
            decision_cache: DecisionCacheConfig::default(),
            policies: Vec::new(),
        }
    }
}

/// `decision_cache:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionCacheConfig {
    /// Trace ids of sampled traces kept in an LRU (0: off).
    pub sampled_cache_size: usize,
    /// Trace ids of not-sampled traces kept in a fingerprint filter (0: off).
    pub non_sampled_cache_size: usize,
}

/// Policy types, as the collector names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyType {
    AlwaysSample,
    Latency,
    StatusCode,
    Probabilistic,
    StringAttribute,
    NumericAttribute,
    BooleanAttribute,
    SpanCount,
    TraceState,
    RateLimiting,
    And,
    Drop,
    Composite,
}

/// One policy (also a sub-policy of `and`, `drop` and `composite`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Names the policy in self-metrics and in `policy_order`/`rate_allocation`.
    pub name: String,
    /// Which policy this is; its settings go under the key of the same name.
    #[serde(rename = "type")]
    pub kind: PolicyType,
    /// `always_sample` takes no settings.
    #[serde(default)]
    pub always_sample: Option<serde_yaml::Value>,
    /// `latency` settings.
    #[serde(default)]
    pub latency: Option<LatencyConfig>,
    /// `status_code` settings.
    #[serde(default)]
    pub status_code: Option<StatusCodeConfig>,
    /// `probabilistic` settings.
    #[serde(default)]
    pub probabilistic: Option<ProbabilisticConfig>,
    /// `string_attribute` settings.
    #[serde(default)]
    pub string_attribute: Option<StringAttributeConfig>,
    /// `numeric_attribute` settings.
    #[serde(default)]
    pub numeric_attribute: Option<NumericAttributeConfig>,
    /// `boolean_attribute` settings.
    #[serde(default)]
    pub boolean_attribute: Option<BooleanAttributeConfig>,
    /// `span_count` settings.
    #[serde(default)]
    pub span_count: Option<SpanCountConfig>,
    /// `trace_state` settings.
    #[serde(default)]
    pub trace_state: Option<TraceStateConfig>,
    /// `rate_limiting` settings.
    #[serde(default)]
    pub rate_limiting: Option<RateLimitingConfig>,
    /// `and` settings.
    #[serde(default)]
    pub and: Option<AndConfig>,
    /// `drop` settings.
    #[serde(default)]
    pub drop: Option<DropConfig>,
    /// `composite` settings.
    #[serde(default)]
    pub composite: Option<CompositeConfig>,
}

impl TailSamplingConfig {
    /// Whether every policy decides on what `redaction` never changes — span times,
    /// status codes, trace ids and span counts — so that redacting before or after
    /// sampling gives the same decisions. Attribute and trace state policies read what
    /// it may mask or remove.
    pub fn decides_on_what_redaction_keeps(&self) -> bool {
        self.policies
            .iter()
            .all(PolicyConfig::reads_what_redaction_keeps)
    }
}

impl PolicyConfig {
    fn reads_what_redaction_keeps(&self) -> bool {
        let all = |policies: &[PolicyConfig]| policies.iter().all(Self::reads_what_redaction_keeps);
        match self.kind {
            PolicyType::AlwaysSample
            | PolicyType::Latency
            | PolicyType::StatusCode
            | PolicyType::Probabilistic
            | PolicyType::SpanCount
            | PolicyType::RateLimiting => true,
            PolicyType::StringAttribute
            | PolicyType::NumericAttribute
            | PolicyType::BooleanAttribute
            | PolicyType::TraceState => false,
            PolicyType::And => self.and.as_ref().is_some_and(|c| all(&c.and_sub_policy)),
            PolicyType::Drop => self.drop.as_ref().is_some_and(|c| all(&c.drop_sub_policy)),
            PolicyType::Composite => self
                .composite
                .as_ref()
                .is_some_and(|c| all(&c.composite_sub_policy)),
        }
    }
}

/// `latency:` the trace's duration, from its earliest start to its latest end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyConfig {
    /// Sample traces lasting at least this long.
    pub threshold_ms: u64,
    /// If not 0, only traces lasting at most this long.
    pub upper_threshold_ms: u64,
}

/// `status_code:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCodeConfig {
    /// Any of `OK`, `ERROR`, `UNSET`: sample when a span has one of them.
    pub status_codes: Vec<String>,
}

/// `probabilistic:`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbabilisticConfig {
    /// Percentage of traces to sample, decided on the trace id alone.
    pub sampling_percentage: f64,
    /// If set, the trace id is hashed with this salt, to decorrelate from other samplers.
    pub hash_salt: String,
}

/// `string_attribute:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StringAttributeConfig {
    /// Attribute key, looked up on resources and spans.
    pub key: String,
    /// Values that match (exactly, or as regexes with `enabled_regex_matching`).
    pub values: Vec<String>,
    /// Treat `values` as regexes (a match anywhere in the value, as in the collector).
    pub enabled_regex_matching: bool,
    /// Accepted for compatibility; sieve does not cache regex results.
    pub cache_max_size: usize,
    /// Sample traces where no span matches; a match is an explicit "do not sample".
    pub invert_match: bool,
}

/// `numeric_attribute:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NumericAttributeConfig {
    /// Attribute key (integer values), looked up on resources and spans.
    pub key: String,
    /// Lowest matching value (inclusive).
    pub min_value: Option<i64>,
    /// Highest matching value (inclusive).
    pub max_value: Option<i64>,
    /// As for `string_attribute`.
    pub invert_match: bool,
}

/// `boolean_attribute:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BooleanAttributeConfig {
    /// Attribute key (boolean values), looked up on resources and spans.
    pub key: String,
    /// The value that matches.
    pub value: bool,
    /// As for `string_attribute`.
    pub invert_match: bool,
}

/// `span_count:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpanCountConfig {
    /// Sample traces with at least this many spans.
    pub min_spans: u32,
    /// If not 0, only traces with at most this many spans.
    pub max_spans: u32,
}

/// `trace_state:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceStateConfig {
    /// W3C `tracestate` list key.
    pub key: String,
    /// Values of that key that match.
    pub values: Vec<String>,
}

/// `rate_limiting:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitingConfig {
    /// Spans per second this policy samples at most (whole traces).
    pub spans_per_second: u64,
}

/// `and:` sample when every sub-policy samples.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AndConfig {
    pub and_sub_policy: Vec<PolicyConfig>,
}

/// `drop:` an explicit "do not sample" when every sub-policy samples.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropConfig {
    pub drop_sub_policy: Vec<PolicyConfig>,
}

/// `composite:` the first sub-policy (in `policy_order`) that samples within its share of
/// `max_total_spans_per_second` decides.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompositeConfig {
    /// Spans per second the composite samples at most.
    pub max_total_spans_per_second: u64,
    /// Sub-policy names in evaluation order (default: as listed).
    #[serde(default)]
    pub policy_order: Vec<String>,
    /// The sub-policies.
    pub composite_sub_policy: Vec<PolicyConfig>,
    /// Shares of `max_total_spans_per_second`; sub-policies without one share what is left.
    #[serde(default)]
    pub rate_allocation: Vec<RateAllocation>,
}

/// One `rate_allocation` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateAllocation {
    /// Sub-policy name.
    pub policy: String,
    /// Percent of `max_total_spans_per_second` (0: an equal share).
    pub percent: u64,
}

impl TailSamplingConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.decision_wait.is_zero() {
            return Err(FieldError::new("decision_wait", "must be positive"));
        }
        if self.num_traces == 0 {
            return Err(FieldError::new("num_traces", "must be positive"));
        }
        if self.max_memory_mib == 0 {
            return Err(FieldError::new("max_memory_mib", "must be positive"));
        }
        if !(0.0..=100.0).contains(&self.fallback_sampling_percentage) {
            return Err(FieldError::new(
                "fallback_sampling_percentage",
                "must be between 0 and 100",
            ));
        }
        if self.policies.is_empty() {
            return Err(FieldError::new(
                "policies",
                "at least one policy is required",
            ));
        }
        validate_policies(&self.policies, "policies")?;
        let predicates = super::policy::predicate_count(&self.policies);
        if predicates > super::policy::MAX_PREDICATES {
            return Err(FieldError::new(
                "policies",
                format!(
                    "{predicates} attribute and trace_state policies; at most {} are supported",
                    super::policy::MAX_PREDICATES
                ),
            ));
        }
        Ok(())
    }
}

fn validate_policies(policies: &[PolicyConfig], path: &str) -> Result<(), FieldError> {
    let mut names = std::collections::HashSet::new();
    for (i, policy) in policies.iter().enumerate() {
        let at = format!("{path}.{i}");
        if !names.insert(policy.name.as_str()) {
            return Err(FieldError::new(
                format!("{at}.name"),
                format!("policy name `{}` is used twice", policy.name),
            ));
        }
        policy.validate(&at)?;
    }
    Ok(())
}

fn missing(at: &str, key: &str) -> FieldError {
    FieldError::new(
        format!("{at}.{key}"),
        format!("type {key} needs its settings under `{key}:`"),
    )
}

impl PolicyConfig {
    fn validate(&self, at: &str) -> Result<(), FieldError> {
        match self.kind {
            PolicyType::AlwaysSample => Ok(()),
            PolicyType::Latency => {
                let c = self
                    .latency
                    .as_ref()
                    .ok_or_else(|| missing(at, "latency"))?;
                if c.upper_threshold_ms != 0 && c.upper_threshold_ms < c.threshold_ms {
                    return Err(FieldError::new(
                        format!("{at}.latency.upper_threshold_ms"),
                        "must be 0 or at least threshold_ms",
                    ));
                }
                Ok(())
            }
            PolicyType::StatusCode => {
                let c = self
                    .status_code
                    .as_ref()
                    .ok_or_else(|| missing(at, "status_code"))?;
                if c.status_codes.is_empty() {
                    return Err(FieldError::new(
                        format!("{at}.status_code.status_codes"),
                        "list at least one of OK, ERROR, UNSET",
                    ));
                }
                for code in &c.status_codes {
                    if status_bit(code).is_none() {
                        return Err(FieldError::new(
                            format!("{at}.status_code.status_codes"),
                            format!("unknown status code `{code}` (OK, ERROR or UNSET)"),
                        ));
                    }
                }
                Ok(())
            }
            PolicyType::Probabilistic => {
                let c = self
                    .probabilistic
                    .as_ref()
                    .ok_or_else(|| missing(at, "probabilistic"))?;
                if !(0.0..=100.0).contains(&c.sampling_percentage) {
                    return Err(FieldError::new(
                        format!("{at}.probabilistic.sampling_percentage"),
                        "must be between 0 and 100",
                    ));
                }
                Ok(())
            }
            PolicyType::StringAttribute => {
                let c = self
                    .string_attribute
                    .as_ref()
                    .ok_or_else(|| missing(at, "string_attribute"))?;
                if c.enabled_regex_matching {
                    for value in &c.values {
                        Regex::new(value).map_err(|e| {
                            FieldError::new(
                                format!("{at}.string_attribute.values"),
                                format!("`{value}`: {e}"),
                            )
                        })?;
                    }
                }
                require_key(&c.key, at, "string_attribute")
            }
            PolicyType::NumericAttribute => {
                let c = self
                    .numeric_attribute
                    .as_ref()
                    .ok_or_else(|| missing(at, "numeric_attribute"))?;
                if c.min_value.is_none() && c.max_value.is_none() {
                    return Err(FieldError::new(
                        format!("{at}.numeric_attribute"),
                        "set min_value, max_value or both",
                    ));
                }
                require_key(&c.key, at, "numeric_attribute")
            }
            PolicyType::BooleanAttribute => {
                let c = self
                    .boolean_attribute
                    .as_ref()
                    .ok_or_else(|| missing(at, "boolean_attribute"))?;
                require_key(&c.key, at, "boolean_attribute")
            }
            PolicyType::SpanCount => {
                let c = self
                    .span_count
                    .as_ref()
                    .ok_or_else(|| missing(at, "span_count"))?;
                if c.max_spans != 0 && c.max_spans < c.min_spans {
                    return Err(FieldError::new(
                        format!("{at}.span_count.max_spans"),
                        "must be 0 or at least min_spans",
                    ));
                }
                Ok(())
            }
            PolicyType::TraceState => {
                let c = self
                    .trace_state
                    .as_ref()
                    .ok_or_else(|| missing(at, "trace_state"))?;
                require_key(&c.key, at, "trace_state")
            }
            PolicyType::RateLimiting => {
                self.rate_limiting
                    .as_ref()
                    .ok_or_else(|| missing(at, "rate_limiting"))?;
                Ok(())
            }
            PolicyType::And => {
                let c = self.and.as_ref().ok_or_else(|| missing(at, "and"))?;
                validate_sub_policies(&c.and_sub_policy, &format!("{at}.and.and_sub_policy"))
            }
            PolicyType::Drop => {
                let c = self.drop.as_ref().ok_or_else(|| missing(at, "drop"))?;
                validate_sub_policies(&c.drop_sub_policy, &format!("{at}.drop.drop_sub_policy"))
            }
            PolicyType::Composite => {
                let c = self
                    .composite
                    .as_ref()
                    .ok_or_else(|| missing(at, "composite"))?;
                c.validate(&format!("{at}.composite"))
            }
        }
    }
}

fn require_key(key: &str, at: &str, kind: &str) -> Result<(), FieldError> {
    if key.is_empty() {
        return Err(FieldError::new(format!("{at}.{kind}.key"), "is required"));
    }
    Ok(())
}

fn validate_sub_policies(policies: &[PolicyConfig], path: &str) -> Result<(), FieldError> {
    if policies.is_empty() {
        return Err(FieldError::new(path, "at least one sub-policy is required"));
    }
    validate_policies(policies, path)
}

impl CompositeConfig {
    fn validate(&self, at: &str) -> Result<(), FieldError> {
        let sub = format!("{at}.composite_sub_policy");
        validate_sub_policies(&self.composite_sub_policy, &sub)?;
        let known = |name: &str| self.composite_sub_policy.iter().any(|p| p.name == name);
        for name in &self.policy_order {
            if !known(name) {
                return Err(FieldError::new(
                    format!("{at}.policy_order"),
                    format!("`{name}` is not a composite_sub_policy"),
                ));
            }
        }
        let mut percent = 0;
        for allocation in &self.rate_allocation {
            if !known(&allocation.policy) {
                return Err(FieldError::new(
                    format!("{at}.rate_allocation"),
                    format!("`{}` is not a composite_sub_policy", allocation.policy),
                ));
            }
            percent += allocation.percent;
        }
        if percent > 100 {
            return Err(FieldError::new(
                format!("{at}.rate_allocation"),
                format!("percentages add up to {percent}, more than 100"),
            ));
        }
        Ok(())
    }
}

/// The bit of a status code name in a trace's seen-status mask.
pub(super) fn status_bit(code: &str) -> Option<u8> {
    match code {
        "UNSET" | "Unset" => Some(1),
        "OK" | "Ok" => Some(2),
        "ERROR" | "Error" => Some(4),
        _ => None,
    }
}
