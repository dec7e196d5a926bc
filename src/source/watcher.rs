//! Applies etcd events to the zone and the sync status, and publishes a new
//! snapshot after each batch.
//!
//! The [`Watcher`] is the [`SyncSink`] that [`crate::source::etcd::run`] feeds: it
//! classifies each key/value with [`Sources::classify`], stages the
//! result in the single [`ZoneWriter`], and publishes once per full read or
//! watch response, so readers see each batch whole.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::ops::metrics::ResyncReason;
use crate::ops::metrics::{EventType, Metrics};
use crate::ops::status::{SkippedKey, SyncStatus};
use crate::source::etcd::{KvEvent, SyncSink};
use crate::source::gozero::Classified;
use crate::source::sources::Sources;
use crate::source::state::{Keeper, Kvs, StateFile};
use crate::zone::names::port_label;
use crate::zone::{PortsChange, ServiceChange, ZoneWriter};

/// Turns etcd state and events into published zone snapshots.
#[derive(Debug)]
pub struct Watcher {
    writer: ZoneWriter,
    status: Arc<SyncStatus>,
    metrics: Arc<Metrics>,
    sources: Sources,
    /// Apex without the trailing dot.
    zone: String,
    /// With `state.dir`: the keys and values the zone is made of (the
    /// sources' keys, not other programs'), and where the state file's
    /// writer picks them up.
    state: Option<(Kvs, Arc<Keeper>)>,
}

impl Watcher {
    /// `zone` is the apex without its trailing dot (`svc.local`).
    pub fn new(
        writer: ZoneWriter,
        status: Arc<SyncStatus>,
        metrics: Arc<Metrics>,
        sources: Sources,
        zone: String,
    ) -> Self {
        Self {
            writer,
            status,
            metrics,
            sources,
            zone,
            state: None,
        }
    }

    /// Keeps the keys and values the zone is made of, and offers them to
    /// `keeper` after every change (for the state file).
    pub fn with_state(mut self, keeper: Arc<Keeper>) -> Self {
        self.state = Some((Kvs::new(), keeper));
        self
    }

    /// Serves a state file's copy of the zone, marked stale, until the
    /// first full read replaces it.
    pub fn load_stale(&mut self, file: StateFile) {
        let keys = file.kvs.len();
        let (services, instances) = self.replace(file.kvs, file.revision);
        self.status.set_stale(true);
        self.status.mark_ready();
        let age = crate::source::state::now().saturating_sub(file.written_at);
        tracing::warn!(
            revision = file.revision,
            age_seconds = age,
            keys,
            services,
            instances,
            "serving the zone from the state file (stale) until etcd answers"
        );
    }

    /// Classifies a put, and keeps it for the state file when it is one of
    /// the sources' keys.
    fn classify_and_keep(&mut self, key: &[u8], value: &[u8]) -> Classified {
        let classified = self.sources.classify(key, value);
        if let Some((kvs, _)) = &mut self.state {
            if matches!(classified, Classified::Ignored) {
                kvs.remove(key);
            } else {
                kvs.insert(key.to_vec(), value.to_vec());
            }
        }
        classified
    }

