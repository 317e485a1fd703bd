//! `include` / `exclude` of the `attributes` processor: the collector's match
//! properties (its `filterconfig.MatchProperties`). Every property given must match for
//! an item to match; within one property's list, any entry may. `match_type: strict`
//! compares exactly; `regexp` finds the pattern anywhere in the text (anchor it with
//! `^...$` to match whole values), over the text of string, boolean and number values.

use crate::config::FieldError;
use crate::model::Signal;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, InstrumentationScope, KeyValue,
};
use regex::Regex;
use serde::Deserialize;

/// How the strings of a match are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchType {
    Strict,
    Regexp,
}

/// The collector's `regexp:` options; sieve's regular expressions need no result cache,
/// so these are accepted and have no effect.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RegexpOptions {
    /// Accepted for compatibility; no effect.
    #[serde(default)]
    pub cacheenabled: bool,
    /// Accepted for compatibility; no effect.
    #[serde(default)]
    pub cachemaxnumentries: usize,
}

/// An attribute to match: present (no `value`) or with this value.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeMatch {
    /// The attribute's key.
    pub key: String,
    /// The value it must have (strict: equal, typed; regexp: a pattern over a string
    /// value); absent: the key must be present.
    #[serde(default)]
    pub value: Option<serde_yaml::Value>,
}

/// An instrumentation scope (library) to match.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryMatch {
    /// The scope name.
    pub name: String,
    /// The version it must have (as `match_type` reads it); absent: any.
    #[serde(default)]
    pub version: Option<String>,
}

/// Which log severities match.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeverityMatch {
    /// The lowest matching severity: a number (1–24) or a name (`INFO`, `WARN2`, ...).
    pub min: Severity,
    /// Whether records without a severity (0) match.
    #[serde(default)]
    pub match_undefined: bool,
}

/// A severity number, written as a number or as the OpenTelemetry name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "serde_yaml::Value")]
pub struct Severity(pub i32);

impl TryFrom<serde_yaml::Value> for Severity {
    type Error = String;
    fn try_from(value: serde_yaml::Value) -> Result<Severity, String> {
        let number = match &value {
            serde_yaml::Value::Number(n) => n.as_i64().and_then(|n| i32::try_from(n).ok()),
            serde_yaml::Value::String(name) => crate::model::severity_number(name),
            _ => None,
        };
        number
            .filter(|n| (0..=24).contains(n))
            .map(Severity)
            .ok_or_else(|| {
                format!("{value:?} is not a severity: a number 1–24 or a name like INFO or WARN2")
            })
    }
}

/// `include:` or `exclude:`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// `strict` or `regexp`: how the strings below are read.
    pub match_type: MatchType,
    /// The collector's regexp cache options (no effect).
    #[serde(default)]
    pub regexp: Option<RegexpOptions>,
    /// Spans: the resource's `service.name` is one of these.
    #[serde(default)]
    pub services: Vec<String>,
    /// Spans: the span name is one of these.
    #[serde(default)]
    pub span_names: Vec<String>,
    /// Spans: the kind is one of these (`SPAN_KIND_SERVER` or `Server`, ...).
    #[serde(default)]
    pub span_kinds: Vec<String>,
    /// Logs: the (string) body is one of these.
    #[serde(default)]
    pub log_bodies: Vec<String>,
    /// Logs: the severity text is one of these.
    #[serde(default)]
    pub log_severity_texts: Vec<String>,
    /// Logs: the severity number is at least `min`.
    #[serde(default)]
    pub log_severity_number: Option<SeverityMatch>,
    /// Metrics: the metric name is one of these.
    #[serde(default)]
    pub metric_names: Vec<String>,
    /// Spans and logs: every one of these attributes matches.
    #[serde(default)]
    pub attributes: Vec<AttributeMatch>,
    /// Every one of these resource attributes matches.
    #[serde(default)]
    pub resources: Vec<AttributeMatch>,
    /// Spans and logs: the instrumentation scope is one of these.
    #[serde(default)]
    pub libraries: Vec<LibraryMatch>,
}

impl MatchConfig {
    /// The signals whose items these properties can describe (the collector refuses,
    /// say, `span_names` in a logs pipeline).
    pub fn signals(&self) -> &'static [Signal] {
        let (mut traces, mut logs, mut metrics) = (true, true, true);
        if !self.services.is_empty() || !self.span_names.is_empty() || !self.span_kinds.is_empty() {
            (logs, metrics) = (false, false);
        }
        if !self.log_bodies.is_empty()
            || !self.log_severity_texts.is_empty()
            || self.log_severity_number.is_some()
        {
            (traces, metrics) = (false, false);
        }
        if !self.metric_names.is_empty() {
            (traces, logs) = (false, false);
        }
        if !self.attributes.is_empty() || !self.libraries.is_empty() {
            metrics = false;
        }
        signal_set(traces, logs, metrics)
    }
}

