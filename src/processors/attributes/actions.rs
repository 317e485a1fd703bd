//! The collector's attribute actions (its `attraction` package, shared by the
//! `attributes` and `resource` processors): `insert`, `update`, `upsert`, `delete`,
//! `hash`, `extract` and `convert`, applied in order to one list of attributes, with the
//! collector's rules for which options each action takes.
//!
//! Values come from the config (`value`, typed as YAML types it: string, int, double,
//! bool, list, map), from another attribute of the same list (`from_attribute`), or from
//! the request the data came in (`from_context`: `metadata.<header>`, kept by a
//! receiver's `include_metadata`, `auth.subject`, the authenticated identity, and
//! `client.address`, the sender's address), with
//! `default_value` when the source has none.

use crate::config::FieldError;
use crate::model::Metadata;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, KeyValue, KeyValueList,
};
use regex::Regex;
use serde::Deserialize;

/// What an action does (written in any case, as the collector reads it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum ActionKind {
    /// Adds the attribute where the key is absent.
    Insert,
    /// Replaces the value where the key is present.
    Update,
    /// Insert or update.
    Upsert,
    /// Removes the key, or every key matching `pattern`.
    Delete,
    /// Replaces the value by the hex SHA-256 of its bytes (as the collector hashes).
    Hash,
    /// Sets an attribute per named capture group of `pattern` matched on the value.
    Extract,
    /// Converts the value to `converted_type`.
    Convert,
}

impl TryFrom<String> for ActionKind {
    type Error = String;
    fn try_from(name: String) -> Result<ActionKind, String> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "insert" => ActionKind::Insert,
            "update" => ActionKind::Update,
            "upsert" => ActionKind::Upsert,
            "delete" => ActionKind::Delete,
            "hash" => ActionKind::Hash,
            "extract" => ActionKind::Extract,
            "convert" => ActionKind::Convert,
            _ => {
                return Err(format!(
                    "unknown action `{name}`; expected insert, update, upsert, delete, hash, extract or convert"
                ))
            }
        })
    }
}

/// The type `convert` turns a value into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvertedType {
    Int,
    Double,
    String,
}

/// One entry of `actions` (the `attributes` processor) or `attributes` (the `resource`
/// processor).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// The attribute to act on; `delete` and `hash` may name keys by `pattern` instead.
    #[serde(default)]
    pub key: Option<String>,
    /// `insert`, `update`, `upsert`, `delete`, `hash`, `extract` or `convert`.
    pub action: ActionKind,
    /// The value to set, typed as YAML types it.
    #[serde(default)]
    pub value: Option<serde_yaml::Value>,
    /// The value of another attribute of the same list to set; nothing happens when it is
    /// absent (unless `default_value` is given).
    #[serde(default)]
    pub from_attribute: Option<String>,
    /// A value of the request the data came in: `metadata.<header>` (the receiver must
    /// keep it with `include_metadata: true`) or `auth.subject` (the authenticated
    /// identity).
    #[serde(default)]
    pub from_context: Option<String>,
    /// The value to set when `from_attribute` or `from_context` has none.
    #[serde(default)]
    pub default_value: Option<serde_yaml::Value>,
    /// `delete`, `hash`: a regular expression over attribute keys; `extract`: a regular
    /// expression over the value with named capture groups, one attribute per group.
    #[serde(default)]
    pub pattern: Option<String>,
    /// `convert`: `int`, `double` or `string`.
    #[serde(default)]
    pub converted_type: Option<ConvertedType>,
}

/// Where a set value comes from.
#[derive(Debug)]
enum Source {
    Value(AnyValue),
    Attribute(String),
    Context(ContextValue),
    Nothing,
}

/// Which keys an action acts on.
#[derive(Debug)]
struct Keys {
    key: Option<String>,
    pattern: Option<Regex>,
}

impl Keys {
    fn matches(&self, key: &str) -> bool {
        self.key.as_deref() == Some(key) || self.pattern.as_ref().is_some_and(|p| p.is_match(key))
    }
}

#[derive(Debug)]
enum Action {
    Set {
        key: String,
        kind: ActionKind,
        source: Source,
        default: Option<AnyValue>,
    },
    Delete(Keys),
    Hash(Keys),
    Extract {
        key: String,
        pattern: Regex,
    },
    Convert {
        key: String,
        to: ConvertedType,
    },
}

/// A list of actions, checked and compiled.
#[derive(Debug)]
pub struct Actions(Vec<Action>);

/// The request values `from_context` reads: its kept metadata and its client's address.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'a> {
    pub metadata: Option<&'a Metadata>,
    pub client: Option<std::net::IpAddr>,
}

