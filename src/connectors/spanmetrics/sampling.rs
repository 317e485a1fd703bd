//! The adjusted count of a sampled span: how many spans it stands for, from the sampling
//! threshold in its W3C trace state (OpenTelemetry's consistent probability sampling,
//! the `th` sub-key of the `ot` vendor entry: `ot=th:<1 to 14 hex digits>`). The digits,
//! right-padded with zeros to 14, are the 56-bit rejection threshold `T`; a span kept
//! with it stands for `2^56 / (2^56 - T)` spans.
//!
//! The collector (contrib #45557) rounds each span's count to an integer at random, up
//! or down in proportion to the fraction; sieve adds the exact fraction up and rounds the
//! totals when it sends them, which gives the same expectation without the noise.

/// 2^56, the threshold's range.
const MAX_ADJUSTED: u64 = 1 << 56;

/// The adjusted count of a span with trace state `trace_state`, `None` when it carries
/// no valid sampling threshold (the span counts as one).
pub fn adjusted_count(trace_state: &[u8]) -> Option<f64> {
    if trace_state.is_empty() {
        return None;
    }
    let member = trace_state
        .split(|&b| b == b',')
        .map(trim)
        .find_map(|member| member.strip_prefix(b"ot="))?;
    let threshold = member
        .split(|&b| b == b';')
        .find_map(|field| field.strip_prefix(b"th:"))
        .and_then(threshold)?;
    Some(MAX_ADJUSTED as f64 / (MAX_ADJUSTED - threshold) as f64)
}

/// The 56-bit threshold written as 1 to 14 lowercase hex digits, trailing zeros omitted.
fn threshold(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 14 {
        return None;
    }
    let mut value = 0u64;
    for &digit in digits {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        value = value << 4 | u64::from(nibble);
    }
    Some(value << (4 * (14 - digits.len())))
}

/// A list member without the optional white space (spaces and tabs) around it.
fn trim(member: &[u8]) -> &[u8] {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = member
        .iter()
        .position(|b| !blank(b))
        .unwrap_or(member.len());
    let end = member
        .iter()
        .rposition(|b| !blank(b))
        .map_or(start, |at| at + 1);
    &member[start..end]
}

#[cfg(test)]
mod tests {
    use super::adjusted_count;

    #[test]
    fn thresholds_give_the_inverse_of_the_sampling_probability() {
        assert_eq!(adjusted_count(b"ot=th:8"), Some(2.0));
        assert_eq!(adjusted_count(b"ot=th:c"), Some(4.0));
        assert_eq!(adjusted_count(b"ot=th:0"), Some(1.0));
        let tenth = adjusted_count(b"ot=th:e666666666666").unwrap();
        assert!((tenth - 10.0).abs() < 1e-9, "{tenth}");
    }

    #[test]
    fn the_threshold_is_found_among_other_members_and_fields() {
        assert_eq!(
            adjusted_count(b"vendor=x, ot=rv:abcdefabcdefab;th:8 ,b=c"),
            Some(2.0)
        );
        assert_eq!(adjusted_count(b"ot=p:8;th:c"), Some(4.0));
    }

    #[test]
    fn no_or_invalid_thresholds_count_one() {
        for state in [
            &b""[..],
            b"vendor=th:8",
            b"ot=rv:abcdefabcdefab",
            b"ot=th:",
            b"ot=th:123456789abcdef",
            b"ot=th:8G",
            b"ot=th:C",
            b"xot=th:8",
        ] {
            assert_eq!(
                adjusted_count(state),
                None,
                "{}",
                String::from_utf8_lossy(state)
            );
        }
    }
}
