//! The built-in PII detectors: a pattern that finds candidates and, where a pattern alone
//! would be wrong too often, a check on the candidate and its context.
//!
//! | detector | finds | check |
//! |---|---|---|
//! | `email` | `local@domain.tld` | — |
//! | `credit_card` | 13–19 digits, plain or grouped 4-4-4-x / 4-6-5 by spaces or dashes | Luhn checksum |
//! | `ipv4` | dotted quads of 0–255 | not a version (`v1.2.3.4`, `version 1.2.3.4`), not part of a longer dotted number; private, loopback and link-local kept when `keep_private_ips` |
//! | `ipv6` | hex groups with colons | parses as an IPv6 address (times like `12:30:45` do not) |
//! | `us_ssn` | `AAA-GG-SSSS` | area not 000, 666 or 9xx; group not 00; serial not 0000 |
//! | `phone` | E.164 (`+` and 8–15 digits) and North American `(555) 123-4567` forms | — |
//! | `jwt` | `eyJ….….…` | — |
//! | `bearer_token` | `Bearer <token>` (and whole values of `authorization` keys) | — |
//! | `aws_access_key` | `AKIA`/`ASIA` + 16 | — |
//! | `private_key` | PEM `-----BEGIN … PRIVATE KEY-----` blocks | — |
//! | `iban` | country, check digits, 11–30 alphanumerics | ISO 13616 mod-97 |
//!
//! The two detectors that run on most strings of real spans (an email in a URL, a client
//! address) have hand-written finders ([`Detector::find`]) that return exactly what their
//! pattern's `find_iter` returns — leftmost-first, non-overlapping, `\b` as the `regex`
//! crate's Unicode word boundary — at a fraction of its cost: they look only around each
//! `@` or each dot (found with `memchr`). A property test holds them to the patterns.
//!
//! Before any of that, a prefilter ([`Prefilter`]) decides from one counting pass over the
//! text ([`Profile`]) which patterns can match at all; the counts are kept in one
//! register (7 bits a class), so no byte waits on the count of the byte before.

use memchr::memmem::Finder as Literal;
use regex::Regex;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

/// A match candidate check: the whole text and the candidate's byte range.
pub type Check = fn(text: &str, start: usize, end: usize, keep_private_ips: bool) -> bool;

/// A hand-written finder: calls `found` with each match's byte range, in order.
pub type Finder = fn(text: &str, found: &mut dyn FnMut(usize, usize));

/// One detector.
pub struct Detector {
    pub name: &'static str,
    pub pattern: &'static str,
    pub check: Option<Check>,
    /// Finds the pattern's matches without the regex engine, as `find_iter` would.
    pub find: Option<Finder>,
    /// What a text must hold for the pattern to match anywhere in it.
    pub prefilter: Prefilter,
}

/// A built-in detector's prefilter: [`Prefilter::possible`] says, from a text's
/// [`Profile`], whether the pattern can match anywhere in it (false: it cannot). Each is
/// a necessary condition read off the pattern (the digits, dots or capitals it needs),
/// never a guess; one `match`, so testing all of them costs a few instructions each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefilter {
    Email,
    CreditCard,
    Ipv4,
    Ipv6,
    UsSsn,
    Phone,
    Jwt,
    BearerToken,
    AwsAccessKey,
    PrivateKey,
    Iban,
}

impl Prefilter {
    #[inline]
    pub fn possible(self, p: &Profile) -> bool {
        match self {
            Prefilter::Email => p.at && p.dots > 0,
            Prefilter::CreditCard => p.digits >= 13 && p.digit_runs().grouped >= 13,
            // three dots and an octet's digit on each side of them
            Prefilter::Ipv4 => p.dots >= 3 && p.digits >= 4,
            Prefilter::Ipv6 => p.colons >= 2,
            Prefilter::UsSsn => p.digits >= 9 && p.dashes >= 2 && p.digit_runs().grouped >= 9,
            Prefilter::Phone => {
                p.digits >= 8 && {
                    let runs = p.digit_runs();
                    runs.phone >= 10 || (p.plus && runs.phone >= 8)
                }
            }
            Prefilter::Jwt => p.dots >= 2 && p.uppercase >= 1 && p.contains(&JWT_START),
            Prefilter::BearerToken => p.bytes.len() >= 15 && p.b && p.contains_bearer(),
            Prefilter::AwsAccessKey => {
                p.uppercase >= 4
                    && p.uppercase + p.digits >= 20
                    && (p.contains(&AWS_KEY_START) || p.contains(&AWS_TEMPORARY_KEY_START))
            }
            Prefilter::PrivateKey => p.dashes >= 10 && p.uppercase >= 20,
            // two capitals, two digits, then eleven or more capitals and digits
            Prefilter::Iban => {
                p.uppercase >= 2
                    && p.digits >= 2
                    && p.uppercase + p.digits >= 15
                    && iban_prefix(p.bytes)
            }
        }
    }
}

