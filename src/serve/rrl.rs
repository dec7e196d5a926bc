//! Response rate limiting (RRL) over UDP, the defence Knot, NSD and BIND
//! have against being used as a reflector: a flood of queries with a
//! spoofed source makes the server answer a victim, and each response is
//! larger than its query.
//!
//! Responses are charged to an account: the client's network (a /24 or a
//! /56 by default) and what the response says. The same name and type
//! share an account; so do all NXDOMAIN answers (a random-name flood is one
//! account) and all errors. Each account may send `responses_per_second`,
//! in bursts of up to a second's worth. Over the rate, every `slip`th
//! response goes out empty with TC set, so that a real client behind that
//! network retries over TCP, which is never limited; the rest are dropped.
//!
//! Queries from the exempt networks (loopback by default) and queries with
//! a valid DNS server cookie (whose source address is proven) are never
//! limited.
//!
//! The accounts live in a fixed table of atomic words, indexed by a keyed
//! hash of the account, so no client can aim at a slot; a word holds a tag
//! of the account and its "theoretical arrival time" (GCRA, the token
//! bucket as one number). Charging an account is one load and one
//! compare-and-swap, with no lock. Two accounts that meet in a slot take it
//! from each other, which can only let a response through, never hold a
//! legitimate one back.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use ipnet::IpNet;

use crate::config::RrlConfig;

/// Slots in the table: 2^17 words, 1 MiB. A flood touches a few slots;
/// legitimate traffic spreads over many.
const SLOTS: usize = 1 << 17;
/// The low 48 bits of a slot: the account's theoretical arrival time, in
/// microseconds since the limiter started (8.9 years of range).
const TIME_BITS: u32 = 48;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

/// What a response is, for the account it is charged to.
#[derive(Debug, Clone, Copy)]
pub enum Kind<'a> {
    /// An answer or NODATA: per name (any letter case) and type.
    Answer { name: &'a [u8], qtype: u16 },
    /// NXDOMAIN: one account per network, whatever the name.
    NxDomain,
    /// An error (REFUSED, FORMERR, SERVFAIL, NOTIMP, ...): one account per
    /// network.
    Error,
}

impl<'a> Kind<'a> {
    /// The kind of a response with this RCODE to a question for `name`
    /// (uncompressed wire form) and `qtype`.
    pub fn of(rcode: u8, name: &'a [u8], qtype: u16) -> Self {
        match rcode {
            0 => Kind::Answer { name, qtype },
            3 => Kind::NxDomain,
            _ => Kind::Error,
        }
    }
}

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Send,
    /// Send an empty response with TC instead.
    Slip,
    /// Send nothing.
    Drop,
}

/// The limiter, shared by every UDP thread.
#[derive(Debug)]
pub struct Rrl {
    /// Microseconds between two responses of one account.
    interval: u64,
    /// How far ahead of now an account may run: a second's worth of
    /// responses, less one interval.
    burst: u64,
    slip: u32,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
    exempt: Vec<IpNet>,
    table: Box<[AtomicU64]>,
    hasher: RandomState,
    epoch: Instant,
    /// Responses limited so far, for the slip.
    limited: AtomicU32,
}

impl Rrl {
    /// The limiter `config` asks for; `None` when it is off.
    pub fn new(config: &RrlConfig) -> Option<Self> {
        if config.responses_per_second == 0 {
            return None;
        }
        let interval = (1_000_000 / u64::from(config.responses_per_second)).max(1);
        Some(Self {
            interval,
            burst: 1_000_000u64.saturating_sub(interval),
            slip: config.slip,
            ipv4_prefix: config.ipv4_prefix_length.min(32),
            ipv6_prefix: config.ipv6_prefix_length.min(128),
            exempt: config.exempt.clone(),
            table: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
            limited: AtomicU32::new(0),
        })
    }

    /// Whether `client` is never limited.
    pub fn exempt(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        self.exempt.iter().any(|net| net.contains(&client))
    }

