//! Replays the fuzz corpora (`fuzz/corpus/<target>/`) through the fuzz targets'
//! invariants, so what fuzzing found stays fixed; open-ended fuzzing runs by hand
//! (`fuzz/README.md`), never in CI.

#[path = "../../fuzz/checks.rs"]
mod checks;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = format!("{}/fuzz/corpus/{target}", env!("CARGO_MANIFEST_DIR"));
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let input = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&input));
        assert!(
            outcome.is_ok(),
            "{target}: {} breaks its invariant",
            path.display()
        );
        replayed += 1;
    }
    assert!(replayed > 0, "{dir} is empty");
}

#[test]
fn the_wire_corpus_replays() {
    replay("wire", checks::wire);
}

#[test]
fn the_json_corpus_replays() {
    replay("json", checks::json);
}

#[test]
fn the_syslog_corpus_replays() {
    replay("syslog", checks::syslog);
}

#[test]
fn the_config_corpus_replays() {
    replay("config", checks::config);
}

#[test]
fn the_ottl_corpus_replays() {
    replay("ottl", checks::ottl);
}

#[test]
fn the_connectors_corpus_replays() {
    replay("connectors", checks::connectors);
}

#[test]
fn the_redaction_corpus_replays() {
    replay("redaction", checks::redaction);
}
