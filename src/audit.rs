//! The configuration audit trail (`service.audit.path`): every load and reload appends one
//! JSON line — when, which file and its SHA-256, which component ids were added, changed
//! and removed, the result and the error — to an append-only file.
//!
//! The lines are hash-chained: each carries the hash of the one before (`prev`) and its
//! own `hash`, the SHA-256 of the line as written without its `hash` field. Editing a
//! record, removing one from the middle or reordering them breaks the chain, which
//! `sieve audit verify FILE` checks. Removing records from the end cannot be seen from the
//! file alone: each append logs the new head hash (`audit head`), so the head can be
//! compared with what the logs (or a copy kept elsewhere) last saw.
//!
//! Nothing expanded goes in: ids, the file's path and digest, and error messages, which
//! never hold the values of `${..}` references (see [`crate::config`]).

use crate::components::Config;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// `service.audit:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The audit file; created if missing, only ever appended to.
    pub path: PathBuf,
}

/// The hash `prev` holds in the first record.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One record, in the order its fields are written.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    seq: u64,
    time: String,
    /// `start` or `reload`.
    event: String,
    file: String,
    sha256: String,
    result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    added: Vec<String>,
    changed: Vec<String>,
    removed: Vec<String>,
    prev: String,
}

/// Component ids a configuration change adds, changes and removes, as
/// `section/id` (`receivers/otlp`, `pipelines/traces`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl Changes {
    /// From `old` (none at start) to `new`.
    pub fn between(old: Option<&Config>, new: &Config) -> Changes {
        let mut changes = Changes::default();
        changes.section("extensions", old.map(|o| &o.extensions), &new.extensions);
        changes.section("receivers", old.map(|o| &o.receivers), &new.receivers);
        changes.section("processors", old.map(|o| &o.processors), &new.processors);
        changes.section("exporters", old.map(|o| &o.exporters), &new.exporters);
        changes.section("connectors", old.map(|o| &o.connectors), &new.connectors);
        changes.section("pipelines", old.map(|o| &o.pipelines), &new.pipelines);
        changes
    }

    fn section<K: Ord + std::fmt::Display, V: PartialEq>(
        &mut self,
        name: &str,
        old: Option<&std::collections::BTreeMap<K, V>>,
        new: &std::collections::BTreeMap<K, V>,
    ) {
        let empty = std::collections::BTreeMap::new();
        let old = old.unwrap_or(&empty);
        for (id, config) in new {
            match old.get(id) {
                None => self.added.push(format!("{name}/{id}")),
                Some(before) if before != config => self.changed.push(format!("{name}/{id}")),
                Some(_) => {}
            }
        }
        for id in old.keys().filter(|id| !new.contains_key(id)) {
            self.removed.push(format!("{name}/{id}"));
        }
    }
}

/// What one load or reload did.
pub struct Event<'a> {
    /// `start` or `reload`.
    pub kind: &'a str,
    pub file: &'a Path,
    /// The file's bytes as read (hashed, never written).
    pub contents: &'a [u8],
    pub result: Result<Changes, String>,
}

/// An open audit file: where its chain ends.
pub struct AuditLog {
    path: PathBuf,
    next_seq: u64,
    head: String,
}

impl AuditLog {
    /// Opens (or creates) the file and finds the end of its chain.
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        let mut last = None;
        for line in std::io::BufReader::new(file).lines() {
            let line = line?;
            if !line.trim().is_empty() {
                last = Some(line);
            }
        }
        let (next_seq, head) = match last.as_deref().map(split_hash) {
            Some(Some((body, hash))) => {
                let record: Record = serde_json::from_str(&body).map_err(|e| {
                    std::io::Error::other(format!("the last audit record does not parse: {e}"))
                })?;
                (record.seq + 1, hash.to_string())
            }
            Some(None) => {
                return Err(std::io::Error::other(
                    "the last audit record has no hash (run `sieve audit verify`)",
                ))
            }
            None => (0, GENESIS.to_string()),
        };
        Ok(AuditLog {
            path: path.to_path_buf(),
            next_seq,
            head,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the record of `event` (flushed to disk before it returns).
    pub fn append(&mut self, event: Event) -> std::io::Result<()> {
        let (result, error, changes) = match event.result {
            Ok(changes) => ("ok", None, changes),
            Err(error) => ("error", Some(error), Changes::default()),
        };
        let record = Record {
            seq: self.next_seq,
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            event: event.kind.into(),
            file: event.file.display().to_string(),
            sha256: hex(&Sha256::digest(event.contents)),
            result: result.into(),
            error,
            added: changes.added,
            changed: changes.changed,
            removed: changes.removed,
            prev: self.head.clone(),
        };
        let body = serde_json::to_string(&record).map_err(std::io::Error::other)?;
        let hash = hex(&Sha256::digest(body.as_bytes()));
        let line = format!("{},\"hash\":\"{hash}\"}}\n", &body[..body.len() - 1]);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(line.as_bytes())?;
        file.sync_data()?;
        self.next_seq += 1;
        self.head = hash;
        tracing::info!(file = %self.path.display(), seq = record.seq, head = %self.head, "audit head");
        Ok(())
    }
}

/// A line without its trailing `"hash"` field (as the record that was hashed), and the
/// hash; `None` when the line does not end with one.
fn split_hash(line: &str) -> Option<(String, &str)> {
    const SUFFIX: usize = ",\"hash\":\"".len() + 64 + "\"}".len();
    let cut = line.len().checked_sub(SUFFIX)?;
    let (body, tail) = (line.get(..cut)?, line.get(cut..)?);
    let hash = tail.strip_prefix(",\"hash\":\"")?.strip_suffix("\"}")?;
    Some((format!("{body}}}"), hash))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the chain of the audit file at `path`: the number of records, or the first
/// record (1-based line) that was edited, removed or reordered, and how.
pub fn verify(path: &Path) -> Result<usize, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut head = GENESIS.to_string();
    let mut count = 0;
    for (at, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("line {}: cannot read: {e}", at + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let fail = |why: &str| format!("line {}: {why}", at + 1);
        let (body, hash) = split_hash(&line).ok_or_else(|| fail("no hash at the end"))?;
        if hex(&Sha256::digest(body.as_bytes())) != hash {
            return Err(fail("the record does not match its hash: it was edited"));
        }
        let record: Record =
            serde_json::from_str(&body).map_err(|e| fail(&format!("not a record: {e}")))?;
        if record.prev != head {
            return Err(fail(
                "it does not follow the record before it: a record was removed or moved",
            ));
        }
        if record.seq != count as u64 {
            return Err(fail(&format!(
                "sequence {} where {count} was due",
                record.seq
            )));
        }
        head = hash.to_string();
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests;