    /// Charges a response of `kind` to `client` at `now` and says whether
    /// it may go out. The caller checks [`Rrl::exempt`] and the cookie
    /// first.
    pub fn check(&self, client: IpAddr, kind: Kind<'_>, now: Instant) -> Decision {
        let hash = self.account(client, kind);
        let slot = &self.table[(hash as usize) & (SLOTS - 1)];
        let tag = hash & !TIME_MASK;
        let now = (now.saturating_duration_since(self.epoch).as_micros() as u64) & TIME_MASK;
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            // Another account's (or no) arrival time: this one starts
            // afresh, as if it had been idle.
            let arrival = if current & !TIME_MASK == tag {
                (current & TIME_MASK).max(now)
            } else {
                now
            };
            if arrival - now > self.burst {
                return self.limited();
            }
            let next = tag | ((arrival + self.interval) & TIME_MASK);
            match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Decision::Send,
                Err(seen) => current = seen,
            }
        }
    }

    fn limited(&self) -> Decision {
        let n = self.limited.fetch_add(1, Ordering::Relaxed);
        if self.slip > 0 && n.is_multiple_of(self.slip) {
            Decision::Slip
        } else {
            Decision::Drop
        }
    }

    /// A keyed hash of the account: the client's network and the kind.
    fn account(&self, client: IpAddr, kind: Kind<'_>) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        match client.to_canonical() {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4)
                    & u32::MAX
                        .checked_shl(32 - u32::from(self.ipv4_prefix))
                        .unwrap_or(0);
                hasher.write_u8(4);
                hasher.write_u32(bits);
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6)
                    & u128::MAX
                        .checked_shl(128 - u32::from(self.ipv6_prefix))
                        .unwrap_or(0);
                hasher.write_u8(6);
                hasher.write_u128(bits);
            }
        }
        match kind {
            Kind::Answer { name, qtype } => {
                let mut lower = [0u8; 255];
                let len = name.len().min(lower.len());
                for (to, from) in lower.iter_mut().zip(&name[..len]) {
                    *to = from.to_ascii_lowercase();
                }
                hasher.write_u8(0);
                hasher.write_u16(qtype);
                hasher.write(&lower[..len]);
            }
            Kind::NxDomain => hasher.write_u8(1),
            Kind::Error => hasher.write_u8(2),
        }
        hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rrl(rate: u32, slip: u32) -> Rrl {
        Rrl::new(&RrlConfig {
            responses_per_second: rate,
            slip,
            ipv4_prefix_length: 24,
            ipv6_prefix_length: 56,
            exempt: vec!["127.0.0.0/8".parse().unwrap()],
        })
        .unwrap()
    }

    const NAME: &[u8] = b"\x03sms\x03rpc\x03svc\x05local\x00";

    fn count(rrl: &Rrl, client: &str, kind: Kind<'_>, n: usize, at: Instant) -> [usize; 3] {
        let mut seen = [0; 3];
        for _ in 0..n {
            match rrl.check(client.parse().unwrap(), kind, at) {
                Decision::Send => seen[0] += 1,
                Decision::Slip => seen[1] += 1,
                Decision::Drop => seen[2] += 1,
            }
        }
        seen
    }

    #[test]
    fn off_when_the_rate_is_zero() {
        let config = RrlConfig {
            responses_per_second: 0,
            slip: 2,
            ipv4_prefix_length: 24,
            ipv6_prefix_length: 56,
            exempt: Vec::new(),
        };
        assert!(Rrl::new(&config).is_none());
    }

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let r = rrl(10, 2);
        let t = r.epoch + Duration::from_secs(5);
        let answer = Kind::Answer {
            name: NAME,
            qtype: 1,
        };
        // A second's worth at once, then limited: every other one slips.
        assert_eq!(count(&r, "192.0.2.1", answer, 10, t), [10, 0, 0]);
        assert_eq!(count(&r, "192.0.2.1", answer, 10, t), [0, 5, 5]);
        // The same network, another address: the same account.
        assert_eq!(count(&r, "192.0.2.200", answer, 1, t)[0], 0);
        // Another network, another name (in any case), another type, an
        // NXDOMAIN: other accounts.
        assert_eq!(count(&r, "192.0.3.1", answer, 10, t)[0], 10);
        let upper = Kind::Answer {
            name: b"\x03SMS\x03rpc\x03svc\x05local\x00",
            qtype: 1,
        };
        assert_eq!(count(&r, "192.0.2.1", upper, 1, t)[0], 0, "case folds");
        let other = Kind::Answer {
            name: b"\x03pay\x03rpc\x03svc\x05local\x00",
            qtype: 1,
        };
        assert_eq!(count(&r, "192.0.2.1", other, 10, t)[0], 10);
        let srv = Kind::Answer {
            name: NAME,
            qtype: 33,
        };
        assert_eq!(count(&r, "192.0.2.1", srv, 10, t)[0], 10);
        assert_eq!(count(&r, "192.0.2.1", Kind::NxDomain, 12, t)[0], 10);
        assert_eq!(count(&r, "192.0.2.1", Kind::Error, 12, t)[0], 10);
        // A tenth of a second later: one more; a second later: ten.
        let later = t + Duration::from_millis(100);
        assert_eq!(count(&r, "192.0.2.1", answer, 5, later)[0], 1);
        let second = t + Duration::from_millis(1100);
        assert_eq!(count(&r, "192.0.2.1", answer, 20, second)[0], 10);
    }

    #[test]
    fn ipv6_networks_and_exemptions() {
        let r = rrl(5, 0);
        let t = r.epoch + Duration::from_secs(1);
        let kind = Kind::Answer {
            name: NAME,
            qtype: 28,
        };
        assert_eq!(count(&r, "2001:db8:0:ff::1", kind, 10, t), [5, 0, 5]);
        // The same /56.
        assert_eq!(count(&r, "2001:db8:0:1::9", kind, 1, t)[0], 0);
        // Another /56.
        assert_eq!(count(&r, "2001:db8:0:100::1", kind, 5, t)[0], 5);
        // slip 0: nothing slips.
        assert!(r.exempt("127.0.0.1".parse().unwrap()));
        assert!(r.exempt("::ffff:127.0.0.9".parse().unwrap()));
        assert!(!r.exempt("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn slip_one_truncates_every_limited_response() {
        let r = rrl(1, 1);
        let t = r.epoch + Duration::from_secs(1);
        assert_eq!(count(&r, "198.51.100.7", Kind::Error, 6, t), [1, 5, 0]);
    }
}