    fn apply_one(&mut self, event: KvEvent) {
        self.metrics.etcd_event(match event {
            KvEvent::Put { .. } => EventType::Put,
            KvEvent::Delete { .. } => EventType::Delete,
        });
        match event {
            KvEvent::Put {
                key,
                value,
                mod_revision,
            } => match self.classify_and_keep(&key, &value) {
                Classified::Registration(registration) => {
                    let change = self.writer.upsert(&key, registration);
                    log_change(&change);
                    self.status.clear_skip(&key);
                }
                Classified::Registrations(registrations) => {
                    let change = self.writer.set(&key, registrations);
                    log_change(&change);
                    self.status.clear_skip(&key);
                }
                Classified::Overlay(overlay) => {
                    let (target, overlay) = *overlay;
                    self.writer.set_overlay(&key, target, overlay);
                    self.status.clear_skip(&key);
                }
                Classified::Sky(record) => {
                    self.writer.set_sky(&key, *record);
                    self.status.clear_skip(&key);
                }
                Classified::Skipped(reason) => {
                    // SPEC §5: "A value that turns bad withdraws the
                    // instance: DNS never goes on serving the old value."
                    // (An overlay that turns bad stops applying.)
                    self.writer.remove_overlay(&key);
                    self.writer.remove_sky(&key);
                    let change = self.writer.remove(&key);
                    log_change(&change);
                    if self.status.record_skip(&key, reason.as_str(), mod_revision) {
                        self.metrics.skipped_key(reason);
                        // Control characters escaped: a key cannot forge
                        // a log line.
                        tracing::warn!(
                            key = %String::from_utf8_lossy(&key).escape_debug(),
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
                if let Some((kvs, _)) = &mut self.state {
                    kvs.remove(&key);
                }
                self.writer.remove_overlay(&key);
                self.writer.remove_sky(&key);
                let change = self.writer.remove(&key);
                log_change(&change);
                self.status.clear_skip(&key);
            }
        }
    }
}

impl Watcher {
    /// Replaces the zone with `kvs` at `revision` and publishes it;
    /// returns (services, instances).
    fn replace(&mut self, kvs: Vec<(Vec<u8>, Vec<u8>)>, revision: i64) -> (usize, usize) {
        // Keys already known as skipped for the same reason are not news:
        // a re-read after compaction must not log them all again.
        let known: HashSet<(String, &'static str)> = self
            .status
            .skipped()
            .into_iter()
            .map(|skipped| (skipped.key, skipped.reason))
            .collect();
        let mut registrations = Vec::with_capacity(kvs.len());
        let mut overlays = Vec::new();
        let mut sky = Vec::new();
        let mut skipped = BTreeMap::new();
        let mut mirror = Kvs::new();
        let keep = self.state.is_some();
        for (key, value) in kvs {
            let classified = self.sources.classify(&key, &value);
            if keep && !matches!(classified, Classified::Ignored) {
                mirror.insert(key.clone(), value);
            }
            match classified {
                Classified::Registration(registration) => {
                    registrations.push((key, vec![registration]));
                }
                Classified::Registrations(several) => registrations.push((key, several)),
                Classified::Overlay(overlay) => overlays.push((key, *overlay)),
                Classified::Sky(record) => sky.push((key, *record)),
                Classified::Skipped(reason) => {
                    let entry = SkippedKey {
                        key: String::from_utf8_lossy(&key).into_owned(),
                        reason: reason.as_str(),
                        // The full read carries no per-key revision; the
                        // read's revision is when the key was last seen so.
                        revision,
                    };
                    if !known.contains(&(entry.key.clone(), entry.reason)) {
                        self.metrics.skipped_key(reason);
                        tracing::warn!(
                            key = %entry.key.escape_debug(),
                            reason = entry.reason,
                            "skipping etcd key: {reason}"
                        );
                    }
                    skipped.insert(key, entry);
                }
                Classified::Ignored => {}
            }
        }
        let (services, instances) = self.writer.replace_all(registrations, sky);
        for (key, (target, overlay)) in overlays {
            self.writer.set_overlay(&key, target, overlay);
        }
        self.writer.set_revision(revision);
        log_ports(&self.writer.publish(), &self.zone);
        self.status.replace_skipped(skipped);
        self.status.set_revision(revision);
        if let Some((kvs, _)) = &mut self.state {
            *kvs = mirror;
        }
        (services, instances)
    }

    /// Offers the current keys and values to the state file's writer.
    fn offer_state(&self) {
        if let Some((kvs, keeper)) = &self.state {
            keeper.offer(kvs.clone(), self.status.revision());
        }
    }
}

impl SyncSink for Watcher {
    fn reset(&mut self, kvs: Vec<(Vec<u8>, Vec<u8>)>, revision: i64, reason: ResyncReason) {
        let (services, instances) = self.replace(kvs, revision);
        if self.status.is_stale() {
            self.status.set_stale(false);
            tracing::info!(revision, "etcd answered: the state file's zone is replaced");
        }
        self.status.mark_ready();
        self.offer_state();
        self.metrics.etcd_resync(reason);
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
        log_ports(&self.writer.publish(), &self.zone);
        self.status.set_revision(revision);
        self.offer_state();
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

/// One warning when a service's instances come to listen on several ports
/// (a client given the service name and one port reaches some instances
/// on the wrong port), one line when they are back on one.
fn log_ports(changes: &[PortsChange], zone: &str) {
    for change in changes {
        match change {
            PortsChange::Several { service, ports } => {
                let names: Vec<String> = ports
                    .iter()
                    .map(|&port| format!("{}.{service}.{zone}", port_label(port)))
                    .collect();
                tracing::warn!(
                    service,
                    ?ports,
                    names = names.join(" "),
                    "service instances listen on several ports: a client given the service name and one port reaches some instances on the wrong port; give each client the name of its port"
                );
            }
            PortsChange::One { service, port } => {
                tracing::info!(service, port, "service instances listen on one port again");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use hickory_proto::rr::Name;

    use super::*;
    use crate::zone::{ZoneParams, ZoneStore};

    fn watcher() -> (Watcher, Arc<ZoneStore>, Arc<SyncStatus>) {
        let store = Arc::new(ZoneStore::new(ZoneParams {
            origin: Name::from_ascii("svc.local.").unwrap(),
            ttl: 5,
            negative_ttl: 5,
            grpc: Default::default(),
            reverse: Vec::new(),
        }));
        let status = Arc::new(SyncStatus::new());
        let sources = Sources::new(
            &[crate::config::SourceConfig {
                format: crate::config::Format::GoZero,
                prefix: String::new(),
                patterns: vec!["*.rpc".to_owned()],
                suffix: String::new(),
            }],
            "svc.local",
        )
        .unwrap();
        let watcher = Watcher::new(
            ZoneWriter::new(store.clone()),
            status.clone(),
            Arc::new(Metrics::with_shards(1)),
            sources,
            "svc.local".to_owned(),
        );
        (watcher, store, status)
    }

    fn kv(key: &str, value: &str) -> (Vec<u8>, Vec<u8>) {
        (key.as_bytes().to_vec(), value.as_bytes().to_vec())
    }

    fn put(key: &str, value: &str, mod_revision: i64) -> KvEvent {
        KvEvent::Put {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            mod_revision,
        }
    }

    fn delete(key: &str, mod_revision: i64) -> KvEvent {
        KvEvent::Delete {
            key: key.as_bytes().to_vec(),
            mod_revision,
        }
    }

    /// `(etcd key, address, port)` of every published instance, sorted.
    fn instances(store: &ZoneStore) -> Vec<(String, String, u64)> {
        let json = store.load().debug_json();
        let mut out = Vec::new();
        for service in json["services"].as_array().unwrap() {
            for instance in service["instances"].as_array().unwrap() {
                let address = instance["address"]
                    .as_str()
                    .or(instance["host"].as_str())
                    .unwrap()
                    .to_owned();
                out.push((
                    instance["key"].as_str().unwrap().to_owned(),
                    address,
                    instance["port"].as_u64().unwrap(),
                ));
            }
        }
        out.sort();
        out
    }

    fn skipped(status: &SyncStatus) -> Vec<(String, &'static str)> {
        status
            .skipped()
            .into_iter()
            .map(|skipped| (skipped.key, skipped.reason))
            .collect()
    }

    fn entry(key: &str, address: &str, port: u64) -> (String, String, u64) {
        (key.to_owned(), address.to_owned(), port)
    }

    #[test]
    fn reset_builds_the_zone_and_marks_ready() {
        let (mut watcher, store, status) = watcher();
        assert!(!status.is_ready());
        watcher.reset(
            vec![
                kv("sms.rpc/1", "10.0.0.5:8001"),
                kv("sms.rpc/2", "10.0.0.6:8001"),
                kv("user.rpc/7", "[fd00::5]:9000"),
                kv("config/other", "not ours"),
                kv("bad.rpc/1", "10.0.0.7"),
                kv("noid.rpc", "10.0.0.8:80"),
            ],
            7,
            ResyncReason::Initial,
        );
        let snapshot = store.load();
        assert_eq!(snapshot.service_count(), 2);
        assert_eq!(snapshot.instance_count(), 3);
        assert_eq!(snapshot.revision(), 7);
        assert_eq!(
            instances(&store),
            vec![
                entry("sms.rpc/1", "10.0.0.5", 8001),
                entry("sms.rpc/2", "10.0.0.6", 8001),
                entry("user.rpc/7", "fd00::5", 9000),
            ]
        );
        assert!(status.is_ready());
        assert_eq!(status.revision(), 7);
        assert_eq!(
            skipped(&status),
            vec![
                ("bad.rpc/1".to_owned(), "no_port"),
                ("noid.rpc".to_owned(), "no_instance_id"),
            ]
        );
    }

    #[test]
    fn apply_puts_and_deletes_then_publishes_the_revision() {
        let (mut watcher, store, status) = watcher();
        watcher.reset(
            vec![kv("sms.rpc/1", "10.0.0.5:8001")],
            3,
            ResyncReason::Initial,
        );
        watcher.apply(
            vec![
                put("sms.rpc/2", "10.0.0.6:8001", 4),
                put("mall.user.rpc/9", "sms-0.sms:8080", 5),
                put("sms.rpc/1", "10.0.0.9:8001", 6),
                delete("sms.rpc/2", 7),
                put("config/other", "ignored", 8),
            ],
            8,
        );
        assert_eq!(
            instances(&store),
            vec![
                entry("mall.user.rpc/9", "sms-0.sms", 8080),
                entry("sms.rpc/1", "10.0.0.9", 8001),
            ]
        );
        assert_eq!(store.load().revision(), 8);
        assert_eq!(status.revision(), 8);

        // The last instance of a service goes: the service goes.
        watcher.apply(vec![delete("mall.user.rpc/9", 9)], 9);
        assert_eq!(store.load().service_count(), 1);
        assert_eq!(store.load().revision(), 9);
    }

    #[test]
    fn a_value_that_turns_bad_withdraws_the_instance() {
        let (mut watcher, store, status) = watcher();
        watcher.reset(
            vec![
                kv("sms.rpc/1", "10.0.0.5:8001"),
                kv("sms.rpc/2", "10.0.0.6:8001"),
            ],
            3,
            ResyncReason::Initial,
        );
        watcher.apply(vec![put("sms.rpc/1", "0.0.0.0:8001", 4)], 4);
        assert_eq!(
            instances(&store),
            vec![entry("sms.rpc/2", "10.0.0.6", 8001)]
        );
        assert_eq!(
            skipped(&status),
            vec![("sms.rpc/1".to_owned(), "unspecified_address")]
        );

        // Good again: back in the zone, no longer skipped.
        watcher.apply(vec![put("sms.rpc/1", "10.0.0.5:8001", 5)], 5);
        assert_eq!(store.load().instance_count(), 2);
        assert!(status.skipped().is_empty());

        // A skipped key that is deleted is forgotten.
        watcher.apply(vec![put("sms.rpc/3", "10.0.0.7:0", 6)], 6);
        assert_eq!(skipped(&status), vec![("sms.rpc/3".to_owned(), "bad_port")]);
        watcher.apply(vec![delete("sms.rpc/3", 7)], 7);
        assert!(status.skipped().is_empty());
        assert_eq!(store.load().instance_count(), 2);
    }

    #[test]
    fn a_reread_replaces_everything() {
        let (mut watcher, store, status) = watcher();
        watcher.reset(
            vec![
                kv("sms.rpc/1", "10.0.0.5:8001"),
                kv("old.rpc/1", "10.0.0.6:8001"),
                kv("bad.rpc/1", "10.0.0.7"),
            ],
            3,
            ResyncReason::Initial,
        );
        watcher.reset(
            vec![
                kv("sms.rpc/1", "10.0.0.5:8001"),
                kv("new.rpc/1", "10.0.0.8:8001"),
                kv("worse.rpc/1", "10.0.0.9:99999"),
            ],
            20,
            ResyncReason::Compacted,
        );
        assert_eq!(
            instances(&store),
            vec![
                entry("new.rpc/1", "10.0.0.8", 8001),
                entry("sms.rpc/1", "10.0.0.5", 8001),
            ]
        );
        assert_eq!(store.load().revision(), 20);
        assert_eq!(status.revision(), 20);
        assert_eq!(
            skipped(&status),
            vec![("worse.rpc/1".to_owned(), "bad_port")]
        );
    }

    #[test]
    fn events_resyncs_and_new_skips_are_counted() {
        let (mut watcher, _store, _status) = watcher();
        let metrics = Arc::new(Metrics::with_shards(1));
        watcher.metrics = metrics.clone();
        watcher.reset(
            vec![kv("bad.rpc/1", "10.0.0.7"), kv("sms.rpc/1", "10.0.0.5:80")],
            3,
            ResyncReason::Initial,
        );
        watcher.apply(
            vec![
                put("sms.rpc/2", "10.0.0.6:80", 4),
                // Bad for the same reason again: not news, not counted.
                put("bad.rpc/1", "10.0.0.8", 5),
                put("sms.rpc/3", "10.0.0.9:0", 6),
                delete("sms.rpc/2", 7),
            ],
            7,
        );
        // A re-read that finds the same bad keys does not count them again.
        watcher.reset(
            vec![kv("bad.rpc/1", "10.0.0.7"), kv("sms.rpc/3", "10.0.0.9:0")],
            20,
            ResyncReason::Compacted,
        );
        let text = metrics.render(&crate::ops::metrics::Gauges::default());
        for expected in [
            "rpcdns_etcd_events_total{type=\"put\"} 3\n",
            "rpcdns_etcd_events_total{type=\"delete\"} 1\n",
            "rpcdns_etcd_resyncs_total{reason=\"initial\"} 1\n",
            "rpcdns_etcd_resyncs_total{reason=\"compacted\"} 1\n",
            "rpcdns_skipped_keys_total{reason=\"no_port\"} 1\n",
            "rpcdns_skipped_keys_total{reason=\"bad_port\"} 1\n",
        ] {
            assert!(text.contains(expected), "{expected}in\n{text}");
        }
    }

    #[test]
    fn connection_state_reaches_the_status() {
        let (mut watcher, _store, status) = watcher();
        watcher.set_connected(true);
        assert!(status.is_connected());
        watcher.set_connected(false);
        assert!(!status.is_connected());
        // An outage never takes readiness back.
        watcher.reset(Vec::new(), 1, ResyncReason::Initial);
        watcher.set_connected(false);
        assert!(status.is_ready());
    }
}
