//! Boolean OTTL conditions (the OpenTelemetry Transformation Language's grammar, as the
//! collector's `filter` processor and `routing` connector use it), parsed and
//! type-checked when the configuration loads, evaluated per item.
//!
//! The subset: paths into the item of a context (`name`, `kind`, `status.code`,
//! `attributes["k"]` with nested map keys, `resource.attributes[...]`,
//! `instrumentation_scope.name`, `body`, `severity_number`, `metric.name`, ...; see
//! [`Field`]), literals (strings, ints, floats, `true`, `false`, `nil`, `0x` bytes), the
//! enums (`SPAN_KIND_SERVER`, `STATUS_CODE_ERROR`, `SEVERITY_NUMBER_WARN`,
//! `METRIC_DATA_TYPE_SUM`, ...), `==`, `!=`, `<`, `<=`, `>`, `>=`, `and`, `or`, `not`,
//! parentheses, and the converters `IsMatch`, `IsString`, `IsInt`, `IsDouble`,
//! `IsBool`, `IsMap`, `IsList`, `Len`, `HasPrefix`, `HasSuffix`, `TraceID`, `SpanID`.
//! Anything else is refused with its position; nothing is ignored.
//!
//! Comparison follows OTTL: values of different types are unequal (an int and a double
//! compare as numbers), `nil` equals only `nil`, and ordering applies to numbers and to
//! strings; otherwise it is false. A path into something absent (a missing attribute,
//! a key into a non-map) is `nil`, so evaluation never fails.

pub mod items;
mod parse;
#[cfg(test)]
mod tests;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
pub use parse::Error;
use regex::Regex;
use std::borrow::Cow;

/// The kind of item a condition is evaluated on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Resource,
    Span,
    SpanEvent,
    Log,
    Metric,
    DataPoint,
}

