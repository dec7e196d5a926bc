//! Metric names, their fixed label sets, the lock-free counters behind them,
//! and their rendering in the Prometheus text format (0.0.4).
//!
//! Every metric rpcdns exports is named here as a `pub const` that the code
//! and the tests share. Components get an `Arc<Metrics>` handle and call
//! typed methods; they never see a registry or format a label. Label values
//! come from the enums below, never from query names, so the number of
//! series is fixed: every combination is rendered from the start, zeros
//! included, so dashboards and alerts see each series before it first moves.
//!
//! The query counters sit on the DNS fast path, so they are built for it:
//! counting is one relaxed atomic add on a fixed array slot (no lock, no
//! allocation, no hashing), and the counters are split into cache-line
//! aligned shards, one per thread (assigned round-robin on first use), so
//! that two cores answering queries never write the same cache line. A
//! scrape sums the shards.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus::TextEncoder;
use prometheus::core::Desc;
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

// ---------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------

/// Counter: DNS responses sent, by `qtype`, `rcode` and `transport`.
pub const DNS_QUERIES_TOTAL: &str = "rpcdns_dns_queries_total";
/// Histogram: time from a query's arrival to its response, by `transport`.
pub const DNS_REQUEST_DURATION_SECONDS: &str = "rpcdns_dns_request_duration_seconds";
/// Gauge: services in the published zone.
pub const ZONE_SERVICES: &str = "rpcdns_zone_services";
/// Gauge: instances in the published zone.
pub const ZONE_INSTANCES: &str = "rpcdns_zone_instances";
/// Gauge: SkyDNS records in the published zone.
pub const ZONE_SKYDNS_RECORDS: &str = "rpcdns_zone_skydns_records";
/// Gauge: 1 while the zone served is the state file's, not yet replaced
/// by a full etcd read.
pub const ZONE_STALE: &str = "rpcdns_zone_stale";
/// Counter: writes of the state file, by `result`.
pub const STATE_WRITES_TOTAL: &str = "rpcdns_state_writes_total";
/// Gauge: services whose instances listen on more than one port.
pub const ZONE_MULTI_PORT_SERVICES: &str = "rpcdns_zone_multi_port_services";
/// Gauge: 1 while the etcd connection is up, else 0.
pub const ETCD_CONNECTED: &str = "rpcdns_etcd_connected";
/// Gauge: the etcd revision the zone reflects.
pub const ETCD_REVISION: &str = "rpcdns_etcd_revision";
/// Counter: watch events received from etcd, by `type`.
pub const ETCD_EVENTS_TOTAL: &str = "rpcdns_etcd_events_total";
/// Counter: full reads of the key range, by `reason`.
pub const ETCD_RESYNCS_TOTAL: &str = "rpcdns_etcd_resyncs_total";
/// Counter: keys that became skipped, by `reason`.
pub const SKIPPED_KEYS_TOTAL: &str = "rpcdns_skipped_keys_total";

/// Counter: queries with a DNS cookie, by `result`.
pub const DNS_COOKIES_TOTAL: &str = "rpcdns_dns_cookies_total";
/// Counter: UDP responses over the rate limit, by `action`.
pub const RRL_LIMITED_TOTAL: &str = "rpcdns_rrl_limited_total";

/// Every metric name, in rendering order.
pub const ALL_NAMES: [&str; 15] = [
    DNS_QUERIES_TOTAL,
    DNS_REQUEST_DURATION_SECONDS,
    DNS_COOKIES_TOTAL,
    RRL_LIMITED_TOTAL,
    ZONE_SERVICES,
    ZONE_INSTANCES,
    ZONE_MULTI_PORT_SERVICES,
    ETCD_CONNECTED,
    ETCD_REVISION,
    ZONE_SKYDNS_RECORDS,
    ZONE_STALE,
    ETCD_EVENTS_TOTAL,
    ETCD_RESYNCS_TOTAL,
    SKIPPED_KEYS_TOTAL,
    STATE_WRITES_TOTAL,
];

/// Content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the latency histogram's buckets, in nanoseconds: 10 µs
/// to 1 s in 1-2.5-5 steps (`le` labels as the prometheus crate writes
/// them, `0.00001` to `1`). A fast-path answer
/// takes microseconds; a forwarded one, milliseconds; 1 s is beyond any
/// upstream timeout.
pub const DURATION_BUCKETS: [u64; 16] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

/// Buckets stored per transport: the bounded ones plus `+Inf`.
const BUCKET_SLOTS: usize = DURATION_BUCKETS.len() + 1;

// ---------------------------------------------------------------------------
// Label sets
// ---------------------------------------------------------------------------

/// Why the whole state was read (again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResyncReason {
    /// The first read after start.
    Initial,
    /// The watch's resume revision had been compacted away.
    Compacted,
    /// The server canceled the watch for another reason.
    Canceled,
}

impl ResyncReason {
    /// Label value for `rpcdns_etcd_resyncs_total{reason}`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResyncReason::Initial => "initial",
            ResyncReason::Compacted => "compacted",
            ResyncReason::Canceled => "canceled",
        }
    }
}

