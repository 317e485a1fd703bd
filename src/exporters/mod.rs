//! Exporters: the async edge where data leaves.
//!
//! Every exporter of a pipeline gets its own queue and a task that sends up to
//! `sending_queue.num_consumers` batches at once, so a slow backend fills only its own
//! queue. The queue's [`Room`] bounds what the exporter holds — batches waiting *and*
//! being sent, retries included — in the `sizer`'s units (`queue_size`) and in bytes
//! (`max_size_mib`). When it is full the pipeline worker waits for room, the pipeline
//! queue fills behind it and receivers refuse new data with a retryable error:
//! backpressure reaches the client instead of data being dropped.
//!
//! Each send is retried per `retry_on_failure` while the error is retryable (the OTLP
//! spec's list); permanent errors, exhausted retries, `partial_success` rejections and
//! batches abandoned at shutdown are dropped and counted with a `reason`.

pub mod debug;
pub mod http_core;
pub mod kafka;
pub mod loki;
pub mod otlp;
pub mod prometheus;
pub mod retry;

use crate::build::BuildContext;
use crate::config::FieldError;
use crate::model::{Batch, Signal};
use crate::telemetry::{
    ExporterLabels, ExporterLedger, ExporterReasonLabels, QueueRegistration, QueueState, Telemetry,
};
use prometheus_client::metrics::histogram::Histogram;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

/// What `sending_queue.queue_size` counts, as the collector's `sizer`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sizer {
    /// Batches (the collector's default).
    #[default]
    Requests,
    /// Spans, data points or log records.
    Items,
    /// Bytes as the queue holds them.
    Bytes,
}

/// `sending_queue:` of an exporter.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SendingQueueConfig {
    /// With `false`, the queue holds a single batch and one send runs at a time, so the
    /// pipeline waits for each export.
    pub enabled: bool,
    /// Sends in flight at once.
    pub num_consumers: usize,
    /// What the queue holds (waiting and being sent), in `sizer` units; when full, the
    /// pipeline waits (backpressure).
    pub queue_size: usize,
    /// `requests` (default), `items` or `bytes`: the unit of `queue_size`.
    pub sizer: Sizer,
    /// Memory the queue may hold (waiting and being sent), in MiB, whatever the sizer:
    /// encoded batches count their bytes, decoded ones their estimated size in memory.
    pub max_size_mib: usize,
    /// A `file_storage` extension: the pipeline then keeps what it accepted in a log
    /// there until every exporter has sent it, across crashes and restarts.
    pub storage: Option<String>,
}

impl Default for SendingQueueConfig {
    fn default() -> Self {
        SendingQueueConfig {
            enabled: true,
            num_consumers: 10,
            queue_size: 100,
            sizer: Sizer::Requests,
            max_size_mib: 32,
            storage: None,
        }
    }
}