/// The literals prefilters look for, their searchers built once.
static JWT_START: LazyLock<Literal<'static>> = LazyLock::new(|| Literal::new("eyJ"));
static AWS_KEY_START: LazyLock<Literal<'static>> = LazyLock::new(|| Literal::new("AKIA"));
static AWS_TEMPORARY_KEY_START: LazyLock<Literal<'static>> = LazyLock::new(|| Literal::new("ASIA"));

/// What a text holds, counted in one pass, for the prefilters.
pub struct Profile<'a> {
    pub bytes: &'a [u8],
    pub digits: u32,
    pub dots: u32,
    pub colons: u32,
    pub dashes: u32,
    pub uppercase: u32,
    pub at: bool,
    pub plus: bool,
    /// A `b` or `B` (as in `bearer`).
    pub b: bool,
    /// See [`Profile::digit_runs`]: a second pass, made only when a prefilter asks.
    digit_runs: std::cell::OnceCell<DigitRuns>,
}

/// Where digits stand together: the most digits in a stretch of digits, spaces and
/// dashes (what a card or an SSN is written with) and the most in a stretch of digits
/// and `+-. ()` (a phone number).
#[derive(Default)]
pub struct DigitRuns {
    pub grouped: u32,
    pub phone: u32,
}

impl Profile<'_> {
    fn contains(&self, literal: &Literal<'static>) -> bool {
        literal.find(self.bytes).is_some()
    }

    /// Whether `bearer` occurs, in any ASCII case.
    fn contains_bearer(&self) -> bool {
        self.bytes
            .iter()
            .enumerate()
            .filter(|(_, &byte)| byte | 0x20 == b'b')
            .any(|(at, _)| {
                self.bytes
                    .get(at..at + 6)
                    .is_some_and(|word| word.eq_ignore_ascii_case(b"bearer"))
            })
    }

    /// See [`DigitRuns`]; worked out on first use.
    pub fn digit_runs(&self) -> &DigitRuns {
        self.digit_runs.get_or_init(|| DigitRuns::of(self.bytes))
    }
}

impl DigitRuns {
    /// Every pattern that reads them needs four digits together (a card's group or its
    /// 13–19 digits, an SSN's last group, both phone forms' last four), which a dotted IP
    /// address, a version or most ids never have; a text without them is not counted:
    /// its runs are zero.
    fn of(bytes: &[u8]) -> DigitRuns {
        let mut runs = DigitRuns::default();
        if !has_four_adjacent_digits(bytes) {
            return runs;
        }
        let (mut grouped, mut phone) = (0, 0);
        for &byte in bytes {
            if byte.is_ascii_digit() {
                grouped += 1;
                phone += 1;
                runs.grouped = runs.grouped.max(grouped);
                runs.phone = runs.phone.max(phone);
                continue;
            }
            if !matches!(byte, b' ' | b'-') {
                grouped = 0;
            }
            if !matches!(byte, b' ' | b'-' | b'.' | b'(' | b')' | b'+') {
                phone = 0;
            }
        }
        runs
    }
}

/// Where `byte` occurs in `bytes`, in order: `memchr` for long texts, a plain loop for
/// short ones (most attribute values), where its setup costs more than it saves.
fn positions_of(byte: u8, bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    const SHORT: usize = 64;
    let short = (bytes.len() < SHORT).then(|| {
        bytes
            .iter()
            .enumerate()
            .filter_map(move |(at, &b)| (b == byte).then_some(at))
    });
    let long = (bytes.len() >= SHORT).then(|| memchr::memchr_iter(byte, bytes));
    short
        .into_iter()
        .flatten()
        .chain(long.into_iter().flatten())
}

