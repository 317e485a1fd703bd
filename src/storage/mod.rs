//! Durable delivery: the `file_storage` extension, and the log a pipeline keeps in it
//! when one of its exporters sets `sending_queue.storage`.
//!
//! The collector keeps a persistent queue per exporter, after the processors, so what
//! its batch processor holds is lost on a crash (collector #12711). sieve keeps one log
//! per pipeline *before* the processors instead: a receiver acknowledges a request once
//! it is appended to the log of every pipeline it feeds ([`log`]), and the log frees
//! space only below the position everything before has left sieve from — sent or
//! dropped and counted by every exporter, and no longer held by any processor. After a
//! crash the pipeline replays from that position: at least once, never lost.

pub mod log;

use crate::config::{duration, FieldError};
use serde::{Deserialize, Deserializer};
use std::path::Path;
use std::time::Duration;

/// How the log reaches the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsyncMode {
    /// Every request is on disk before it is acknowledged.
    Always,
    /// Written to the operating system before it is acknowledged (a process kill loses
    /// nothing); synced to disk every `fsync_interval` (a power loss loses at most that).
    #[default]
    Interval,
}

impl<'de> Deserialize<'de> for FsyncMode {
    /// `always` or `interval`; the collector's `true` and `false` mean the same.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Flag(bool),
            Mode(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Flag(true) => Ok(FsyncMode::Always),
            Written::Flag(false) => Ok(FsyncMode::Interval),
            Written::Mode(mode) if mode == "always" => Ok(FsyncMode::Always),
            Written::Mode(mode) if mode == "interval" => Ok(FsyncMode::Interval),
            Written::Mode(other) => Err(serde::de::Error::custom(format!(
                "`{other}`: fsync is `always` or `interval` (or the collector's true/false)"
            ))),
        }
    }
}

/// What a full log does with a new request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageWhenFull {
    #[default]
    Refuse,
    DropOldest,
}

/// `extensions: file_storage:`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStorageConfig {
    /// Where the logs live, one subdirectory per pipeline. It must exist and be
    /// writable (or set `create_directory`).
    #[serde(default = "default_directory")]
    pub directory: String,
    /// Create `directory` when a pipeline first opens its log, if it is missing (a
    /// directory that cannot be created then fails the start or the reload).
    #[serde(default)]
    pub create_directory: bool,
    /// `always` (each request on disk before it is acknowledged) or `interval`
    /// (default: to the operating system at once, to disk every `fsync_interval`).
    #[serde(default)]
    pub fsync: FsyncMode,
    /// How often `fsync: interval` syncs.
    #[serde(default = "default_fsync_interval", with = "duration")]
    pub fsync_interval: Duration,
    /// The most one pipeline's log holds on disk, in MiB; when full, receivers give the
    /// retryable refusal (`reason="storage_full"`) until the backlog drains.
    #[serde(default = "default_max_size_mib")]
    pub max_size_mib: u64,
    /// At `max_size_mib` or a full disk: `refuse` (default: receivers give the retryable
    /// refusal until the backlog drains) or `drop_oldest` (the oldest segment nothing
    /// has read yet is deleted and its items counted as dropped, `reason="storage_full"`;
    /// what is being sent is never dropped, so when that fills the log it refuses too).
    #[serde(default)]
    pub when_full: StorageWhenFull,
    /// The collector's lock timeout: accepted, unused (sieve opens each log once and
    /// never waits on a lock).
    #[serde(default, with = "duration_option")]
    pub timeout: Option<Duration>,
    /// The collector's compaction settings: accepted, unused (sieve never compacts; it
    /// deletes whole segments once everything in them has left).
    #[serde(default)]
    pub compaction: Option<serde_yaml::Value>,
    /// The collector's permissions for a created directory: accepted, unused (sieve
    /// creates it with the process's umask).
    #[serde(default)]
    pub directory_permissions: Option<String>,
}

