use super::*;

fn config(text: &str) -> Config {
    Config::parse(text, "test.yaml").unwrap()
}

const BASE: &str = "\
receivers:
  otlp:
    protocols:
      grpc:
processors:
  batch:
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug]
";

fn event(result: Result<Changes, String>) -> Event<'static> {
    Event {
        kind: "reload",
        file: Path::new("/etc/sieve/config.yaml"),
        contents: b"receivers: {}",
        result,
    }
}

#[test]
fn changes_name_what_was_added_changed_and_removed() {
    let old = config(BASE);
    let new = config(
        &BASE
            .replace("  batch:\n", "  batch:\n    timeout: 2s\n")
            .replace("  debug:\n", "  debug:\n  debug/two:\n")
            .replace("exporters: [debug]", "exporters: [debug/two]"),
    );
    let changes = Changes::between(Some(&old), &new);
    assert_eq!(changes.added, ["exporters/debug/two"]);
    assert_eq!(changes.changed, ["processors/batch", "pipelines/traces"]);
    assert!(changes.removed.is_empty());
    let start = Changes::between(None, &old);
    assert_eq!(
        start.added,
        [
            "receivers/otlp",
            "processors/batch",
            "exporters/debug",
            "pipelines/traces"
        ]
    );
    let back = Changes::between(Some(&new), &old);
    assert_eq!(back.removed, ["exporters/debug/two"]);
}

/// Writes three records and returns the file's lines.
fn three_records(path: &Path) -> Vec<String> {
    let mut log = AuditLog::open(path).unwrap();
    log.append(event(Ok(Changes::default()))).unwrap();
    log.append(event(Err("test.yaml:3: bad key".into())))
        .unwrap();
    // a restart continues the chain
    let mut log = AuditLog::open(path).unwrap();
    log.append(event(Ok(Changes {
        added: vec!["receivers/otlp".into()],
        ..Default::default()
    })))
    .unwrap();
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn the_chain_verifies_and_continues_across_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let lines = three_records(&path);
    assert_eq!(lines.len(), 3);
    assert_eq!(verify(&path), Ok(3));
    assert!(lines[1].contains("\"result\":\"error\",\"error\":\"test.yaml:3: bad key\""));
    assert!(lines[0].contains(&format!(
        "\"sha256\":\"{}\"",
        hex(&Sha256::digest(b"receivers: {}"))
    )));
}

#[test]
fn any_edit_removal_or_reordering_breaks_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let lines = three_records(&path);
    let check = |lines: Vec<String>, expected: &str| {
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let error = verify(&path).unwrap_err();
        assert!(error.contains(expected), "{error}");
    };
    check(
        vec![
            lines[0].clone(),
            lines[1].replace("bad key", "good key"),
            lines[2].clone(),
        ],
        "line 2: the record does not match its hash",
    );
    check(
        vec![lines[0].clone(), lines[2].clone()],
        "line 2: it does not follow",
    );
    check(
        vec![lines[1].clone(), lines[0].clone(), lines[2].clone()],
        "line 1: it does not follow",
    );
    check(vec![lines[1].clone(), lines[2].clone()], "line 1");
    // an edit that recomputes the record's own hash still breaks the next link
    let body = lines[1].replace("bad key", "good key");
    let (rehashed_body, _) = split_hash(&body).unwrap();
    let rehashed = format!(
        "{},\"hash\":\"{}\"}}",
        &rehashed_body[..rehashed_body.len() - 1],
        hex(&Sha256::digest(rehashed_body.as_bytes()))
    );
    check(
        vec![lines[0].clone(), rehashed, lines[2].clone()],
        "line 3: it does not follow",
    );
}
