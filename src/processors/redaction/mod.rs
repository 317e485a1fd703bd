//! `redaction`: removes PII from every signal, with the OpenTelemetry Collector redaction
//! processor's option names (`allow_all_keys`, `allowed_keys`, `ignored_keys`,
//! `blocked_values`, `blocked_key_patterns`, `summary`) plus built-in detectors.
//!
//! Where it looks: resource, scope, span, span event and span link attributes, log record
//! attributes and bodies, metric data point attributes (and exemplars), nested maps and
//! arrays inside any of them, and span and event names (`redact_names`, on by default:
//! URLs in span names carry emails and tokens).
//!
//! How, per attribute:
//! 1. a key in `ignored_keys` is left alone;
//! 2. with `allow_all_keys: false`, a key not in `allowed_keys` is removed (fail closed);
//! 3. a key matching `blocked_key_patterns` (or `authorization`, with the bearer-token
//!    detector on) has its whole value replaced;
//! 4. every string value is scanned by the detectors and `blocked_values`; matches are
//!    replaced by `action`: `mask` (`****`, or `<detector>` with `mask_style: typed`),
//!    `hash` (HMAC-SHA-256 under `hash_key`, 16 hex digits: the same value correlates
//!    across records without being readable) or `drop` (the attribute is removed).
//!
//! A prefilter first: one pass counts what a string holds (digits, dots, colons, an `@`,
//! …) and each detector says from those counts whether its pattern can match at all
//! (a card needs 13 digits, an email an `@`; see `detectors.rs`); a
//! string no pattern can match costs that pass and nothing else (measured: 2–18 ns for
//! 3–110 bytes, against 40–270 ns for a regex pass). Otherwise all patterns form one
//! `RegexSet`, whose one pass says which match; only those run again to find
//! positions (one pass each costs about as much as the set's, so running the possible
//! ones one by one was slower). A string with no match is neither copied nor allocated. The `regex` crate matches in linear time, so
//! no input can make a pattern backtrack (no ReDoS).
//!
//! Before all that, a string of up to 55 bytes found clean lately is recognised by its
//! hash and bytes and skips the detectors (`clean.rs`: a fixed 64 KiB table per
//! redactor): methods, routes, user agents and resource attributes come in every request.

mod clean;
mod detectors;
mod wire;

use super::Processor;
use crate::config::{FieldError, Secret};
use crate::model::Batch;
use crate::telemetry::Telemetry;
use hmac::{Hmac, Mac};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use regex::{Regex, RegexSet};
use serde::Deserialize;
use sha2::Sha256;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

/// What replaces a match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Replace the matched text.
    #[default]
    Mask,
    /// Replace the matched text with a keyed hash of it.
    Hash,
    /// Remove the whole attribute (for bodies and names: mask).
    Drop,
}

/// How masked text reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskStyle {
    /// `****`
    #[default]
    Stars,
    /// `<email>`, `<credit_card>`, … (the detector's name; `<blocked>` for user rules)
    Typed,
}

/// Extra attributes on each item that was changed, as the collector's `summary`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Summary {
    /// None.
    #[default]
    Silent,
    /// `redaction.masked.count` and `redaction.redacted.count`.
    Info,
    /// Also `redaction.masked.keys` and `redaction.redacted.keys`.
    Debug,
}

/// Which built-in detectors run (all by default).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Detectors {
    /// Email addresses.
    pub email: bool,
    /// Payment card numbers (Luhn-checked).
    pub credit_card: bool,
    /// IPv4 addresses.
    pub ipv4: bool,
    /// IPv6 addresses.
    pub ipv6: bool,
    /// US social security numbers.
    pub us_ssn: bool,
    /// Phone numbers (E.164 and North American formats).
    pub phone: bool,
    /// JSON Web Tokens.
    pub jwt: bool,
    /// `Bearer` tokens and `authorization` values.
    pub bearer_token: bool,
    /// AWS access key ids.
    pub aws_access_key: bool,
    /// PEM private key blocks.
    pub private_key: bool,
    /// IBANs (mod-97 checked).
    pub iban: bool,
}