impl std::fmt::Display for ResyncReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a matching key cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SkipReason {
    /// The key has no `/`, or nothing after it.
    NoInstanceId,
    /// The service key cannot become DNS labels under the zone.
    InvalidServiceKey,
    /// The instance id or the value is not UTF-8.
    NotUtf8,
    /// The value is longer than the source's limit (512 octets).
    ValueTooLong,
    /// The value has no `:port`, or an empty one.
    NoPort,
    /// The port is not a decimal number in 1..=65535.
    BadPort,
    /// The value has a port but no host (`:8001`, `[]:8001`).
    EmptyHost,
    /// The address is `0.0.0.0` or `::`, which reaches nobody.
    UnspecifiedAddress,
    /// The host is neither an IP address nor a valid host name.
    InvalidHost,
    /// The value is not the JSON its format writes (go-micro: a `Service`).
    BadJson,
    /// The JSON names no node (go-micro) with an address.
    NoNode,
    /// The instance has no endpoint rpcdns can serve (kratos).
    NoEndpoint,
}

impl SkipReason {
    /// Every reason, e.g. to pre-register the metric's label values.
    pub const ALL: [SkipReason; 12] = [
        SkipReason::NoInstanceId,
        SkipReason::InvalidServiceKey,
        SkipReason::NotUtf8,
        SkipReason::ValueTooLong,
        SkipReason::NoPort,
        SkipReason::BadPort,
        SkipReason::EmptyHost,
        SkipReason::UnspecifiedAddress,
        SkipReason::InvalidHost,
        SkipReason::BadJson,
        SkipReason::NoNode,
        SkipReason::NoEndpoint,
    ];

    /// The `reason` label of `rpcdns_skipped_keys_total`, also shown in
    /// `/debug/zone`.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NoInstanceId => "no_instance_id",
            SkipReason::InvalidServiceKey => "invalid_service_key",
            SkipReason::NotUtf8 => "not_utf8",
            SkipReason::ValueTooLong => "value_too_long",
            SkipReason::NoPort => "no_port",
            SkipReason::BadPort => "bad_port",
            SkipReason::EmptyHost => "empty_host",
            SkipReason::UnspecifiedAddress => "unspecified_address",
            SkipReason::InvalidHost => "invalid_host",
            SkipReason::BadJson => "bad_json",
            SkipReason::NoNode => "no_node",
            SkipReason::NoEndpoint => "no_endpoint",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sentence = match self {
            SkipReason::NoInstanceId => "the key has no instance id after the first '/'",
            SkipReason::InvalidServiceKey => {
                "the service key is not a valid host name under the zone \
                 (empty label, label over 63 octets, name over 236 octets, \
                 or a character other than letters, digits, '-' and '_')"
            }
            SkipReason::NotUtf8 => "the instance id or the value is not valid UTF-8",
            SkipReason::ValueTooLong => "the value is longer than 512 octets",
            SkipReason::NoPort => "the value has no port (expected host:port)",
            SkipReason::BadPort => "the port is not a decimal number in 1..=65535",
            SkipReason::EmptyHost => "the value has an empty host",
            SkipReason::UnspecifiedAddress => {
                "the address is unspecified (0.0.0.0 or ::) and reaches nobody"
            }
            SkipReason::InvalidHost => {
                "the host is neither an IPv4 address, a bracketed IPv6 address \
                 nor a valid host name"
            }
            SkipReason::BadJson => {
                "the value is not the JSON its format writes for this key (go-micro: \
                 a Service with name and nodes; kratos: a ServiceInstance with id, \
                 name and endpoints)"
            }
            SkipReason::NoNode => "the value has no node with an id and an address",
            SkipReason::NoEndpoint => {
                "the instance has no endpoint rpcdns can serve \
                 (grpc, grpcs, http or https://host:port)"
            }
        };
        f.write_str(sentence)
    }
}

/// `transport` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Udp, Transport::Tcp];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// `qtype` label: the question types a discovery client asks, the rest as
/// `other` (a type no client should send must not mint a series).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QType {
    A,
    Aaaa,
    Srv,
    Any,
    Soa,
    Ns,
    /// TXT: gRPC clients look up `_grpc_config.<name>` at each resolution.
    Txt,
    Other,
}

impl QType {
    pub const ALL: [QType; 8] = [
        QType::A,
        QType::Aaaa,
        QType::Srv,
        QType::Any,
        QType::Soa,
        QType::Ns,
        QType::Txt,
        QType::Other,
    ];

    /// The label for wire type `qtype`.
    pub fn from_wire(qtype: u16) -> Self {
        match qtype {
            1 => QType::A,
            28 => QType::Aaaa,
            33 => QType::Srv,
            255 => QType::Any,
            6 => QType::Soa,
            2 => QType::Ns,
            16 => QType::Txt,
            _ => QType::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            QType::A => "a",
            QType::Aaaa => "aaaa",
            QType::Srv => "srv",
            QType::Any => "any",
            QType::Soa => "soa",
            QType::Ns => "ns",
            QType::Txt => "txt",
            QType::Other => "other",
        }
    }
}

/// `rcode` label: the response codes rpcdns sends, the rest as `other`
/// (a forwarded answer can carry any code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError,
    FormErr,
    ServFail,
    NxDomain,
    NotImp,
    Refused,
    BadVers,
    Other,
}