/// A value of the request.
#[derive(Debug)]
enum ContextValue {
    /// A metadata name (lowercase).
    Metadata(String),
    /// The address of the client that sent the data.
    ClientAddress,
}

impl Actions {
    /// Compiles `configs`, the list at `field` (`actions` or `attributes`), naming the
    /// entry of the first mistake.
    pub fn new(field: &str, configs: &[ActionConfig]) -> Result<Actions, FieldError> {
        configs
            .iter()
            .enumerate()
            .map(|(at, config)| {
                Action::new(config).map_err(|e| FieldError::new(format!("{field}[{at}]"), e))
            })
            .collect::<Result<_, _>>()
            .map(Actions)
    }

    /// Applies every action, in order, to `attributes`.
    pub fn apply(&self, attributes: &mut Vec<KeyValue>, context: Context) {
        for action in &self.0 {
            action.apply(attributes, context);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Action {
    fn new(config: &ActionConfig) -> Result<Action, String> {
        let kind = config.action;
        let named = |option: &str, present: bool| -> Result<(), String> {
            if present {
                return Err(format!(
                    "`{option}` does not go with `action: {}`",
                    kind_name(kind)
                ));
            }
            Ok(())
        };
        let key = || {
            config
                .key
                .clone()
                .filter(|k| !k.is_empty())
                .ok_or_else(|| format!("`action: {}` needs a `key`", kind_name(kind)))
        };
        let pattern = |what: &str| -> Result<Option<Regex>, String> {
            config
                .pattern
                .as_deref()
                .map(|p| Regex::new(p).map_err(|e| format!("`pattern` is not a {what}: {e}")))
                .transpose()
        };
        let is_set = matches!(
            kind,
            ActionKind::Insert | ActionKind::Update | ActionKind::Upsert
        );
        if !is_set {
            named("value", config.value.is_some())?;
            named("from_attribute", config.from_attribute.is_some())?;
            named("from_context", config.from_context.is_some())?;
            named("default_value", config.default_value.is_some())?;
        }
        if kind != ActionKind::Convert {
            named("converted_type", config.converted_type.is_some())?;
        }
        Ok(match kind {
            ActionKind::Insert | ActionKind::Update | ActionKind::Upsert => {
                named("pattern", config.pattern.is_some())?;
                Action::Set {
                    key: key()?,
                    kind,
                    source: Source::of(config)?,
                    default: config.default_value.as_ref().map(any_value).transpose()?,
                }
            }
            ActionKind::Delete | ActionKind::Hash => {
                let keys = Keys {
                    key: config.key.clone().filter(|k| !k.is_empty()),
                    pattern: pattern("regular expression")?,
                };
                if keys.key.is_none() && keys.pattern.is_none() {
                    return Err(format!(
                        "`action: {}` needs a `key` or a `pattern`",
                        kind_name(kind)
                    ));
                }
                match kind {
                    ActionKind::Delete => Action::Delete(keys),
                    _ => Action::Hash(keys),
                }
            }
            ActionKind::Extract => {
                let key = key()?;
                let pattern = pattern("regular expression")?
                    .ok_or("`action: extract` needs a `pattern` with named capture groups")?;
                if pattern.capture_names().flatten().next().is_none() {
                    return Err("`pattern` of `action: extract` has no named capture group, e.g. `(?P<name>...)`".into());
                }
                if pattern.capture_names().skip(1).any(|name| name.is_none()) {
                    return Err("`pattern` of `action: extract` must name every capture group (use `(?:...)` for a group that captures nothing)".into());
                }
                Action::Extract { key, pattern }
            }
            ActionKind::Convert => {
                named("pattern", config.pattern.is_some())?;
                Action::Convert {
                    key: key()?,
                    to: config
                        .converted_type
                        .ok_or("`action: convert` needs `converted_type`: int, double or string")?,
                }
            }
        })
    }

    fn apply(&self, attributes: &mut Vec<KeyValue>, context: Context) {
        match self {
            Action::Set {
                key,
                kind,
                source,
                default,
            } => {
                let at = position(attributes, key);
                let wanted = match (kind, at) {
                    (ActionKind::Insert, Some(_)) | (ActionKind::Update, None) => return,
                    _ => source
                        .value(attributes, context)
                        .or_else(|| default.clone()),
                };
                if let Some(value) = wanted {
                    set(attributes, at, key, value);
                }
            }
            Action::Delete(keys) => attributes.retain(|kv| !keys.matches(&kv.key)),
            Action::Hash(keys) => attributes
                .iter_mut()
                .filter(|kv| keys.matches(&kv.key))
                .for_each(|kv| hash(&mut kv.value)),
            Action::Extract { key, pattern } => extract(attributes, key, pattern),
            Action::Convert { key, to } => {
                if let Some(at) = position(attributes, key) {
                    convert(&mut attributes[at].value, *to);
                }
            }
        }
    }
}

impl Source {
    fn of(config: &ActionConfig) -> Result<Source, String> {
        let given = [
            config.value.is_some(),
            config.from_attribute.is_some(),
            config.from_context.is_some(),
        ];
        match given.iter().filter(|g| **g).count() {
            0 if config.default_value.is_some() => Ok(Source::Nothing),
            0 => Err(format!(
                "`action: {}` needs one of `value`, `from_attribute`, `from_context` or `default_value`",
                kind_name(config.action)
            )),
            1 => Ok(if let Some(value) = &config.value {
                Source::Value(any_value(value)?)
            } else if let Some(attribute) = &config.from_attribute {
                Source::Attribute(attribute.clone())
            } else {
                Source::Context(context_key(config.from_context.as_deref().unwrap_or(""))?)
            }),
            _ => Err("give only one of `value`, `from_attribute` and `from_context`".into()),
        }
    }

    fn value(&self, attributes: &[KeyValue], context: Context) -> Option<AnyValue> {
        match self {
            Source::Value(value) => Some(value.clone()),
            Source::Attribute(key) => {
                let at = position(attributes, key)?;
                attributes[at].value.clone()
            }
            Source::Context(ContextValue::Metadata(name)) => {
                context.metadata?.get(name).map(string)
            }
            Source::Context(ContextValue::ClientAddress) => {
                context.client.map(|ip| string(&ip.to_string()))
            }
            Source::Nothing => None,
        }
    }
}

/// What a `from_context` key reads: `client.address`, `auth.subject`,
/// `metadata.<header>`, or (as the collector falls back) a bare header name.
fn context_key(key: &str) -> Result<ContextValue, String> {
    if key == "client.address" {
        return Ok(ContextValue::ClientAddress);
    }
    if key == crate::receivers::otlp::AUTH_SUBJECT {
        return Ok(ContextValue::Metadata(key.to_string()));
    }
    if key.starts_with("auth.") {
        return Err(format!(
            "`from_context: {key}`: of the authentication, sieve keeps `auth.subject` with the data, not `{key}`"
        ));
    }
    let header = key.strip_prefix("metadata.").unwrap_or(key);
    if header.is_empty() {
        return Err("`from_context` needs a name, e.g. `metadata.x-tenant`".into());
    }
    Ok(ContextValue::Metadata(header.to_ascii_lowercase()))
}

fn kind_name(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Insert => "insert",
        ActionKind::Update => "update",
        ActionKind::Upsert => "upsert",
        ActionKind::Delete => "delete",
        ActionKind::Hash => "hash",
        ActionKind::Extract => "extract",
        ActionKind::Convert => "convert",
    }
}

fn position(attributes: &[KeyValue], key: &str) -> Option<usize> {
    attributes.iter().position(|kv| kv.key == key)
}

fn set(attributes: &mut Vec<KeyValue>, at: Option<usize>, key: &str, value: AnyValue) {
    match at {
        Some(at) => attributes[at].value = Some(value),
        None => attributes.push(KeyValue {
            key: key.to_string(),
            value: Some(value),
            ..Default::default()
        }),
    }
}

fn string(text: &str) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(text.to_string())),
    }
}

