//! Applies etcd events to the zone and the sync status, and publishes a new
//! snapshot after each batch.
//!
//! The [`Watcher`] is the [`SyncSink`] that [`crate::etcd::run`] feeds: it
//! classifies each key/value with [`registration::classify`], stages the
//! result in the single [`ZoneWriter`], and publishes once per full read or
//! watch response, so readers see each batch whole.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::etcd::{KvEvent, ResyncReason, SyncSink};
use crate::registration::{self, Classified, Patterns};
use crate::status::{SkippedKey, SyncStatus};
use crate::zone::{ServiceChange, ZoneWriter};

/// Turns etcd state and events into published zone snapshots.
#[derive(Debug)]
pub struct Watcher {
    writer: ZoneWriter,
    status: Arc<SyncStatus>,
    patterns: Patterns,
    /// Apex without the trailing dot, as [`registration::classify`] wants it.
    zone: String,
}

impl Watcher {
    /// `zone` is the apex without its trailing dot (`svc.local`).
    pub fn new(
        writer: ZoneWriter,
        status: Arc<SyncStatus>,
        patterns: Patterns,
        zone: String,
    ) -> Self {
        Self {
            writer,
            status,
            patterns,
            zone,
        }
    }

    fn apply_one(&mut self, event: KvEvent) {
        match event {
            KvEvent::Put {
                key,
                value,
                mod_revision,
            } => match registration::classify(&key, &value, &self.patterns, &self.zone) {
                Classified::Registration(registration) => {
                    let change = self.writer.upsert(&key, registration);
                    log_change(&change);
                    self.status.clear_skip(&key);
                }
                Classified::Skipped(reason) => {
                    // SPEC §5: "A value that turns bad withdraws the
                    // instance: DNS never goes on serving the old value."
                    let change = self.writer.remove(&key);
                    log_change(&change);
                    if self
                        .status
                        .record_skip(&key, reason.as_str(), mod_revision)
                    {
                        tracing::warn!(
                            key = %String::from_utf8_lossy(&key),
                            reason = reason.as_str(),
                            "skipping etcd key: {reason}"
                        );
                    }
                }
                // Another program's key: it never entered the zone, and the
                // patterns do not change while running.
                Classified::Ignored => {}
            },
            KvEvent::Delete { key, .. } => {
                let change = self.writer.remove(&key);
                log_change(&change);
                self.status.clear_skip(&key);
            }
        }
    }
}

impl SyncSink for Watcher {
    fn reset(&mut self, kvs: Vec<(Vec<u8>, Vec<u8>)>, revision: i64, reason: ResyncReason) {
        // Keys already known as skipped for the same reason are not news:
        // a re-read after compaction must not log them all again.
        let known: HashSet<(String, &'static str)> = self
            .status
            .skipped()
            .into_iter()
            .map(|skipped| (skipped.key, skipped.reason))
            .collect();
        let mut registrations = Vec::with_capacity(kvs.len());
        let mut skipped = BTreeMap::new();
        for (key, value) in kvs {
            match registration::classify(&key, &value, &self.patterns, &self.zone) {
                Classified::Registration(registration) => registrations.push((key, registration)),
                Classified::Skipped(reason) => {
                    let entry = SkippedKey {
                        key: String::from_utf8_lossy(&key).into_owned(),
                        reason: reason.as_str(),
                        // The full read carries no per-key revision; the
                        // read's revision is when the key was last seen so.
                        revision,
                    };
                    if !known.contains(&(entry.key.clone(), entry.reason)) {
                        tracing::warn!(
                            key = %entry.key,
                            reason = entry.reason,
                            "skipping etcd key: {reason}"
                        );
                    }
                    skipped.insert(key, entry);
                }
                Classified::Ignored => {}
            }
        }
        let (services, instances) = self.writer.replace_all(registrations);
        self.writer.set_revision(revision);
        self.writer.publish();
        self.status.replace_skipped(skipped);
        self.status.set_revision(revision);
        self.status.mark_ready();
        tracing::info!(
            reason = reason.as_str(),
            services,
            instances,
            revision,
            "zone loaded from etcd"
        );
    }

    fn apply(&mut self, events: Vec<KvEvent>, revision: i64) {
        for event in events {
            self.apply_one(event);
        }
        self.writer.set_revision(revision);
        self.writer.publish();
        self.status.set_revision(revision);
    }

    fn set_connected(&mut self, connected: bool) {
        self.status.set_connected(connected);
    }
}

/// One line per service state change at info; in-service changes at debug.
fn log_change(change: &ServiceChange) {
    match change {
        ServiceChange::Appeared(service) => tracing::info!(service, "service appeared"),
        ServiceChange::Disappeared(service) => tracing::info!(service, "service disappeared"),
        ServiceChange::Updated(service) => tracing::debug!(service, "service updated"),
        ServiceChange::Unchanged => {}
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {}
