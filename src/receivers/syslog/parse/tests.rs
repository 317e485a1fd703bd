use super::*;
use proptest::prelude::*;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn nanos(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_nanos_opt()
}

#[test]
fn rfc5424_examples_from_the_rfc() {
    let m = rfc5424("<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \u{feff}'su root' failed for lonvick on /dev/pts/8").unwrap();
    assert_eq!((m.facility, m.severity, m.version), (4, 2, Some(1)));
    assert_eq!(m.timestamp, nanos("2003-10-11T22:14:15.003Z"));
    assert_eq!(m.hostname.as_deref(), Some("mymachine.example.com"));
    assert_eq!(m.appname.as_deref(), Some("su"));
    assert_eq!(m.procid, None);
    assert_eq!(m.msgid.as_deref(), Some("ID47"));
    assert_eq!(
        m.message, "'su root' failed for lonvick on /dev/pts/8",
        "BOM removed"
    );

    let m = rfc5424("<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.").unwrap();
    assert_eq!(m.timestamp, nanos("2003-08-24T12:14:15.000003Z"));
    assert_eq!(m.procid.as_deref(), Some("8710"));
    assert_eq!(m.message, "%% It's time to make the do-nuts.");
}

#[test]
fn rfc5424_structured_data_with_escapes() {
    let m = rfc5424(r#"<165>1 2003-10-11T22:14:15.003Z host app - ID47 [exampleSDID@32473 iut="3" eventSource="App"][x@1 v="a\"b\\c\]d"] msg"#).unwrap();
    assert_eq!(
        m.structured_data,
        vec![
            (
                "exampleSDID@32473".to_string(),
                vec![
                    ("iut".to_string(), "3".to_string()),
                    ("eventSource".to_string(), "App".to_string())
                ]
            ),
            (
                "x@1".to_string(),
                vec![("v".to_string(), "a\"b\\c]d".to_string())]
            ),
        ]
    );
    assert_eq!(m.message, "msg");
}

#[test]
fn rfc5424_nil_everywhere_and_no_message() {
    let m = rfc5424("<14>1 - - - - - -").unwrap();
    assert_eq!(
        (m.timestamp, m.hostname, m.appname, m.procid, m.msgid),
        (None, None, None, None, None)
    );
    assert_eq!(m.message, "");
}

#[test]
fn rfc5424_errors_name_what_is_wrong() {
    assert_eq!(rfc5424("<192>1 - - - - - -"), Err(ParseError::Pri));
    assert_eq!(rfc5424("<01>1 - - - - - -"), Err(ParseError::Pri));
    assert_eq!(rfc5424("14>1 - - - - - -"), Err(ParseError::Pri));
    assert_eq!(rfc5424("<14>0 - - - - - -"), Err(ParseError::Version));
    assert_eq!(
        rfc5424("<14>1 yesterday - - - - -"),
        Err(ParseError::Timestamp)
    );
    assert_eq!(rfc5424("<14>1 - host"), Err(ParseError::Header));
    assert_eq!(
        rfc5424(r#"<14>1 - - - - - [id a="unterminated] m"#),
        Err(ParseError::StructuredData)
    );
}

#[test]
fn control_characters_stay_in_the_message() {
    let m = rfc5424("<14>1 - - - - - - line one\nline two\u{7}").unwrap();
    assert_eq!(m.message, "line one\nline two\u{7}");
}

#[test]
fn rfc3164_with_tag_pid_and_zone() {
    let now = utc("2026-06-01T00:00:00Z");
    let m = rfc3164(
        "<13>Feb  5 17:32:18 10.0.0.99 myapp[123]: hello world",
        chrono_tz::Europe::Berlin,
        now,
    )
    .unwrap();
    assert_eq!((m.facility, m.severity), (1, 5));
    assert_eq!(
        m.timestamp,
        nanos("2026-02-05T16:32:18Z"),
        "Berlin is UTC+1 in February"
    );
    assert_eq!(m.hostname.as_deref(), Some("10.0.0.99"));
    assert_eq!(m.appname.as_deref(), Some("myapp"));
    assert_eq!(m.procid.as_deref(), Some("123"));
    assert_eq!(m.message, "hello world");
}

#[test]
fn rfc3164_year_follows_the_new_year_boundary() {
    let just_after = utc("2026-01-01T00:10:00Z");
    let m = rfc3164(
        "<13>Dec 31 23:59:00 h app: late",
        chrono_tz::UTC,
        just_after,
    )
    .unwrap();
    assert_eq!(m.timestamp, nanos("2025-12-31T23:59:00Z"));
    let just_before = utc("2025-12-31T23:59:00Z");
    let m = rfc3164(
        "<13>Jan  1 00:01:00 h app: early",
        chrono_tz::UTC,
        just_before,
    )
    .unwrap();
    assert_eq!(m.timestamp, nanos("2026-01-01T00:01:00Z"));
}

#[test]
fn rfc3164_dates_months_ago_are_this_year_not_next() {
    let december = utc("2026-12-03T08:00:00Z");
    let m = rfc3164("<13>Feb  5 10:00:00 h app: old", chrono_tz::UTC, december).unwrap();
    assert_eq!(m.timestamp, nanos("2026-02-05T10:00:00Z"));
    // a few hours ahead (a clock running fast) is still today, not a year ago
    let m = rfc3164("<13>Dec  3 20:00:00 h app: soon", chrono_tz::UTC, december).unwrap();
    assert_eq!(m.timestamp, nanos("2026-12-03T20:00:00Z"));
    // more than a day ahead means last year
    let m = rfc3164(
        "<13>Dec  5 08:00:00 h app: long ago",
        chrono_tz::UTC,
        december,
    )
    .unwrap();
    assert_eq!(m.timestamp, nanos("2025-12-05T08:00:00Z"));
}

/// Found by fuzzing: a month followed by multi-byte characters split a character.
#[test]
fn rfc3164_with_non_ascii_in_the_timestamp_is_an_error_not_a_panic() {
    let now = utc("2026-06-01T00:00:00Z");
    let parsed = std::panic::catch_unwind(|| {
        rfc3164(
            "<13>Dec\u{fffd}\u{fffd}\u{fffd}\u{fffd} h a: x",
            chrono_tz::UTC,
            now,
        )
    });
    assert!(parsed.is_ok(), "parsing panicked");
}

#[test]
fn rfc3164_without_hostname_or_tag() {
    let now = utc("2026-06-01T00:00:00Z");
    let m = rfc3164("<13>Jun  1 00:00:00 su: no host here", chrono_tz::UTC, now).unwrap();
    assert_eq!((m.hostname, m.appname.as_deref()), (None, Some("su")));
    assert_eq!(
        rfc3164("<13>Yesterday at noon", chrono_tz::UTC, now),
        Err(ParseError::Timestamp)
    );
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,120}") {
        let _ = rfc5424(&text);
        let _ = rfc3164(&text, chrono_tz::UTC, Utc::now());
    }

    #[test]
    fn arbitrary_headers_never_panic(pri in 0u16..300, body in "[ -~\\[\\]\"\\\\=]{0,80}") {
        let _ = rfc5424(&format!("<{pri}>1 - - - - - {body}"));
        let _ = rfc5424(&format!("<{pri}>1 2003-10-11T22:14:15Z h a p m {body}"));
        let _ = rfc3164(&format!("<{pri}>Oct 11 22:14:15 {body}"), chrono_tz::UTC, Utc::now());
    }
}