impl Default for Detectors {
    fn default() -> Self {
        Detectors {
            email: true,
            credit_card: true,
            ipv4: true,
            ipv6: true,
            us_ssn: true,
            phone: true,
            jwt: true,
            bearer_token: true,
            aws_access_key: true,
            private_key: true,
            iban: true,
        }
    }
}

impl Detectors {
    fn enabled(&self, name: &str) -> bool {
        match name {
            "email" => self.email,
            "credit_card" => self.credit_card,
            "ipv4" => self.ipv4,
            "ipv6" => self.ipv6,
            "us_ssn" => self.us_ssn,
            "phone" => self.phone,
            "jwt" => self.jwt,
            "bearer_token" => self.bearer_token,
            "aws_access_key" => self.aws_access_key,
            "private_key" => self.private_key,
            "iban" => self.iban,
            _ => false,
        }
    }
}

/// `processors: redaction:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionConfig {
    /// Keep attributes whatever their key (still scanned). When false, only
    /// `allowed_keys` are kept and every other attribute is removed.
    pub allow_all_keys: bool,
    /// Attribute keys kept when `allow_all_keys` is false.
    pub allowed_keys: Vec<String>,
    /// Attribute keys never touched.
    pub ignored_keys: Vec<String>,
    /// Regexes whose matches in any string value are redacted like detector matches.
    pub blocked_values: Vec<String>,
    /// Regexes on attribute keys: a matching key's whole value is redacted.
    pub blocked_key_patterns: Vec<String>,
    /// Built-in detectors to run.
    pub detectors: Detectors,
    /// Keep private, loopback and link-local IP addresses.
    pub keep_private_ips: bool,
    /// `mask` (default), `hash` or `drop`.
    pub action: Action,
    /// How `mask` reads: `stars` (default) or `typed`.
    pub mask_style: MaskStyle,
    /// HMAC key for `action: hash`; use `${env:..}` or `${file:..}`.
    pub hash_key: Option<Secret>,
    /// Also scan span names and span event names.
    pub redact_names: bool,
    /// `silent` (default), `info` or `debug`.
    pub summary: Summary,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        RedactionConfig {
            allow_all_keys: false,
            allowed_keys: Vec::new(),
            ignored_keys: Vec::new(),
            blocked_values: Vec::new(),
            blocked_key_patterns: Vec::new(),
            detectors: Detectors::default(),
            keep_private_ips: false,
            action: Action::Mask,
            mask_style: MaskStyle::Stars,
            hash_key: None,
            redact_names: true,
            summary: Summary::Silent,
        }
    }
}

impl RedactionConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        for (i, pattern) in self.blocked_values.iter().enumerate() {
            Regex::new(pattern)
                .map_err(|e| FieldError::new(format!("blocked_values.{i}"), e.to_string()))?;
        }
        for (i, pattern) in self.blocked_key_patterns.iter().enumerate() {
            Regex::new(pattern)
                .map_err(|e| FieldError::new(format!("blocked_key_patterns.{i}"), e.to_string()))?;
        }
        if self.action == Action::Hash && self.hash_key.as_ref().is_none_or(|k| k.0.len() < 16) {
            return Err(FieldError::new(
                "hash_key",
                "action: hash needs a hash_key of at least 16 bytes (from ${env:..} or ${file:..})",
            ));
        }
        Ok(())
    }
}

/// One compiled rule: a detector or a `blocked_values` pattern.
struct Rule {
    name: &'static str,
    regex: Regex,
    check: Option<detectors::Check>,
    /// A hand-written finder that stands in for the regex.
    find: Option<detectors::Finder>,
    /// Whether the pattern can match a text (`None`: always tried).
    prefilter: Option<detectors::Prefilter>,
    /// For a user's pattern: literals one of which every match starts with.
    prefixes: Option<Vec<memchr::memmem::Finder<'static>>>,
}

impl Rule {
    fn can_match(&self, profile: &detectors::Profile) -> bool {
        self.prefilter
            .is_none_or(|prefilter| prefilter.possible(profile))
            && self
                .prefixes
                .as_ref()
                .is_none_or(|prefixes| prefixes.iter().any(|p| p.find(profile.bytes).is_some()))
    }
}

/// A string that a rule could match is not UTF-8.
struct NotUtf8;

