//! Syslog message parsing: RFC 5424 and RFC 3164 (BSD), without panics on any input.
//!
//! * Bytes that are not UTF-8 are replaced with U+FFFD (documented lossy choice); a UTF-8
//!   BOM at the start of an RFC 5424 MSG is removed.
//! * Control characters and newlines inside a message are kept as data in the body; they
//!   are never interpreted (framing happened before parsing, see [`super::framing`]).
//! * RFC 5424: `-` (NILVALUE) in every header field and for structured data; timestamps
//!   with fractional seconds and offsets; SD-PARAM values with `\"`, `\\` and `\]` escapes.
//! * RFC 3164: `Mmm dd hh:mm:ss` has no year or zone: the zone is the configured
//!   `location` and the year is the most recent one (of last, this and next year) that
//!   does not put the time more than [`FUTURE_WINDOW`] ahead of now. Messages describe
//!   the past, so a `Feb  5` line read in December is this February (not next, which Loki
//!   would refuse as from the future); a December line read on January 1st is last year;
//!   a `Jan  1 00:01` line read a minute before midnight on December 31st (a clock
//!   slightly ahead) is next year.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// How far ahead of now an RFC 3164 timestamp may be (clocks differ): beyond it, the
/// year before is meant.
pub const FUTURE_WINDOW: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// An SD-ELEMENT: its SD-ID and its (name, value) parameters.
pub type SdElement = (String, Vec<(String, String)>);

/// A parsed message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub facility: u8,
    pub severity: u8,
    pub version: Option<u32>,
    /// Nanoseconds since the Unix epoch, if the message had a timestamp.
    pub timestamp: Option<i64>,
    pub hostname: Option<String>,
    pub appname: Option<String>,
    pub procid: Option<String>,
    pub msgid: Option<String>,
    /// (SD-ID, [(param name, value)]).
    pub structured_data: Vec<SdElement>,
    pub message: String,
}

/// Why a message could not be parsed; the names are the `reason` labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    Pri,
    Version,
    Timestamp,
    Header,
    StructuredData,
}

impl ParseError {
    pub fn reason(self) -> &'static str {
        match self {
            ParseError::Pri => "bad_pri",
            ParseError::Version => "bad_version",
            ParseError::Timestamp => "bad_timestamp",
            ParseError::Header => "bad_header",
            ParseError::StructuredData => "bad_structured_data",
        }
    }
}

/// `<PRI>`: returns (facility, severity, rest).
fn pri(input: &str) -> Result<(u8, u8, &str), ParseError> {
    let rest = input.strip_prefix('<').ok_or(ParseError::Pri)?;
    let end = rest.find('>').ok_or(ParseError::Pri)?;
    let digits = &rest[..end];
    if digits.is_empty()
        || digits.len() > 3
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return Err(ParseError::Pri);
    }
    let value: u16 = digits.parse().map_err(|_| ParseError::Pri)?;
    if value > 191 {
        return Err(ParseError::Pri);
    }
    Ok(((value / 8) as u8, (value % 8) as u8, &rest[end + 1..]))
}

/// Splits off the next space-separated field.
fn field(input: &str) -> Result<(&str, &str), ParseError> {
    let (value, rest) = input.split_once(' ').unwrap_or((input, ""));
    if value.is_empty() {
        return Err(ParseError::Header);
    }
    Ok((value, rest))
}

fn nil(value: &str) -> Option<String> {
    (value != "-").then(|| value.to_string())
}

/// Parses an RFC 5424 message.
pub fn rfc5424(input: &str) -> Result<Message, ParseError> {
    let (facility, severity, rest) = pri(input)?;
    let (version, rest) = field(rest).map_err(|_| ParseError::Version)?;
    let version: u32 = version
        .parse()
        .ok()
        .filter(|v| (1..=999).contains(v))
        .ok_or(ParseError::Version)?;
    let (timestamp, rest) = field(rest)?;
    let timestamp = match timestamp {
        "-" => None,
        t => Some(
            DateTime::parse_from_rfc3339(t)
                .map_err(|_| ParseError::Timestamp)?
                .timestamp_nanos_opt()
                .ok_or(ParseError::Timestamp)?,
        ),
    };
    let (hostname, rest) = field(rest)?;
    let (appname, rest) = field(rest)?;
    let (procid, rest) = field(rest)?;
    let (msgid, rest) = field(rest)?;
    let (structured_data, rest) = structured_data(rest)?;
    let message = rest.strip_prefix(' ').unwrap_or(rest);
    let message = message.strip_prefix('\u{feff}').unwrap_or(message);
    Ok(Message {
        facility,
        severity,
        version: Some(version),
        timestamp,
        hostname: nil(hostname),
        appname: nil(appname),
        procid: nil(procid),
        msgid: nil(msgid),
        structured_data,
        message: message.to_string(),
    })
}

fn structured_data(input: &str) -> Result<(Vec<SdElement>, &str), ParseError> {
    if let Some(rest) = input.strip_prefix('-') {
        return Ok((Vec::new(), rest));
    }
    let mut elements = Vec::new();
    let mut rest = input;
    while let Some(after) = rest.strip_prefix('[') {
        let (element, remaining) = sd_element(after)?;
        elements.push(element);
        rest = remaining;
    }
    if elements.is_empty() {
        return Err(ParseError::StructuredData);
    }
    Ok((elements, rest))
}

