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
}

pub const ALL: &[Detector] = &[
    Detector {
        name: "email",
        pattern: r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
        check: None,
    },
    Detector {
        name: "credit_card",
        pattern: r"\b(?:\d{13,19}|\d{4}(?:[ -]\d{4}){2}[ -]\d{1,7}|\d{4}[ -]\d{6}[ -]\d{5})\b",
        check: Some(luhn_candidate),
    },
    Detector {
        name: "ipv4",
        pattern: r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\b",
        check: Some(ipv4_candidate),
    },
    Detector {
        name: "ipv6",
        pattern: r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|:)",
        check: Some(ipv6_candidate),
    },
    Detector {
        name: "us_ssn",
        pattern: r"\b\d{3}-\d{2}-\d{4}\b",
        check: Some(ssn_candidate),
    },
    Detector {
        name: "phone",
        pattern: r"(?:\+[1-9]\d{7,14}\b|(?:\(\d{3}\) ?|\b\d{3}[-. ])\d{3}[-. ]\d{4}\b)",
        check: None,
    },
    Detector {
        name: "jwt",
        pattern: r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
        check: None,
    },
    Detector {
        name: "bearer_token",
        pattern: r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]{8,}=*",
        check: None,
    },
    Detector {
        name: "aws_access_key",
        pattern: r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
        check: None,
    },
    Detector {
        name: "private_key",
        pattern: r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z]+ )*PRIVATE KEY-----",
        check: None,
    },
    Detector {
        name: "iban",
        pattern: r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b",
        check: Some(iban_candidate),
    },
];

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
