//! The parser: tokens, then a recursive descent over OTTL's boolean grammar
//! (`or` < `and` < `not` < comparison < value), resolving paths and converters for the
//! context as it goes, so that a condition that loads can be evaluated.

use super::{Call, Context, Expr, Field, Op, TypeTest, Val};
use std::borrow::Cow;

/// A condition that does not parse or check: what, and where (a byte offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub position: usize,
    pub message: String,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at column {}: {}", self.position + 1, self.message)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    Bytes(Vec<u8>),
    Op(Op),
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    Comma,
    Dot,
    End,
}

fn error<T>(position: usize, message: impl Into<String>) -> Result<T, Error> {
    Err(Error {
        position,
        message: message.into(),
    })
}

/// The longest condition accepted, in bytes (a bound on the parser's work and depth).
const MAX_LENGTH: usize = 8192;
/// The deepest nesting of parentheses and calls accepted.
const MAX_DEPTH: usize = 64;

fn tokens(text: &str) -> Result<Vec<(usize, Token)>, Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let byte = bytes[at];
        let token = match byte {
            b' ' | b'\t' | b'\n' | b'\r' => {
                at += 1;
                continue;
            }
            b'(' => Token::Open,
            b')' => Token::Close,
            b'[' => Token::OpenBracket,
            b']' => Token::CloseBracket,
            b',' => Token::Comma,
            b'.' => Token::Dot,
            b'=' | b'!' | b'<' | b'>' => {
                let two = bytes.get(at + 1) == Some(&b'=');
                let op = match (byte, two) {
                    (b'=', true) => Op::Eq,
                    (b'!', true) => Op::Ne,
                    (b'<', true) => Op::Le,
                    (b'>', true) => Op::Ge,
                    (b'<', false) => Op::Lt,
                    (b'>', false) => Op::Gt,
                    _ => return error(at, "expected `==` or `!=`"),
                };
                at += if two { 2 } else { 1 };
                out.push((start, Token::Op(op)));
                continue;
            }
            b'"' => {
                let (value, end) = string(text, at)?;
                at = end;
                out.push((start, Token::Str(value)));
                continue;
            }
            b'0' if bytes.get(at + 1) == Some(&b'x') => {
                let end = at
                    + 2
                    + bytes[at + 2..]
                        .iter()
                        .take_while(|b| b.is_ascii_hexdigit())
                        .count();
                let hex = &text[at + 2..end];
                if hex.is_empty() || hex.len() % 2 == 1 {
                    return error(at, "a bytes literal needs an even number of hex digits");
                }
                let value = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits"))
                    .collect();
                at = end;
                out.push((start, Token::Bytes(value)));
                continue;
            }
            b'0'..=b'9' | b'-' => {
                let end = at
                    + 1
                    + bytes[at + 1..]
                        .iter()
                        .take_while(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E'))
                        .count();
                let number = &text[at..end];
                let token = if number.contains(['.', 'e', 'E']) {
                    number.parse().map(Token::Float).ok()
                } else {
                    number.parse().map(Token::Int).ok()
                };
                let Some(token) = token else {
                    return error(at, format!("`{number}` is not a number"));
                };
                at = end;
                out.push((start, token));
                continue;
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let end = at
                    + bytes[at..]
                        .iter()
                        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                        .count();
                out.push((start, Token::Ident(text[at..end].to_string())));
                at = end;
                continue;
            }
            _ => {
                let shown = text[at..].chars().next().unwrap_or('?');
                return error(at, format!("unexpected `{shown}`"));
            }
        };
        out.push((start, token));
        at += 1;
    }
    out.push((text.len(), Token::End));
    Ok(out)
}