impl SendingQueueConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.enabled && (self.num_consumers == 0 || self.queue_size == 0) {
            return Err(FieldError::new(
                "sending_queue",
                "num_consumers and queue_size must be at least 1",
            ));
        }
        if self.max_size_mib == 0 {
            return Err(FieldError::new(
                "sending_queue.max_size_mib",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The queue's room (in `sizer` units and in bytes) and its senders.
    fn effective(&self) -> (Room, usize) {
        let bytes = self.max_size_mib.saturating_mul(1 << 20);
        if self.enabled {
            (
                Room::new(self.sizer, self.queue_size, bytes),
                self.num_consumers,
            )
        } else {
            (Room::new(Sizer::Requests, 1, bytes), 1)
        }
    }
}

/// The room left in an exporter's queue, counted in its sizer's units and in bytes,
/// for batches waiting and being sent. The pipeline worker (an OS thread) waits here
/// for room; the exporter gives room back when a send ends.
pub struct Room {
    sizer: Sizer,
    max_units: usize,
    max_bytes: usize,
    state: parking_lot::Mutex<RoomState>,
    freed: parking_lot::Condvar,
}

#[derive(Default)]
struct RoomState {
    units: usize,
    bytes: usize,
    closed: bool,
}

/// What a batch takes of a queue's room.
#[derive(Clone, Copy)]
struct Share {
    units: usize,
    bytes: usize,
}

impl Room {
    fn new(sizer: Sizer, max_units: usize, max_bytes: usize) -> Room {
        Room {
            sizer,
            max_units,
            max_bytes,
            state: parking_lot::Mutex::new(RoomState::default()),
            freed: parking_lot::Condvar::new(),
        }
    }

    fn share(&self, batch: &Batch) -> Share {
        let bytes = batch.held_bytes();
        let units = match self.sizer {
            Sizer::Requests => 1,
            Sizer::Items => batch.items(),
            Sizer::Bytes => bytes,
        };
        Share { units, bytes }
    }

    /// Waits until `share` fits (an empty queue takes any batch); false once closed.
    fn take(&self, share: Share) -> bool {
        let mut state = self.state.lock();
        loop {
            if state.closed {
                return false;
            }
            let empty = state.units == 0 && state.bytes == 0;
            if empty
                || (state.units + share.units <= self.max_units
                    && state.bytes + share.bytes <= self.max_bytes)
            {
                state.units += share.units;
                state.bytes += share.bytes;
                return true;
            }
            self.freed.wait(&mut state);
        }
    }

    fn give_back(&self, share: Share) {
        let mut state = self.state.lock();
        state.units -= share.units;
        state.bytes -= share.bytes;
        self.freed.notify_all();
    }

    fn close(&self) {
        self.state.lock().closed = true;
        self.freed.notify_all();
    }

    /// (batches or other units held, bytes held).
    fn held(&self) -> (usize, usize) {
        let state = self.state.lock();
        (state.units, state.bytes)
    }
}

/// The log records of the batches an exporter holds, queued or being sent (with a
/// persistent queue): the pipeline keeps the log from the oldest of them on.
#[derive(Default)]
pub struct Outstanding(parking_lot::Mutex<std::collections::BTreeMap<u64, usize>>);

impl Outstanding {
    fn add(&self, seq: u64) {
        *self.0.lock().entry(seq).or_default() += 1;
    }

    fn remove(&self, seq: u64) {
        let mut held = self.0.lock();
        if let Some(count) = held.get_mut(&seq) {
            *count -= 1;
            if *count == 0 {
                held.remove(&seq);
            }
        }
    }

    /// The oldest record still held.
    pub fn oldest(&self) -> Option<u64> {
        self.0.lock().keys().next().copied()
    }
}

/// Where a pipeline hands batches to one exporter (each worker of the pipeline holds a
/// clone; the exporter's queue closes when the last is dropped).
#[derive(Clone)]
pub struct ExporterInput {
    sender: mpsc::UnboundedSender<(Batch, Share)>,
    room: Arc<Room>,
    ledger: Arc<ExporterLedger>,
    /// Records of batches not yet sent or dropped for good.
    pub outstanding: Arc<Outstanding>,
}

impl ExporterInput {
    /// Puts a batch on the exporter's queue, waiting for room (backpressure). If the
    /// exporter has stopped, the batch is counted as dropped (`reason="shutdown"`).
    pub fn put(&self, batch: Batch) {
        let (items, share) = (batch.items(), self.room.share(&batch));
        let reason = given_up(&batch);
        if let Some(seq) = batch.record() {
            // released once sent or dropped for good: a batch lost at shutdown stays
            self.outstanding.add(seq);
        }
        self.ledger.enqueued.add(items);
        if !self.room.take(share) {
            return self.lost_at_shutdown(items, reason);
        }
        if self.sender.send((batch, share)).is_err() {
            self.room.give_back(share);
            self.lost_at_shutdown(items, reason);
        }
    }

    fn lost_at_shutdown(&self, items: usize, reason: &str) {
        self.ledger.dequeued.add(items);
        self.ledger.dropped.reason(reason).add(items);
    }
}

/// The `reason` a batch given up on at shutdown is counted under: `shutdown`, or
/// `left_on_disk` when a persistent queue keeps it for the next start.
fn given_up(batch: &Batch) -> &'static str {
    match batch.record() {
        Some(_) => "left_on_disk",
        None => "shutdown",
    }
}

/// One export attempt's failure.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportError {
    /// Whether the OTLP spec allows retrying it.
    pub retryable: bool,
    /// A delay the server asked for.
    pub retry_after: Option<Duration>,
    /// The `reason` label.
    pub reason: &'static str,
    /// What the server or transport said.
    pub message: String,
}