fn has_four_adjacent_digits(bytes: &[u8]) -> bool {
    let digit = |at: usize| bytes.get(at).is_some_and(u8::is_ascii_digit);
    // any four adjacent bytes hold one whose index is 3 mod 4: only those are looked
    // at, and around them only when they are digits
    every_fourth(bytes).any(|at| {
        digit(at) && {
            let left = (1..=3).take_while(|&back| digit(at - back)).count();
            let right = (1..=3).take_while(|&ahead| digit(at + ahead)).count();
            left + 1 + right >= 4
        }
    })
}

/// The indices 3, 7, 11, … of `bytes`: any four adjacent bytes hold exactly one of them.
fn every_fourth(bytes: &[u8]) -> impl Iterator<Item = usize> {
    (3..bytes.len()).step_by(4)
}

/// The byte classes [`Profile::of`] counts, each in its own 7 bits of one `u64`.
const DIGIT: u32 = 0;
const DOT: u32 = 1;
const COLON: u32 = 2;
const DASH: u32 = 3;
/// An uppercase ASCII letter other than `B`.
const UPPER: u32 = 4;
const UPPER_B: u32 = 5;
const LOWER_B: u32 = 6;
const AT: u32 = 7;
const PLUS: u32 = 8;
const CLASSES: u32 = 9;
const CLASS_BITS: u32 = 7;
/// The most bytes counted in one `u64` before its 7-bit counts could overflow.
const PACKED_RUN: usize = (1 << CLASS_BITS) - 1;

/// What counting each byte adds to the packed counts: one in its class's bits, nothing
/// for a byte of no class.
const PACKED_ONE: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut byte = 0;
    while byte < 256 {
        let class = match byte as u8 {
            b'0'..=b'9' => DIGIT,
            b'.' => DOT,
            b':' => COLON,
            b'-' => DASH,
            b'B' => UPPER_B,
            b'A'..=b'Z' => UPPER,
            b'b' => LOWER_B,
            b'@' => AT,
            b'+' => PLUS,
            _ => CLASSES,
        };
        if class < CLASSES {
            table[byte] = 1 << (class * CLASS_BITS);
        }
        byte += 1;
    }
    table
};

impl<'a> Profile<'a> {
    /// Counts by adding one table entry per byte to a register (no count in memory
    /// waits on the byte before), 127 bytes at a time.
    pub fn of(bytes: &'a [u8]) -> Profile<'a> {
        let mut counts = [0u32; CLASSES as usize];
        for run in bytes.chunks(PACKED_RUN) {
            let packed = run
                .iter()
                .fold(0u64, |packed, &byte| packed + PACKED_ONE[usize::from(byte)]);
            for (class, count) in counts.iter_mut().enumerate() {
                *count += (packed >> (class as u32 * CLASS_BITS)) as u32 & PACKED_RUN as u32;
            }
        }
        let count = |class: u32| counts[class as usize];
        Profile {
            bytes,
            digits: count(DIGIT),
            dots: count(DOT),
            colons: count(COLON),
            dashes: count(DASH),
            uppercase: count(UPPER) + count(UPPER_B),
            at: count(AT) > 0,
            plus: count(PLUS) > 0,
            b: count(LOWER_B) + count(UPPER_B) > 0,
            digit_runs: std::cell::OnceCell::new(),
        }
    }
}

pub const ALL: &[Detector] = &[
    Detector {
        name: "email",
        pattern: r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
        check: None,
        find: Some(find_emails),
        prefilter: Prefilter::Email,
    },
    Detector {
        name: "credit_card",
        pattern: r"\b(?:\d{13,19}|\d{4}(?:[ -]\d{4}){2}[ -]\d{1,7}|\d{4}[ -]\d{6}[ -]\d{5})\b",
        check: Some(luhn_candidate),
        find: None,
        prefilter: Prefilter::CreditCard,
    },
    Detector {
        name: "ipv4",
        pattern: r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\b",
        check: Some(ipv4_candidate),
        find: Some(find_ipv4),
        prefilter: Prefilter::Ipv4,
    },
    Detector {
        name: "ipv6",
        pattern: r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|:)",
        check: Some(ipv6_candidate),
        find: None,
        prefilter: Prefilter::Ipv6,
    },
    Detector {
        name: "us_ssn",
        pattern: r"\b\d{3}-\d{2}-\d{4}\b",
        check: Some(ssn_candidate),
        find: None,
        prefilter: Prefilter::UsSsn,
    },
    Detector {
        name: "phone",
        pattern: r"(?:\+[1-9]\d{7,14}\b|(?:\(\d{3}\) ?|\b\d{3}[-. ])\d{3}[-. ]\d{4}\b)",
        check: None,
        find: None,
        // both forms end in four digits together (`\d{7,14}` after a `+`, or `\d{4}`),
        // which a dotted IP address never has
        prefilter: Prefilter::Phone,
    },
    Detector {
        name: "jwt",
        pattern: r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
        check: None,
        find: None,
        prefilter: Prefilter::Jwt,
    },
    Detector {
        name: "bearer_token",
        pattern: r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]{8,}=*",
        check: None,
        find: None,
        prefilter: Prefilter::BearerToken,
    },
    Detector {
        name: "aws_access_key",
        pattern: r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
        check: None,
        find: None,
        prefilter: Prefilter::AwsAccessKey,
    },
    Detector {
        name: "private_key",
        pattern: r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z]+ )*PRIVATE KEY-----",
        check: None,
        find: None,
        prefilter: Prefilter::PrivateKey,
    },
    Detector {
        name: "iban",
        pattern: r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b",
        check: Some(iban_candidate),
        find: None,
        prefilter: Prefilter::Iban,
    },
];

