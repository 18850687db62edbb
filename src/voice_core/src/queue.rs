//! Hand-off to a bounded worker queue that never blocks the caller (a ROS
//! callback or the audio thread): a full queue counts the item as dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

/// What became of an offered item.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered<T> {
    Queued,
    /// The queue was full: the item is counted in `dropped` and given back
    /// so the caller can say what was lost.
    Dropped(T),
    /// The worker is gone (shutting down).
    Closed,
}

/// Offers `item` to `tx` without blocking; a full queue adds one to `dropped`.
pub fn offer<T>(tx: &SyncSender<T>, item: T, dropped: &AtomicU64) -> Offered<T> {
    match tx.try_send(item) {
        Ok(()) => Offered::Queued,
        Err(TrySendError::Full(item)) => {
            dropped.fetch_add(1, Ordering::Relaxed);
            Offered::Dropped(item)
        }
        Err(TrySendError::Disconnected(_)) => Offered::Closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    #[test]
    fn full_queue_drops_and_counts_closed_queue_does_not_count() {
        let dropped = AtomicU64::new(0);
        let (tx, rx) = sync_channel(2);
        assert_eq!(offer(&tx, 1, &dropped), Offered::Queued);
        assert_eq!(offer(&tx, 2, &dropped), Offered::Queued);
        assert_eq!(offer(&tx, 3, &dropped), Offered::Dropped(3));
        assert_eq!(dropped.load(Ordering::Relaxed), 1);
        assert_eq!(rx.recv(), Ok(1));
        assert_eq!(offer(&tx, 4, &dropped), Offered::Queued);
        drop(rx);
        assert_eq!(offer(&tx, 5, &dropped), Offered::Closed);
        assert_eq!(dropped.load(Ordering::Relaxed), 1);
    }
}
