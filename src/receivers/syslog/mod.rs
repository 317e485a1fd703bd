//! `syslog` receiver: RFC 5424 and RFC 3164 messages over UDP and TCP (RFC 6587 framing),
//! turned into OTLP log records once, at the edge.
//!
//! Mapping of a message to a `LogRecord` (sieve's layout, flat and namespaced):
//! * `time_unix_nano` from the message's timestamp, `observed_time_unix_nano` on arrival;
//! * severity from PRI: emerg → FATAL4 (24), alert → FATAL3 (23), crit → FATAL2 (22),
//!   err → ERROR (17), warning → WARN (13), notice → INFO2 (10), info → INFO (9),
//!   debug → DEBUG (5); `severity_text` is the syslog keyword (`err`, `warning`, …);
//! * body: MSG as a string;
//! * attributes `syslog.facility` (int), `syslog.version` (int, RFC 5424),
//!   `syslog.hostname`, `syslog.appname`, `syslog.procid`, `syslog.msgid`,
//!   `syslog.structured_data.<sd-id>.<param>`, and `syslog.raw` with `keep_raw: true`;
//! * resource attributes from `resource:`.
//!
//! A message that does not parse becomes a record whose body is the raw text with
//! `syslog.parse_error` = the reason (or is dropped with `on_error: drop`); both are
//! counted in `sieve_receiver_rejected_requests_total{reason}`.
//!
//! Backpressure: when the pipelines refuse, a TCP connection stops reading its socket
//! until they take the batch (the sender feels TCP backpressure); UDP has no way to push
//! back, so the batch is dropped and counted (`sieve_receiver_dropped_items_total`).

mod config;
pub mod framing;
pub mod parse;

pub use config::{OnError, Protocol, SyslogReceiverConfig, TcpConfig, UdpConfig};

use super::core::{IngestError, ReceiverCore};
use crate::model::{Batch, Signal};
use crate::net::parse_address;
use crate::net::Handover;
use crate::queue::{Refused, Routes};
use crate::telemetry::Telemetry;
use bytes::BytesMut;
use framing::{Decoder, Frame};
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use parking_lot::RwLock;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// How long a TCP connection waits before offering a refused batch again.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Datagrams gathered into one batch at most.
const UDP_BATCH: usize = 256;

/// The config with its zone, resource and TLS acceptor resolved.
struct Settings {
    config: SyslogReceiverConfig,
    zone: chrono_tz::Tz,
    resource: Resource,
    tls: Option<TlsAcceptor>,
}

impl Settings {
    /// Resolves a config; fails when its TLS files cannot be loaded.
    fn new(id: &str, config: SyslogReceiverConfig) -> std::io::Result<Settings> {
        let tls = match config.tcp.as_ref().and_then(|t| t.tls.as_ref()) {
            Some(tls) => Some(crate::tls::acceptor(tls).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("receiver {id}: tcp.tls: {e}"),
                )
            })?),
            None => None,
        };
        let zone = config.zone().unwrap_or(chrono_tz::UTC);
        let attributes = config
            .resource
            .iter()
            .map(|(k, v)| string_attribute(k, v))
            .collect();
        Ok(Settings {
            config,
            zone,
            resource: Resource {
                attributes,
                ..Default::default()
            },
            tls,
        })
    }
}

struct Shared {
    core: ReceiverCore,
    settings: RwLock<Arc<Settings>>,
}