/// The `email` pattern's matches. Around each `@`: the local part is the run of
/// `[A-Za-z0-9._%+-]` before it (not reaching back into the previous match); the domain
/// is labels of `[A-Za-z0-9-]` joined by single dots, the first non-empty; the match
/// ends after the letters that start the last label (after the first) to begin with two
/// letters or more: where the greedy `(?:\.label)*` gives back labels until
/// `\.[A-Za-z]{2,}` matches.
fn find_emails(text: &str, found: &mut dyn FnMut(usize, usize)) {
    let bytes = text.as_bytes();
    let is_local =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-');
    let mut from = 0;
    for at in positions_of(b'@', bytes) {
        if at < from {
            continue;
        }
        let start = bytes[from..at]
            .iter()
            .rposition(|&b| !is_local(b))
            .map_or(from, |p| from + p + 1);
        if start == at {
            continue;
        }
        if let Some(end) = email_domain_end(bytes, at + 1) {
            found(start, end);
            from = end;
        }
    }
}

/// Where an email's domain starting at `start` ends, if it has one (see [`find_emails`]).
fn email_domain_end(bytes: &[u8], start: usize) -> Option<usize> {
    let label_end = |from: usize| {
        from + bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-')
            .count()
    };
    let mut at = label_end(start);
    if at == start {
        return None;
    }
    let mut end = None;
    while bytes.get(at) == Some(&b'.') {
        let label = at + 1;
        at = label_end(label);
        if at == label {
            break;
        }
        let letters = bytes[label..at]
            .iter()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        if letters >= 2 {
            end = Some(label + letters);
        }
    }
    end
}

/// The `ipv4` pattern's matches: four dot-separated runs of digits, each 0–255 written
/// without a leading zero, the first with a word boundary before it and the last with
/// one after it (a run of digits is all of one octet, since an octet is followed by a
/// dot or a boundary). A match starts at a run of digits followed by a dot, so only the
/// dots are visited (`memchr`), each once.
fn find_ipv4(text: &str, found: &mut dyn FnMut(usize, usize)) {
    let bytes = text.as_bytes();
    let mut matched_to = 0;
    for dot in positions_of(b'.', bytes) {
        let start = bytes[..dot]
            .iter()
            .rposition(|b| !b.is_ascii_digit())
            .map_or(0, |p| p + 1);
        if start == dot || start < matched_to {
            continue;
        }
        let bounded = !text[..start].chars().next_back().is_some_and(is_word);
        if let Some(end) = bounded.then(|| ipv4_end(text, start)).flatten() {
            found(start, end);
            matched_to = end;
        }
    }
}