impl Rcode {
    pub const ALL: [Rcode; 8] = [
        Rcode::NoError,
        Rcode::FormErr,
        Rcode::ServFail,
        Rcode::NxDomain,
        Rcode::NotImp,
        Rcode::Refused,
        Rcode::BadVers,
        Rcode::Other,
    ];

    /// The label for a full (EDNS-extended, 12-bit) response code.
    pub fn from_wire(rcode: u16) -> Self {
        match rcode {
            0 => Rcode::NoError,
            1 => Rcode::FormErr,
            2 => Rcode::ServFail,
            3 => Rcode::NxDomain,
            4 => Rcode::NotImp,
            5 => Rcode::Refused,
            16 => Rcode::BadVers,
            _ => Rcode::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rcode::NoError => "noerror",
            Rcode::FormErr => "formerr",
            Rcode::ServFail => "servfail",
            Rcode::NxDomain => "nxdomain",
            Rcode::NotImp => "notimp",
            Rcode::Refused => "refused",
            Rcode::BadVers => "badvers",
            Rcode::Other => "other",
        }
    }
}

/// `result` label of [`DNS_COOKIES_TOTAL`]: what the query's server cookie
/// was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieResult {
    /// A client cookie alone.
    ClientOnly,
    /// A server cookie of ours, for this client, in date.
    Valid,
    /// Another server cookie (answered all the same).
    Invalid,
}

impl CookieResult {
    pub const ALL: [CookieResult; 3] = [
        CookieResult::ClientOnly,
        CookieResult::Valid,
        CookieResult::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CookieResult::ClientOnly => "client_only",
            CookieResult::Valid => "valid",
            CookieResult::Invalid => "invalid",
        }
    }
}

/// `action` label of [`RRL_LIMITED_TOTAL`]: what went out instead of the
/// limited response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RrlAction {
    /// An empty, truncated response (TC), for the client to retry over TCP.
    Slip,
    /// Nothing.
    Drop,
}

impl RrlAction {
    pub const ALL: [RrlAction; 2] = [RrlAction::Slip, RrlAction::Drop];

    pub fn as_str(self) -> &'static str {
        match self {
            RrlAction::Slip => "slip",
            RrlAction::Drop => "drop",
        }
    }
}

/// `result` label of [`STATE_WRITES_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateWrite {
    /// The copy is on disk.
    Written,
    /// Over `state.max_bytes`: not written (and the old copy removed).
    TooLarge,
    /// The file system refused it.
    Failed,
}

impl StateWrite {
    pub const ALL: [StateWrite; 3] = [
        StateWrite::Written,
        StateWrite::TooLarge,
        StateWrite::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StateWrite::Written => "written",
            StateWrite::TooLarge => "too_large",
            StateWrite::Failed => "failed",
        }
    }
}

/// `type` label of [`ETCD_EVENTS_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Put,
    Delete,
}

impl EventType {
    pub const ALL: [EventType; 2] = [EventType::Put, EventType::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Put => "put",
            EventType::Delete => "delete",
        }
    }
}

/// `reason` label values of [`ETCD_RESYNCS_TOTAL`].
pub const RESYNC_REASONS: [ResyncReason; 3] = [
    ResyncReason::Initial,
    ResyncReason::Compacted,
    ResyncReason::Canceled,
];

fn resync_index(reason: ResyncReason) -> usize {
    // Exhaustive on purpose: a new reason must get a series here.
    match reason {
        ResyncReason::Initial => 0,
        ResyncReason::Compacted => 1,
        ResyncReason::Canceled => 2,
    }
}

const TRANSPORTS: usize = Transport::ALL.len();
const QTYPES: usize = QType::ALL.len();
const RCODES: usize = Rcode::ALL.len();

// ---------------------------------------------------------------------------
// Query counters (the hot path)
// ---------------------------------------------------------------------------

/// One thread's query counters. Aligned to 128 octets (two cache lines, as
/// the adjacent-line prefetcher pairs them) so shards never share a line.
#[derive(Debug)]
#[repr(align(128))]
pub struct QueryShard {
    queries: [[[AtomicU64; RCODES]; QTYPES]; TRANSPORTS],
    /// Per transport, non-cumulative counts per bucket, `+Inf` last.
    buckets: [[AtomicU64; BUCKET_SLOTS]; TRANSPORTS],
    sum_nanos: [AtomicU64; TRANSPORTS],
    cookies: [AtomicU64; CookieResult::ALL.len()],
    rrl: [AtomicU64; RrlAction::ALL.len()],
}

