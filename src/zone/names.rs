//! The naming rules of the zone (SPEC §2, §3): which service keys a glob
//! matches, which service keys are host names under the zone, and the label
//! each instance and each port gets; pure.
//!
//! [`crate::source`] uses them to decide which keys to mirror, the zone to
//! name what it serves.

use sha2::{Digest, Sha256};

// ===== Limits ===============================================================

/// Longest `<service key>.<zone>`, in octets, so that every name made from it
/// (`_grpc._tcp.` prefix, a 16-hex-digit hashed instance label) fits in 253
/// (SPEC §3).
pub const MAX_SERVICE_NAME_LEN: usize = 236;

/// Longest name in presentation form without the trailing dot. RFC 1035
/// §2.3.4 limits a name to 255 octets on the wire, which is 253 characters in
/// presentation form once the root label and the first length octet are
/// accounted for.
pub const MAX_NAME_LEN: usize = 253;

/// RFC 1035 §2.3.4: "labels 63 octets or less".
pub const MAX_LABEL_LEN: usize = 63;

/// Hex digits of the SHA-256 used as a hashed instance label (SPEC §3).
pub const HASHED_LABEL_LEN: usize = 16;

/// What a port name's label starts with: `port-8001.<service>` names the
/// instances of the service that listen on port 8001.
pub const PORT_LABEL_PREFIX: &str = "port-";

// ===== Patterns =============================================================

/// The configured service-key globs (SPEC §2): `*` matches any run of
/// characters, dots included; everything else is literal; the whole service
/// key must match; ASCII letters match case-insensitively.
#[derive(Debug, Clone)]
pub struct Patterns {
    /// Globs, ASCII-lower-cased once so that matching only lower-cases the key.
    globs: Vec<Vec<u8>>,
}

impl Patterns {
    /// Compiles the globs. An empty list, or an empty glob (which could only
    /// match an empty service key), is a configuration error.
    pub fn new<S: AsRef<str>>(globs: &[S]) -> Result<Self, String> {
        if globs.is_empty() {
            return Err("expected at least one service key pattern".to_owned());
        }
        let mut compiled = Vec::with_capacity(globs.len());
        for (i, glob) in globs.iter().enumerate() {
            let glob = glob.as_ref();
            if glob.is_empty() {
                return Err(format!("pattern {}: expected a non-empty glob", i + 1));
            }
            compiled.push(glob.as_bytes().to_ascii_lowercase());
        }
        Ok(Patterns { globs: compiled })
    }

    /// Whether the whole service key matches at least one glob.
    pub fn matches(&self, service_key: &str) -> bool {
        let key = service_key.as_bytes().to_ascii_lowercase();
        self.globs.iter().any(|glob| glob_matches(glob, &key))
    }
}

/// Matches `text` against `glob`, both already lower-cased, with the classic
/// greedy algorithm that backtracks only to the last `*`: O(n·m) in the worst
/// case, never exponential. Works on bytes; since `*` is ASCII and both sides
/// are UTF-8, a literal can only match on character boundaries.
fn glob_matches(glob: &[u8], text: &[u8]) -> bool {
    let (mut g, mut t) = (0, 0);
    // Position of the last `*` seen in the glob, and the text position it
    // currently stands for the end of.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if g < glob.len() && glob[g] == b'*' {
            star = Some((g, t));
            g += 1;
        } else if g < glob.len() && glob[g] == text[t] {
            g += 1;
            t += 1;
        } else if let Some((sg, st)) = star {
            // Let the last `*` swallow one more character and retry.
            g = sg + 1;
            t = st + 1;
            star = Some((sg, st + 1));
        } else {
            return false;
        }
    }
    // Text consumed: only stars may remain in the glob.
    glob[g..].iter().all(|&c| c == b'*')
}

// ===== Service keys =========================================================