fn digits_end(bytes: &[u8], from: usize) -> usize {
    from + bytes[from..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count()
}

/// Where the dotted quad starting at `start` ends, if one does.
fn ipv4_end(text: &str, start: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut at = start;
    for octet in 0..4 {
        let end = digits_end(bytes, at);
        if !is_octet(&bytes[at..end]) {
            return None;
        }
        if octet == 3 {
            return (!text[end..].chars().next().is_some_and(is_word)).then_some(end);
        }
        if bytes.get(end) != Some(&b'.') || !bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        at = end + 1;
    }
    None
}

/// 0–255 without a leading zero, as `25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]` takes it.
fn is_octet(digits: &[u8]) -> bool {
    match digits {
        [_] => true,
        [first, _] => *first != b'0',
        [b'1', _, _] => true,
        [b'2', second, third] => *second < b'5' || (*second == b'5' && *third <= b'5'),
        _ => false,
    }
}

/// A word character as the `regex` crate's Unicode `\b` sees it.
fn is_word(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || c == '_'
    } else {
        regex_syntax::try_is_word_character(c).unwrap_or(false)
    }
}

/// Whether two uppercase letters followed by two digits (an IBAN's start) occur.
fn iban_prefix(bytes: &[u8]) -> bool {
    let prefix_at = |start: usize| {
        bytes.get(start..start + 4).is_some_and(|w| {
            w[0].is_ascii_uppercase()
                && w[1].is_ascii_uppercase()
                && w[2].is_ascii_digit()
                && w[3].is_ascii_digit()
        })
    };
    // the prefix covers one index that is 3 mod 4; what that byte is says where the
    // prefix would start (lowercase letters, spaces and punctuation rule it out)
    every_fourth(bytes).any(|at| match bytes[at] {
        b'A'..=b'Z' => prefix_at(at) || prefix_at(at - 1),
        b'0'..=b'9' => prefix_at(at - 2) || prefix_at(at - 3),
        _ => false,
    })
}

/// The literals one of which every match of a user's `pattern` starts with, when the
/// pattern has such a finite set (`session=[A-Za-z0-9]{16,}` has `session=`): a text
/// holding none of them cannot match, and the pattern need not run on it.
pub fn required_prefixes(pattern: &str) -> Option<Vec<String>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let hir = regex_syntax::parse(pattern).ok()?;
    let prefixes = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    let literals = prefixes.literals()?;
    let texts: Option<Vec<String>> = literals
        .iter()
        .map(|l| String::from_utf8(l.as_bytes().to_vec()).ok())
        .collect();
    texts.filter(|t| !t.is_empty() && t.iter().all(|l| !l.is_empty()))
}

pub fn compile(detector: &Detector) -> Regex {
    Regex::new(detector.pattern).expect("built-in patterns compile")
}

fn luhn_candidate(text: &str, start: usize, end: usize, _: bool) -> bool {
    let digits: Vec<u32> = text[start..end]
        .chars()
        .filter_map(|c| c.to_digit(10))
        .collect();
    (13..=19).contains(&digits.len()) && luhn(&digits)
}

/// The Luhn checksum of payment card numbers.
pub fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn ipv4_candidate(text: &str, start: usize, end: usize, keep_private: bool) -> bool {
    let before = &text[..start];
    let after = &text[end..];
    let words_before = before.trim_end().as_bytes();
    let is_version = before.ends_with('v')
        || before.ends_with('V')
        || words_before.len() >= 7
            && words_before[words_before.len() - 7..].eq_ignore_ascii_case(b"version");
    let longer_dotted = before.ends_with('.')
        || after.starts_with(|c: char| {
            c == '.' && after[1..].starts_with(|d: char| d.is_ascii_digit())
        });
    if is_version || longer_dotted {
        return false;
    }
    match text[start..end].parse::<Ipv4Addr>() {
        Ok(ip) => !(keep_private && (ip.is_private() || ip.is_loopback() || ip.is_link_local())),
        Err(_) => false,
    }
}