impl QueryShard {
    fn new() -> Self {
        Self {
            queries: std::array::from_fn(|_| {
                std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0)))
            }),
            buckets: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            sum_nanos: std::array::from_fn(|_| AtomicU64::new(0)),
            cookies: std::array::from_fn(|_| AtomicU64::new(0)),
            rrl: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Counts a query with a DNS cookie.
    #[inline]
    pub fn cookie(&self, result: CookieResult) {
        self.cookies[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a response the rate limit held back.
    #[inline]
    pub fn rrl(&self, action: RrlAction) {
        self.rrl[action as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one response. A relaxed add on this thread's own line.
    #[inline]
    pub fn count(&self, transport: Transport, qtype: QType, rcode: Rcode) {
        self.queries[transport as usize][qtype as usize][rcode as usize]
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Records `queries` responses that each took `elapsed`.
    ///
    /// The UDP fast path calls this once per batch with the batch's size:
    /// every query of a `recvmmsg` batch arrives in user space at the same
    /// moment and leaves in the same `sendmmsg`, so each one's time in rpcdns
    /// is the batch's time. That costs two clock reads per batch instead of
    /// two per query.
    #[inline]
    pub fn observe(&self, transport: Transport, elapsed: Duration, queries: u64) {
        if queries == 0 {
            return;
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let slot = DURATION_BUCKETS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(DURATION_BUCKETS.len());
        let t = transport as usize;
        self.buckets[t][slot].fetch_add(queries, Ordering::Relaxed);
        self.sum_nanos[t].fetch_add(nanos.saturating_mul(queries), Ordering::Relaxed);
    }

    /// Counts a response given as wire bytes (the full path, or an error
    /// written without a parsed question) and records its duration.
    pub fn record_response(&self, transport: Transport, response: &[u8], elapsed: Duration) {
        let (qtype, rcode) = classify_response(response);
        self.count(transport, qtype, rcode);
        self.observe(transport, elapsed, 1);
    }
}

/// The next shard index to hand to a thread that has none yet.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard index (before reduction to a [`Metrics`]'s shard
    /// count); `usize::MAX` until first use.
    static THREAD_SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn thread_shard() -> usize {
    THREAD_SHARD.with(|cell| {
        let index = cell.get();
        if index != usize::MAX {
            return index;
        }
        let index = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
        cell.set(index);
        index
    })
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

/// Every counter rpcdns keeps. Shared as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    /// A power of two, so picking a shard is a mask, not a division.
    shards: Box<[QueryShard]>,
    events: [AtomicU64; EventType::ALL.len()],
    resyncs: [AtomicU64; RESYNC_REASONS.len()],
    skipped: [AtomicU64; SkipReason::ALL.len()],
    state_writes: [AtomicU64; StateWrite::ALL.len()],
}

/// Point-in-time values the scrape reads from elsewhere (the zone snapshot
/// and the sync status), rendered with the counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub zone_services: usize,
    pub zone_instances: usize,
    pub zone_multi_port_services: usize,
    pub zone_skydns_records: usize,
    pub zone_stale: bool,
    pub etcd_connected: bool,
    pub etcd_revision: i64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Enough shards for the UDP threads and the tokio workers (one each
    /// per core) to have one each.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::with_shards(cores * 2)
    }

    /// `shards` is rounded up to a power of two.
    pub fn with_shards(shards: usize) -> Self {
        let shards = shards.max(1).next_power_of_two();
        Self {
            shards: (0..shards).map(|_| QueryShard::new()).collect(),
            events: std::array::from_fn(|_| AtomicU64::new(0)),
            resyncs: std::array::from_fn(|_| AtomicU64::new(0)),
            skipped: std::array::from_fn(|_| AtomicU64::new(0)),
            state_writes: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// The calling thread's query counters. Cheap (a thread-local read and
    /// a mask); the UDP threads still call it once per batch, not per query.
    #[inline]
    pub fn queries(&self) -> &QueryShard {
        &self.shards[thread_shard() & (self.shards.len() - 1)]
    }

    pub fn etcd_event(&self, event: EventType) {
        self.events[event as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn etcd_resync(&self, reason: ResyncReason) {
        self.resyncs[resync_index(reason)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn state_write(&self, result: StateWrite) {
        self.state_writes[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn skipped_key(&self, reason: SkipReason) {
        if let Some(i) = SkipReason::ALL.iter().position(|&r| r == reason) {
            self.skipped[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The sum over shards of `rpcdns_dns_queries_total` for one series.
    pub fn query_count(&self, transport: Transport, qtype: QType, rcode: Rcode) -> u64 {
        self.shards
            .iter()
            .map(|s| {
                s.queries[transport as usize][qtype as usize][rcode as usize]
                    .load(Ordering::Relaxed)
            })
            .sum()
    }

    /// Every metric family of rpcdns as the `prometheus` crate models
    /// them, every label combination present, zeros included: the shards
    /// summed, the other counters read, `gauges` as given.
    pub fn families(&self, gauges: &Gauges) -> Vec<MetricFamily> {
        let mut families = vec![self.queries_family(), self.durations_family()];
        let sum = |counter: fn(&QueryShard) -> &AtomicU64| {
            self.shards
                .iter()
                .map(|shard| counter(shard).load(Ordering::Relaxed))
                .sum::<u64>()
        };
        let cookies = [
            sum(|s| &s.cookies[0]),
            sum(|s| &s.cookies[1]),
            sum(|s| &s.cookies[2]),
        ];
        let rrl = [sum(|s| &s.rrl[0]), sum(|s| &s.rrl[1])];
        for (spec, value) in [
            (&GAUGE_SPECS[0], gauges.zone_services as f64),
            (&GAUGE_SPECS[1], gauges.zone_instances as f64),
            (&GAUGE_SPECS[2], gauges.zone_multi_port_services as f64),
            (&GAUGE_SPECS[3], f64::from(u8::from(gauges.etcd_connected))),
            (&GAUGE_SPECS[4], gauges.etcd_revision as f64),
            (&GAUGE_SPECS[5], gauges.zone_skydns_records as f64),
            (&GAUGE_SPECS[6], f64::from(u8::from(gauges.zone_stale))),
        ] {
            let mut gauge = Gauge::default();
            gauge.set_value(value);
            families.push(family(spec, vec![Metric::from_gauge(gauge)]));
        }
        let counters = |spec: &FamilySpec, values: Vec<(&'static str, u64)>| {
            let metrics = values
                .into_iter()
                .map(|(label, value)| counter(&[(spec.labels[0], label)], value))
                .collect();
            family(spec, metrics)
        };
        // After the queries and their durations, in `ALL_NAMES` order.
        families.insert(
            2,
            counters(
                &DNS_COOKIES_SPEC,
                CookieResult::ALL
                    .iter()
                    .zip(cookies)
                    .map(|(r, v)| (r.as_str(), v))
                    .collect(),
            ),
        );
        families.insert(
            3,
            counters(
                &RRL_LIMITED_SPEC,
                RrlAction::ALL
                    .iter()
                    .zip(rrl)
                    .map(|(a, v)| (a.as_str(), v))
                    .collect(),
            ),
        );
        families.push(counters(
            &ETCD_EVENTS_SPEC,
            EventType::ALL
                .iter()
                .map(|&e| (e.as_str(), self.events[e as usize].load(Ordering::Relaxed)))
                .collect(),
        ));
        families.push(counters(
            &ETCD_RESYNCS_SPEC,
            RESYNC_REASONS
                .iter()
                .map(|&r| {
                    let value = self.resyncs[resync_index(r)].load(Ordering::Relaxed);
                    (r.as_str(), value)
                })
                .collect(),
        ));
        families.push(counters(
            &SKIPPED_KEYS_SPEC,
            SkipReason::ALL
                .iter()
                .zip(&self.skipped)
                .map(|(r, value)| (r.as_str(), value.load(Ordering::Relaxed)))
                .collect(),
        ));
        families.push(counters(
            &STATE_WRITES_SPEC,
            StateWrite::ALL
                .iter()
                .zip(&self.state_writes)
                .map(|(r, value)| (r.as_str(), value.load(Ordering::Relaxed)))
                .collect(),
        ));
        families
    }

    /// [`Metrics::families`] in the Prometheus text format (0.0.4), through
    /// the crate's `TextEncoder`.
    pub fn render(&self, gauges: &Gauges) -> String {
        encode(&self.families(gauges))
    }

    fn queries_family(&self) -> MetricFamily {
        let mut metrics = Vec::with_capacity(QTYPES * RCODES * TRANSPORTS);
        for qtype in QType::ALL {
            for rcode in Rcode::ALL {
                for transport in Transport::ALL {
                    let labels = [
                        ("qtype", qtype.as_str()),
                        ("rcode", rcode.as_str()),
                        ("transport", transport.as_str()),
                    ];
                    metrics.push(counter(&labels, self.query_count(transport, qtype, rcode)));
                }
            }
        }
        family(&DNS_QUERIES_SPEC, metrics)
    }

    fn durations_family(&self) -> MetricFamily {
        let metrics = Transport::ALL
            .iter()
            .map(|&transport| {
                let t = transport as usize;
                let mut counts = [0u64; BUCKET_SLOTS];
                let mut sum_nanos = 0u64;
                for shard in &self.shards {
                    for (slot, count) in counts.iter_mut().enumerate() {
                        *count += shard.buckets[t][slot].load(Ordering::Relaxed);
                    }
                    sum_nanos = sum_nanos.wrapping_add(shard.sum_nanos[t].load(Ordering::Relaxed));
                }
                // Cumulative, and `+Inf` and `_count` from the same reads,
                // so a scrape is always self-consistent.
                let mut cumulative = 0u64;
                let mut buckets = Vec::with_capacity(BUCKET_SLOTS);
                for (slot, &bound_nanos) in DURATION_BUCKETS.iter().enumerate() {
                    cumulative += counts[slot];
                    let mut bucket = Bucket::default();
                    bucket.set_upper_bound(Duration::from_nanos(bound_nanos).as_secs_f64());
                    bucket.set_cumulative_count(cumulative);
                    buckets.push(bucket);
                }
                cumulative += counts[DURATION_BUCKETS.len()];
                let mut histogram = Histogram::default();
                histogram.set_bucket(buckets);
                histogram.set_sample_count(cumulative);
                histogram.set_sample_sum(Duration::from_nanos(sum_nanos).as_secs_f64());
                let mut metric =
                    Metric::from_label(label_pairs(&[("transport", transport.as_str())]));
                metric.set_histogram(histogram);
                metric
            })
            .collect();
        family(&DNS_DURATION_SPEC, metrics)
    }
}

// ---------------------------------------------------------------------------
// Metric families
// ---------------------------------------------------------------------------

/// One metric family rpcdns exports: name, type, help and label names.
#[derive(Debug)]
pub struct FamilySpec {
    pub name: &'static str,
    kind: MetricType,
    help: &'static str,
    labels: &'static [&'static str],
}

impl FamilySpec {
    /// The family's description, for a `Collector`'s `desc()`.
    pub fn desc(&self) -> Desc {
        // Our names and labels are constants that satisfy the crate's
        // rules; `every_family_has_a_valid_desc` proves it.
        Desc::new(
            self.name.to_owned(),
            self.help.to_owned(),
            self.labels.iter().map(|l| (*l).to_owned()).collect(),
            Default::default(),
        )
        .unwrap_or_else(|e| panic!("metric {}: {e}", self.name))
    }
}

const DNS_QUERIES_SPEC: FamilySpec = FamilySpec {
    name: DNS_QUERIES_TOTAL,
    kind: MetricType::COUNTER,
    help: "DNS responses sent, by question type, response code and transport.",
    labels: &["qtype", "rcode", "transport"],
};
const DNS_DURATION_SPEC: FamilySpec = FamilySpec {
    name: DNS_REQUEST_DURATION_SECONDS,
    kind: MetricType::HISTOGRAM,
    help: "Time from a query's arrival in rpcdns to its response being sent, by transport \
           (UDP fast path: the time of the query's receive batch).",
    labels: &["transport"],
};
const DNS_COOKIES_SPEC: FamilySpec = FamilySpec {
    name: DNS_COOKIES_TOTAL,
    kind: MetricType::COUNTER,
    help: "Queries with a DNS cookie (RFC 7873), by what their server cookie was: none \
           (client_only), ours (valid), or another (invalid, answered all the same).",
    labels: &["result"],
};
const RRL_LIMITED_SPEC: FamilySpec = FamilySpec {
    name: RRL_LIMITED_TOTAL,
    kind: MetricType::COUNTER,
    help: "UDP responses over the response rate limit, by what was sent instead: an empty \
           truncated response (slip) or nothing (drop).",
    labels: &["action"],
};
const GAUGE_SPECS: [FamilySpec; 7] = [
    FamilySpec {
        name: ZONE_SERVICES,
        kind: MetricType::GAUGE,
        help: "Services in the published DNS zone.",
        labels: &[],
    },
    FamilySpec {
        name: ZONE_INSTANCES,
        kind: MetricType::GAUGE,
        help: "Instances in the published DNS zone.",
        labels: &[],
    },
    FamilySpec {
        name: ZONE_MULTI_PORT_SERVICES,
        kind: MetricType::GAUGE,
        help: "Services whose instances listen on more than one port (their A/AAAA records mix ports; clients need the port names).",
        labels: &[],
    },
    FamilySpec {
        name: ETCD_CONNECTED,
        kind: MetricType::GAUGE,
        help: "1 while rpcdns has a working etcd connection, else 0.",
        labels: &[],
    },
    FamilySpec {
        name: ETCD_REVISION,
        kind: MetricType::GAUGE,
        help: "The etcd revision the zone reflects.",
        labels: &[],
    },
    FamilySpec {
        name: ZONE_SKYDNS_RECORDS,
        kind: MetricType::GAUGE,
        help: "SkyDNS records (CoreDNS etcd plugin keys) in the published DNS zone.",
        labels: &[],
    },
    FamilySpec {
        name: ZONE_STALE,
        kind: MetricType::GAUGE,
        help: "1 while the zone served is the state file's copy, from before a restart, not yet replaced by a full etcd read.",
        labels: &[],
    },
];
const ETCD_EVENTS_SPEC: FamilySpec = FamilySpec {
    name: ETCD_EVENTS_TOTAL,
    kind: MetricType::COUNTER,
    help: "Watch events received from etcd, by type (put, delete).",
    labels: &["type"],
};
const ETCD_RESYNCS_SPEC: FamilySpec = FamilySpec {
    name: ETCD_RESYNCS_TOTAL,
    kind: MetricType::COUNTER,
    help: "Full reads of the watched keys, by reason (initial, compacted, canceled).",
    labels: &["reason"],
};
const STATE_WRITES_SPEC: FamilySpec = FamilySpec {
    name: STATE_WRITES_TOTAL,
    kind: MetricType::COUNTER,
    help: "Writes of the state file (state.dir), by result: written, too_large (over state.max_bytes), failed.",
    labels: &["result"],
};
const SKIPPED_KEYS_SPEC: FamilySpec = FamilySpec {
    name: SKIPPED_KEYS_TOTAL,
    kind: MetricType::COUNTER,
    help: "Matching etcd keys that became skipped (not served), by reason.",
    labels: &["reason"],
};

/// Every family [`Metrics::families`] returns, in that order.
pub fn family_specs() -> impl Iterator<Item = &'static FamilySpec> {
    [
        &DNS_QUERIES_SPEC,
        &DNS_DURATION_SPEC,
        &DNS_COOKIES_SPEC,
        &RRL_LIMITED_SPEC,
    ]
    .into_iter()
    .chain(GAUGE_SPECS.iter())
    .chain([
        &ETCD_EVENTS_SPEC,
        &ETCD_RESYNCS_SPEC,
        &SKIPPED_KEYS_SPEC,
        &STATE_WRITES_SPEC,
    ])
}

fn family(spec: &FamilySpec, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(spec.name.to_owned());
    family.set_help(spec.help.to_owned());
    family.set_field_type(spec.kind);
    family.set_metric(metrics);
    family
}

fn label_pairs(labels: &[(&str, &str)]) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name((*name).to_owned());
            pair.set_value((*value).to_owned());
            pair
        })
        .collect()
}

fn counter(labels: &[(&str, &str)], value: u64) -> Metric {
    let mut counter = Counter::default();
    counter.set_value(value as f64);
    let mut metric = Metric::from_label(label_pairs(labels));
    metric.set_counter(counter);
    metric
}

/// `families` in the Prometheus text format 0.0.4 ([`CONTENT_TYPE`]).
pub fn encode(families: &[MetricFamily]) -> String {
    let mut text = String::with_capacity(24 * 1024);
    // Encoding our own well-formed families into a String cannot fail;
    // should it, the scrape shows what was written before the error.
    if let Err(error) = TextEncoder::new().encode_utf8(families, &mut text) {
        tracing::warn!(%error, "failed to encode the metrics");
    }
    text
}

// ---------------------------------------------------------------------------
// Responses on the wire
// ---------------------------------------------------------------------------

/// The question type and the full response code of a DNS response in wire
/// form. The RCODE is the header's four bits, extended by the OPT record's
/// upper eight (RFC 6891 §6.1.3), so BADVERS (16) is told apart from
/// NOERROR. What cannot be parsed counts as `other`.
pub fn classify_response(message: &[u8]) -> (QType, Rcode) {
    const HEADER: usize = 12;
    if message.len() < HEADER {
        return (QType::Other, Rcode::Other);
    }
    let low = u16::from(message[3] & 0x0F);
    let count =
        |i: usize| usize::from(u16::from_be_bytes([message[4 + 2 * i], message[5 + 2 * i]]));
    let mut at = HEADER;
    let mut qtype = QType::Other;
    for q in 0..count(0) {
        let Some(end) = skip_name(message, at) else {
            return (qtype, Rcode::from_wire(low));
        };
        if q == 0
            && let Some(t) = message.get(end..end + 2)
        {
            qtype = QType::from_wire(u16::from_be_bytes([t[0], t[1]]));
        }
        at = end + 4;
    }
    // Answer and authority records, then the additional section, where the
    // OPT record sits.
    let before_additional = count(1) + count(2);
    for record in 0..before_additional + count(3) {
        let Some(end) = skip_name(message, at) else {
            break;
        };
        let Some(fixed) = message.get(end..end + 10) else {
            break;
        };
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        if record >= before_additional && rtype == 41 {
            // OPT: TTL = extended RCODE (upper 8 bits), version, flags.
            let full = (u16::from(fixed[4]) << 4) | low;
            return (qtype, Rcode::from_wire(full));
        }
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        at = end + 10 + rdlen;
    }
    (qtype, Rcode::from_wire(low))
}

/// The offset just past the (possibly compressed) name at `at`.
fn skip_name(message: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *message.get(at)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(at + 1),
            0x00 => at += 1 + usize::from(len),
            // A compression pointer ends the name.
            0xC0 => return message.get(at + 1).map(|_| at + 2),
            _ => return None,
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};

    use super::*;

    #[test]
    fn every_family_has_a_valid_desc_and_is_rendered() {
        let metrics = Metrics::with_shards(1);
        let families = metrics.families(&Gauges::default());
        let specs: Vec<&FamilySpec> = family_specs().collect();
        assert_eq!(families.len(), specs.len());
        assert_eq!(specs.len(), ALL_NAMES.len());
        for (family, spec) in families.iter().zip(&specs) {
            // Panics on a name or label the crate does not accept.
            let desc = spec.desc();
            assert_eq!(desc.fq_name, spec.name);
            assert_eq!(family.name(), spec.name);
            assert!(ALL_NAMES.contains(&spec.name), "{}", spec.name);
            assert!(!family.get_metric().is_empty(), "{}: no series", spec.name);
        }
        // 8 qtypes x 8 rcodes x 2 transports, 2 x (16 buckets + +Inf + sum +
        // count), 3 cookie results and 2 RRL actions, 7 gauges, 2 + 3 + 12
        // + 3 counters.
        let text = metrics.render(&Gauges::default());
        let series = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(series, 128 + 38 + 5 + 7 + 20);
    }

    /// The value of the sample `series` (name and labels as rendered).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(series)?;
            rest.strip_prefix(' ')?.parse().ok()
        })
    }

    #[test]
    fn every_metric_has_help_type_and_every_series() {
        let metrics = Metrics::with_shards(3);
        let text = metrics.render(&Gauges::default());
        for name in ALL_NAMES {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
        let queries = text
            .lines()
            .filter(|l| l.starts_with(DNS_QUERIES_TOTAL))
            .count();
        assert_eq!(queries, QTYPES * RCODES * TRANSPORTS);
        let skipped = text
            .lines()
            .filter(|l| l.starts_with(SKIPPED_KEYS_TOTAL))
            .count();
        assert_eq!(skipped, SkipReason::ALL.len());
        assert_eq!(
            sample(&text, "rpcdns_etcd_resyncs_total{reason=\"compacted\"}"),
            Some(0.0)
        );
        // Every sample line is `name{labels} number`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("name and value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn counts_from_several_threads_add_up() {
        let metrics = std::sync::Arc::new(Metrics::with_shards(4));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let metrics = metrics.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        metrics
                            .queries()
                            .count(Transport::Udp, QType::A, Rcode::NoError);
                    }
                    metrics
                        .queries()
                        .observe(Transport::Udp, Duration::from_micros(30), 1000);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(
            metrics.query_count(Transport::Udp, QType::A, Rcode::NoError),
            6000
        );
        let text = metrics.render(&Gauges::default());
        let bucket = |le: &str| {
            sample(
                &text,
                &format!("{DNS_REQUEST_DURATION_SECONDS}_bucket{{transport=\"udp\",le=\"{le}\"}}"),
            )
        };
        // The `le` values as the prometheus crate writes them (f64 Display).
        assert_eq!(bucket("0.000025"), Some(0.0));
        assert_eq!(bucket("0.00005"), Some(6000.0));
        assert_eq!(bucket("+Inf"), Some(6000.0));
        let count = format!("{DNS_REQUEST_DURATION_SECONDS}_count{{transport=\"udp\"}}");
        assert_eq!(sample(&text, &count), Some(6000.0));
        let sum = format!("{DNS_REQUEST_DURATION_SECONDS}_sum{{transport=\"udp\"}}");
        let sum = sample(&text, &sum).unwrap();
        assert!((sum - 0.18).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn a_slow_answer_lands_in_inf_only() {
        let metrics = Metrics::with_shards(1);
        metrics
            .queries()
            .observe(Transport::Tcp, Duration::from_secs(3), 1);
        let text = metrics.render(&Gauges::default());
        let one = format!("{DNS_REQUEST_DURATION_SECONDS}_bucket{{transport=\"tcp\",le=\"1\"}}");
        let inf = format!("{DNS_REQUEST_DURATION_SECONDS}_bucket{{transport=\"tcp\",le=\"+Inf\"}}");
        assert_eq!(sample(&text, &one), Some(0.0));
        assert_eq!(sample(&text, &inf), Some(1.0));
    }

    #[test]
    fn etcd_counters_and_gauges_render() {
        let metrics = Metrics::with_shards(1);
        metrics.etcd_event(EventType::Put);
        metrics.etcd_event(EventType::Put);
        metrics.etcd_event(EventType::Delete);
        metrics.etcd_resync(ResyncReason::Initial);
        metrics.skipped_key(SkipReason::BadPort);
        let text = metrics.render(&Gauges {
            zone_services: 2,
            zone_instances: 5,
            zone_multi_port_services: 1,
            zone_skydns_records: 3,
            zone_stale: true,
            etcd_connected: true,
            etcd_revision: 42,
        });
        assert_eq!(
            sample(&text, "rpcdns_etcd_events_total{type=\"put\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "rpcdns_etcd_events_total{type=\"delete\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "rpcdns_etcd_resyncs_total{reason=\"initial\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "rpcdns_skipped_keys_total{reason=\"bad_port\"}"),
            Some(1.0)
        );
        assert_eq!(sample(&text, "rpcdns_zone_services"), Some(2.0));
        assert_eq!(sample(&text, "rpcdns_zone_instances"), Some(5.0));
        assert_eq!(sample(&text, "rpcdns_etcd_connected"), Some(1.0));
        assert_eq!(sample(&text, "rpcdns_etcd_revision"), Some(42.0));
        assert_eq!(sample(&text, "rpcdns_zone_skydns_records"), Some(3.0));
        assert_eq!(sample(&text, "rpcdns_zone_stale"), Some(1.0));
    }

    fn response(qtype: RecordType, code: ResponseCode, edns: bool) -> Vec<u8> {
        let mut message = Message::new(7, MessageType::Response, hickory_proto::op::OpCode::Query);
        message.add_query(Query::query(
            Name::from_ascii("sms.rpc.svc.local.").unwrap(),
            qtype,
        ));
        message.metadata.response_code = code;
        if edns {
            message.edns = Some(Edns::new());
        }
        message.to_vec().unwrap()
    }

    #[test]
    fn responses_are_classified_from_the_wire() {
        assert_eq!(
            classify_response(&response(RecordType::SRV, ResponseCode::NXDomain, false)),
            (QType::Srv, Rcode::NxDomain)
        );
        assert_eq!(
            classify_response(&response(RecordType::TXT, ResponseCode::Refused, true)),
            (QType::Txt, Rcode::Refused)
        );
        assert_eq!(
            classify_response(&response(RecordType::MX, ResponseCode::Refused, true)),
            (QType::Other, Rcode::Refused)
        );
        assert_eq!(
            classify_response(&response(RecordType::AAAA, ResponseCode::BADVERS, true)),
            (QType::Aaaa, Rcode::BadVers)
        );
        // A header-only FORMERR, and garbage.
        let mut formerr = vec![0u8; 12];
        formerr[2] = 0x80;
        formerr[3] = 1;
        assert_eq!(classify_response(&formerr), (QType::Other, Rcode::FormErr));
        assert_eq!(classify_response(&[1, 2, 3]), (QType::Other, Rcode::Other));
    }
}
