//! The `sieve` command: parse arguments, set up logging and the runtime, run.
//!
//! Exit codes: 0 after a clean shutdown, 64 (`EX_USAGE`) for a configuration that does
//! not load, 1 when something it asks for cannot start (a port in use).

use clap::{Parser, Subcommand};
use sieve::components::Config;
use sieve::config::{LogEncoding, LogsTelemetry};
use sieve::service::SetLogLevel;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter};

const EXIT_BAD_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "sieve",
    version = concat!(
        env!("CARGO_PKG_VERSION"),
        " (commit ",
        env!("SIEVE_COMMIT"),
        ", tree ",
        env!("SIEVE_TREE"),
        ")"
    ),
    about = "An OpenTelemetry-compatible telemetry collector"
)]
struct Cli {
    /// Pipeline configuration (YAML). Without it, sieve runs its embedded default:
    /// OTLP gRPC and HTTP on loopback → batch → debug exporter.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check a configuration and exit: 0 if it is valid, 64 if not.
    Validate,
    /// Look at persistent queues without starting sieve.
    Queue {
        #[command(subcommand)]
        action: QueueCommand,
    },
    /// Work with the configuration audit trail (`service.audit.path`).
    Audit {
        #[command(subcommand)]
        action: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check that no record of an audit file was edited, removed or reordered: exit 0
    /// and the number of records when the chain holds, 1 naming the first broken line.
    Verify { file: PathBuf },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Show the backlog of a pipeline's log directory, or of every pipeline in a
    /// `file_storage` directory: segments, records, items, oldest age, damage found.
    Inspect { dir: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Queue {
        action: QueueCommand::Inspect { dir },
    }) = &cli.command
    {
        return inspect(dir);
    }
    if let Some(Command::Audit {
        action: AuditCommand::Verify { file },
    }) = &cli.command
    {
        return match sieve::audit::verify(file) {
            Ok(records) => {
                println!("{}: {records} records, chain intact", file.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{}: chain broken at {error}", file.display());
                ExitCode::FAILURE
            }
        };
    }
    let config = match &cli.config {
        Some(path) => Config::load(path),
        None => Config::embedded_default(),
    };
    let config = match config {
        Ok(config) => config,
        Err(error) => {
            eprintln!("sieve: invalid configuration: {error}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if let Some(Command::Validate) = cli.command {
        println!(
            "{}: valid",
            cli.config
                .as_ref()
                .map_or("<embedded default>".into(), |p| p.display().to_string())
        );
        return ExitCode::SUCCESS;
    }
    let set_log_level = init_logging(&config.telemetry.logs);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sieve-io")
        .build()
        .expect("the tokio runtime starts");
    match runtime.block_on(sieve::service::run(config, cli.config, set_log_level)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "sieve cannot start");
            eprintln!("sieve: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints what the log in `dir` (or each pipeline's log under it) holds.
fn inspect(dir: &std::path::Path) -> ExitCode {
    let mut dirs = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut pipelines: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        pipelines.sort();
        if !pipelines.is_empty() {
            dirs = pipelines;
        }
    }
    for dir in dirs {
        match sieve::storage::log::inspect(&dir) {
            Ok(found) => {
                let total = |f: fn(&sieve::storage::log::SegmentReport) -> u64| {
                    found.segments.iter().map(f).sum::<u64>()
                };
                println!(
                    "{}: {} segments, {} records, {} items, {} bytes, acknowledged below record {}, oldest segment {} s old, {} damaged stretches, {} unreadable tail bytes",
                    dir.display(),
                    found.segments.len(),
                    total(|s| s.records),
                    total(|s| s.items),
                    total(|s| s.bytes),
                    found.acked,
                    found.segments.iter().map(|s| s.age_seconds).max().unwrap_or(0),
                    total(|s| s.damaged),
                    total(|s| s.unreadable_tail),
                );
                for s in &found.segments {
                    println!(
                        "  segment {:020}: {} records, {} items, {} bytes, {} damaged, {} unreadable tail bytes",
                        s.first_seq, s.records, s.items, s.bytes, s.damaged, s.unreadable_tail
                    );
                }
            }
            Err(error) => {
                eprintln!("sieve: cannot read {}: {error}", dir.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// Logs go to stderr (stdout belongs to the debug exporter); `RUST_LOG` overrides the
/// configured level. Returns how a reload sets the level (`None` under `RUST_LOG`).
fn init_logging(logs: &LogsTelemetry) -> Option<SetLogLevel> {
    let from_env = EnvFilter::try_from_default_env().ok();
    let configured = from_env.is_none();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(&logs.level));
    let (filter, handle) = reload::Layer::new(filter);
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    match logs.encoding {
        LogEncoding::Json => registry.with(output.json()).init(),
        LogEncoding::Text => registry.with(output).init(),
    }
    configured.then(|| -> SetLogLevel {
        Box::new(move |level| match handle.reload(EnvFilter::new(level)) {
            Ok(()) => tracing::info!(level, "log level changed"),
            Err(error) => tracing::warn!(%error, "the log level cannot change"),
        })
    })
}