mod duration_option {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| crate::config::duration::parse(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

fn default_directory() -> String {
    "/var/lib/sieve/file_storage".into()
}

fn default_fsync_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_max_size_mib() -> u64 {
    1024
}

impl Default for FileStorageConfig {
    fn default() -> Self {
        FileStorageConfig {
            directory: default_directory(),
            create_directory: false,
            fsync: FsyncMode::default(),
            fsync_interval: default_fsync_interval(),
            max_size_mib: default_max_size_mib(),
            when_full: StorageWhenFull::default(),
            timeout: None,
            compaction: None,
            directory_permissions: None,
        }
    }
}

impl FileStorageConfig {
    /// The directory must be writable now, unless `create_directory` asks for it to be
    /// created when a pipeline opens its log (validation creates nothing).
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.max_size_mib == 0 {
            return Err(FieldError::new("max_size_mib", "must be at least 1"));
        }
        if self.fsync_interval.is_zero() {
            return Err(FieldError::new("fsync_interval", "must be positive"));
        }
        if self.create_directory {
            return Ok(());
        }
        writable(Path::new(&self.directory)).map_err(|e| {
            FieldError::new(
                "directory",
                format!("`{}` is not a writable directory: {e}", self.directory),
            )
        })
    }

    /// The fsync policy of the logs.
    pub fn fsync(&self) -> log::Fsync {
        match self.fsync {
            FsyncMode::Always => log::Fsync::Always,
            FsyncMode::Interval => log::Fsync::Interval(self.fsync_interval),
        }
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_size_mib.saturating_mul(1 << 20)
    }
}

/// Whether a file can be created in `dir`.
fn writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".sieve-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// The logs this process has open, by directory, so a pipeline rebuilt by a reload
/// shares its predecessor's log instead of opening the files twice.
#[derive(Default)]
pub struct Logs(
    parking_lot::Mutex<std::collections::HashMap<std::path::PathBuf, std::sync::Weak<log::Log>>>,
);

impl Logs {
    /// The log of pipeline `pipeline` in `storage`, opened (and recovered) if needed;
    /// an `fsync: interval` log gets a thread that syncs it while it is open.
    pub fn open(
        &self,
        storage: &FileStorageConfig,
        pipeline: &str,
        fsync_seconds: prometheus_client::metrics::histogram::Histogram,
    ) -> std::io::Result<std::sync::Arc<log::Log>> {
        let dir = Path::new(&storage.directory).join(pipeline.replace('/', "_"));
        let mut open = self.0.lock();
        let drop_oldest = storage.when_full == StorageWhenFull::DropOldest;
        if let Some(log) = open.get(&dir).and_then(std::sync::Weak::upgrade) {
            log.set_limit(storage.max_bytes(), drop_oldest);
            return Ok(log);
        }
        let (log, found) = log::Log::open(&dir, storage.max_bytes(), storage.fsync())?;
        if found != log::Recovered::default() {
            tracing::warn!(
                pipeline,
                records = found.records,
                items = found.items,
                corrupt = found.corrupt,
                torn_bytes = found.torn_bytes,
                "persistent queue: resuming a backlog from disk"
            );
        }
        log.set_limit(storage.max_bytes(), drop_oldest);
        let log = std::sync::Arc::new(log.with_fsync_histogram(fsync_seconds));
        if let log::Fsync::Interval(every) = storage.fsync() {
            let weak = std::sync::Arc::downgrade(&log);
            std::thread::Builder::new()
                .name("log-fsync".into())
                .spawn(move || loop {
                    std::thread::sleep(every);
                    let Some(log) = weak.upgrade() else { return };
                    if let Err(e) = log.sync() {
                        tracing::warn!(error = %e, "persistent queue: fsync failed");
                    }
                })?;
        }
        open.insert(dir, std::sync::Arc::downgrade(&log));
        Ok(log)
    }
}