/// A value from the config, typed as YAML types it.
pub fn any_value(yaml: &serde_yaml::Value) -> Result<AnyValue, String> {
    use serde_yaml::Value as Yaml;
    let value = match yaml {
        Yaml::String(s) => Value::StringValue(s.clone()),
        Yaml::Bool(b) => Value::BoolValue(*b),
        Yaml::Number(n) => match n.as_i64() {
            Some(i) => Value::IntValue(i),
            None => Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        Yaml::Sequence(items) => Value::ArrayValue(ArrayValue {
            values: items.iter().map(any_value).collect::<Result<_, _>>()?,
        }),
        Yaml::Mapping(map) => Value::KvlistValue(KeyValueList {
            values: map
                .iter()
                .map(|(k, v)| {
                    let key = k.as_str().ok_or("a map value's keys must be strings")?;
                    Ok(KeyValue {
                        key: key.to_string(),
                        value: Some(any_value(v)?),
                        ..Default::default()
                    })
                })
                .collect::<Result<_, String>>()?,
        }),
        Yaml::Null => return Err("a value must not be empty (null)".into()),
        Yaml::Tagged(tagged) => return any_value(&tagged.value),
    };
    Ok(AnyValue { value: Some(value) })
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The collector's hasher: a string's bytes, a bool as one byte, an int or a double as
/// 8 little-endian bytes; the value becomes the hex SHA-256 digest (empty for other
/// types).
fn hash(value: &mut Option<AnyValue>) {
    use sha2::Digest;
    let bytes: Vec<u8> = match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.as_bytes().to_vec(),
        Some(Value::BoolValue(b)) => vec![u8::from(*b)],
        Some(Value::IntValue(i)) => i.to_le_bytes().to_vec(),
        Some(Value::DoubleValue(d)) => d.to_bits().to_le_bytes().to_vec(),
        _ => Vec::new(),
    };
    let digest = if bytes.is_empty() {
        String::new()
    } else {
        let mut hex = String::with_capacity(64);
        for byte in sha2::Sha256::digest(&bytes) {
            hex.push(char::from(HEX[usize::from(byte >> 4)]));
            hex.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        hex
    };
    *value = Some(string(&digest));
}

/// Sets an attribute per named group of `pattern` where it matches the string value of
/// `key` (overwriting attributes of those names; a group that took no part is empty).
fn extract(attributes: &mut Vec<KeyValue>, key: &str, pattern: &Regex) {
    let Some(at) = position(attributes, key) else {
        return;
    };
    let Some(Value::StringValue(text)) =
        attributes[at].value.as_ref().and_then(|v| v.value.as_ref())
    else {
        return;
    };
    let Some(captures) = pattern.captures(text) else {
        return;
    };
    let found: Vec<(String, String)> = pattern
        .capture_names()
        .flatten()
        .map(|name| {
            let text = captures.name(name).map_or("", |m| m.as_str());
            (name.to_string(), text.to_string())
        })
        .collect();
    for (name, text) in found {
        let at = position(attributes, &name);
        set(attributes, at, &name, string(&text));
    }
}

/// A value as the collector's `AsString` writes it: maps and lists as JSON, bytes in
/// base64, numbers and booleans as text.
fn as_string(value: &Value) -> String {
    match value {
        Value::ArrayValue(_) | Value::KvlistValue(_) => json(value).to_string(),
        other => crate::model::any_value_text(Some(&AnyValue {
            value: Some(other.clone()),
        })),
    }
}

/// A value as JSON (the collector's `AsRaw`, then encoded).
fn json(value: &Value) -> serde_json::Value {
    use base64::Engine;
    let of = |v: &AnyValue| v.value.as_ref().map_or(serde_json::Value::Null, json);
    match value {
        Value::StringValue(s) => s.clone().into(),
        Value::BoolValue(b) => (*b).into(),
        Value::IntValue(i) => (*i).into(),
        Value::DoubleValue(d) => {
            serde_json::Number::from_f64(*d).map_or(serde_json::Value::Null, Into::into)
        }
        Value::BytesValue(b) => base64::engine::general_purpose::STANDARD.encode(b).into(),
        Value::ArrayValue(a) => a.values.iter().map(of).collect(),
        Value::KvlistValue(m) => m
            .values
            .iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    kv.value.as_ref().map_or(serde_json::Value::Null, of),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
        Value::StringValueStrindex(i) => (*i).into(),
    }
}

/// The collector's conversions; a value that does not convert is left as it is.
fn convert(value: &mut Option<AnyValue>, to: ConvertedType) {
    let Some(current) = value.as_ref().and_then(|v| v.value.as_ref()) else {
        return;
    };
    let converted = match (to, current) {
        (ConvertedType::Int, Value::StringValue(s)) => s.parse().ok().map(Value::IntValue),
        (ConvertedType::Int, Value::DoubleValue(d)) => Some(Value::IntValue(*d as i64)),
        (ConvertedType::Int, Value::BoolValue(b)) => Some(Value::IntValue(i64::from(*b))),
        (ConvertedType::Double, Value::StringValue(s)) => s.parse().ok().map(Value::DoubleValue),
        (ConvertedType::Double, Value::IntValue(i)) => Some(Value::DoubleValue(*i as f64)),
        (ConvertedType::Double, Value::BoolValue(b)) => {
            Some(Value::DoubleValue(f64::from(u8::from(*b))))
        }
        (ConvertedType::String, Value::StringValue(_)) => None,
        (ConvertedType::String, other) => Some(Value::StringValue(as_string(other))),
        _ => None,
    };
    if let Some(converted) = converted {
        *value = Some(AnyValue {
            value: Some(converted),
        });
    }
}

#[cfg(test)]
mod tests;