/// A successful export, with items the backend rejected through `partial_success`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Exported {
    pub rejected: u64,
    pub message: String,
    /// Items the exporter dropped by design (a connector's item matching no route), with
    /// the `reason` they are counted under; no warning is logged.
    pub discarded: Option<(&'static str, u64)>,
}

/// What the sending machinery needs of an exporter: one export attempt.
pub trait Export: Send + Sync + 'static {
    fn export(
        &self,
        batch: &Batch,
    ) -> impl std::future::Future<Output = Result<Exported, ExportError>> + Send;
}

/// The counters of one exporter in one pipeline.
#[derive(Clone)]
struct ExporterMetrics {
    telemetry: Arc<Telemetry>,
    labels: ExporterLabels,
    ledger: Arc<ExporterLedger>,
    duration: Histogram,
}

impl ExporterMetrics {
    fn new(telemetry: Arc<Telemetry>, labels: ExporterLabels) -> Self {
        let ledger = telemetry.ledgers.exporter(&labels);
        let duration = telemetry.exporter_duration.get_or_create_owned(&labels);
        ExporterMetrics {
            telemetry,
            labels,
            ledger,
            duration,
        }
    }

    fn with_reason(&self, reason: &str) -> ExporterReasonLabels {
        let l = &self.labels;
        ExporterReasonLabels {
            exporter: l.exporter.clone(),
            pipeline: l.pipeline.clone(),
            signal: l.signal.clone(),
            reason: reason.into(),
        }
    }

    fn failed(&self, reason: &str, items: usize) {
        self.telemetry
            .exporter_send_failed
            .get_or_create(&self.with_reason(reason))
            .inc_by(items as u64);
    }

    fn dropped(&self, reason: &str, items: usize) {
        if items > 0 {
            self.ledger.dropped.reason(reason).add(items);
        }
    }
}

/// A running exporter's task; it ends once every sender of its queue is dropped and
/// the queue is drained.
pub struct ExporterTask {
    pub task: JoinHandle<()>,
    _queue: QueueRegistration,
}

/// An exporter built for one pipeline, with its queue and retry settings, not yet
/// sending.
pub struct Built<E> {
    id: String,
    pipeline: String,
    signal: Signal,
    exporter: E,
    sending_queue: SendingQueueConfig,
    retry: retry::RetryConfig,
    decodes: bool,
}

impl<E: Export> Built<E> {
    /// `exporter` built for the pipeline in `cx`, sending with these settings.
    pub fn new(
        cx: &BuildContext,
        exporter: E,
        sending_queue: SendingQueueConfig,
        retry: retry::RetryConfig,
        decodes: bool,
    ) -> Built<E> {
        Built {
            id: cx.id.to_string(),
            pipeline: cx.pipeline.to_string(),
            signal: cx.signal,
            exporter,
            sending_queue,
            retry,
            decodes,
        }
    }

    /// Whether the exporter works on decoded messages, so an encoded batch is decoded
    /// once before its first attempt.
    pub fn decodes(&self) -> bool {
        self.decodes
    }

    /// Starts the exporter's task and returns its queue's sender. Setting `abort` to
    /// true makes it give up on queued and in-flight batches (counted as dropped,
    /// `reason="shutdown"`).
    pub fn start(
        self,
        telemetry: &Arc<Telemetry>,
        abort: watch::Receiver<bool>,
    ) -> (ExporterInput, ExporterTask) {
        spawn(self, telemetry, abort)
    }
}

