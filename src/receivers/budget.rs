//! A receiver's budget of bytes in flight: request bodies being read, and their
//! decompressed form, across all of the receiver's connections at once.
//!
//! Size limits bound one request; this bounds them together, so a thousand clients each
//! sending a body just under the limit cannot take a thousand times the limit. A request
//! reserves bytes as its body arrives and when it is decompressed, and gives them back
//! when it has been handed to the pipelines (whose queues account for it from there).
//! When the budget is spent, a request waits up to [`WAIT`] for room, then gets the
//! retryable refusal (gRPC `UNAVAILABLE`, HTTP 503), counted as
//! `sieve_receiver_rejected_requests_total{reason="in_flight_limit"}`.
//!
//! Work between reservations (decompressing, transcoding JSON) runs on the runtime's
//! worker threads, so at most one such step per worker is outside the budget at a time.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a request waits for room before it is refused.
pub const WAIT: Duration = Duration::from_secs(1);

/// Bytes a receiver may hold for requests in flight.
#[derive(Clone)]
pub struct Budget {
    semaphore: Arc<Semaphore>,
    total: usize,
}

/// Bytes one request holds; given back when dropped.
#[derive(Default)]
pub struct Reservation(Option<OwnedSemaphorePermit>);

/// Why a body could not be taken.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the request's limit.
    TooLarge,
    /// The budget stayed spent for [`WAIT`].
    Busy,
    /// The connection failed while the body was read.
    Read(String),
}

impl Budget {
    pub fn new(total: usize) -> Budget {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        Budget {
            semaphore: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Adds `bytes` to `reservation`, waiting up to [`WAIT`] for room. A request larger
    /// than the whole budget reserves all of it.
    pub async fn reserve(
        &self,
        reservation: &mut Reservation,
        bytes: usize,
    ) -> Result<(), BodyError> {
        let wanted = bytes.min(self.total).min(u32::MAX as usize) as u32;
        if wanted == 0 {
            return Ok(());
        }
        let acquire = Arc::clone(&self.semaphore).acquire_many_owned(wanted);
        let permit = match tokio::time::timeout(WAIT, acquire).await {
            Ok(Ok(permit)) => permit,
            _ => return Err(BodyError::Busy),
        };
        match &mut reservation.0 {
            Some(held) => held.merge(permit),
            none => *none = Some(permit),
        }
        Ok(())
    }

    /// Reads a body of at most `limit` bytes, reserving its bytes as they arrive.
    /// `declared` reads the body's whole length from its first bytes (a gRPC message's
    /// prefix), where the request's `content-length` does not give it.
    pub async fn read_body(
        &self,
        mut body: Incoming,
        limit: usize,
        reservation: &mut Reservation,
        declared: fn(&[u8]) -> Option<usize>,
    ) -> Result<Bytes, BodyError> {
        let mut collected = BytesMut::new();
        let content_length = body.size_hint().exact().map(|n| n as usize);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            if collected.len() + data.len() > limit {
                return Err(BodyError::TooLarge);
            }
            self.reserve(reservation, data.len()).await?;
            if collected.capacity() == 0 {
                let whole = content_length.or_else(|| declared(&data)).unwrap_or(0);
                collected.reserve(first_capacity(data.len(), whole, limit));
            }
            collected.extend_from_slice(&data);
        }
        Ok(collected.freeze())
    }

    /// Bytes reserved now.
    #[cfg(test)]
    fn in_use(&self) -> usize {
        self.total - self.semaphore.available_permits()
    }
}

/// The capacity a body's buffer starts with, given its first `arrived` bytes and the
/// whole length it declares (0: unknown): room for the whole body at once, so that its
/// bytes are copied once (a 60 KiB gRPC request arrives in four 16 KiB frames), but at
/// most four times what has arrived, so that what a buffer holds beyond the budget's
/// reservation stays within three times that reservation (a client declaring a large
/// body and sending a little holds little).
fn first_capacity(arrived: usize, declared: usize, limit: usize) -> usize {
    declared
        .min(limit)
        .min(arrived.saturating_mul(4))
        .max(arrived)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_buffer_starts_with_room_for_what_it_declares_within_bounds() {
        const KIB: usize = 1 << 10;
        let limit = 4096 * KIB;
        assert_eq!(first_capacity(16 * KIB, 60 * KIB, limit), 60 * KIB);
        assert_eq!(
            first_capacity(16 * KIB, 0, limit),
            16 * KIB,
            "unknown length"
        );
        assert_eq!(
            first_capacity(16 * KIB, 4000 * KIB, limit),
            64 * KIB,
            "at most four times what arrived"
        );
        assert_eq!(first_capacity(100, 4000 * KIB, limit), 400, "a few bytes");
        assert_eq!(
            first_capacity(16 * KIB, 9000 * KIB, 32 * KIB),
            32 * KIB,
            "the limit"
        );
        assert_eq!(
            first_capacity(16 * KIB, 10, limit),
            16 * KIB,
            "a short declaration"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reservations_wait_for_room_then_give_up() {
        let budget = Budget::new(100);
        let mut first = Reservation::default();
        budget.reserve(&mut first, 60).await.unwrap();
        budget.reserve(&mut first, 30).await.unwrap();
        assert_eq!(budget.in_use(), 90);
        let mut second = Reservation::default();
        assert_eq!(
            budget.reserve(&mut second, 20).await,
            Err(BodyError::Busy),
            "no room within the wait"
        );
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move {
                let mut second = Reservation::default();
                budget.reserve(&mut second, 20).await.map(|()| second)
            })
        };
        tokio::task::yield_now().await;
        drop(first);
        let second = waiting.await.unwrap().unwrap();
        assert_eq!(budget.in_use(), 20);
        drop(second);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_request_larger_than_the_budget_takes_all_of_it() {
        let budget = Budget::new(10);
        let mut reservation = Reservation::default();
        budget.reserve(&mut reservation, 1000).await.unwrap();
        assert_eq!(budget.in_use(), 10);
    }
}
