//! Resource records in wire format: the record sets every answer is copied
//! from, and the few names and numbers they are made of; no I/O.
//!
//! Owner names are compression pointers to the question (RFC 1035 §4.1.4),
//! which sits at offset 12 of every message, so a prebuilt set is valid in
//! any response to a question for its name, in the letter case the client
//! used.

use std::net::IpAddr;

// ---------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------

/// Resource record types and class, as numbers on the wire (RFC 1035 §3.2.2,
/// RFC 3596, RFC 2782, RFC 6891).
pub mod rrtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
    pub const ANY: u16 = 255;
    /// Class IN.
    pub const IN: u16 = 1;
}

/// Offset of the question name in every DNS message (right after the
/// 12-octet header): what our compression pointers point at.
pub const QNAME_OFFSET: u16 = 12;
/// Offset of the service name inside a `_grpc._tcp.<service>` question:
/// the header, then `\x05_grpc` and `\x04_tcp`.
pub const GRPC_SERVICE_OFFSET: u16 = QNAME_OFFSET + 6 + 5;

/// A compression pointer (RFC 1035 §4.1.4) to `offset`.
pub fn pointer(offset: u16) -> [u8; 2] {
    (0xC000 | offset).to_be_bytes()
}

// ---------------------------------------------------------------------------
// Wire-format record sets
// ---------------------------------------------------------------------------

/// Resource records in wire format, back to back, with where each starts,
/// so that the set can be rotated by whole records.
#[derive(Debug, Default)]
pub struct WireRrs {
    bytes: Box<[u8]>,
    starts: Box<[u32]>,
}