/// What happened to one item, for `summary`: how many keys were masked and removed (and
/// which, kept only for `summary: debug`), and how many matches its values held.
#[derive(Default)]
struct Tally {
    detections: usize,
    masked: usize,
    redacted: usize,
    masked_keys: Vec<String>,
    redacted_keys: Vec<String>,
}

/// The compiled redaction rules.
pub struct Redactor {
    config: RedactionConfig,
    /// The pattern of every rule without a finder, to learn in one pass which of them
    /// match; `set_rules` maps its indices to `rules`.
    set: RegexSet,
    set_rules: Vec<usize>,
    rules: Vec<Rule>,
    blocked_keys: RegexSet,
    /// Matches per counter since the last [`Redactor::take_counts`]: one counter per
    /// rule, then [`Redactor::allowed_keys_counter`] and
    /// [`Redactor::blocked_keys_counter`]; `counter_names` names them.
    counts: RefCell<Vec<u64>>,
    counter_names: Vec<&'static str>,
    key_rules: RefCell<HashMap<Box<[u8]>, KeyRule, foldhash::fast::RandomState>>,
    /// Strings lately found clean (see [`clean`]).
    clean: RefCell<clean::CleanStrings>,
    /// The wire walk's buffers, kept between requests.
    walk_buffers: RefCell<wire::Buffers>,
    /// The matches found in one string (start, end, rule), kept between strings.
    matches: RefCell<Vec<(usize, usize, usize)>>,
    allowed: HashSet<String>,
    ignored: HashSet<String>,
}

/// What the key-based rules say about an attribute, before its value is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyRule {
    /// In `ignored_keys`: left alone.
    Ignored,
    /// Not in `allowed_keys` (with `allow_all_keys: false`): removed.
    NotAllowed,
    /// Matches `blocked_key_patterns`: its whole value is redacted.
    Blocked,
    /// Its value is scanned.
    Scan,
}

/// Lowercase hexadecimal digits, for hashes.
const HEX: &[u8; 16] = b"0123456789abcdef";

/// The most matches in one string whose room a redactor keeps for the next string.
const MATCHES_KEPT: usize = 1024;

/// The most distinct keys whose [`KeyRule`] a redactor remembers.
const KEY_RULES_REMEMBERED: usize = 4096;

/// The longest key whose [`KeyRule`] is remembered: longer keys are worked out each time,
/// so the memory stays under [`KEY_RULES_REMEMBERED`] × this many bytes whatever keys
/// clients send.
const KEY_REMEMBERED_BYTES: usize = 256;

enum Outcome {
    Unchanged,
    Changed(String),
    Drop,
}

impl Redactor {
    /// Fails on a `blocked_values` or `blocked_key_patterns` regex that does not compile.
    pub fn new(config: RedactionConfig) -> Result<Redactor, FieldError> {
        let mut rules: Vec<Rule> = detectors::ALL
            .iter()
            .filter(|d| config.detectors.enabled(d.name))
            .map(|d| Rule {
                name: d.name,
                regex: detectors::compile(d),
                check: d.check,
                find: d.find,
                prefilter: Some(d.prefilter),
                prefixes: None,
            })
            .collect();
        for (at, pattern) in config.blocked_values.iter().enumerate() {
            rules.push(Rule {
                name: "blocked_values",
                regex: Regex::new(pattern)
                    .map_err(|e| FieldError::new(format!("blocked_values.{at}"), e.to_string()))?,
                check: None,
                find: None,
                prefilter: None,
                prefixes: detectors::required_prefixes(pattern).map(|prefixes| {
                    prefixes
                        .iter()
                        .map(|p| memchr::memmem::Finder::new(p).into_owned())
                        .collect()
                }),
            });
        }
        let set_rules: Vec<usize> = (0..rules.len())
            .filter(|&i| rules[i].find.is_none())
            .collect();
        let set = RegexSet::new(set_rules.iter().map(|&i| rules[i].regex.as_str()))
            .map_err(|e| FieldError::new("blocked_values", e.to_string()))?;
        let mut key_patterns = config.blocked_key_patterns.clone();
        if config.detectors.bearer_token {
            key_patterns.push("(?i)^authorization$".into());
        }
        let blocked_keys = RegexSet::new(&key_patterns)
            .map_err(|e| FieldError::new("blocked_key_patterns", e.to_string()))?;
        let counter_names: Vec<&'static str> = rules
            .iter()
            .map(|rule| rule.name)
            .chain(["allowed_keys", "blocked_key_patterns"])
            .collect();
        Ok(Redactor {
            set,
            set_rules,
            rules,
            blocked_keys,
            counts: RefCell::new(vec![0; counter_names.len()]),
            counter_names,
            key_rules: RefCell::new(HashMap::default()),
            clean: RefCell::default(),
            walk_buffers: RefCell::default(),
            matches: RefCell::default(),
            allowed: config.allowed_keys.iter().cloned().collect(),
            ignored: config.ignored_keys.iter().cloned().collect(),
            config,
        })
    }

