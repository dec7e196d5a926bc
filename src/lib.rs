//! rpcdns: mirrors go-zero service registrations from etcd into an
//! authoritative DNS zone, so that programs without an etcd client can find
//! `sms.rpc.svc.local` through plain DNS.
//!
//! The data flows one way, through one folder each:
//!
//! ```text
//!  etcd ──(paged read @R, watch from R+1)──▶ source/   etcd.rs → gozero.rs → watcher.rs
//!                                              │ upsert / remove one service, publish per batch
//!                                              ▼
//!                                            zone/     ZoneWriter ──▶ ZoneStore (ArcSwap<ZoneSnapshot>,
//!                                              │                      every answer pre-encoded)
//!                                              │ one lock-free load per query
//!                                              ▼
//!  client ──UDP/TCP──▶                       serve/    udp.rs, tcp.rs → answer.rs (fast path)
//!                                                        └─ anything unusual → handler.rs (hickory),
//!                                                           forward.rs for names outside the zone
//!
//!  operator ──HTTP──▶                        ops/      admin.rs reads the zone, status.rs, metrics.rs
//! ```
//!
//! Imports follow the flow: [`zone`] imports nothing from [`source`] or
//! [`serve`]; [`serve`] nothing from [`source`]; [`source`] nothing from
//! [`serve`]. [`ops`] (status and metrics, which every stage records into;
//! logging; the HTTP endpoints, which read the zone) and [`config`] sit
//! beside the flow: any stage may import them, and they import no stage
//! but the zone. [`app`] wires it all together.
//!
//! - [`config`]: command line and YAML → a validated [`config::Config`].
//! - [`source`]: etcd → registrations → changes to the zone.
//! - [`zone`]: immutable snapshots, their lookups, their single writer;
//!   no I/O.
//! - [`serve`]: DNS over UDP and TCP, answered from the snapshot.
//! - [`ops`]: HTTP endpoints, metrics, sync status, logs.
//! - [`app`]: binds the listeners and runs everything until shutdown.
//! - `fuzzing` (feature `fuzzing`, hidden): the request path and
//!   registration parsing driven in-process with their invariants, for
//!   `fuzz/` and the corpus replay test; not in the default library.

pub mod app;
pub mod config;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod ops;
pub mod serve;
pub mod source;
pub mod zone;