/// A string literal starting at `at` (a `"`): its value and the offset after it.
fn string(text: &str, at: usize) -> Result<(String, usize), Error> {
    let mut value = String::new();
    let mut chars = text[at + 1..].char_indices();
    while let Some((offset, c)) = chars.next() {
        match c {
            '"' => return Ok((value, at + 1 + offset + 1)),
            '\\' => match chars.next() {
                Some((_, '"')) => value.push('"'),
                Some((_, '\\')) => value.push('\\'),
                Some((_, 'n')) => value.push('\n'),
                Some((_, 't')) => value.push('\t'),
                Some((escape_at, other)) => {
                    return error(at + 1 + escape_at, format!("unknown escape `\\{other}`"))
                }
                None => break,
            },
            c => value.push(c),
        }
    }
    error(at, "a string is not closed")
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    at: usize,
    context: Context,
    depth: usize,
}

/// Parses and checks `text` for `context`.
pub fn parse(text: &str, context: Context) -> Result<Expr, Error> {
    if text.len() > MAX_LENGTH {
        return error(0, format!("a condition is at most {MAX_LENGTH} bytes"));
    }
    let mut parser = Parser {
        tokens: tokens(text)?,
        at: 0,
        context,
        depth: 0,
    };
    let expr = parser.or()?;
    match parser.peek() {
        Token::End => Ok(expr),
        other => error(parser.position(), format!("unexpected {}", describe(other))),
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::Ident(name) => format!("`{name}`"),
        Token::Str(s) => format!("string \"{s}\""),
        Token::Int(i) => format!("`{i}`"),
        Token::Float(f) => format!("`{f}`"),
        Token::Bytes(_) => "a bytes literal".into(),
        Token::Op(_) => "an operator".into(),
        Token::Open => "`(`".into(),
        Token::Close => "`)`".into(),
        Token::OpenBracket => "`[`".into(),
        Token::CloseBracket => "`]`".into(),
        Token::Comma => "`,`".into(),
        Token::Dot => "`.`".into(),
        Token::End => "the end".into(),
    }
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.at].1
    }

    fn position(&self) -> usize {
        self.tokens[self.at].0
    }

    fn next(&mut self) -> (usize, Token) {
        let token = self.tokens[self.at].clone();
        if token.1 != Token::End {
            self.at += 1;
        }
        token
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Token::Ident(name) if name == word)
    }

    fn expect(&mut self, wanted: Token, what: &str) -> Result<(), Error> {
        let (position, token) = self.next();
        if token == wanted {
            return Ok(());
        }
        error(
            position,
            format!("expected {what}, found {}", describe(&token)),
        )
    }

    fn deeper(&mut self) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return error(
                self.position(),
                format!("nested more than {MAX_DEPTH} deep"),
            );
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, Error> {
        let mut all = vec![self.and()?];
        while self.keyword("or") {
            self.next();
            all.push(self.and()?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Expr::Or(all)
        })
    }

    fn and(&mut self) -> Result<Expr, Error> {
        let mut all = vec![self.not()?];
        while self.keyword("and") {
            self.next();
            all.push(self.not()?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Expr::And(all)
        })
    }

    fn not(&mut self) -> Result<Expr, Error> {
        if self.keyword("not") {
            self.next();
            self.deeper()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, Error> {
        let left = self.value()?;
        if let Token::Op(op) = *self.peek() {
            self.next();
            let right = self.value()?;
            return Ok(Expr::Compare(Box::new(left), op, Box::new(right)));
        }
        Ok(left)
    }

    fn value(&mut self) -> Result<Expr, Error> {
        let (position, token) = self.next();
        match token {
            Token::Open => {
                self.deeper()?;
                let inner = self.or()?;
                self.depth -= 1;
                self.expect(Token::Close, "`)`")?;
                Ok(inner)
            }
            Token::Str(s) => Ok(Expr::Literal(Val::Str(Cow::Owned(s)))),
            Token::Int(i) => Ok(Expr::Literal(Val::Int(i))),
            Token::Float(f) => Ok(Expr::Literal(Val::Float(f))),
            Token::Bytes(b) => Ok(Expr::Literal(Val::Bytes(Cow::Owned(b)))),
            Token::Ident(name) => self.named(position, name),
            other => error(
                position,
                format!("expected a value, found {}", describe(&other)),
            ),
        }
    }

    /// A keyword literal, an enum, a converter call or a path.
    fn named(&mut self, position: usize, name: String) -> Result<Expr, Error> {
        match name.as_str() {
            "true" => return Ok(Expr::Literal(Val::Bool(true))),
            "false" => return Ok(Expr::Literal(Val::Bool(false))),
            "nil" => return Ok(Expr::Literal(Val::Nil)),
            _ => {}
        }
        if let Some(value) = enum_value(&name) {
            return Ok(Expr::Literal(Val::Int(value)));
        }
        if *self.peek() == Token::Open {
            return self.call(position, &name);
        }
        if name.starts_with(|c: char| c.is_ascii_uppercase()) {
            return error(
                position,
                format!("`{name}` is not an enum or converter sieve knows"),
            );
        }
        let mut segments = vec![name];
        while *self.peek() == Token::Dot {
            self.next();
            match self.next() {
                (_, Token::Ident(part)) => segments.push(part),
                (at, other) => {
                    return error(
                        at,
                        format!("expected a name after `.`, found {}", describe(&other)),
                    )
                }
            }
        }
        let mut keys = Vec::new();
        while *self.peek() == Token::OpenBracket {
            self.next();
            match self.next() {
                (_, Token::Str(key)) => keys.push(key),
                (at, other) => {
                    return error(
                        at,
                        format!("expected a string key, found {}", describe(&other)),
                    )
                }
            }
            self.expect(Token::CloseBracket, "`]`")?;
        }
        let shown: String = keys.iter().map(|k| format!("[\"{k}\"]")).collect();
        let path = segments.join(".");
        field(self.context, &segments, keys)
            .map(Expr::Path)
            .ok_or_else(|| Error {
                position,
                message: format!(
                    "`{path}{shown}` is not a path of the {} context",
                    context_name(self.context)
                ),
            })
    }

    fn arguments(&mut self) -> Result<Vec<(usize, Expr)>, Error> {
        self.expect(Token::Open, "`(`")?;
        self.deeper()?;
        let mut arguments = Vec::new();
        if *self.peek() != Token::Close {
            loop {
                let position = self.position();
                arguments.push((position, self.or()?));
                match self.next() {
                    (_, Token::Comma) => continue,
                    (_, Token::Close) => break,
                    (at, other) => {
                        return error(
                            at,
                            format!("expected `,` or `)`, found {}", describe(&other)),
                        )
                    }
                }
            }
        } else {
            self.next();
        }
        self.depth -= 1;
        Ok(arguments)
    }

    fn call(&mut self, position: usize, name: &str) -> Result<Expr, Error> {
        let mut arguments = self.arguments()?;
        let arity = |n: usize| -> Result<(), Error> {
            if arguments.len() == n {
                return Ok(());
            }
            error(
                position,
                format!(
                    "`{name}` takes {n} argument{}",
                    if n == 1 { "" } else { "s" }
                ),
            )
        };
        let literal = |argument: (usize, Expr), what: &str| -> Result<String, Error> {
            match argument.1 {
                Expr::Literal(Val::Str(s)) => Ok(s.into_owned()),
                _ => error(
                    argument.0,
                    format!("`{name}` needs {what} as a string literal"),
                ),
            }
        };
        let test = |t: TypeTest| Some(t);
        let type_test = match name {
            "IsString" => test(TypeTest::String),
            "IsInt" => test(TypeTest::Int),
            "IsDouble" => test(TypeTest::Double),
            "IsBool" => test(TypeTest::Bool),
            "IsMap" => test(TypeTest::Map),
            "IsList" => test(TypeTest::List),
            _ => None,
        };
        if let Some(t) = type_test {
            arity(1)?;
            return Ok(Expr::Call(Call::IsType(Box::new(arguments.remove(0).1), t)));
        }
        let call = match name {
            "IsMatch" => {
                arity(2)?;
                let pattern_argument = arguments.pop().expect("arity");
                let at = pattern_argument.0;
                let pattern = literal(pattern_argument, "its pattern")?;
                let regex = regex::Regex::new(&pattern)
                    .map_err(|e| Error { position: at, message: format!("not a regular expression: {e}") })?;
                Call::IsMatch(Box::new(arguments.remove(0).1), regex)
            }
            "Len" => {
                arity(1)?;
                Call::Len(Box::new(arguments.remove(0).1))
            }
            "HasPrefix" | "HasSuffix" => {
                arity(2)?;
                let affix = literal(arguments.pop().expect("arity"), "its prefix or suffix")?;
                let target = Box::new(arguments.remove(0).1);
                match name {
                    "HasPrefix" => Call::HasPrefix(target, affix),
                    _ => Call::HasSuffix(target, affix),
                }
            }
            "TraceID" | "SpanID" => {
                arity(1)?;
                let (at, argument) = arguments.remove(0);
                let want = if name == "TraceID" { 16 } else { 8 };
                return match argument {
                    Expr::Literal(Val::Bytes(b)) if b.len() == want => Ok(Expr::Literal(Val::Bytes(b))),
                    _ => error(at, format!("`{name}` takes a {want}-byte literal like 0x0102...")),
                };
            }
            _ => return error(position, format!("`{name}` is not a converter sieve has (IsMatch, IsString, IsInt, IsDouble, IsBool, IsMap, IsList, Len, HasPrefix, HasSuffix, TraceID, SpanID)")),
        };
        Ok(Expr::Call(call))
    }
}

fn context_name(context: Context) -> &'static str {
    match context {
        Context::Resource => "resource",
        Context::Span => "span",
        Context::SpanEvent => "spanevent",
        Context::Log => "log",
        Context::Metric => "metric",
        Context::DataPoint => "datapoint",
    }
}

