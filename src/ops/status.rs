//! Shared sync status: the readiness latch, the shutdown flag, the etcd
//! connection flag, the current revision and the keys skipped with their
//! reasons.
//!
//! Written by the watcher, read by the admin endpoints. Nothing here is on
//! the DNS query path, so the skipped-key map can sit behind a plain mutex.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use serde::Serialize;

/// One etcd key that matched a pattern but could not be served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedKey {
    /// The key, lossily decoded as UTF-8 (bad bytes become U+FFFD).
    pub key: String,
    /// The reason, as in `rpcdns_skipped_keys_total{reason}`.
    pub reason: &'static str,
    /// The etcd revision at which the key was last written.
    pub revision: i64,
}

/// State shared between the etcd watcher and the admin endpoints.
#[derive(Debug, Default)]
pub struct SyncStatus {
    ready: AtomicBool,
    /// Set once shutdown begins: readiness drops at once so that load
    /// balancers and Kubernetes stop sending queries while in-flight ones
    /// are still answered.
    shutting_down: AtomicBool,
    connected: AtomicBool,
    /// The zone served is the state file's, not yet replaced by a full
    /// etcd read.
    stale: AtomicBool,
    revision: AtomicI64,
    skipped: Mutex<BTreeMap<Vec<u8>, SkippedKey>>,
}

impl SyncStatus {
    pub fn new() -> Self {
        Self::default()
    }

    /// One-way latch: set after the first full read is in the zone. It
    /// never goes back, since serving the last-known zone through an etcd
    /// outage is the point.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Ready to take traffic: the first full read is in the zone and
    /// shutdown has not begun.
    pub fn is_ready(&self) -> bool {
        self.is_synced() && !self.is_shutting_down()
    }

    /// Whether the first full read is in the zone (the latch alone).
    pub fn is_synced(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// One-way: shutdown has begun, readiness is withdrawn for good.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// The zone is the state file's (`true`) until the first full read
    /// replaces it (`false`).
    pub fn set_stale(&self, stale: bool) {
        self.stale.store(stale, Ordering::Release);
    }

    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Acquire)
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub fn set_revision(&self, revision: i64) {
        self.revision.store(revision, Ordering::Release);
    }

    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }

    /// Records `key` as skipped. Returns true when this is news (the key was
    /// not skipped before, or for another reason), so the caller logs once.
    pub fn record_skip(&self, key: &[u8], reason: &'static str, revision: i64) -> bool {
        let mut skipped = self.lock();
        let entry = SkippedKey {
            key: String::from_utf8_lossy(key).into_owned(),
            reason,
            revision,
        };
        match skipped.insert(key.to_vec(), entry) {
            Some(previous) => previous.reason != reason,
            None => true,
        }
    }

    /// Forgets `key` (deleted, or now valid).
    pub fn clear_skip(&self, key: &[u8]) {
        self.lock().remove(key);
    }

    /// Replaces the whole skipped set (after a full re-read).
    pub fn replace_skipped(&self, entries: BTreeMap<Vec<u8>, SkippedKey>) {
        *self.lock() = entries;
    }

    pub fn skipped(&self) -> Vec<SkippedKey> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, SkippedKey>> {
        // A panic while holding this lock cannot leave the map half-written
        // (every mutation is a single insert/remove/assign), so a poisoned
        // lock is still safe to use.
        self.skipped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_is_news_only_once_per_reason() {
        let status = SyncStatus::new();
        assert!(status.record_skip(b"a.rpc/1", "no_port", 5));
        assert!(!status.record_skip(b"a.rpc/1", "no_port", 6));
        assert!(status.record_skip(b"a.rpc/1", "bad_port", 7));
        assert_eq!(status.skipped().len(), 1);
        status.clear_skip(b"a.rpc/1");
        assert!(status.skipped().is_empty());
    }

    #[test]
    fn readiness_is_a_latch() {
        let status = SyncStatus::new();
        assert!(!status.is_ready());
        status.mark_ready();
        assert!(status.is_ready());
    }

    #[test]
    fn shutdown_withdraws_readiness_for_good() {
        let status = SyncStatus::new();
        status.mark_ready();
        status.begin_shutdown();
        assert!(!status.is_ready());
        assert!(status.is_synced());
        assert!(status.is_shutting_down());
        status.mark_ready();
        assert!(!status.is_ready());
    }
}
