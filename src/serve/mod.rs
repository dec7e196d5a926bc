//! Answers: DNS queries from the sockets, answered from the current zone
//! snapshot.
//!
//! In: UDP datagrams and TCP streams; the zone through
//! [`crate::zone::ZoneStore`], read once per query, never waiting for the
//! writer. Out: responses; counters in [`crate::ops::metrics`].
//!
//! - [`answer`]: the common query parsed, and every in-zone response
//!   written in wire form straight from a snapshot (both paths).
//! - [`udp`]: the fast path: batched receive and send, one socket per core.
//! - [`tcp`]: DNS over TCP, pipelined, idle connections closed.
//! - [`handler`]: the full path, hickory's `RequestHandler`, for anything
//!   the fast parser does not take (and everything over TCP it cannot).
//! - [`forward`]: names outside the zone to the upstream resolvers, for
//!   allowed clients.
//! - [`cookie`]: DNS cookies (RFC 7873), with RFC 9018 server cookies.
//! - [`rrl`]: response rate limiting over UDP.

pub mod answer;
pub mod cookie;
pub mod forward;
pub mod handler;
pub mod rrl;
pub mod tcp;
pub mod udp;