impl WireRrs {
    /// Number of records.
    pub fn count(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Octets of all records together.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// The records rotated to start with record `offset % count`, as two
    /// slices to copy one after the other.
    pub fn rotated(&self, offset: usize) -> (&[u8], &[u8]) {
        if self.starts.is_empty() {
            return (&[], &[]);
        }
        let split = self.starts[offset % self.starts.len()] as usize;
        let (head, tail) = self.bytes.split_at(split);
        (tail, head)
    }

    /// The records rotated as by [`WireRrs::rotated`], cut after the last
    /// whole record that fits in `budget` octets: the two slices to copy
    /// one after the other, and the number of records in them.
    pub fn rotated_within(&self, offset: usize, budget: usize) -> (&[u8], &[u8], usize) {
        let count = self.starts.len();
        if count == 0 {
            return (&[], &[], 0);
        }
        // Rotated order: records first..count, then 0..first.
        let first = offset % count;
        let end = self.last_fitting(first, count, budget);
        let tail = &self.bytes[self.start(first)..self.start(end)];
        if end < count {
            return (tail, &[], end - first);
        }
        let head_end = self.last_fitting(0, first, budget - tail.len());
        (
            tail,
            &self.bytes[..self.start(head_end)],
            count - first + head_end,
        )
    }

    /// How many records, from the first, fit in `budget` octets.
    pub fn count_within(&self, budget: usize) -> usize {
        self.last_fitting(0, self.starts.len(), budget)
    }

    /// Where record `i` starts; `count()` gives the end of the last one.
    fn start(&self, i: usize) -> usize {
        self.starts.get(i).map_or(self.bytes.len(), |&s| s as usize)
    }

    /// The largest `end` in `from..=to` such that records `from..end` take
    /// at most `budget` octets.
    fn last_fitting(&self, from: usize, to: usize, budget: usize) -> usize {
        let base = self.start(from);
        let (mut lo, mut hi) = (from, to);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.start(mid) - base <= budget {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    /// All records in order.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The most octets of metadata TXT RDATA an instance gets: with its
/// question and header, the answer fits a 1232-octet EDNS response.
pub const MAX_METADATA_TXT: usize = 1000;

/// An instance's metadata as TXT RDATA: one `key=value` character-string
/// per entry, sorted by key; entries over 255 octets, or past
/// [`MAX_METADATA_TXT`] in all, are left out; `None` for none.
pub fn metadata_txt(metadata: &[(String, String)]) -> Option<Box<[u8]>> {
    let mut entries: Vec<&(String, String)> =
        metadata.iter().filter(|(k, _)| !k.is_empty()).collect();
    entries.sort();
    let mut rdata = Vec::new();
    for (key, value) in entries {
        let text = format!("{key}={value}");
        if text.len() > 255 || rdata.len() + 1 + text.len() > MAX_METADATA_TXT {
            continue;
        }
        rdata.push(text.len() as u8);
        rdata.extend_from_slice(text.as_bytes());
    }
    (!rdata.is_empty()).then(|| rdata.into_boxed_slice())
}

/// Builds a [`WireRrs`] one record at a time.
#[derive(Debug, Default)]
pub(crate) struct WireBuilder {
    bytes: Vec<u8>,
    starts: Vec<u32>,
}

impl WireBuilder {
    /// Appends one record: `owner` (already in wire form, possibly ending
    /// in a pointer), type IN, `ttl`, and `rdata`.
    pub(crate) fn push(&mut self, owner: &[&[u8]], rtype: u16, ttl: u32, rdata: &[&[u8]]) {
        // Records are far below 4 GiB; a service holds at most a few
        // thousand.
        self.starts.push(self.bytes.len() as u32);
        write_rr(&mut self.bytes, owner, rtype, ttl, rdata);
    }

    pub(crate) fn finish(self) -> WireRrs {
        WireRrs {
            bytes: self.bytes.into(),
            starts: self.starts.into(),
        }
    }
}

/// Writes one resource record to `out`. `owner` and `rdata` are given in
/// parts so callers can combine a label with a pointer without allocating.
pub fn write_rr(out: &mut Vec<u8>, owner: &[&[u8]], rtype: u16, ttl: u32, rdata: &[&[u8]]) {
    for part in owner {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&rrtype::IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    let rdlen: usize = rdata.iter().map(|part| part.len()).sum();
    // RDATA here is an address, an SRV, a SOA, a name, or a TXT of at
    // most MAX_SERVICE_CONFIG_LEN plus a little: far below 65535.
    out.extend_from_slice(&(rdlen as u16).to_be_bytes());
    for part in rdata {
        out.extend_from_slice(part);
    }
}

/// The address record data of `addr`: its type and its octets.
pub fn address_rdata(addr: &IpAddr) -> (u16, AddrOctets) {
    match addr {
        IpAddr::V4(v4) => (rrtype::A, AddrOctets::V4(v4.octets())),
        IpAddr::V6(v6) => (rrtype::AAAA, AddrOctets::V6(v6.octets())),
    }
}

/// An address's octets, without allocating.
#[derive(Debug, Clone, Copy)]
pub enum AddrOctets {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl AsRef<[u8]> for AddrOctets {
    fn as_ref(&self) -> &[u8] {
        match self {
            AddrOctets::V4(octets) => octets,
            AddrOctets::V6(octets) => octets,
        }
    }
}

/// A single label in wire form: its length octet, then the label.
pub(crate) fn label_wire(label: &str) -> Vec<u8> {
    let mut wire = Vec::with_capacity(label.len() + 1);
    // Labels are validated to at most 63 octets before they get here.
    wire.push(label.len() as u8);
    wire.extend_from_slice(label.as_bytes());
    wire
}

/// An absolute host name (`sms-0.sms`, without the trailing dot) in wire
/// form, uncompressed.
pub fn host_wire(host: &str) -> Vec<u8> {
    let mut wire = Vec::with_capacity(host.len() + 2);
    for label in host.split('.').filter(|l| !l.is_empty()) {
        wire.push(label.len().min(63) as u8);
        wire.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    wire.push(0);
    wire
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_within_keeps_whole_records_in_rotated_order() {
        let mut builder = WireBuilder::default();
        for i in 0..7u8 {
            // Records of different sizes: 12 + i octets of RDATA.
            builder.push(
                &[&[0xc0, 12]],
                rrtype::A,
                5,
                &[&vec![i; usize::from(i) + 1]],
            );
        }
        let rrs = builder.finish();
        let records: Vec<&[u8]> = (0..7)
            .map(|i| &rrs.bytes[rrs.start(i)..rrs.start(i + 1)])
            .collect();
        for offset in 0..9 {
            for budget in 0..=rrs.byte_len() + 3 {
                // Brute force: take rotated records while they fit.
                let (mut want, mut n) = (Vec::new(), 0);
                for k in 0..7 {
                    let record = records[(offset + k) % 7];
                    if want.len() + record.len() > budget {
                        break;
                    }
                    want.extend_from_slice(record);
                    n += 1;
                }
                let (a, b, count) = rrs.rotated_within(offset, budget);
                assert_eq!(
                    ([a, b].concat(), count),
                    (want, n),
                    "offset {offset} budget {budget}"
                );
            }
        }
        let empty = WireRrs::default();
        assert_eq!(empty.rotated_within(3, 100).2, 0);
    }
    #[test]
    fn rotation_wraps_by_whole_records() {
        let mut builder = WireBuilder::default();
        for i in 1..=3u8 {
            builder.push(&[&pointer(12)], rrtype::A, 5, &[&[10, 0, 0, i]]);
        }
        let rrs = builder.finish();
        let (first, second) = rrs.rotated(4);
        assert_eq!(first.len() + second.len(), 48);
        assert_eq!(first[12..16], [10, 0, 0, 2], "starts at record 4 % 3 = 1");
        assert_eq!(second[12..16], [10, 0, 0, 1]);
        assert_eq!(WireRrs::default().rotated(7), (&[][..], &[][..]));
    }
}

#[cfg(test)]
mod metadata_tests {
    use super::*;

    fn pairs(entries: &[(&str, &str)]) -> Vec<(String, String)> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn metadata_is_sorted_key_value_strings_within_the_cap() {
        let txt = metadata_txt(&pairs(&[("zone", "sh-a"), ("weight", "20"), ("", "x")])).unwrap();
        assert_eq!(&txt[..], b"\x09weight=20\x09zone=sh-a");
        assert_eq!(metadata_txt(&[]), None);
        assert_eq!(metadata_txt(&pairs(&[("", "only an empty key")])), None);
        // An entry over 255 octets is left out; so is what passes the cap.
        let long = "v".repeat(300);
        let txt = metadata_txt(&pairs(&[("a", &long), ("b", "1")])).unwrap();
        assert_eq!(&txt[..], b"\x03b=1");
        let many: Vec<(String, String)> = (0..100)
            .map(|i| (format!("key{i:03}"), "v".repeat(20)))
            .collect();
        let txt = metadata_txt(&many).unwrap();
        assert!(txt.len() <= MAX_METADATA_TXT && txt.len() > MAX_METADATA_TXT - 30);
    }
}