/// The field a path names in `context`.
fn field(context: Context, segments: &[String], keys: Vec<String>) -> Option<Field> {
    let path: Vec<&str> = segments.iter().map(String::as_str).collect();
    let keyed = |f: fn(Vec<String>) -> Field| Some(f(keys.clone()));
    let plain = |f: Field| keys.is_empty().then_some(f);
    // paths every context except resource has
    let shared = match path.as_slice() {
        ["resource", "attributes"] => keyed(Field::ResourceAttributes),
        ["instrumentation_scope", "name"] => plain(Field::ScopeName),
        ["instrumentation_scope", "version"] => plain(Field::ScopeVersion),
        ["instrumentation_scope", "attributes"] => keyed(Field::ScopeAttributes),
        _ => None,
    };
    if context != Context::Resource && shared.is_some() {
        return shared;
    }
    let id = |f: Field| plain(f);
    let id_string = |f: Field| plain(Field::IdString(Box::new(f)));
    match (context, path.as_slice()) {
        (Context::Resource, ["attributes"]) => keyed(Field::Attributes),
        (Context::Span, ["name"]) => plain(Field::Name),
        (Context::Span, ["kind"]) => plain(Field::Kind),
        (Context::Span, ["status", "code"]) => plain(Field::StatusCode),
        (Context::Span, ["status", "message"]) => plain(Field::StatusMessage),
        (Context::Span | Context::Log, ["trace_id"]) => id(Field::TraceId),
        (Context::Span | Context::Log, ["span_id"]) => id(Field::SpanId),
        (Context::Span, ["parent_span_id"]) => id(Field::ParentSpanId),
        (Context::Span | Context::Log, ["trace_id", "string"]) => id_string(Field::TraceId),
        (Context::Span | Context::Log, ["span_id", "string"]) => id_string(Field::SpanId),
        (Context::Span, ["parent_span_id", "string"]) => id_string(Field::ParentSpanId),
        (Context::Span, ["trace_state"]) => plain(Field::TraceState),
        (Context::Span, ["start_time_unix_nano"]) => plain(Field::StartTime),
        (Context::Span, ["end_time_unix_nano"]) => plain(Field::EndTime),
        (
            Context::Span | Context::SpanEvent | Context::Log | Context::DataPoint,
            ["attributes"],
        ) => keyed(Field::Attributes),
        (Context::SpanEvent, ["name"]) => plain(Field::Name),
        (Context::SpanEvent, ["time_unix_nano"]) => plain(Field::Time),
        (Context::SpanEvent, ["span", "name"]) => plain(Field::SpanName),
        (Context::Log, ["body"]) => keyed(Field::Body),
        (Context::Log, ["severity_number"]) => plain(Field::SeverityNumber),
        (Context::Log, ["severity_text"]) => plain(Field::SeverityText),
        (Context::Log, ["flags"]) => plain(Field::Flags),
        (Context::Log | Context::DataPoint, ["time_unix_nano"]) => plain(Field::Time),
        (Context::Log, ["observed_time_unix_nano"]) => plain(Field::ObservedTime),
        (Context::Metric, ["name"]) => plain(Field::MetricName),
        (Context::Metric | Context::DataPoint, ["metric", "name"]) => plain(Field::MetricName),
        (Context::Metric, ["type"]) => plain(Field::MetricType),
        (Context::Metric | Context::DataPoint, ["metric", "type"]) => plain(Field::MetricType),
        (Context::Metric, ["unit"]) => plain(Field::MetricUnit),
        (Context::Metric | Context::DataPoint, ["metric", "unit"]) => plain(Field::MetricUnit),
        (Context::Metric, ["description"]) => plain(Field::MetricDescription),
        (Context::Metric | Context::DataPoint, ["metric", "description"]) => {
            plain(Field::MetricDescription)
        }
        (Context::DataPoint, ["value_int"]) => plain(Field::ValueInt),
        (Context::DataPoint, ["value_double"]) => plain(Field::ValueDouble),
        _ => None,
    }
}