    fn replacement(&self, rule: &str, text: &str) -> String {
        let mut out = String::new();
        self.push_replacement(&mut out, rule, text);
        out
    }

    /// Appends what replaces `text`, found by `rule`, to `out`.
    fn push_replacement(&self, out: &mut String, rule: &str, text: &str) {
        match (self.config.action, self.config.mask_style) {
            (Action::Hash, _) => {
                let key = self
                    .config
                    .hash_key
                    .as_ref()
                    .map_or(&[][..], |k| k.0.as_bytes());
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
                mac.update(text.as_bytes());
                let digest = mac.finalize().into_bytes();
                for byte in &digest[..8] {
                    out.push(char::from(HEX[usize::from(byte >> 4)]));
                    out.push(char::from(HEX[usize::from(byte & 15)]));
                }
            }
            (_, MaskStyle::Typed) => {
                out.push('<');
                out.push_str(rule);
                out.push('>');
            }
            (_, MaskStyle::Stars) => out.push_str("****"),
        }
    }

    /// Redacts one string; `None` when nothing matched (nothing is copied then).
    fn redact_text(&self, text: &str, tally: &mut Tally) -> Option<String> {
        let mut out = String::new();
        self.redact_into(text, tally, &mut out).then_some(out)
    }

    /// Appends `text` redacted to `out` and says so when something in it matches;
    /// leaves `out` alone when nothing does.
    fn redact_into(&self, text: &str, tally: &mut Tally, out: &mut String) -> bool {
        let bytes = text.as_bytes();
        let (known_clean, hash) = self.clean_lookup(bytes);
        if known_clean {
            return false;
        }
        let profile = detectors::Profile::of(bytes);
        let candidates = self.candidates(&profile);
        let changed = candidates != 0 && self.redact_candidates(text, candidates, tally, out);
        self.remember_if_clean(hash, bytes, changed);
        changed
    }

    /// Whether `bytes` was lately found clean, and its hash to remember it by (`None`
    /// when it is too long to remember).
    fn clean_lookup(&self, bytes: &[u8]) -> (bool, Option<u64>) {
        let clean = self.clean.borrow();
        let hash = clean.hash(bytes);
        (hash.is_some_and(|hash| clean.contains(hash, bytes)), hash)
    }

    /// Remembers a string no rule changed (if it is short enough to have a `hash`).
    fn remember_if_clean(&self, hash: Option<u64>, bytes: &[u8], changed: bool) {
        if let (Some(hash), false) = (hash, changed) {
            self.clean.borrow_mut().insert(hash, bytes);
        }
    }

    /// [`Redactor::redact_into`] for a string's bytes as they lie in an encoded
    /// request. They are checked to be UTF-8 only when some rule can match them: a string
    /// no rule can match is left as it came, whatever it holds (the edge check has
    /// already refused requests whose strings are not UTF-8).
    fn redact_bytes_into(
        &self,
        bytes: &[u8],
        tally: &mut Tally,
        out: &mut String,
    ) -> Result<bool, NotUtf8> {
        let (known_clean, hash) = self.clean_lookup(bytes);
        if known_clean {
            return Ok(false);
        }
        let profile = detectors::Profile::of(bytes);
        let candidates = self.candidates(&profile);
        let changed = candidates != 0 && {
            // std's check for short strings, where the SIMD one's setup costs more than
            // it saves
            let text = if bytes.len() < 64 {
                std::str::from_utf8(bytes).map_err(|_| NotUtf8)?
            } else {
                simdutf8::basic::from_utf8(bytes).map_err(|_| NotUtf8)?
            };
            self.redact_candidates(text, candidates, tally, out)
        };
        self.remember_if_clean(hash, bytes, changed);
        Ok(changed)
    }