/// One `[SD-ID param="value" ...]` after its `[`.
fn sd_element(input: &str) -> Result<(SdElement, &str), ParseError> {
    let id_end = input.find([' ', ']']).ok_or(ParseError::StructuredData)?;
    let id = &input[..id_end];
    if id.is_empty() || id.contains(['=', '"']) {
        return Err(ParseError::StructuredData);
    }
    let mut params = Vec::new();
    let mut rest = &input[id_end..];
    loop {
        if let Some(after) = rest.strip_prefix(']') {
            return Ok(((id.to_string(), params), after));
        }
        rest = rest.strip_prefix(' ').ok_or(ParseError::StructuredData)?;
        let eq = rest.find('=').ok_or(ParseError::StructuredData)?;
        let name = &rest[..eq];
        if name.is_empty() || name.contains([' ', ']', '"']) {
            return Err(ParseError::StructuredData);
        }
        let value_start = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or(ParseError::StructuredData)?;
        let (value, after) = quoted(value_start)?;
        params.push((name.to_string(), value));
        rest = after;
    }
}

/// A PARAM-VALUE up to its closing quote, unescaping `\"`, `\\` and `\]`.
fn quoted(input: &str) -> Result<(String, &str), ParseError> {
    let mut value = String::new();
    let mut chars = input.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &input[i + 1..])),
            '\\' => match chars.clone().next() {
                Some((_, next @ ('"' | '\\' | ']'))) => {
                    value.push(next);
                    chars.next();
                }
                _ => value.push('\\'),
            },
            other => value.push(other),
        }
    }
    Err(ParseError::StructuredData)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Parses an RFC 3164 message; `now` and `zone` resolve the timestamp's year and offset.
pub fn rfc3164(input: &str, zone: Tz, now: DateTime<Utc>) -> Result<Message, ParseError> {
    let (facility, severity, rest) = pri(input)?;
    let (timestamp, rest) = bsd_timestamp(rest, zone, now)?;
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let (hostname, rest) = match rest.split_once(' ') {
        Some((host, after)) if !host.ends_with(':') && !host.contains('[') => {
            (Some(host.to_string()), after)
        }
        _ => (None, rest),
    };
    let (appname, procid, message) = tag(rest);
    Ok(Message {
        facility,
        severity,
        version: None,
        timestamp,
        hostname,
        appname,
        procid,
        msgid: None,
        structured_data: Vec::new(),
        message: message.to_string(),
    })
}

/// `TAG[PID]: MSG`; a message without a tag is all message.
fn tag(input: &str) -> (Option<String>, Option<String>, &str) {
    let tag_end = input.find([':', '[', ' ']).unwrap_or(input.len());
    let name = &input[..tag_end];
    if name.is_empty() || name.len() > 48 {
        return (None, None, input);
    }
    let after = &input[tag_end..];
    if let Some(pid_part) = after.strip_prefix('[') {
        if let Some((pid, message)) = pid_part.split_once("]:") {
            return (
                Some(name.into()),
                Some(pid.into()),
                message.strip_prefix(' ').unwrap_or(message),
            );
        }
    }
    match after.strip_prefix(':') {
        Some(message) => (
            Some(name.into()),
            None,
            message.strip_prefix(' ').unwrap_or(message),
        ),
        None => (None, None, input),
    }
}

/// `Mmm dd hh:mm:ss` (day space-padded or not).
fn bsd_timestamp(
    input: &str,
    zone: Tz,
    now: DateTime<Utc>,
) -> Result<(Option<i64>, &str), ParseError> {
    // the timestamp is ASCII; anything else there is not a timestamp (and slicing it by
    // byte offsets would split a character)
    if input.len() < 15 || !input.as_bytes()[..15].is_ascii() {
        return Err(ParseError::Timestamp);
    }
    let (text, rest) = input.split_at(15);
    let month = MONTHS
        .iter()
        .position(|m| text.starts_with(m))
        .ok_or(ParseError::Timestamp)? as u32
        + 1;
    let day: u32 = text[4..6]
        .trim()
        .parse()
        .map_err(|_| ParseError::Timestamp)?;
    let time = chrono::NaiveTime::parse_from_str(&text[7..15], "%H:%M:%S")
        .map_err(|_| ParseError::Timestamp)?;
    let now_local = now.with_timezone(&zone);
    let latest_allowed = now + FUTURE_WINDOW;
    let best = [now_local.year() - 1, now_local.year(), now_local.year() + 1]
        .into_iter()
        .filter_map(|year| {
            let naive = NaiveDateTime::new(NaiveDate::from_ymd_opt(year, month, day)?, time);
            zone.from_local_datetime(&naive).earliest()
        })
        .filter(|t| t.with_timezone(&Utc) <= latest_allowed)
        .max()
        .ok_or(ParseError::Timestamp)?;
    Ok((best.timestamp_nanos_opt(), rest))
}

#[cfg(test)]
#[path = "parse/tests.rs"]
mod tests;