fn ipv6_candidate(text: &str, start: usize, end: usize, keep_private: bool) -> bool {
    let adjacent_hex = |c: char| c.is_ascii_hexdigit() || c == ':';
    if text[..start].ends_with(adjacent_hex) || text[end..].starts_with(adjacent_hex) {
        return false;
    }
    match text[start..end].parse::<Ipv6Addr>() {
        Ok(ip) => {
            !(keep_private
                && (ip.is_loopback() || ip.is_unique_local() || ip.is_unicast_link_local()))
        }
        Err(_) => false,
    }
}

fn ssn_candidate(text: &str, start: usize, end: usize, _: bool) -> bool {
    let s = &text[start..end];
    let (area, group, serial) = (&s[0..3], &s[4..6], &s[7..11]);
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

fn iban_candidate(text: &str, start: usize, end: usize, _: bool) -> bool {
    let compact: String = text[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let rearranged = compact[4..].chars().chain(compact[..4].chars());
    let mut remainder: u32 = 0;
    for c in rearranged {
        let value = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        for digit in value.to_string().chars() {
            remainder = (remainder * 10 + digit.to_digit(10).expect("a decimal digit")) % 97;
        }
    }
    remainder == 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Matches as byte ranges.
    type Found = Vec<(usize, usize)>;

    #[test]
    fn the_strided_scans_agree_with_looking_at_every_window() {
        // every string of up to 8 bytes over a capital, a lowercase letter, a digit and
        // a space
        let alphabet = *b"Aa1 ";
        for len in 0..=8u32 {
            for n in 0..4usize.pow(len) {
                let text: Vec<u8> = (0..len).map(|i| alphabet[n / 4usize.pow(i) % 4]).collect();
                let digits = text.windows(4).any(|w| w.iter().all(u8::is_ascii_digit));
                assert_eq!(has_four_adjacent_digits(&text), digits, "{text:?}");
                let iban = text.windows(4).any(|w| {
                    w[..2].iter().all(u8::is_ascii_uppercase)
                        && w[2..].iter().all(u8::is_ascii_digit)
                });
                assert_eq!(iban_prefix(&text), iban, "{text:?}");
            }
        }
    }

    /// What the finder of `name` finds, and what its pattern's `find_iter` finds.
    fn both(name: &str, text: &str) -> (Found, Found) {
        let detector = ALL.iter().find(|d| d.name == name).unwrap();
        let mut found = Vec::new();
        (detector.find.unwrap())(text, &mut |start, end| found.push((start, end)));
        let by_regex = compile(detector)
            .find_iter(text)
            .map(|m| (m.start(), m.end()))
            .collect();
        (found, by_regex)
    }

    /// Texts built from the pieces the patterns turn on: the classes' edges, dots, `@`,
    /// octet edges, word and non-word characters in and out of ASCII.
    fn texts() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "a", "Z", "x1", "0", "1", "2", "5", "9", "25", "255", "256", "01", "199", "1000", ".",
            "..", "@", "-", "_", "%", "+", " ", ",", "'", "é", "ß", "٣", "→", "co", "com", "c0m",
            "example", "jane.doe", "10.0.0.1", "a@b.co", "v", "\n",
        ]);
        prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn the_email_finder_finds_what_the_pattern_finds(text in texts()) {
            let (found, by_regex) = both("email", &text);
            prop_assert_eq!(found, by_regex, "in {:?}", text);
        }

        #[test]
        fn the_ipv4_finder_finds_what_the_pattern_finds(text in texts()) {
            let (found, by_regex) = both("ipv4", &text);
            prop_assert_eq!(found, by_regex, "in {:?}", text);
        }
    }

    #[test]
    fn finders_agree_with_the_patterns_on_known_edges() {
        for text in [
            "x@foo.com.bar@baz.org",
            "a@b.com1@c.org",
            "mail jane.doe@example.co.uk, or a@b.c",
            "a@b..com a@-b.c-om.x9 a@b.cc.d",
            "1.2.3.4.5 é1.2.3.4 1.2.3.4é 255.255.255.255 256.1.1.1 01.2.3.4 1.2.3.04",
            "v1.2.3.4 version 10.0.0.1 ip=203.0.113.9; 198.51.100.7_",
            "٣1.2.3.4 1.2.3.4٣ 1.2.3.4→",
        ] {
            for name in ["email", "ipv4"] {
                let (found, by_regex) = both(name, text);
                assert_eq!(found, by_regex, "{name} in {text:?}");
            }
        }
    }
}