/// SPEC §3: the service key becomes DNS labels as it is; it must be a host
/// name whose `<service key>.<zone>` leaves room for every derived name.
pub fn is_valid_service_key(service_key: &str, zone: &str) -> bool {
    service_key.len() + 1 + zone.len() <= MAX_SERVICE_NAME_LEN
        && service_key.split('.').all(|label| {
            (1..=MAX_LABEL_LEN).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

// ===== Instance and port labels =============================================

/// The instance label made from the id itself (SPEC §3): the id lower-cased
/// when it is a label of 1..=63 `[a-z0-9-]` and `<label>.<service>.<zone>`
/// fits in 253 octets; `None` otherwise (use [`hashed_label`]). `zone` is
/// without the trailing dot.
pub fn natural_label(instance_id: &str, service: &str, zone: &str) -> Option<String> {
    let label = instance_id.to_ascii_lowercase();
    let label_ok = (1..=MAX_LABEL_LEN).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let fits = label.len() + 1 + service.len() + 1 + zone.len() <= MAX_NAME_LEN;
    (label_ok && fits).then_some(label)
}

/// The fallback instance label (SPEC §3): the first 16 lower-case hex digits
/// of the SHA-256 of the whole key's bytes, stable across restarts.
pub fn hashed_label(key: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(key);
    let mut label = String::with_capacity(HASHED_LABEL_LEN);
    for &byte in &digest[..HASHED_LABEL_LEN / 2] {
        label.push(char::from(HEX[usize::from(byte >> 4)]));
        label.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    label
}

/// The label of the port name for `port`.
pub fn port_label(port: u16) -> String {
    format!("{PORT_LABEL_PREFIX}{port}")
}

/// The port a label names when it is a port name's label: `port-`, then
/// the decimal port without leading zeros (never 0, which no registration
/// has).
pub fn port_of_label(label: &str) -> Option<u16> {
    let digits = label.strip_prefix(PORT_LABEL_PREFIX)?;
    if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

// ===== Tests ================================================================

/// A valid `….rpc` service key of exactly `n` octets (n ≥ 5), in labels of
/// at most 62 octets, for tests of the length limits.
#[cfg(test)]
pub(crate) fn service_of_len(n: usize) -> String {
    let mut s = String::new();
    let mut remaining = n - 4;
    while remaining > 63 {
        s.push_str(&"b".repeat(62));
        s.push('.');
        remaining -= 63;
    }
    s.push_str(&"b".repeat(remaining));
    s.push_str(".rpc");
    assert_eq!(s.len(), n);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: &str = "svc.local";

    fn rpc() -> Patterns {
        Patterns::new(&["*.rpc"]).unwrap()
    }

    // ----- patterns -----------------------------------------------------------

    #[test]
    fn patterns_reject_empty_config() {
        assert!(Patterns::new::<&str>(&[]).is_err());
        assert!(Patterns::new(&[""]).is_err());
        let err = Patterns::new(&["*.rpc", ""]).unwrap_err();
        assert!(err.contains("pattern 2"), "{err}");
    }

    #[test]
    fn star_rpc() {
        let p = rpc();
        assert!(p.matches("sms.rpc"));
        assert!(p.matches("mall.user.rpc"));
        assert!(p.matches(".rpc"), "* may match the empty run");
        assert!(!p.matches("rpc"), "the dot is literal");
        assert!(!p.matches("sms.rpcx"), "the whole key must match");
        assert!(!p.matches("sms.rpc.x"));
        assert!(!p.matches("smsxrpc"));
        assert!(!p.matches(""));
    }

    #[test]
    fn patterns_are_case_insensitive() {
        assert!(rpc().matches("SMS.RPC"));
        let upper = Patterns::new(&["*.RPC"]).unwrap();
        assert!(upper.matches("sms.rpc"));
        assert!(upper.matches("Sms.Rpc"));
    }

    #[test]
    fn literal_patterns_match_whole_key() {
        let p = Patterns::new(&["sms.rpc"]).unwrap();
        assert!(p.matches("sms.rpc"));
        assert!(p.matches("SMS.rpc"));
        assert!(!p.matches("xsms.rpc"));
        assert!(!p.matches("sms.rpcx"));
        assert!(!p.matches("sms.rp"));
        // `?` and `[` are literal, not wildcards.
        let q = Patterns::new(&["a?[b]"]).unwrap();
        assert!(q.matches("a?[b]"));
        assert!(!q.matches("ax[b]"));
        assert!(!q.matches("a?b"));
    }

    #[test]
    fn several_stars() {
        let p = Patterns::new(&["a*b*c"]).unwrap();
        for yes in ["abc", "axbxc", "abbbc", "aXbYbZc", "a.b.c", "acbc", "abcbc"] {
            assert!(p.matches(yes), "{yes}");
        }
        for no in ["ab", "ac", "bc", "abcx", "xabc", "acb", "a"] {
            assert!(!p.matches(no), "{no}");
        }
        let stars = Patterns::new(&["**"]).unwrap();
        assert!(stars.matches(""));
        assert!(stars.matches("anything.at.all"));
        let mid = Patterns::new(&["mall.*.rpc"]).unwrap();
        assert!(mid.matches("mall.user.rpc"));
        assert!(mid.matches("mall.a.b.rpc"));
        assert!(!mid.matches("mall.rpc"));
    }

    #[test]
    fn any_pattern_may_match() {
        let p = Patterns::new(&["*.rpc", "gateway"]).unwrap();
        assert!(p.matches("sms.rpc"));
        assert!(p.matches("gateway"));
        assert!(!p.matches("gateway.api"));
    }

    #[test]
    fn matching_is_not_exponential() {
        // A naive backtracking matcher takes ~C(2000, 30) steps here.
        let glob = "*a".repeat(30) + "b";
        let p = Patterns::new(&[glob.as_str()]).unwrap();
        let text = "a".repeat(2000);
        let started = std::time::Instant::now();
        assert!(!p.matches(&text));
        assert!(p.matches(&(text + "b")));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn non_ascii_patterns_are_literal() {
        let p = Patterns::new(&["é*.rpc"]).unwrap();
        assert!(p.matches("éa.rpc"));
        assert!(!p.matches("ea.rpc"));
    }

    // ----- instance labels ----------------------------------------------------

    #[test]
    fn natural_label_lower_cases_valid_ids() {
        assert_eq!(
            natural_label("7587869364815473158", "sms.rpc", ZONE).as_deref(),
            Some("7587869364815473158")
        );
        assert_eq!(
            natural_label("Pod-A", "sms.rpc", ZONE).as_deref(),
            Some("pod-a")
        );
    }

    #[test]
    fn natural_label_rejects_invalid_ids() {
        for id in ["", "a_b", "a.b", "a/b", "é", "a b", &"a".repeat(64)] {
            assert_eq!(natural_label(id, "sms.rpc", ZONE), None, "{id:?}");
        }
        assert!(natural_label(&"a".repeat(63), "sms.rpc", ZONE).is_some());
    }

    #[test]
    fn natural_label_253_octet_limit() {
        // 236-octet service name, the most classify allows.
        let service = service_of_len(MAX_SERVICE_NAME_LEN - 1 - ZONE.len());
        assert_eq!(service.len() + 1 + ZONE.len(), 236);
        // label + "." + 236 ≤ 253 → label ≤ 16.
        assert_eq!(
            natural_label(&"a".repeat(16), &service, ZONE),
            Some("a".repeat(16))
        );
        assert_eq!(natural_label(&"a".repeat(17), &service, ZONE), None);
        // The hashed label always fits.
        assert_eq!(
            hashed_label(b"x").len() + 1 + service.len() + 1 + ZONE.len(),
            253
        );
    }

    #[test]
    fn hashed_label_known_vector() {
        // printf %s 'sms.rpc/x' | sha256sum
        // → 1ada7f1074e941dae845d52547ea3abbd20a6ddf2ea4470e5811468b1872089b
        assert_eq!(hashed_label(b"sms.rpc/x"), "1ada7f1074e941da");
        assert_eq!(
            hashed_label(b"sms.rpc/7587869364815473158"),
            "d761765f3922b389"
        );
        // The whole key's bytes count, including case.
        assert_ne!(hashed_label(b"SMS.rpc/x"), hashed_label(b"sms.rpc/x"));
        assert_eq!(hashed_label(b"\xff/\x00").len(), HASHED_LABEL_LEN);
    }
}