    /// The rules whose patterns can match a text with this profile, as bits by rule
    /// index; rules past the 64th are always tried.
    fn candidates(&self, profile: &detectors::Profile) -> u64 {
        let mut bits = 0;
        for (index, rule) in self.rules.iter().enumerate().take(64) {
            bits |= u64::from(rule.can_match(profile)) << index;
        }
        if self.rules.len() > 64 {
            bits |= 1 << 63;
        }
        bits
    }

    /// Runs the `candidates` rules on `text` (see [`Redactor::redact_into`]).
    fn redact_candidates(
        &self,
        text: &str,
        candidates: u64,
        tally: &mut Tally,
        out: &mut String,
    ) -> bool {
        let mut spans = self.matches.take();
        spans.clear();
        let mut keep = |index: usize, start: usize, end: usize| {
            if self.rules[index]
                .check
                .is_none_or(|check| check(text, start, end, self.config.keep_private_ips))
            {
                spans.push((start, end, index));
            }
        };
        // finders run where they can match; of the regexes, one runs alone and several
        // go through the set first
        let (mut by_regex, mut first_by_regex) = (0, None);
        let tried = |index: usize| candidates & (1 << index.min(63)) != 0;
        for (index, rule) in self.rules.iter().enumerate() {
            if !tried(index) {
                continue;
            }
            match rule.find {
                Some(find) => find(text, &mut |start, end| keep(index, start, end)),
                None => {
                    by_regex += 1;
                    first_by_regex = first_by_regex.or(Some(index));
                }
            }
        }
        let mut find = |index: usize| {
            for m in self.rules[index].regex.find_iter(text) {
                keep(index, m.start(), m.end());
            }
        };
        match (by_regex, first_by_regex) {
            (1, Some(index)) => find(index),
            (0, _) => {}
            _ => self
                .set
                .matches(text)
                .iter()
                .for_each(|index| find(self.set_rules[index])),
        }
        if spans.is_empty() {
            self.matches.replace(spans);
            return false;
        }
        spans.sort_by_key(|&(start, end, _)| (start, std::cmp::Reverse(end)));
        out.reserve(text.len());
        let mut cursor = 0;
        for &(start, end, index) in &spans {
            if start < cursor {
                continue;
            }
            out.push_str(&text[cursor..start]);
            self.push_replacement(out, self.rules[index].name, &text[start..end]);
            self.detected(tally, index);
            cursor = end;
        }
        out.push_str(&text[cursor..]);
        if spans.capacity() <= MATCHES_KEPT {
            self.matches.replace(spans);
        }
        true
    }

    /// Counts a match of the rule (or key rule) behind `counter` for `tally`'s item.
    fn detected(&self, tally: &mut Tally, counter: usize) {
        tally.detections += 1;
        self.counts.borrow_mut()[counter] += 1;
    }

    /// The counter of attributes removed by `allowed_keys`.
    fn allowed_keys_counter(&self) -> usize {
        self.rules.len()
    }

    /// The counter of attributes whose key matched `blocked_key_patterns`.
    fn blocked_keys_counter(&self) -> usize {
        self.rules.len() + 1
    }

    /// Notes that the attribute `key` had its value masked.
    fn masked(&self, tally: &mut Tally, key: &str) {
        tally.masked += 1;
        if self.config.summary == Summary::Debug {
            tally.masked_keys.push(key.to_string());
        }
    }

    /// Notes that the attribute `key` was removed.
    fn redacted(&self, tally: &mut Tally, key: &str) {
        tally.redacted += 1;
        if self.config.summary == Summary::Debug {
            tally.redacted_keys.push(key.to_string());
        }
    }