/// A field of an item a path reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Name,
    Kind,
    StatusCode,
    StatusMessage,
    TraceId,
    SpanId,
    ParentSpanId,
    /// `trace_id.string` and the like: the id in lowercase hex.
    IdString(Box<Field>),
    TraceState,
    StartTime,
    EndTime,
    Time,
    ObservedTime,
    SeverityNumber,
    SeverityText,
    Flags,
    Body(Vec<String>),
    Attributes(Vec<String>),
    ResourceAttributes(Vec<String>),
    ScopeName,
    ScopeVersion,
    ScopeAttributes(Vec<String>),
    /// The span a span event belongs to: its name.
    SpanName,
    MetricName,
    MetricType,
    MetricUnit,
    MetricDescription,
    ValueInt,
    ValueDouble,
}

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    Nil,
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Bytes(Cow<'a, [u8]>),
    Map(&'a [KeyValue]),
    List(&'a [AnyValue]),
}

impl<'a> Val<'a> {
    /// An attribute value, or `nil`.
    pub fn of(value: Option<&'a AnyValue>) -> Val<'a> {
        match value.and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => Val::Str(Cow::Borrowed(s)),
            Some(any_value::Value::IntValue(i)) => Val::Int(*i),
            Some(any_value::Value::DoubleValue(d)) => Val::Float(*d),
            Some(any_value::Value::BoolValue(b)) => Val::Bool(*b),
            Some(any_value::Value::BytesValue(b)) => Val::Bytes(Cow::Borrowed(b)),
            Some(any_value::Value::KvlistValue(m)) => Val::Map(&m.values),
            Some(any_value::Value::ArrayValue(a)) => Val::List(&a.values),
            _ => Val::Nil,
        }
    }

    /// `map[keys...]`: the value under the keys, `nil` where one is missing.
    pub fn lookup(attributes: &'a [KeyValue], keys: &[String]) -> Val<'a> {
        let Some((first, rest)) = keys.split_first() else {
            return Val::Map(attributes);
        };
        let value = attributes
            .iter()
            .find(|kv| kv.key == *first)
            .map(|kv| Val::of(kv.value.as_ref()))
            .unwrap_or(Val::Nil);
        match (value, rest.is_empty()) {
            (value, true) => value,
            (Val::Map(inner), false) => Val::lookup(inner, rest),
            _ => Val::Nil,
        }
    }
}

/// An item conditions are evaluated on.
pub trait Item {
    /// The value of `field` (only fields of the item's context are asked for).
    fn field(&self, field: &Field) -> Val<'_>;
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A converter (an OTTL function returning a value).
#[derive(Debug)]
pub enum Call {
    IsMatch(Box<Expr>, Regex),
    IsType(Box<Expr>, TypeTest),
    Len(Box<Expr>),
    HasPrefix(Box<Expr>, String),
    HasSuffix(Box<Expr>, String),
}

/// What an `Is...` converter tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeTest {
    String,
    Int,
    Double,
    Bool,
    Map,
    List,
}

/// A compiled expression.
#[derive(Debug)]
pub enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Compare(Box<Expr>, Op, Box<Expr>),
    Literal(Val<'static>),
    Path(Field),
    Call(Call),
}

/// A condition, compiled for one context.
#[derive(Debug)]
pub struct Condition {
    expr: Expr,
    text: String,
    context: Context,
}

impl Condition {
    /// Parses and checks `text` for items of `context`.
    pub fn new(text: &str, context: Context) -> Result<Condition, Error> {
        let expr = parse::parse(text, context)?;
        Ok(Condition {
            expr,
            text: text.to_string(),
            context,
        })
    }

    /// Whether `item` matches.
    pub fn matches(&self, item: &dyn Item) -> bool {
        truthy(&evaluate(&self.expr, item))
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The context it was compiled for.
    pub fn context(&self) -> Context {
        self.context
    }
}

/// A condition's value as a boolean: only `true` is true.
fn truthy(value: &Val) -> bool {
    matches!(value, Val::Bool(true))
}

fn evaluate<'a>(expr: &'a Expr, item: &'a dyn Item) -> Val<'a> {
    match expr {
        Expr::Or(all) => Val::Bool(all.iter().any(|e| truthy(&evaluate(e, item)))),
        Expr::And(all) => Val::Bool(all.iter().all(|e| truthy(&evaluate(e, item)))),
        Expr::Not(inner) => Val::Bool(!truthy(&evaluate(inner, item))),
        Expr::Compare(left, op, right) => {
            Val::Bool(compare(&evaluate(left, item), *op, &evaluate(right, item)))
        }
        Expr::Literal(value) => value.clone(),
        Expr::Path(field) => item.field(field),
        Expr::Call(call) => call_converter(call, item),
    }
}

fn call_converter<'a>(call: &'a Call, item: &'a dyn Item) -> Val<'a> {
    match call {
        Call::IsMatch(target, pattern) => {
            Val::Bool(text_of(&evaluate(target, item)).is_some_and(|text| pattern.is_match(&text)))
        }
        Call::IsType(target, test) => {
            let value = evaluate(target, item);
            Val::Bool(matches!(
                (test, &value),
                (TypeTest::String, Val::Str(_))
                    | (TypeTest::Int, Val::Int(_))
                    | (TypeTest::Double, Val::Float(_))
                    | (TypeTest::Bool, Val::Bool(_))
                    | (TypeTest::Map, Val::Map(_))
                    | (TypeTest::List, Val::List(_))
            ))
        }
        Call::Len(target) => match evaluate(target, item) {
            Val::Str(s) => Val::Int(s.chars().count() as i64),
            Val::Bytes(b) => Val::Int(b.len() as i64),
            Val::Map(m) => Val::Int(m.len() as i64),
            Val::List(l) => Val::Int(l.len() as i64),
            _ => Val::Nil,
        },
        Call::HasPrefix(target, prefix) => Val::Bool(matches!(
            evaluate(target, item), Val::Str(s) if s.starts_with(prefix.as_str())
        )),
        Call::HasSuffix(target, suffix) => Val::Bool(matches!(
            evaluate(target, item), Val::Str(s) if s.ends_with(suffix.as_str())
        )),
    }
}

/// A value as `IsMatch` reads it: strings as they are, numbers and booleans as text.
fn text_of<'a>(value: &'a Val) -> Option<Cow<'a, str>> {
    match value {
        Val::Str(s) => Some(Cow::Borrowed(s.as_ref())),
        Val::Int(i) => Some(Cow::Owned(i.to_string())),
        Val::Float(f) => Some(Cow::Owned(f.to_string())),
        Val::Bool(b) => Some(Cow::Owned(b.to_string())),
        _ => None,
    }
}

fn compare(left: &Val, op: Op, right: &Val) -> bool {
    use std::cmp::Ordering;
    let ordering: Option<Ordering> = match (left, right) {
        (Val::Nil, Val::Nil) => Some(Ordering::Equal),
        (Val::Str(a), Val::Str(b)) => Some(a.cmp(b)),
        (Val::Int(a), Val::Int(b)) => Some(a.cmp(b)),
        (Val::Float(a), Val::Float(b)) => a.partial_cmp(b),
        (Val::Int(a), Val::Float(b)) => (*a as f64).partial_cmp(b),
        (Val::Float(a), Val::Int(b)) => a.partial_cmp(&(*b as f64)),
        (Val::Bool(a), Val::Bool(b)) if matches!(op, Op::Eq | Op::Ne) => Some(a.cmp(b)),
        (Val::Bytes(a), Val::Bytes(b)) if matches!(op, Op::Eq | Op::Ne) => Some(a.cmp(b)),
        (Val::Map(a), Val::Map(b)) if matches!(op, Op::Eq | Op::Ne) => Some(if a == b {
            Ordering::Equal
        } else {
            Ordering::Less
        }),
        (Val::List(a), Val::List(b)) if matches!(op, Op::Eq | Op::Ne) => Some(if a == b {
            Ordering::Equal
        } else {
            Ordering::Less
        }),
        _ => None,
    };
    match (op, ordering) {
        (Op::Eq, found) => found == Some(Ordering::Equal),
        (Op::Ne, found) => found != Some(Ordering::Equal),
        (_, None) => false,
        (Op::Lt, Some(o)) => o == Ordering::Less,
        (Op::Le, Some(o)) => o != Ordering::Greater,
        (Op::Gt, Some(o)) => o == Ordering::Greater,
        (Op::Ge, Some(o)) => o != Ordering::Less,
    }
}
