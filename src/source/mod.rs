//! Where registrations come from: etcd, read and watched, and what its
//! keys and values mean.
//!
//! In: the etcd cluster (a paged read at revision R, then a watch from
//! R+1, resumed after outages). Out: changes to the zone, through the one
//! [`crate::zone::ZoneWriter`], published once per read or watch
//! response; the sync status and metrics in [`crate::ops`].
//!
//! - [`etcd`]: connection, paged read, watch, reconnect and resume; no DNS
//!   types.
//! - [`sources`]: the configured sources side by side: which one a key
//!   belongs to; pure.
//! - [`gozero`]: one go-zero key/value → a [`crate::zone::Registration`],
//!   skipped with a reason, or someone else's key; pure.
//! - [`gomicro`]: the same for go-micro's etcd registry.
//! - [`kratos`]: the same for kratos's, one registration per endpoint.
//! - [`skydns`]: a SkyDNS key/value (CoreDNS's etcd plugin) → a
//!   [`crate::zone::SkyRecord`] at the name its key spells.
//! - [`overlay`]: an overlay key/value → weights, priorities, a service
//!   config.
//! - [`watcher`]: applies what etcd says to the zone writer.

pub mod etcd;
pub mod gomicro;
pub mod gozero;
pub mod kratos;
pub mod overlay;
pub mod skydns;
pub mod sources;
pub mod state;
pub mod watcher;
