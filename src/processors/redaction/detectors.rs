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

use regex::Regex;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A match candidate check: the whole text and the candidate's byte range.
pub type Check = fn(text: &str, start: usize, end: usize, keep_private_ips: bool) -> bool;

/// One detector.
pub struct Detector {
    pub name: &'static str,
    pub pattern: &'static str,
    pub check: Option<Check>,
    /// What a text must have for the pattern to match anywhere in it, from counts: false
    /// means the pattern cannot match. Each is a necessary condition read off the pattern
    /// (the digits, dots or capitals it needs), never a guess.
    pub possible: fn(&Profile) -> bool,
}

/// What a text holds, counted in one pass, for the detectors' `possible` tests.
pub struct Profile<'a> {
    pub text: &'a str,
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
    /// Where digits stand together (counted only when there are 4 or more): the most
    /// digits in a stretch of digits, spaces and dashes (what a card or an SSN is
    /// written with), the most in a stretch of digits and `+-. ()` (a phone number),
    /// and how often a dot stands between two digits (an IPv4 address has three).
    pub digit_runs: DigitRuns,
}

/// See [`Profile::digit_runs`].
#[derive(Default)]
pub struct DigitRuns {
    pub grouped: u32,
    pub phone: u32,
    pub dotted: u32,
}

impl Profile<'_> {
    fn contains(&self, literal: &str) -> bool {
        self.text.contains(literal)
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
}

impl DigitRuns {
    fn of(bytes: &[u8]) -> DigitRuns {
        let mut runs = DigitRuns::default();
        let (mut grouped, mut phone) = (0, 0);
        for (at, &byte) in bytes.iter().enumerate() {
            if byte.is_ascii_digit() {
                grouped += 1;
                phone += 1;
                runs.grouped = runs.grouped.max(grouped);
                runs.phone = runs.phone.max(phone);
                let dotted = at >= 2 && bytes[at - 1] == b'.' && bytes[at - 2].is_ascii_digit();
                runs.dotted += u32::from(dotted);
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

/// The byte classes [`Profile::of`] counts (`OTHER` for the rest).
const OTHER: usize = 0;
const DIGIT: usize = 1;
const DOT: usize = 2;
const COLON: usize = 3;
const DASH: usize = 4;
/// An uppercase ASCII letter other than `B`.
const UPPER: usize = 5;
const UPPER_B: usize = 6;
const LOWER_B: usize = 7;
const AT: usize = 8;
const PLUS: usize = 9;
const CLASSES: usize = 10;

/// The class of every byte.
const CLASS_OF: [u8; 256] = {
    let mut table = [OTHER as u8; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = match b {
            b'0'..=b'9' => DIGIT,
            b'.' => DOT,
            b':' => COLON,
            b'-' => DASH,
            b'B' => UPPER_B,
            b'A'..=b'Z' => UPPER,
            b'b' => LOWER_B,
            b'@' => AT,
            b'+' => PLUS,
            _ => OTHER,
        } as u8;
        byte += 1;
    }
    table
};

impl<'a> Profile<'a> {
    pub fn of(text: &'a str) -> Profile<'a> {
        let bytes = text.as_bytes();
        // one table lookup and one increment per byte
        let mut counts = [0u32; CLASSES];
        for &byte in bytes {
            counts[usize::from(CLASS_OF[usize::from(byte)])] += 1;
        }
        let digits = counts[DIGIT];
        let (dots, colons, dashes) = (counts[DOT], counts[COLON], counts[DASH]);
        let uppercase = counts[UPPER] + counts[UPPER_B];
        let (at, plus) = (counts[AT] > 0, counts[PLUS] > 0);
        let b = counts[LOWER_B] + counts[UPPER_B] > 0;
        let digit_runs = if digits >= 4 {
            DigitRuns::of(bytes)
        } else {
            DigitRuns::default()
        };
        Profile {
            text,
            bytes,
            digit_runs,
            digits,
            dots,
            colons,
            dashes,
            uppercase,
            at,
            plus,
            b,
        }
    }
}

pub const ALL: &[Detector] = &[
    Detector {
        name: "email",
        pattern: r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
        check: None,
        possible: |p| p.at && p.dots > 0,
    },
    Detector {
        name: "credit_card",
        pattern: r"\b(?:\d{13,19}|\d{4}(?:[ -]\d{4}){2}[ -]\d{1,7}|\d{4}[ -]\d{6}[ -]\d{5})\b",
        check: Some(luhn_candidate),
        possible: |p| p.digit_runs.grouped >= 13,
    },
    Detector {
        name: "ipv4",
        pattern: r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\b",
        check: Some(ipv4_candidate),
        possible: |p| p.digit_runs.dotted >= 3,
    },
    Detector {
        name: "ipv6",
        pattern: r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|:)",
        check: Some(ipv6_candidate),
        possible: |p| p.colons >= 2,
    },
    Detector {
        name: "us_ssn",
        pattern: r"\b\d{3}-\d{2}-\d{4}\b",
        check: Some(ssn_candidate),
        possible: |p| p.digit_runs.grouped >= 9 && p.dashes >= 2,
    },
    Detector {
        name: "phone",
        pattern: r"(?:\+[1-9]\d{7,14}\b|(?:\(\d{3}\) ?|\b\d{3}[-. ])\d{3}[-. ]\d{4}\b)",
        check: None,
        possible: |p| p.digit_runs.phone >= 10 || (p.plus && p.digit_runs.phone >= 8),
    },
    Detector {
        name: "jwt",
        pattern: r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
        check: None,
        possible: |p| p.dots >= 2 && p.uppercase >= 1 && p.contains("eyJ"),
    },
    Detector {
        name: "bearer_token",
        pattern: r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]{8,}=*",
        check: None,
        possible: |p| p.bytes.len() >= 15 && p.b && p.contains_bearer(),
    },
    Detector {
        name: "aws_access_key",
        pattern: r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
        check: None,
        possible: |p| {
            p.uppercase >= 4
                && p.uppercase + p.digits >= 20
                && (p.contains("AKIA") || p.contains("ASIA"))
        },
    },
    Detector {
        name: "private_key",
        pattern: r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z]+ )*PRIVATE KEY-----",
        check: None,
        possible: |p| p.dashes >= 10 && p.uppercase >= 20,
    },
    Detector {
        name: "iban",
        pattern: r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b",
        check: Some(iban_candidate),
        possible: |p| {
            p.bytes.len() >= 15 && p.uppercase >= 2 && p.digits >= 2 && iban_prefix(p.bytes)
        },
    },
];

/// Whether two uppercase letters followed by two digits (an IBAN's start) occur.
fn iban_prefix(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| {
        w[0].is_ascii_uppercase()
            && w[1].is_ascii_uppercase()
            && w[2].is_ascii_digit()
            && w[3].is_ascii_digit()
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
    sum % 10 == 0
}

fn ipv4_candidate(text: &str, start: usize, end: usize, keep_private: bool) -> bool {
    let before = &text[..start];
    let after = &text[end..];
    let is_version = before.ends_with('v')
        || before.ends_with('V')
        || before.to_ascii_lowercase().trim_end().ends_with("version");
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
