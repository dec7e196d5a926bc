//! DNS cookies (RFC 7873), with the interoperable server cookie of RFC 9018.
//!
//! A client that sends a COOKIE option gets back its client cookie and a
//! server cookie made for it: version 1, three reserved octets, a
//! timestamp, and SipHash-2-4 over the client cookie, those eight octets
//! and the client's address, keyed with the server secret. A client that
//! returns it proves that it receives answers at its address, that is, the
//! address is not spoofed: the response rate limit lets its queries
//! through ([`crate::serve::rrl`]).
//!
//! A cookie never blocks an answer. A query with no server cookie, or with
//! one this server did not make (another replica's secret, a restart, an
//! expired one), is answered as usual, with a fresh cookie (RFC 7873
//! §5.2.3, §5.2.4). Only a malformed option is refused, with FORMERR
//! (§5.2.2).

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::ops::metrics::CookieResult;

/// The EDNS option code of COOKIE.
pub const OPTION_CODE: u16 = 10;
const CLIENT_LEN: usize = 8;
const MIN_SERVER_LEN: usize = 8;
const MAX_SERVER_LEN: usize = 32;
/// Our server cookie: version, reserved, timestamp, hash (RFC 9018 §4).
const SERVER_LEN: usize = 16;
/// The COOKIE option we send: code, length, client and server cookie.
pub const REPLY_OPTION_LEN: usize = 4 + CLIENT_LEN + SERVER_LEN;

/// RFC 9018 §4.1.
const VERSION: u8 = 1;
/// RFC 9018 §4.3: a server cookie is good for an hour after its timestamp,
/// and five minutes before it (clock skew between replicas)...
const MAX_AGE: u32 = 3600;
const MAX_AHEAD: u32 = 300;
/// ...and is renewed once it is half an hour old.
const RENEW_AFTER: u32 = 1800;

/// The COOKIE option of a query: the client cookie, and the server cookie
/// the client holds for us, if any (8 to 32 octets, ours or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryCookie {
    client: [u8; CLIENT_LEN],
    server: [u8; MAX_SERVER_LEN],
    server_len: u8,
}

impl QueryCookie {
    /// Reads the option's data: 8 octets (a client cookie alone) or 16 to
    /// 40; `None` for any other length, which is malformed (RFC 7873
    /// §5.2.2).
    pub fn parse(data: &[u8]) -> Option<Self> {
        let (client, server) = data.split_at_checked(CLIENT_LEN)?;
        if !(server.is_empty() || (MIN_SERVER_LEN..=MAX_SERVER_LEN).contains(&server.len())) {
            return None;
        }
        let mut cookie = Self {
            client: client.try_into().ok()?,
            server: [0; MAX_SERVER_LEN],
            server_len: server.len() as u8,
        };
        cookie.server[..server.len()].copy_from_slice(server);
        Some(cookie)
    }

    fn server(&self) -> &[u8] {
        &self.server[..usize::from(self.server_len)]
    }
}

/// What a query's cookie says about its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A client cookie alone: a first contact, or a client that does not
    /// keep server cookies.
    ClientOnly,
    /// A server cookie this server made for this client and address, and
    /// still in date: the source address is the client's.
    Valid,
    /// A server cookie that is not ours, not for this address, or out of
    /// date. Answered as [`Verdict::ClientOnly`] is.
    Invalid,
}

impl Verdict {
    /// The `result` label it is counted under.
    pub fn label(self) -> CookieResult {
        match self {
            Verdict::ClientOnly => CookieResult::ClientOnly,
            Verdict::Valid => CookieResult::Valid,
            Verdict::Invalid => CookieResult::Invalid,
        }
    }
}

/// The COOKIE option's data in our response: the client cookie echoed and
/// our server cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyCookie([u8; CLIENT_LEN + SERVER_LEN]);

impl ReplyCookie {
    pub fn data(&self) -> &[u8] {
        &self.0
    }
}

/// The server secret: the SipHash-2-4 key of our server cookies.
///
/// Replicas that serve one address (anycast, a load balancer) should share
/// it, so that a cookie from one is valid at the others (RFC 9018 §5); it
/// then comes from the config (`dns.cookie_secret`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CookieSecret {
    key: [u8; 16],
}

impl std::fmt::Debug for CookieSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieSecret(..)")
    }
}

impl CookieSecret {
    pub fn new(key: [u8; 16]) -> Self {
        Self { key }
    }