/// The signals among traces, logs and metrics that are `true`, as a static list.
pub fn signal_set(traces: bool, logs: bool, metrics: bool) -> &'static [Signal] {
    match (traces, logs, metrics) {
        (true, true, true) => &Signal::ALL,
        (true, true, false) => &[Signal::Traces, Signal::Logs],
        (true, false, true) => &[Signal::Traces, Signal::Metrics],
        (true, false, false) => &[Signal::Traces],
        (false, true, true) => &[Signal::Logs, Signal::Metrics],
        (false, true, false) => &[Signal::Logs],
        (false, false, true) => &[Signal::Metrics],
        (false, false, false) => &[],
    }
}

/// One string of a property.
#[derive(Debug)]
enum Text {
    Exact(String),
    Pattern(Regex),
}

impl Text {
    fn matches(&self, text: &str) -> bool {
        match self {
            Text::Exact(exact) => exact == text,
            Text::Pattern(pattern) => pattern.is_match(text),
        }
    }
}

/// A property's list: any entry may match.
#[derive(Debug, Default)]
struct Texts(Vec<Text>);

impl Texts {
    fn matches(&self, text: &str) -> bool {
        self.0.iter().any(|t| t.matches(text))
    }
}

#[derive(Debug)]
enum ValueMatch {
    Present,
    Equal(AnyValue),
    Pattern(Regex),
}

impl ValueMatch {
    fn matches(&self, value: Option<&AnyValue>) -> bool {
        match self {
            ValueMatch::Present => true,
            ValueMatch::Equal(expected) => value == Some(expected),
            // the collector matches the text of strings, booleans and numbers
            ValueMatch::Pattern(pattern) => match value.and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => pattern.is_match(s),
                Some(Value::BoolValue(_) | Value::IntValue(_) | Value::DoubleValue(_)) => {
                    pattern.is_match(&crate::model::any_value_text(value))
                }
                _ => false,
            },
        }
    }
}

/// What an item is made of, for matching.
pub struct Item<'a> {
    pub resource: &'a [KeyValue],
    pub scope: Option<&'a InstrumentationScope>,
    pub attributes: &'a [KeyValue],
    pub kind: ItemKind<'a>,
}

/// The fields of the item's own kind a property reads.
pub enum ItemKind<'a> {
    Span {
        name: &'a str,
        kind: i32,
    },
    Log {
        body: Option<&'a AnyValue>,
        severity_text: &'a str,
        severity_number: i32,
    },
    Metric {
        name: &'a str,
    },
}

/// `include` or `exclude`, compiled.
#[derive(Debug)]
pub struct Matcher {
    services: Option<Texts>,
    span_names: Option<Texts>,
    span_kinds: Option<Texts>,
    log_bodies: Option<Texts>,
    severity_texts: Option<Texts>,
    severity: Option<(i32, bool)>,
    metric_names: Option<Texts>,
    attributes: Vec<(String, ValueMatch)>,
    resources: Vec<(String, ValueMatch)>,
    libraries: Vec<(Text, Option<Text>)>,
}