    /// Redacts a value in place; says whether the attribute holding it must go.
    fn redact_value(&self, value: &mut AnyValue, tally: &mut Tally) -> bool {
        match value.value.as_mut() {
            Some(Value::StringValue(s)) => match self.redact_text(s, tally) {
                Some(_) if self.config.action == Action::Drop => return true,
                Some(new) => *s = new,
                None => {}
            },
            Some(Value::ArrayValue(array)) => {
                let mut drop = false;
                for item in &mut array.values {
                    drop |= self.redact_value(item, tally);
                }
                return drop;
            }
            Some(Value::KvlistValue(list)) => self.redact_attributes(&mut list.values, tally),
            _ => {}
        }
        false
    }

    /// What the key-based rules say about `key`: worked out once per distinct key
    /// (the sets and patterns cost more than the lookup), remembered for up to
    /// [`KEY_RULES_REMEMBERED`] keys of up to [`KEY_REMEMBERED_BYTES`], then forgotten all
    /// at once.
    fn key_rule(&self, key: &str) -> KeyRule {
        if let Some(rule) = self.remembered_key_rule(key.as_bytes()) {
            return rule;
        }
        let rule = if self.ignored.contains(key) {
            KeyRule::Ignored
        } else if !self.config.allow_all_keys && !self.allowed.contains(key) {
            KeyRule::NotAllowed
        } else if self.blocked_keys.is_match(key) {
            KeyRule::Blocked
        } else {
            KeyRule::Scan
        };
        if key.len() > KEY_REMEMBERED_BYTES {
            return rule;
        }
        let mut remembered = self.key_rules.borrow_mut();
        if remembered.len() >= KEY_RULES_REMEMBERED {
            remembered.clear();
        }
        remembered.insert(key.as_bytes().into(), rule);
        rule
    }

    /// The rule of `key` if it is remembered (and so known to be UTF-8).
    fn remembered_key_rule(&self, key: &[u8]) -> Option<KeyRule> {
        self.key_rules.borrow().get(key).copied()
    }