/// The OTTL enums sieve knows, as their numbers.
fn enum_value(name: &str) -> Option<i64> {
    const KINDS: [&str; 6] = [
        "SPAN_KIND_UNSPECIFIED",
        "SPAN_KIND_INTERNAL",
        "SPAN_KIND_SERVER",
        "SPAN_KIND_CLIENT",
        "SPAN_KIND_PRODUCER",
        "SPAN_KIND_CONSUMER",
    ];
    const STATUS: [&str; 3] = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];
    const METRIC_TYPES: [&str; 6] = [
        "METRIC_DATA_TYPE_NONE",
        "METRIC_DATA_TYPE_GAUGE",
        "METRIC_DATA_TYPE_SUM",
        "METRIC_DATA_TYPE_HISTOGRAM",
        "METRIC_DATA_TYPE_EXPONENTIAL_HISTOGRAM",
        "METRIC_DATA_TYPE_SUMMARY",
    ];
    const TEMPORALITY: [&str; 3] = [
        "AGGREGATION_TEMPORALITY_UNSPECIFIED",
        "AGGREGATION_TEMPORALITY_DELTA",
        "AGGREGATION_TEMPORALITY_CUMULATIVE",
    ];
    for table in [&KINDS[..], &STATUS, &METRIC_TYPES, &TEMPORALITY] {
        if let Some(at) = table.iter().position(|n| *n == name) {
            return Some(at as i64);
        }
    }
    let severity = name.strip_prefix("SEVERITY_NUMBER_")?;
    // the enum's names are uppercase
    (severity == severity.to_ascii_uppercase())
        .then(|| crate::model::severity_number(severity).map(i64::from))
        .flatten()
}
