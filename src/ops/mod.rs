//! Operations: what the operator sees and the process reports.
//!
//! In: the state the other parts record as they run (the sync status from
//! [`crate::source`], counters from [`crate::source`] and [`crate::serve`])
//! and the current zone. Out: the HTTP endpoints, logs.
//!
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, `/debug/zone`.
//! - [`metrics`]: metric names, label sets, the lock-free counters, the
//!   Prometheus text.
//! - [`status`]: readiness latch, shutdown flag, etcd connection flag,
//!   skipped keys.
//! - [`logging`]: the `tracing` subscriber (text or JSON, level filter).

pub mod admin;
pub mod logging;
pub mod metrics;
pub mod status;