    fn decide(&self, attribute: &mut KeyValue, tally: &mut Tally) -> Outcome {
        let rule = self.key_rule(&attribute.key);
        if rule == KeyRule::Ignored {
            return Outcome::Unchanged;
        }
        if rule == KeyRule::NotAllowed {
            self.detected(tally, self.allowed_keys_counter());
            return Outcome::Drop;
        }
        if rule == KeyRule::Blocked {
            self.detected(tally, self.blocked_keys_counter());
            if self.config.action == Action::Drop {
                return Outcome::Drop;
            }
            let text = match attribute.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                other => format!("{other:?}"),
            };
            self.masked(tally, &attribute.key);
            return Outcome::Changed(self.replacement("blocked_key", &text));
        }
        let before = tally.detections;
        let drop = attribute
            .value
            .as_mut()
            .is_some_and(|value| self.redact_value(value, tally));
        if drop {
            Outcome::Drop
        } else {
            if tally.detections > before {
                self.masked(tally, &attribute.key);
            }
            Outcome::Unchanged
        }
    }

    /// Applies every rule to a list of attributes.
    fn redact_attributes(&self, attributes: &mut Vec<KeyValue>, tally: &mut Tally) {
        attributes.retain_mut(|attribute| match self.decide(attribute, tally) {
            Outcome::Unchanged => true,
            Outcome::Changed(text) => {
                attribute.value = Some(AnyValue {
                    value: Some(Value::StringValue(text)),
                });
                true
            }
            Outcome::Drop => {
                self.redacted(tally, &attribute.key);
                false
            }
        });
    }

    /// Redacts an item's attributes and appends the summary when asked.
    fn redact_item(&self, attributes: &mut Vec<KeyValue>, mut tally: Tally) {
        self.redact_attributes(attributes, &mut tally);
        self.summarize(attributes, tally);
    }

    fn summarize(&self, attributes: &mut Vec<KeyValue>, tally: Tally) {
        attributes.extend(self.summary(tally));
    }

    /// The attributes `summary` adds to an item.
    fn summary(&self, tally: Tally) -> Vec<KeyValue> {
        if !self.summarizes(&tally) {
            return Vec::new();
        }
        let int = |key: &str, n: usize| KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(Value::IntValue(n as i64)),
            }),
            ..Default::default()
        };
        let text = |key: &str, list: &[String]| KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(list.join(","))),
            }),
            ..Default::default()
        };
        let mut summary = vec![
            int("redaction.masked.count", tally.masked),
            int("redaction.redacted.count", tally.redacted),
        ];
        if self.config.summary == Summary::Debug {
            summary.push(text("redaction.masked.keys", &tally.masked_keys));
            summary.push(text("redaction.redacted.keys", &tally.redacted_keys));
        }
        summary
    }

    /// Whether `summary` adds attributes to an item with this tally.
    fn summarizes(&self, tally: &Tally) -> bool {
        self.config.summary != Summary::Silent && (tally.masked > 0 || tally.redacted > 0)
    }

    /// Redacts a name or body string in place (never dropped: masked instead).
    fn redact_in_place(&self, text: &mut String, tally: &mut Tally) {
        if let Some(new) = self.redact_text(text, tally) {
            *text = match self.config.action {
                Action::Drop => self.replacement_for_drop().to_string(),
                _ => new,
            };
        }
    }

    /// What replaces a whole name or body under `action: drop` (which masks them).
    fn replacement_for_drop(&self) -> &'static str {
        match self.config.mask_style {
            MaskStyle::Typed => "<redacted>",
            MaskStyle::Stars => "****",
        }
    }

    /// Matches per rule (detector name, `blocked_values`, `blocked_key_patterns`,
    /// `allowed_keys`) since the last call.
    pub fn take_counts(&self) -> HashMap<&'static str, u64> {
        let mut taken = HashMap::new();
        for (counter, n) in self.counts.borrow_mut().iter_mut().enumerate() {
            if *n > 0 {
                *taken.entry(self.counter_names[counter]).or_default() += std::mem::take(n);
            }
        }
        taken
    }

    /// Redacts a batch: on the wire when it is encoded (`wire.rs`), decoded otherwise.
    pub fn redact(&self, batch: &mut Batch) {
        if !self.redact_encoded_parts(batch) {
            self.redact_batch(batch);
        }
    }

    /// Redacts every request of an encoded batch on the wire; false (and the batch as
    /// it was, and no count kept) when the batch is decoded or a request needs the
    /// decoded path.
    fn redact_encoded_parts(&self, batch: &mut Batch) -> bool {
        let signal = batch.signal();
        let Some(parts) = batch.encoded_parts_mut() else {
            return false;
        };
        let before = self.counts.borrow().clone();
        let mut rewritten = Vec::with_capacity(parts.len());
        for part in parts.iter() {
            match self.redact_encoded(signal, part) {
                Ok(Some(new)) => rewritten.push(bytes::Bytes::from(new)),
                Ok(None) => rewritten.push(part.clone()),
                Err(wire::Fallback) => {
                    *self.counts.borrow_mut() = before;
                    return false;
                }
            }
        }
        *parts = rewritten;
        true
    }

    /// Redacts every place in a batch where PII can hide, on its decoded form.
    pub fn redact_batch(&self, batch: &mut Batch) {
        match batch.signal() {
            crate::model::Signal::Traces => {
                for rs in batch.traces_mut() {
                    if let Some(r) = rs.resource.as_mut() {
                        self.redact_item(&mut r.attributes, Tally::default());
                    }
                    for ss in &mut rs.scope_spans {
                        if let Some(scope) = ss.scope.as_mut() {
                            self.redact_item(&mut scope.attributes, Tally::default());
                        }
                        for span in &mut ss.spans {
                            let mut tally = Tally::default();
                            if self.config.redact_names {
                                self.redact_in_place(&mut span.name, &mut tally);
                            }
                            for event in &mut span.events {
                                let mut event_tally = Tally::default();
                                if self.config.redact_names {
                                    self.redact_in_place(&mut event.name, &mut event_tally);
                                }
                                self.redact_item(&mut event.attributes, event_tally);
                            }
                            for link in &mut span.links {
                                self.redact_item(&mut link.attributes, Tally::default());
                            }
                            self.redact_item(&mut span.attributes, tally);
                        }
                    }
                }
            }
            crate::model::Signal::Logs => {
                for rl in batch.logs_mut() {
                    if let Some(r) = rl.resource.as_mut() {
                        self.redact_item(&mut r.attributes, Tally::default());
                    }
                    for sl in &mut rl.scope_logs {
                        if let Some(scope) = sl.scope.as_mut() {
                            self.redact_item(&mut scope.attributes, Tally::default());
                        }
                        for record in &mut sl.log_records {
                            let mut tally = Tally::default();
                            if let Some(body) = record.body.as_mut() {
                                self.redact_body(body, &mut tally);
                            }
                            self.redact_item(&mut record.attributes, tally);
                        }
                    }
                }
            }
            crate::model::Signal::Metrics => {
                for rm in batch.metrics_mut() {
                    if let Some(r) = rm.resource.as_mut() {
                        self.redact_item(&mut r.attributes, Tally::default());
                    }
                    for sm in &mut rm.scope_metrics {
                        if let Some(scope) = sm.scope.as_mut() {
                            self.redact_item(&mut scope.attributes, Tally::default());
                        }
                        for metric in &mut sm.metrics {
                            self.redact_points(metric.data.as_mut());
                        }
                    }
                }
            }
        }
        batch.recount();
    }

    /// A log body: strings are scanned (never dropped), maps and arrays recursively.
    fn redact_body(&self, body: &mut AnyValue, tally: &mut Tally) {
        match body.value.as_mut() {
            Some(Value::StringValue(s)) => self.redact_in_place(s, tally),
            Some(Value::ArrayValue(array)) => array
                .values
                .iter_mut()
                .for_each(|v| self.redact_body(v, tally)),
            Some(Value::KvlistValue(list)) => self.redact_attributes(&mut list.values, tally),
            _ => {}
        }
    }

    fn redact_points(&self, data: Option<&mut Data>) {
        macro_rules! points {
            ($points:expr) => {
                for point in $points {
                    for exemplar in &mut point.exemplars {
                        self.redact_item(&mut exemplar.filtered_attributes, Tally::default());
                    }
                    self.redact_item(&mut point.attributes, Tally::default());
                }
            };
        }
        match data {
            Some(Data::Gauge(g)) => points!(&mut g.data_points),
            Some(Data::Sum(s)) => points!(&mut s.data_points),
            Some(Data::Histogram(h)) => points!(&mut h.data_points),
            Some(Data::ExponentialHistogram(h)) => points!(&mut h.data_points),
            Some(Data::Summary(s)) => {
                for point in &mut s.data_points {
                    self.redact_item(&mut point.attributes, Tally::default());
                }
            }
            None => {}
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct RedactionLabels {
    processor: String,
    pipeline: String,
    rule: String,
    action: String,
}

/// The pipeline stage around a [`Redactor`]; counts every redaction in
/// `sieve_processor_redactions_total{processor, pipeline, rule, action}`.
pub struct RedactionProcessor {
    redactor: Redactor,
    metrics: Family<RedactionLabels, Counter>,
    labels: (String, String),
}

impl RedactionProcessor {
    pub fn new(
        config: RedactionConfig,
        processor: &str,
        pipeline: &str,
        telemetry: &Telemetry,
    ) -> Result<Self, FieldError> {
        Ok(RedactionProcessor {
            redactor: Redactor::new(config)?,
            metrics: telemetry.family(
                "processor_redactions",
                "Values redacted, by rule (detector) and action",
            ),
            labels: (processor.to_string(), pipeline.to_string()),
        })
    }

    fn count(&self) {
        for (rule, n) in self.redactor.take_counts() {
            let action = match (rule, self.redactor.config.action) {
                ("allowed_keys", _) | (_, Action::Drop) => "drop",
                (_, Action::Mask) => "mask",
                (_, Action::Hash) => "hash",
            };
            let (processor, pipeline) = self.labels.clone();
            let labels = RedactionLabels {
                processor,
                pipeline,
                rule: rule.into(),
                action: action.into(),
            };
            self.metrics.get_or_create(&labels).inc_by(n);
        }
    }
}

impl Processor for RedactionProcessor {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        self.redactor.redact(&mut batch);
        self.count();
        out.push(batch);
    }
}

#[cfg(test)]
mod tests;