fn spawn<E: Export>(
    built: Built<E>,
    telemetry: &Arc<Telemetry>,
    abort: watch::Receiver<bool>,
) -> (ExporterInput, ExporterTask) {
    let Built {
        id,
        pipeline,
        signal,
        exporter,
        sending_queue,
        retry,
        decodes,
    } = built;
    let (room, consumers) = sending_queue.effective();
    let room = Arc::new(room);
    let (sender, receiver) = mpsc::unbounded_channel();
    let name = format!("{pipeline}/{id}");
    let probed = Arc::downgrade(&room);
    let queue = telemetry.register_queue(
        format!("exporter:{name}"),
        Box::new(move || {
            probed.upgrade().map_or(QueueState::default(), |room| {
                let (units, bytes) = room.held();
                QueueState {
                    size: units,
                    capacity: room.max_units,
                    bytes,
                    max_bytes: room.max_bytes,
                }
            })
        }),
    );
    let labels = ExporterLabels {
        exporter: id,
        pipeline,
        signal: signal.as_str().into(),
    };
    let metrics = ExporterMetrics::new(Arc::clone(telemetry), labels);
    let outstanding = Arc::new(Outstanding::default());
    let input = ExporterInput {
        sender,
        room: Arc::clone(&room),
        ledger: Arc::clone(&metrics.ledger),
        outstanding: Arc::clone(&outstanding),
    };
    let sending = Sending {
        exporter: Arc::new(exporter),
        outstanding,
        decodes,
        retry: Arc::new(retry),
        room,
        metrics,
    };
    let task = tokio::spawn(run(receiver, sending, consumers, abort));
    (
        input,
        ExporterTask {
            task,
            _queue: queue,
        },
    )
}

/// What every send of one exporter shares.
struct Sending<E> {
    exporter: Arc<E>,
    outstanding: Arc<Outstanding>,
    /// Whether the exporter works on decoded messages.
    decodes: bool,
    retry: Arc<retry::RetryConfig>,
    room: Arc<Room>,
    metrics: ExporterMetrics,
}

impl<E> Clone for Sending<E> {
    fn clone(&self) -> Self {
        Sending {
            exporter: Arc::clone(&self.exporter),
            outstanding: Arc::clone(&self.outstanding),
            decodes: self.decodes,
            retry: Arc::clone(&self.retry),
            room: Arc::clone(&self.room),
            metrics: self.metrics.clone(),
        }
    }
}

/// A batch's share of the room, given back when dropped.
struct RoomShare<'a>(&'a Room, Share);

impl Drop for RoomShare<'_> {
    fn drop(&mut self) {
        self.0.give_back(self.1);
    }
}

/// Closes the queue's room when the exporter task ends, so a pipeline worker waiting
/// for room stops waiting.
struct CloseOnDrop(Arc<Room>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

async fn run<E: Export>(
    mut receiver: mpsc::UnboundedReceiver<(Batch, Share)>,
    sending: Sending<E>,
    consumers: usize,
    mut abort: watch::Receiver<bool>,
) {
    let _close = CloseOnDrop(Arc::clone(&sending.room));
    let permits = Arc::new(Semaphore::new(consumers));
    let mut in_flight = JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = aborted(&mut abort) => break,
        };
        let (batch, share) = tokio::select! {
            next = receiver.recv() => match next {
                Some(queued) => queued,
                None => break,
            },
            _ = aborted(&mut abort) => break,
        };
        sending.metrics.ledger.dequeued.add(batch.items());
        let (sending, abort) = (sending.clone(), abort.clone());
        in_flight.spawn(async move {
            // gives the room back however the send ends, a panic included
            let _room = RoomShare(&sending.room, share);
            send(&sending, batch, abort).await;
            drop(permit);
        });
        while in_flight.try_join_next().is_some() {}
    }
    receiver.close();
    while let Ok((batch, share)) = receiver.try_recv() {
        sending.metrics.ledger.dequeued.add(batch.items());
        sending.metrics.dropped(given_up(&batch), batch.items());
        sending.room.give_back(share);
    }
    while in_flight.join_next().await.is_some() {}
}