impl Matcher {
    /// Compiles `config`, found at `field` (`include` or `exclude`).
    pub fn new(field: &str, config: &MatchConfig) -> Result<Matcher, FieldError> {
        let error = |key: &str, message: String| FieldError::new(format!("{field}.{key}"), message);
        let text = |key: &str, s: &str| -> Result<Text, FieldError> {
            match config.match_type {
                MatchType::Strict => Ok(Text::Exact(s.to_string())),
                MatchType::Regexp => Regex::new(s)
                    .map(Text::Pattern)
                    .map_err(|e| error(key, format!("`{s}` is not a regular expression: {e}"))),
            }
        };
        let texts = |key: &str, list: &[String]| -> Result<Option<Texts>, FieldError> {
            if list.is_empty() {
                return Ok(None);
            }
            list.iter()
                .map(|s| text(key, s))
                .collect::<Result<_, _>>()
                .map(|t| Some(Texts(t)))
        };
        let values = |key: &str, list: &[AttributeMatch]| {
            list.iter()
                .map(|m| {
                    let value = match (&m.value, config.match_type) {
                        (None, _) => ValueMatch::Present,
                        (Some(v), MatchType::Strict) => ValueMatch::Equal(
                            super::actions::any_value(v).map_err(|e| error(key, e))?,
                        ),
                        (Some(serde_yaml::Value::String(p)), MatchType::Regexp) => {
                            match text(key, p)? {
                                Text::Pattern(r) => ValueMatch::Pattern(r),
                                Text::Exact(_) => unreachable!("regexp texts are patterns"),
                            }
                        }
                        (Some(_), MatchType::Regexp) => {
                            return Err(error(
                                key,
                                format!(
                                "`{}`: with `match_type: regexp` a value must be a string pattern",
                                m.key
                            ),
                            ))
                        }
                    };
                    Ok((m.key.clone(), value))
                })
                .collect::<Result<Vec<_>, FieldError>>()
        };
        let span_kinds = config
            .span_kinds
            .iter()
            .map(|k| {
                let known = config.match_type == MatchType::Regexp || span_kind(k).is_some();
                known.then(|| k.clone()).ok_or_else(|| {
                    error(
                        "span_kinds",
                        format!("`{k}` is not a span kind (SPAN_KIND_SERVER, Client, ...)"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let matcher = Matcher {
            services: texts("services", &config.services)?,
            span_names: texts("span_names", &config.span_names)?,
            span_kinds: texts("span_kinds", &span_kinds)?,
            log_bodies: texts("log_bodies", &config.log_bodies)?,
            severity_texts: texts("log_severity_texts", &config.log_severity_texts)?,
            severity: config
                .log_severity_number
                .as_ref()
                .map(|s| (s.min.0, s.match_undefined)),
            metric_names: texts("metric_names", &config.metric_names)?,
            attributes: values("attributes", &config.attributes)?,
            resources: values("resources", &config.resources)?,
            libraries: config
                .libraries
                .iter()
                .map(|l| {
                    let version = l
                        .version
                        .as_deref()
                        .map(|v| text("libraries", v))
                        .transpose()?;
                    Ok((text("libraries", &l.name)?, version))
                })
                .collect::<Result<_, FieldError>>()?,
        };
        if matcher.is_empty() {
            return Err(FieldError::new(
                field,
                "give at least one property to match: services, span_names, span_kinds, log_bodies, log_severity_texts, log_severity_number, metric_names, attributes, resources or libraries",
            ));
        }
        Ok(matcher)
    }

    fn is_empty(&self) -> bool {
        self.services.is_none()
            && self.span_names.is_none()
            && self.span_kinds.is_none()
            && self.log_bodies.is_none()
            && self.severity_texts.is_none()
            && self.severity.is_none()
            && self.metric_names.is_none()
            && self.attributes.is_empty()
            && self.resources.is_empty()
            && self.libraries.is_empty()
    }

    /// Whether every property given matches `item`.
    pub fn matches(&self, item: &Item) -> bool {
        let all = |list: &[(String, ValueMatch)], attributes: &[KeyValue]| {
            list.iter().all(|(key, value)| {
                attributes
                    .iter()
                    .find(|kv| &kv.key == key)
                    .is_some_and(|kv| value.matches(kv.value.as_ref()))
            })
        };
        let text_of = |texts: &Option<Texts>, text: Option<&str>| {
            texts
                .as_ref()
                .is_none_or(|t| text.is_some_and(|s| t.matches(s)))
        };
        let service = attribute_text(item.resource, "service.name");
        let (span, log, metric) = match &item.kind {
            ItemKind::Span { name, kind } => (Some((*name, *kind)), None, None),
            ItemKind::Log {
                body,
                severity_text,
                severity_number,
            } => (None, Some((*body, *severity_text, *severity_number)), None),
            ItemKind::Metric { name } => (None, None, Some(*name)),
        };
        let body = log.and_then(|(body, ..)| match body.and_then(|b| b.value.as_ref()) {
            Some(Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        });
        let kind_matches = self.span_kinds.as_ref().is_none_or(|kinds| {
            span.is_some_and(|(_, kind)| span_kind_names(kind).iter().any(|n| kinds.matches(n)))
        });
        let severity_matches = self.severity.is_none_or(|(min, undefined)| {
            log.is_some_and(|(_, _, n)| if n == 0 { undefined } else { n >= min })
        });
        let library_matches = self.libraries.is_empty()
            || item.scope.is_some_and(|scope| {
                self.libraries.iter().any(|(name, version)| {
                    name.matches(&scope.name)
                        && version.as_ref().is_none_or(|v| v.matches(&scope.version))
                })
            });
        text_of(&self.services, service)
            && text_of(&self.span_names, span.map(|(name, _)| name))
            && kind_matches
            && text_of(&self.log_bodies, body)
            && text_of(&self.severity_texts, log.map(|(_, text, _)| text))
            && severity_matches
            && text_of(&self.metric_names, metric)
            && all(&self.attributes, item.attributes)
            && all(&self.resources, item.resource)
            && library_matches
    }
}

fn attribute_text<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        }
    })
}

const SPAN_KINDS: [(&str, &str); 6] = [
    ("SPAN_KIND_UNSPECIFIED", "Unspecified"),
    ("SPAN_KIND_INTERNAL", "Internal"),
    ("SPAN_KIND_SERVER", "Server"),
    ("SPAN_KIND_CLIENT", "Client"),
    ("SPAN_KIND_PRODUCER", "Producer"),
    ("SPAN_KIND_CONSUMER", "Consumer"),
];

/// The kind number a name (either spelling) stands for.
fn span_kind(name: &str) -> Option<usize> {
    SPAN_KINDS
        .iter()
        .position(|(proto, short)| *proto == name || *short == name)
}

/// Both spellings of a span's kind.
fn span_kind_names(kind: i32) -> [&'static str; 2] {
    let (proto, short) = usize::try_from(kind)
        .ok()
        .and_then(|k| SPAN_KINDS.get(k))
        .copied()
        .unwrap_or(SPAN_KINDS[0]);
    [proto, short]
}