    /// A secret of this process alone, from the operating system's random
    /// source (through the keys std draws for its hash maps, which are
    /// unpredictable: the outputs of a keyed PRF).
    pub fn random() -> Self {
        let state = std::hash::RandomState::new();
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&state.hash_one(0x636f_6f6b_6965_u64).to_le_bytes());
        key[8..].copy_from_slice(&state.hash_one(0x7365_6372_6574_u64).to_le_bytes());
        Self { key }
    }

    /// Checks the server cookie of `query` from `client` at `now` (seconds
    /// since 1970, modulo 2^32) and makes the cookie of the response: the
    /// one the client sent while it is fresh, else a new one (RFC 9018
    /// §4.3).
    pub fn reply(&self, query: &QueryCookie, client: IpAddr, now: u32) -> (Verdict, ReplyCookie) {
        let verdict = self.check(query, client, now);
        let mut reply = [0u8; CLIENT_LEN + SERVER_LEN];
        reply[..CLIENT_LEN].copy_from_slice(&query.client);
        let server = query.server();
        let renew = match verdict {
            Verdict::Valid => now.wrapping_sub(timestamp(server)) as i32 >= RENEW_AFTER as i32,
            _ => true,
        };
        if renew {
            let mut head = [VERSION, 0, 0, 0, 0, 0, 0, 0];
            head[4..].copy_from_slice(&now.to_be_bytes());
            reply[CLIENT_LEN..CLIENT_LEN + 8].copy_from_slice(&head);
            reply[CLIENT_LEN + 8..].copy_from_slice(&self.hash(&query.client, &head, client));
        } else {
            reply[CLIENT_LEN..].copy_from_slice(server);
        }
        (verdict, ReplyCookie(reply))
    }

    fn check(&self, query: &QueryCookie, client: IpAddr, now: u32) -> Verdict {
        let server = query.server();
        if server.is_empty() {
            return Verdict::ClientOnly;
        }
        if server.len() != SERVER_LEN || server[0] != VERSION {
            return Verdict::Invalid;
        }
        // Serial number arithmetic (RFC 1982): the age may cross the wrap
        // of the 32-bit timestamp.
        let age = now.wrapping_sub(timestamp(server)) as i32;
        if age > MAX_AGE as i32 || age < -(MAX_AHEAD as i32) {
            return Verdict::Invalid;
        }
        let Ok(head) = <[u8; 8]>::try_from(&server[..8]) else {
            return Verdict::Invalid;
        };
        // The reserved octets are hashed as the client sent them (RFC
        // 9018 §4.2).
        if self.hash(&query.client, &head, client)[..] == server[8..] {
            Verdict::Valid
        } else {
            Verdict::Invalid
        }
    }

    /// SipHash-2-4(client cookie | version | reserved | timestamp | client
    /// address), the address in 4 octets for IPv4 (RFC 9018 §4.2).
    fn hash(&self, client_cookie: &[u8; CLIENT_LEN], head: &[u8; 8], client: IpAddr) -> [u8; 8] {
        let k0 = u64::from_le_bytes(self.key[..8].try_into().unwrap_or_default());
        let k1 = u64::from_le_bytes(self.key[8..].try_into().unwrap_or_default());
        // `SipHasher` is SipHash-2-4, deprecated only as a HashMap hasher
        // (for speed); here it is the function RFC 9018 names.
        #[allow(deprecated)]
        let mut hasher = std::hash::SipHasher::new_with_keys(k0, k1);
        let mut input = [0u8; CLIENT_LEN + 8 + 16];
        input[..CLIENT_LEN].copy_from_slice(client_cookie);
        input[CLIENT_LEN..CLIENT_LEN + 8].copy_from_slice(head);
        let len = match client.to_canonical() {
            IpAddr::V4(v4) => {
                input[16..20].copy_from_slice(&v4.octets());
                20
            }
            IpAddr::V6(v6) => {
                input[16..32].copy_from_slice(&v6.octets());
                32
            }
        };
        hasher.write(&input[..len]);
        hasher.finish().to_le_bytes()
    }
}

fn timestamp(server: &[u8]) -> u32 {
    server
        .get(4..8)
        .and_then(|t| <[u8; 4]>::try_from(t).ok())
        .map_or(0, u32::from_be_bytes)
}