/// Whether a batch has left sieve (sent, or dropped for good and counted), so a
/// persistent queue may forget it; a batch given up on at shutdown has not.
enum Settled {
    Yes,
    No,
}

/// Sends one batch and, once it has left, releases its log record.
async fn send<E: Export>(sending: &Sending<E>, batch: Batch, abort: watch::Receiver<bool>) {
    let record = batch.record();
    if let (Settled::Yes, Some(seq)) = (attempt(sending, batch, abort).await, record) {
        sending.outstanding.remove(seq);
    }
}

/// Sends one batch, retrying as configured; every item ends up sent or counted as dropped.
async fn attempt<E: Export>(
    sending: &Sending<E>,
    mut batch: Batch,
    mut abort: watch::Receiver<bool>,
) -> Settled {
    let (exporter, retry, metrics) = (&sending.exporter, &sending.retry, &sending.metrics);
    if sending.decodes {
        batch.decode();
        metrics.dropped("undecodable", batch.take_lost());
    }
    let items = batch.items();
    let started = Instant::now();
    let mut backoff = retry::Backoff::new(retry);
    loop {
        let attempt = Instant::now();
        let result = tokio::select! {
            result = exporter.export(&batch) => result,
            _ = aborted(&mut abort) => {
                metrics.dropped(given_up(&batch), items);
                return Settled::No;
            }
        };
        metrics.duration.observe(attempt.elapsed().as_secs_f64());
        let error = match result {
            Ok(exported) => {
                let (reason, discarded) = exported.discarded.unwrap_or(("", 0));
                let discarded = (discarded as usize).min(items);
                metrics.dropped(reason, discarded);
                let rejected = (exported.rejected as usize).min(items - discarded);
                metrics.ledger.sent.add(items - discarded - rejected);
                if rejected > 0 {
                    tracing::warn!(exporter = %metrics.labels.exporter, rejected, message = %exported.message, "backend rejected part of a batch");
                    metrics.dropped("partial_success", rejected);
                }
                return Settled::Yes;
            }
            Err(error) => error,
        };
        metrics.failed(error.reason, items);
        if !error.retryable {
            tracing::warn!(exporter = %metrics.labels.exporter, items, reason = error.reason, message = %error.message, "dropping batch after a permanent error");
            metrics.dropped("permanent", items);
            return Settled::Yes;
        }
        if !retry.enabled {
            tracing::warn!(exporter = %metrics.labels.exporter, items, message = %error.message, "dropping batch: export failed and retry_on_failure is disabled");
            metrics.dropped("retry_disabled", items);
            return Settled::Yes;
        }
        let delay = backoff.next_delay(error.retry_after);
        if !retry.max_elapsed_time.is_zero() && started.elapsed() + delay > retry.max_elapsed_time {
            tracing::warn!(exporter = %metrics.labels.exporter, items, message = %error.message, "dropping batch: retries exhausted");
            metrics.dropped("retries_exhausted", items);
            return Settled::Yes;
        }
        tracing::debug!(exporter = %metrics.labels.exporter, ?delay, message = %error.message, "export failed; retrying");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = aborted(&mut abort) => {
                metrics.dropped(given_up(&batch), items);
                return Settled::No;
            }
        }
    }
}

/// `name` with every character outside `[a-zA-Z0-9_]` made `_`: the shared first step of
/// Loki's and Prometheus' label name rules.
pub fn underscore_invalid(name: &str) -> String {
    if name.is_ascii() {
        // the common case, byte by byte (a non-ASCII character is one `_`, below)
        let mut bytes = name.as_bytes().to_vec();
        for b in &mut bytes {
            if !b.is_ascii_alphanumeric() {
                *b = b'_';
            }
        }
        return String::from_utf8(bytes).expect("ASCII letters, digits and `_` are UTF-8");
    }
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Resolves once `abort` is set; never if its sender is gone without setting it.
async fn aborted(abort: &mut watch::Receiver<bool>) {
    if abort.wait_for(|a| *a).await.is_err() {
        std::future::pending::<()>().await;
    }
}
