//! Reverse zones (`in-addr.arpa`, `ip6.arpa`) of the configured networks:
//! where each one's apex is, and which address (or address prefix) a name
//! below it stands for; no I/O.
//!
//! The PTR records themselves are per address, kept by the writer in the
//! snapshot ([`super::ZoneSnapshot`]): one record per instance name
//! registered at that address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// One configured reverse zone: `10.0.0.0/8` is `10.in-addr.arpa.`.
#[derive(Debug, Clone)]
pub struct ReverseZone {
    net: IpNet,
    /// The apex in wire form, lower-case, with the root label.
    apex: Box<[u8]>,
}

/// What the labels below a reverse zone's apex stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReverseName {
    /// A whole address.
    Address(IpAddr),
    /// A prefix of an address: every address in `first..=last` is below
    /// the name (an empty non-terminal when one of them is registered).
    Prefix { first: IpAddr, last: IpAddr },
    /// Not an address in this zone: a label that is not an octet (a nibble
    /// for IPv6), one too many, or one with leading zeros.
    Nothing,
}

impl ReverseZone {
    /// The reverse zone of `net`, whose prefix ends on a label (a multiple
    /// of 8 for IPv4, of 4 for IPv6; the configuration checks it).
    pub fn new(net: IpNet) -> ReverseZone {
        let net = net.trunc();
        let mut labels: Vec<String> = match net {
            IpNet::V4(v4) => v4.addr().octets()[..usize::from(v4.prefix_len() / 8)]
                .iter()
                .map(u8::to_string)
                .collect(),
            IpNet::V6(v6) => nibbles(&v6.addr())[..usize::from(v6.prefix_len() / 4)]
                .iter()
                .map(|n| format!("{n:x}"))
                .collect(),
        };
        labels.reverse();
        labels.extend(match net {
            IpNet::V4(_) => ["in-addr", "arpa"].map(String::from),
            IpNet::V6(_) => ["ip6", "arpa"].map(String::from),
        });
        let mut apex = Vec::new();
        for label in &labels {
            // Labels of at most 7 octets.
            apex.push(label.len() as u8);
            apex.extend_from_slice(label.as_bytes());
        }
        apex.push(0);
        ReverseZone {
            net,
            apex: apex.into(),
        }
    }

    pub fn net(&self) -> IpNet {
        self.net
    }

    /// The apex in wire form, lower-case, root label included.
    pub fn apex_wire(&self) -> &[u8] {
        &self.apex
    }

    /// The apex in presentation form, absolute (`10.in-addr.arpa.`).
    pub fn apex_text(&self) -> String {
        let mut text = String::new();
        let mut at = 0;
        while let Some(&len) = self.apex.get(at) {
            if len == 0 {
                break;
            }
            let label = &self.apex[at + 1..at + 1 + usize::from(len)];
            text.push_str(&String::from_utf8_lossy(label));
            text.push('.');
            at += 1 + usize::from(len);
        }
        text
    }

    /// What the labels left of the apex (as in the name, left to right, in
    /// any letter case) stand for.
    pub fn name<'l>(&self, labels: impl DoubleEndedIterator<Item = &'l [u8]>) -> ReverseName {
        // The name's labels run from the least significant part of the
        // address to the most: read them right to left after the prefix.
        match self.net {
            IpNet::V4(v4) => {
                let mut octets = v4.addr().octets();
                let fixed = usize::from(v4.prefix_len() / 8);
                let mut at = fixed;
                for label in labels.rev() {
                    let Some(octet) = octet(label) else {
                        return ReverseName::Nothing;
                    };
                    let Some(slot) = octets.get_mut(at) else {
                        return ReverseName::Nothing;
                    };
                    *slot = octet;
                    at += 1;
                }
                if at == 4 {
                    return ReverseName::Address(IpAddr::V4(Ipv4Addr::from(octets)));
                }
                let mut last = octets;
                last[at..].fill(255);
                ReverseName::Prefix {
                    first: IpAddr::V4(Ipv4Addr::from(octets)),
                    last: IpAddr::V4(Ipv4Addr::from(last)),
                }
            }
            IpNet::V6(v6) => {
                let mut digits = nibbles(&v6.addr());
                let fixed = usize::from(v6.prefix_len() / 4);
                let mut at = fixed;
                for label in labels.rev() {
                    let Some(nibble) = nibble(label) else {
                        return ReverseName::Nothing;
                    };
                    let Some(slot) = digits.get_mut(at) else {
                        return ReverseName::Nothing;
                    };
                    *slot = nibble;
                    at += 1;
                }
                if at == 32 {
                    return ReverseName::Address(IpAddr::V6(from_nibbles(&digits)));
                }
                let mut last = digits;
                last[at..].fill(15);
                ReverseName::Prefix {
                    first: IpAddr::V6(from_nibbles(&digits)),
                    last: IpAddr::V6(from_nibbles(&last)),
                }
            }
        }
    }
}