/// A listening socket's task.
struct Listener {
    addr: SocketAddr,
    /// A duplicate of the socket, to offer in a [`Handover`].
    socket: Option<OwnedFd>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Listener {
    fn socket(&self) -> Option<(SocketAddr, BorrowedFd<'_>)> {
        Some((self.addr, self.socket.as_ref()?.as_fd()))
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Sockets bound for a new or changed config.
pub struct Prepared {
    settings: Settings,
    tcp: Option<TcpListener>,
    udp: Option<UdpSocket>,
}

pub struct SyslogReceiver {
    shared: Arc<Shared>,
    tcp: Option<Listener>,
    udp: Option<Listener>,
}

fn bind_error(id: &str, transport: &str, addr: SocketAddr, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(
        e.kind(),
        format!("receiver {id}: cannot listen on {addr} ({transport}): {e}"),
    )
}

fn bind_tcp(id: &str, addr: SocketAddr, handover: &Handover) -> std::io::Result<TcpListener> {
    handover
        .tcp(addr)
        .map_err(|e| bind_error(id, "tcp", addr, e))
}

fn bind_udp(id: &str, addr: SocketAddr, handover: &Handover) -> std::io::Result<UdpSocket> {
    handover
        .udp(addr)
        .map_err(|e| bind_error(id, "udp", addr, e))
}

pub fn tcp_addr(config: &SyslogReceiverConfig) -> Option<SocketAddr> {
    config
        .tcp
        .as_ref()
        .and_then(|t| parse_address(&t.listen_address).ok())
}

pub fn udp_addr(config: &SyslogReceiverConfig) -> Option<SocketAddr> {
    config
        .udp
        .as_ref()
        .and_then(|u| parse_address(&u.listen_address).ok())
}

impl SyslogReceiver {
    /// Binds the sockets of a new receiver (taking over sockets on offer in `handover`).
    pub fn prepare(
        id: &str,
        config: &SyslogReceiverConfig,
        handover: &Handover,
    ) -> std::io::Result<Prepared> {
        Ok(Prepared {
            settings: Settings::new(id, config.clone())?,
            tcp: tcp_addr(config)
                .map(|a| bind_tcp(id, a, handover))
                .transpose()?,
            udp: udp_addr(config)
                .map(|a| bind_udp(id, a, handover))
                .transpose()?,
        })
    }

    /// Offers the sockets to the receivers a reload starts.
    pub fn offer(&self, handover: &mut Handover) {
        if let Some((addr, socket)) = self.tcp.as_ref().and_then(Listener::socket) {
            handover.offer_tcp(addr, socket);
        }
        if let Some((addr, socket)) = self.udp.as_ref().and_then(Listener::socket) {
            handover.offer_udp(addr, socket);
        }
    }

    /// Binds only the sockets whose address changes.
    pub fn prepare_update(&self, config: &SyslogReceiverConfig) -> std::io::Result<Prepared> {
        let id = &self.shared.core.id;
        let tcp = match tcp_addr(config) {
            Some(addr) if self.tcp.as_ref().map(|l| l.addr) != Some(addr) => {
                Some(bind_tcp(id, addr, &Handover::default())?)
            }
            _ => None,
        };
        let udp = match udp_addr(config) {
            Some(addr) if self.udp.as_ref().map(|l| l.addr) != Some(addr) => {
                Some(bind_udp(id, addr, &Handover::default())?)
            }
            _ => None,
        };
        Ok(Prepared {
            settings: Settings::new(id, config.clone())?,
            tcp,
            udp,
        })
    }

    pub fn start(
        id: String,
        prepared: Prepared,
        routes: Arc<Routes>,
        telemetry: Arc<Telemetry>,
    ) -> SyslogReceiver {
        let settings = RwLock::new(Arc::new(prepared.settings));
        let shared = Arc::new(Shared {
            core: ReceiverCore::new(id, routes, telemetry),
            settings,
        });
        let tcp = prepared.tcp.map(|l| serve_tcp(l, Arc::clone(&shared)));
        let udp = prepared.udp.map(|s| serve_udp(s, Arc::clone(&shared)));
        SyslogReceiver { shared, tcp, udp }
    }

    /// Swaps settings, serves newly bound sockets, stops replaced or removed ones.
    pub async fn update(&mut self, prepared: Prepared) {
        let config = &prepared.settings.config;
        let (wants_tcp, wants_udp) = (config.tcp.is_some(), config.udp.is_some());
        *self.shared.settings.write() = Arc::new(prepared.settings);
        if let Some(listener) = prepared.tcp {
            if let Some(old) = self
                .tcp
                .replace(serve_tcp(listener, Arc::clone(&self.shared)))
            {
                old.stop().await;
            }
        } else if !wants_tcp {
            if let Some(old) = self.tcp.take() {
                old.stop().await;
            }
        }
        if let Some(socket) = prepared.udp {
            if let Some(old) = self
                .udp
                .replace(serve_udp(socket, Arc::clone(&self.shared)))
            {
                old.stop().await;
            }
        } else if !wants_udp {
            if let Some(old) = self.udp.take() {
                old.stop().await;
            }
        }
    }

    pub fn set_routes(&self, routes: Arc<Routes>) {
        self.shared.core.set_routes(routes);
    }

    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.tcp
            .iter()
            .chain(self.udp.iter())
            .map(|l| l.addr)
            .collect()
    }

    pub async fn stop(self) {
        for listener in self.tcp.into_iter().chain(self.udp) {
            listener.stop().await;
        }
        self.shared.core.set_routes(Arc::new(Routes::default()));
    }
}

fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) -> Listener {
    let addr = listener
        .local_addr()
        .expect("a bound socket has an address");
    let socket = listener.as_fd().try_clone_to_owned().ok();
    let (stop, stopped) = watch::channel(false);
    let max = shared
        .settings
        .read()
        .config
        .tcp
        .as_ref()
        .map_or(1024, |t| t.max_connections);
    let task = tokio::spawn(accept_loop(
        listener,
        shared,
        Arc::new(Semaphore::new(max)),
        stopped,
    ));
    Listener {
        addr,
        socket,
        stop,
        task,
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    shared.core.count_rejected("tcp", "connection_limit");
                    drop(stream);
                    continue;
                };
                let (shared, stopped) = (Arc::clone(&shared), stopped.clone());
                connections.spawn(async move {
                    serve_connection(&shared, stream, stopped).await;
                    drop(slot);
                });
                while connections.try_join_next().is_some() {}
            }
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Serves one accepted connection, after a TLS handshake when TLS is on.
async fn serve_connection(shared: &Shared, stream: TcpStream, stopped: watch::Receiver<bool>) {
    let settings = Arc::clone(&shared.settings.read());
    let Some(acceptor) = settings.tls.clone() else {
        return read_connection(shared, stream, stopped).await;
    };
    let idle = settings
        .config
        .tcp
        .as_ref()
        .map_or(Duration::from_secs(300), |t| t.idle_timeout);
    match tokio::time::timeout(idle, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => read_connection(shared, tls, stopped).await,
        Ok(Err(error)) => {
            tracing::debug!(%error, "syslog: TLS handshake failed");
            shared.core.count_rejected("tcp", "tls_handshake");
        }
        Err(_) => shared.core.count_rejected("tcp", "tls_handshake"),
    }
}

/// Reads frames until the peer closes, goes idle, breaks framing or the listener stops.
async fn read_connection<S: AsyncRead + Unpin>(
    shared: &Shared,
    mut stream: S,
    mut stopped: watch::Receiver<bool>,
) {
    let settings = Arc::clone(&shared.settings.read());
    let config = &settings.config;
    let idle = config
        .tcp
        .as_ref()
        .map_or(Duration::from_secs(300), |t| t.idle_timeout);
    let mut decoder = Decoder::new(
        config.non_transparent_framing_trailer,
        config.max_message_size,
        config.oversize,
    );
    let mut buf = BytesMut::with_capacity(config.max_message_size.min(64 * 1024));
    loop {
        buf.reserve(8 * 1024);
        let read = tokio::select! {
            read = tokio::time::timeout(idle, stream.read_buf(&mut buf)) => read,
            _ = stopped.changed() => return,
        };
        let (records, finished) = match read {
            Err(_) => {
                shared.core.count_rejected("tcp", "idle_timeout");
                return;
            }
            Ok(Ok(0)) | Ok(Err(_)) => (
                drain_at_eof(shared, &settings, &mut decoder, &mut buf),
                true,
            ),
            Ok(Ok(_)) => match drain(shared, &settings, &mut decoder, &mut buf) {
                Ok(records) => (records, false),
                Err(records) => (records, true),
            },
        };
        if !records.is_empty()
            && !deliver_with_backpressure(shared, batch_of(&settings, records), &mut stopped).await
        {
            return;
        }
        if finished {
            return;
        }
    }
}

/// Parses every complete frame in `buf`. `Err` carries the records parsed before a
/// framing error that ends the connection.
fn drain(
    shared: &Shared,
    settings: &Settings,
    decoder: &mut Decoder,
    buf: &mut BytesMut,
) -> Result<Vec<LogRecord>, Vec<LogRecord>> {
    let mut records = Vec::new();
    loop {
        match decoder.decode(buf) {
            Ok(Some(frame)) => records.extend(frame_record(shared, settings, frame, "tcp")),
            Ok(None) => return Ok(records),
            Err(_) => {
                shared.core.count_rejected("tcp", "bad_octet_count");
                return Err(records);
            }
        }
    }
}

fn drain_at_eof(
    shared: &Shared,
    settings: &Settings,
    decoder: &mut Decoder,
    buf: &mut BytesMut,
) -> Vec<LogRecord> {
    let mut records = drain(shared, settings, decoder, buf).unwrap_or_else(|records| records);
    match decoder.finish(buf) {
        Some(Ok(frame)) => records.extend(frame_record(shared, settings, frame, "tcp")),
        Some(Err(reason)) => shared.core.count_rejected("tcp", reason),
        None => {}
    }
    records
}

fn frame_record(
    shared: &Shared,
    settings: &Settings,
    frame: Frame,
    transport: &str,
) -> Option<LogRecord> {
    match frame {
        Frame::Rejected => {
            shared.core.count_rejected(transport, "too_large");
            None
        }
        Frame::Message { bytes, truncated } => {
            if truncated {
                shared.core.count_rejected(transport, "truncated");
            }
            to_record(shared, settings, &bytes, transport)
        }
    }
}

/// Offers a batch until the pipelines take it; the socket is not read meanwhile, so the
/// sender feels TCP backpressure. Returns false if the listener stopped first. What cannot
/// be retried (some pipelines of a fan-out took it, or no pipeline takes logs any more) or
/// is abandoned at stop is counted as dropped.
async fn deliver_with_backpressure(
    shared: &Shared,
    batch: Batch,
    stopped: &mut watch::Receiver<bool>,
) -> bool {
    let items = batch.items();
    let mut attempt = shared.core.hand_over(batch);
    loop {
        let pending = match attempt {
            Ok(()) => return true,
            Err(IngestError::Refused(Refused {
                batch: Some(batch), ..
            })) => batch,
            Err(IngestError::Refused(Refused { batch: None, .. })) => {
                shared
                    .core
                    .count_dropped(Signal::Logs, "fan_out_partially_refused", items);
                return true;
            }
            Err(IngestError::NoPipeline) => {
                shared
                    .core
                    .count_dropped(Signal::Logs, "no_pipeline", items);
                return true;
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(RETRY_PAUSE) => {}
            _ = stopped.changed() => {
                shared.core.count_dropped(Signal::Logs, "shutdown", items);
                return false;
            }
        }
        attempt = shared.core.hand_over(pending);
    }
}

fn serve_udp(socket: UdpSocket, shared: Arc<Shared>) -> Listener {
    let addr = socket.local_addr().expect("a bound socket has an address");
    let duplicate = socket.as_fd().try_clone_to_owned().ok();
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut datagram = vec![0u8; 64 * 1024];
        loop {
            let received = tokio::select! {
                received = socket.recv_from(&mut datagram) => received,
                _ = stopped.changed() => return,
            };
            let settings = Arc::clone(&shared.settings.read());
            let mut records = Vec::new();
            let mut next = received.ok().map(|(n, _)| n);
            while let Some(n) = next {
                records.extend(udp_record(&shared, &settings, &datagram[..n]));
                next = if records.len() < UDP_BATCH {
                    socket.try_recv_from(&mut datagram).ok().map(|(n, _)| n)
                } else {
                    None
                };
            }
            if records.is_empty() {
                continue;
            }
            let items = records.len();
            match shared.core.hand_over(batch_of(&settings, records)) {
                Ok(()) => {}
                Err(IngestError::Refused(refused)) => {
                    shared
                        .core
                        .count_dropped(Signal::Logs, refused.refusal.reason(), items)
                }
                Err(IngestError::NoPipeline) => {
                    shared
                        .core
                        .count_dropped(Signal::Logs, "no_pipeline", items)
                }
            }
        }
    });
    Listener {
        addr,
        socket: duplicate,
        stop,
        task,
    }
}

