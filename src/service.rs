//! The daemon's life: start the topology, serve self-telemetry, reload on SIGHUP, drain
//! on SIGTERM/SIGINT.

use crate::config::Config;
use crate::telemetry::{self, Telemetry};
use crate::topology::Topology;
use std::path::PathBuf;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// Runs until SIGTERM or SIGINT. `config_path` is re-read on SIGHUP (the embedded
/// default, when there is no file, never changes). Returns an error when something the
/// config asks for cannot start (a port in use).
pub async fn run(config: Config, config_path: Option<PathBuf>) -> Result<(), String> {
    let telemetry = Telemetry::new();
    let metrics_addr = telemetry::parse_address(&config.telemetry.metrics.address)?;
    let metrics_server = telemetry::serve(metrics_addr, telemetry.clone())
        .map_err(|e| format!("cannot serve self-telemetry on {metrics_addr}: {e}"))?;
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;

    let mut shutdown_timeout = config.shutdown_timeout;
    let mut running_telemetry = config.telemetry.clone();
    let mut topology = Topology::new(telemetry.clone());
    topology.apply(config).await?;
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
                match reload(&mut topology, path).await {
                    Ok(config) => {
                        if config.telemetry != running_telemetry {
                            tracing::warn!("service.telemetry changes take effect on restart");
                        }
                        shutdown_timeout = config.shutdown_timeout;
                        running_telemetry = config.telemetry;
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

async fn reload(topology: &mut Topology, path: &std::path::Path) -> Result<Config, String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    topology.apply(config.clone()).await?;
    Ok(config)
}