/// A decimal octet label: 0..=255, no leading zeros.
fn octet(label: &[u8]) -> Option<u8> {
    if label.is_empty()
        || label.len() > 3
        || (label.len() > 1 && label[0] == b'0')
        || !label.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    std::str::from_utf8(label).ok()?.parse().ok()
}

/// A nibble label: one hex digit, either case.
fn nibble(label: &[u8]) -> Option<u8> {
    match label {
        [digit] => char::from(*digit)
            .to_digit(16)
            .and_then(|n| u8::try_from(n).ok()),
        _ => None,
    }
}

/// The 32 nibbles of an IPv6 address, most significant first.
fn nibbles(addr: &Ipv6Addr) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in addr.octets().iter().enumerate() {
        out[2 * i] = byte >> 4;
        out[2 * i + 1] = byte & 0x0F;
    }
    out
}

fn from_nibbles(digits: &[u8; 32]) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        octets[i] = (pair[0] << 4) | pair[1];
    }
    Ipv6Addr::from(octets)
}

/// The reverse name of `addr` in presentation form, without the final dot
/// (`5.0.0.10.in-addr.arpa`), as `/debug/zone` and the tests spell it.
pub fn reverse_name(addr: &IpAddr) -> String {
    let mut labels: Vec<String> = match addr {
        IpAddr::V4(v4) => v4.octets().iter().map(u8::to_string).collect(),
        IpAddr::V6(v6) => nibbles(v6).iter().map(|n| format!("{n:x}")).collect(),
    };
    labels.reverse();
    labels.push(
        match addr {
            IpAddr::V4(_) => "in-addr.arpa",
            IpAddr::V6(_) => "ip6.arpa",
        }
        .to_owned(),
    );
    labels.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(net: &str) -> ReverseZone {
        ReverseZone::new(net.parse().unwrap())
    }

    fn labels(name: &str) -> Vec<&[u8]> {
        name.split('.')
            .filter(|l| !l.is_empty())
            .map(str::as_bytes)
            .collect()
    }

    #[test]
    fn apexes_follow_the_prefix() {
        assert_eq!(&*zone("10.0.0.0/8").apex, b"\x0210\x07in-addr\x04arpa\x00");
        assert_eq!(
            &*zone("192.168.1.7/24").apex,
            b"\x011\x03168\x03192\x07in-addr\x04arpa\x00"
        );
        assert_eq!(&*zone("fd00::/8").apex, b"\x01d\x01f\x03ip6\x04arpa\x00");
        assert_eq!(&*zone("0.0.0.0/0").apex, b"\x07in-addr\x04arpa\x00");
        assert_eq!(zone("fd00::/8").apex_text(), "d.f.ip6.arpa.");
    }

    #[test]
    fn names_below_the_apex_are_addresses_or_prefixes() {
        let z = zone("10.0.0.0/8");
        assert_eq!(
            z.name(labels("5.0.0").into_iter()),
            ReverseName::Address("10.0.0.5".parse().unwrap())
        );
        assert_eq!(
            z.name(labels("0").into_iter()),
            ReverseName::Prefix {
                first: "10.0.0.0".parse().unwrap(),
                last: "10.0.255.255".parse().unwrap()
            }
        );
        assert_eq!(
            z.name(std::iter::empty()),
            ReverseName::Prefix {
                first: "10.0.0.0".parse().unwrap(),
                last: "10.255.255.255".parse().unwrap()
            }
        );
        for bad in ["1.5.0.0", "256.0.0", "05.0.0", "a.0.0", "-1.0.0"] {
            assert_eq!(
                z.name(labels(bad).into_iter()),
                ReverseName::Nothing,
                "{bad}"
            );
        }
        let v6 = zone("fd00::/8");
        let addr: IpAddr = "fd00::5".parse().unwrap();
        let name = reverse_name(&addr);
        assert!(name.ends_with(".d.f.ip6.arpa"), "{name}");
        let below: String = name.trim_end_matches(".d.f.ip6.arpa").to_owned();
        assert_eq!(
            v6.name(labels(&below.to_uppercase()).into_iter()),
            ReverseName::Address(addr)
        );
        assert_eq!(v6.name(labels("10").into_iter()), ReverseName::Nothing);
        assert_eq!(
            reverse_name(&"10.0.0.5".parse().unwrap()),
            "5.0.0.10.in-addr.arpa"
        );
    }
}