fn udp_record(shared: &Shared, settings: &Settings, datagram: &[u8]) -> Option<LogRecord> {
    let max = settings.config.max_message_size;
    let frame = match (datagram.len() > max, settings.config.oversize) {
        (false, _) => Frame::Message {
            bytes: datagram.to_vec(),
            truncated: false,
        },
        (true, framing::Oversize::Truncate) => Frame::Message {
            bytes: datagram[..max].to_vec(),
            truncated: true,
        },
        (true, framing::Oversize::Reject) => Frame::Rejected,
    };
    frame_record(shared, settings, frame, "udp")
}

fn batch_of(settings: &Settings, records: Vec<LogRecord>) -> Batch {
    let scope = InstrumentationScope {
        name: "sieve/syslog".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    let scope_logs = vec![ScopeLogs {
        scope: Some(scope),
        log_records: records,
        ..Default::default()
    }];
    Batch::from_logs(vec![ResourceLogs {
        resource: Some(settings.resource.clone()),
        scope_logs,
        ..Default::default()
    }])
}

const SEVERITY: [(i32, &str); 8] = [
    (24, "emerg"),
    (23, "alert"),
    (22, "crit"),
    (17, "err"),
    (13, "warning"),
    (10, "notice"),
    (9, "info"),
    (5, "debug"),
];

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int_attribute(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One message as a log record, or `None` when it does not parse and `on_error: drop`.
fn to_record(
    shared: &Shared,
    settings: &Settings,
    bytes: &[u8],
    transport: &str,
) -> Option<LogRecord> {
    // valid UTF-8 (nearly always) is checked by the fast validator, without copying
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    };
    let parsed = match settings.config.protocol {
        Protocol::Rfc5424 => parse::rfc5424(&text),
        Protocol::Rfc3164 => parse::rfc3164(&text, settings.zone, chrono::Utc::now()),
    };
    let mut record = LogRecord {
        observed_time_unix_nano: now_nanos(),
        ..Default::default()
    };
    match parsed {
        Ok(message) => fill(&mut record, message),
        Err(error) => {
            shared.core.count_rejected(transport, error.reason());
            if settings.config.on_error == OnError::Drop {
                return None;
            }
            record.body = Some(AnyValue {
                value: Some(Value::StringValue(text.to_string())),
            });
            record
                .attributes
                .push(string_attribute("syslog.parse_error", error.reason()));
        }
    }
    if settings.config.keep_raw {
        record
            .attributes
            .push(string_attribute("syslog.raw", &text));
    }
    Some(record)
}

fn fill(record: &mut LogRecord, message: parse::Message) {
    let (number, text) = SEVERITY[message.severity as usize & 7];
    record.time_unix_nano = message.timestamp.map_or(0, |t| t.max(0) as u64);
    record.severity_number = number;
    record.severity_text = text.into();
    record.body = Some(AnyValue {
        value: Some(Value::StringValue(message.message)),
    });
    let attributes = &mut record.attributes;
    attributes.push(int_attribute(
        "syslog.facility",
        i64::from(message.facility),
    ));
    if let Some(version) = message.version {
        attributes.push(int_attribute("syslog.version", i64::from(version)));
    }
    for (key, value) in [
        ("syslog.hostname", message.hostname),
        ("syslog.appname", message.appname),
        ("syslog.procid", message.procid),
        ("syslog.msgid", message.msgid),
    ] {
        if let Some(value) = value {
            attributes.push(string_attribute(key, &value));
        }
    }
    for (id, params) in message.structured_data {
        for (name, value) in params {
            attributes.push(string_attribute(
                &format!("syslog.structured_data.{id}.{name}"),
                &value,
            ));
        }
    }
}
