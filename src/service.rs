//! The daemon's life: start the topology, serve self-telemetry, reload on SIGHUP, drain
//! on SIGTERM/SIGINT.
//!
//! A reload applies `service.telemetry` too: a new metrics address is bound before the
//! topology changes (so a taken port fails the reload with nothing changed) and served
//! once it has; a new log level applies at once. The log encoding needs a restart.
//!
//! With `service.audit.path`, the start and every reload, applied or failed, append a
//! record to the audit trail ([`crate::audit`]).

use crate::audit::{AuditConfig, AuditLog, Changes, Event};
use crate::components::Config;
use crate::config::TelemetryConfig;
use crate::telemetry::{self, Telemetry};
use crate::topology::Topology;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

/// Sets the log level a reloaded configuration asks for.
pub type SetLogLevel = Box<dyn Fn(&str) + Send>;

/// Runs until SIGTERM or SIGINT. `config_path` is re-read on SIGHUP (the embedded
/// default, when there is no file, never changes); `set_log_level` is `None` when the
/// level is not the configuration's to set (`RUST_LOG`). Returns an error when something
/// the config asks for cannot start (a port in use), with the values of the config's
/// `${..}` references redacted.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    set_log_level: Option<SetLogLevel>,
) -> Result<(), String> {
    let redactor = config.redactor.clone();
    run_redacted(config, config_path, set_log_level)
        .await
        .map_err(|e| redactor.redact(&e))
}

async fn run_redacted(
    config: Config,
    config_path: Option<PathBuf>,
    set_log_level: Option<SetLogLevel>,
) -> Result<(), String> {
    let telemetry = Telemetry::new();
    let metrics_addr = crate::net::parse_address(&config.telemetry.metrics.address)?;
    let mut metrics_server = telemetry::serve(metrics_addr, telemetry.clone())
        .map_err(|e| format!("cannot serve self-telemetry on {metrics_addr}: {e}"))?;
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;

    let mut shutdown_timeout = config.shutdown_timeout;
    let mut running_telemetry = config.telemetry.clone();
    let mut audit = open_audit(config.audit.as_ref())?;
    let mut running = config.clone();
    let mut topology = Topology::new(telemetry.clone());
    let started = topology.apply(config).await;
    let outcome = match &started {
        Ok(()) => Ok(Changes::between(None, &running)),
        Err(e) => Err(running.redactor.redact(e)),
    };
    audit_record(&mut audit, "start", config_path.as_deref(), outcome);
    started?;
    for (receiver, addresses) in topology.receiver_addresses() {
        tracing::info!(%receiver, ?addresses, "listening");
    }
    tracing::info!(metrics = %metrics_addr, "sieve is ready");
    telemetry.set_ready(true);

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                let Some(path) = &config_path else {
                    tracing::info!("SIGHUP: running the embedded default configuration; nothing to reload");
                    continue;
                };
                let reloaded = reload(&mut topology, path, &running_telemetry).await;
                let outcome = match &reloaded {
                    Ok((config, _)) => Ok(Changes::between(Some(&running), config)),
                    Err(error) => Err(error.clone()),
                };
                audit_record(&mut audit, "reload", Some(path), outcome);
                match reloaded {
                    Ok((config, moved_metrics)) => {
                        if config.audit != running.audit {
                            match open_audit(config.audit.as_ref()) {
                                Ok(opened) => audit = opened,
                                Err(error) => tracing::error!(%error, "the new audit trail cannot be opened; recording to the previous one"),
                            }
                        }
                        if let Some(listener) = moved_metrics {
                            let moved = telemetry::serve_on(listener, telemetry.clone());
                            std::mem::replace(&mut metrics_server, moved).stop().await;
                            tracing::info!(metrics = %metrics_server.addr, "self-telemetry moved");
                        }
                        let logs = &config.telemetry.logs;
                        if logs.level != running_telemetry.logs.level {
                            if let Some(set) = &set_log_level {
                                set(&logs.level);
                            }
                        }
                        if logs.encoding != running_telemetry.logs.encoding {
                            tracing::warn!("service.telemetry.logs.encoding changes take effect on restart");
                        }
                        shutdown_timeout = config.shutdown_timeout;
                        running_telemetry = config.telemetry.clone();
                        running = config;
                        telemetry.record_reload(true);
                        tracing::info!(config = %path.display(), "configuration reloaded");
                    }
                    Err(error) => {
                        telemetry.record_reload(false);
                        tracing::error!(%error, "reload failed; the running configuration is unchanged");
                    }
                }
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = tick.tick() => {
                topology.reap_retired();
            }
        }
    }
    tracing::info!(timeout = ?shutdown_timeout, "shutting down: draining queues");
    topology.shutdown(shutdown_timeout).await;
    metrics_server.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// Opens the audit trail the config asks for: a file that cannot be opened fails the
/// start (or the reload that names it), as any resource the config asks for.
fn open_audit(config: Option<&AuditConfig>) -> Result<Option<AuditLog>, String> {
    config
        .map(|c| {
            AuditLog::open(&c.path)
                .map_err(|e| format!("service.audit.path: cannot open {}: {e}", c.path.display()))
        })
        .transpose()
}

/// Appends a load's record to the audit trail, if there is one; a failure to write is
/// logged, never fatal.
fn audit_record(
    log: &mut Option<AuditLog>,
    kind: &str,
    path: Option<&std::path::Path>,
    result: Result<Changes, String>,
) {
    let Some(log) = log else {
        return;
    };
    let (file, contents) = match path {
        Some(path) => (path, std::fs::read(path).unwrap_or_default()),
        None => (
            std::path::Path::new("<embedded default>"),
            crate::config::DEFAULT_CONFIG.as_bytes().to_vec(),
        ),
    };
    let event = Event {
        kind,
        file,
        contents: &contents,
        result,
    };
    if let Err(error) = log.append(event) {
        tracing::error!(%error, file = %log.path().display(), "cannot append to the audit trail");
    }
}

/// Loads and applies the file; returns the config and, when the metrics address moved,
/// its new listener (bound before anything else changed). Errors are redacted.
async fn reload(
    topology: &mut Topology,
    path: &std::path::Path,
    running: &TelemetryConfig,
) -> Result<(Config, Option<TcpListener>), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let redactor = config.redactor.clone();
    apply_loaded(topology, config, running)
        .await
        .map_err(|e| redactor.redact(&e))
}

async fn apply_loaded(
    topology: &mut Topology,
    config: Config,
    running: &TelemetryConfig,
) -> Result<(Config, Option<TcpListener>), String> {
    let addr = crate::net::parse_address(&config.telemetry.metrics.address)?;
    let moved_metrics = if crate::net::parse_address(&running.metrics.address) != Ok(addr) {
        let listener = crate::net::bind(addr)
            .map_err(|e| format!("cannot serve self-telemetry on {addr}: {e}"))?;
        Some(listener)
    } else {
        None
    };
    topology.apply(config.clone()).await?;
    Ok((config, moved_metrics))
}