/// Seconds since 1970, modulo 2^32: the clock of RFC 9018 timestamps.
pub fn now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn secret(s: &str) -> CookieSecret {
        CookieSecret::new(hex(s).try_into().unwrap())
    }

    fn reply(secret: &CookieSecret, query: &str, ip: &str, now: u32) -> (Verdict, String) {
        let query = QueryCookie::parse(&hex(query)).unwrap();
        let (verdict, reply) = secret.reply(&query, ip.parse().unwrap(), now);
        let text = reply.data().iter().map(|b| format!("{b:02x}")).collect();
        (verdict, text)
    }

    /// The examples of RFC 9018 Appendix A, byte for byte.
    #[test]
    fn rfc9018_test_vectors() {
        let one = secret("e5e973e5a6b2a43f48e7dc849e37bfcf");
        // A.1: learning a new server cookie.
        assert_eq!(
            reply(&one, "2464c4abcf10c957", "198.51.100.100", 1559731985),
            (
                Verdict::ClientOnly,
                "2464c4abcf10c957010000005cf79f111f8130c3eee29480".to_owned()
            )
        );
        // A.2: the same client, 40 minutes later: valid, and renewed.
        assert_eq!(
            reply(
                &one,
                "2464c4abcf10c957010000005cf79f111f8130c3eee29480",
                "198.51.100.100",
                1559734385
            ),
            (
                Verdict::Valid,
                "2464c4abcf10c957010000005cf7a871d4a564a1442aca77".to_owned()
            )
        );
        // A.3: another client's cookie, with reserved octets set by the
        // server that made it, 1 h 52 min old: too old to be valid here
        // (RFC 9018 §4.3), answered with a new one, as the RFC's reply.
        assert_eq!(
            reply(
                &one,
                "fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5",
                "203.0.113.203",
                1559734700
            ),
            (
                Verdict::Invalid,
                "fc93fc62807ddb86010000005cf7a9acf73a7810aca2381e".to_owned()
            )
        );
        // ...and valid at the time it was made: the reserved octets are
        // part of the hash.
        assert_eq!(
            reply(
                &one,
                "fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5",
                "203.0.113.203",
                0x5cf78f71 + 10
            )
            .0,
            Verdict::Valid
        );
        // A.4: IPv6, the cookie the old secret made, and not the new.
        let query = "22681ab97d52c298010000005cf7c57926556bd0934c72f8";
        let ip = "2001:db8:220:1:59de:d0f4:8769:82b8";
        let at = 0x5cf7c579 + 10;
        let old = secret("dd3bdf9344b678b185a6f5cb60fca715");
        let new = secret("445536bcd2513298075a5d379663c962");
        assert_eq!(reply(&old, query, ip, at).0, Verdict::Valid);
        assert_eq!(reply(&new, query, ip, at).0, Verdict::Invalid);
    }

    #[test]
    fn a_fresh_cookie_goes_back_as_it_came_and_an_old_one_is_renewed() {
        let s = CookieSecret::random();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let first = QueryCookie::parse(&hex("0102030405060708")).unwrap();
        let (_, issued) = s.reply(&first, ip, 1_000_000);
        let back = QueryCookie::parse(issued.data()).unwrap();
        for (after, verdict, same) in [
            (0, Verdict::Valid, true),
            (1799, Verdict::Valid, true),
            (1800, Verdict::Valid, false),
            (3600, Verdict::Valid, false),
            (3601, Verdict::Invalid, false),
        ] {
            let (v, r) = s.reply(&back, ip, 1_000_000 + after);
            assert_eq!(v, verdict, "{after} s later");
            assert_eq!(r == issued, same, "{after} s later");
        }
        // Five minutes of clock skew ahead, not more.
        assert_eq!(s.reply(&back, ip, 1_000_000 - 300).0, Verdict::Valid);
        assert_eq!(s.reply(&back, ip, 1_000_000 - 301).0, Verdict::Invalid);
        // From another address, or to another secret: not ours.
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(s.reply(&back, other, 1_000_000).0, Verdict::Invalid);
        let another = CookieSecret::random();
        assert_ne!(s, another);
        assert_eq!(another.reply(&back, ip, 1_000_000).0, Verdict::Invalid);
        // An IPv4-mapped IPv6 address is the IPv4 client.
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(s.reply(&back, mapped, 1_000_000).0, Verdict::Valid);
    }

    #[test]
    fn timestamps_wrap_at_two_to_the_32() {
        let s = CookieSecret::random();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let first = QueryCookie::parse(&[7; 8]).unwrap();
        let (_, issued) = s.reply(&first, ip, u32::MAX - 100);
        let back = QueryCookie::parse(issued.data()).unwrap();
        assert_eq!(s.reply(&back, ip, 1000).0, Verdict::Valid);
        assert_eq!(s.reply(&back, ip, 3600).0, Verdict::Invalid);
    }

    #[test]
    fn lengths_rfc7873_allows() {
        for len in 0..=48 {
            let ok = len == 8 || (16..=40).contains(&len);
            assert_eq!(
                QueryCookie::parse(&vec![1; len]).is_some(),
                ok,
                "{len} octets"
            );
        }
        // A server cookie of another length or version is not ours, but
        // is answered.
        let s = CookieSecret::random();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for data in [vec![1; 16], vec![1; 40], [vec![1; 8], vec![2; 16]].concat()] {
            let query = QueryCookie::parse(&data).unwrap();
            let (verdict, reply) = s.reply(&query, ip, 5);
            assert_eq!(verdict, Verdict::Invalid);
            assert_eq!(&reply.data()[..8], &data[..8]);
        }
    }
}
