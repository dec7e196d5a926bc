//! rpcdns: mirrors go-zero service registrations from etcd into an
//! authoritative DNS zone, so that programs without an etcd client can find
//! `sms.rpc.svc.local` through plain DNS.
//!
//! ```text
//!  etcd ──(paged get @R, watch from R+1)──▶ etcd.rs
//!                                             │ KvEvent batches
//!                                             ▼
//!                     registration.rs ◀── watcher.rs ──▶ status.rs (ready, connected, skipped keys)
//!                 (key/value → Registration)  │ upsert / remove one service
//!                                             ▼
//!                                          zone.rs  ZoneWriter ──publish──▶ ZoneStore (ArcSwap<ZoneSnapshot>,
//!                                                                            services pre-encoded in wire form)
//!                                                                              │ guard() per batch, never blocks
//!  client ──UDP──▶ udp.rs (recvmmsg ×32 per core) ──▶ answer.rs (parse, respond) ┤
//!                    │ unusual query                                           │
//!                    └──▶ dns.rs (hickory RequestHandler) ──▶ answer.rs ───────┤
//!  client ──TCP──▶ tcp.rs (task per connection) ──▶ answer.rs, or dns.rs ──────┘
//!
//!  operator ──HTTP──▶ admin.rs (/healthz, /readyz, /metrics, /debug/zone)
//! ```
//!
//! Modules, in data-flow order:
//! - [`config`]: command line and YAML → validated [`config::Config`].
//! - [`registration`]: go-zero key/value → typed [`registration::Registration`]; pure.
//! - [`service_config`]: gRPC service configs → validated JSON → `_grpc_config` TXT text; pure.
//! - [`etcd`]: initial paged read, watch, reconnect and resume; no DNS types.
//! - [`watcher`]: applies etcd events to the zone and the sync status.
//! - [`zone`]: immutable snapshots and their lookups; no I/O.
//! - [`answer`]: wire-format answers straight from a snapshot (both paths).
//! - [`dns`]: hickory `RequestHandler`: TCP and unusual queries (the full path).
//! - [`forward`]: names outside the zone → upstream resolvers, for allowed clients.
//! - [`udp`]: the UDP fast path: batched, one socket per core.
//! - [`tcp`]: DNS over TCP: pipelined, idle connections closed.
//! - [`admin`]: the operator's HTTP endpoints.
//! - [`status`]: readiness latch, shutdown flag, etcd connection flag, skipped keys.
//! - [`metrics`]: metric names, lock-free per-thread counters, Prometheus text.
//! - [`app`]: binds the listeners and runs everything until shutdown.
//! - [`logging`]: `tracing` subscriber set-up (text or JSON, level filter).
//! - `fuzzing` (hidden): the request path and registration parsing driven
//!   in-process with their invariants, for `fuzz/` and the corpus replay test.

pub mod admin;
pub mod answer;
pub mod app;
pub mod config;
pub mod dns;
pub mod etcd;
pub mod forward;
#[doc(hidden)]
pub mod fuzzing;
pub mod logging;
pub mod metrics;
pub mod registration;
pub mod service_config;
pub mod status;
pub mod tcp;
pub mod udp;
pub mod watcher;
pub mod zone;
