//! The configured sources side by side: which one a key belongs to, and
//! what it makes of the key and value.
//!
//! All sources share one etcd read and watch, over the longest prefix
//! their prefixes have in common, so the zone reflects one revision (its
//! SOA serial) whatever the mix. A key belongs to the first source, in
//! the configured order, whose prefix it starts with and whose format
//! recognises it (a go-zero source over the whole keyspace ignores the
//! keys of a go-micro source, which start with `/`). Pure: no I/O.

use crate::config::{Format, SourceConfig};
use crate::ops::metrics::SkipReason;
use crate::source::gozero::{self, Classified};
use crate::source::{gomicro, kratos, overlay, skydns};
use crate::zone::Registration;
use crate::zone::names::{Patterns, is_valid_service_key};

/// One source, ready to classify.
#[derive(Debug, Clone)]
struct Source {
    format: Format,
    prefix: Vec<u8>,
    patterns: Option<Patterns>,
    suffix: String,
}

/// The configured sources, in order.
#[derive(Debug, Clone)]
pub struct Sources {
    sources: Vec<Source>,
    /// Where the overlay's keys are, if it is on.
    overlay: Option<Vec<u8>>,
    /// The apex without its trailing dot.
    zone: String,
}

impl Sources {
    /// `zone` is the apex without its trailing dot (`svc.local`). Fails on
    /// a go-zero source's bad glob.
    pub fn new(configs: &[SourceConfig], zone: &str) -> Result<Self, String> {
        let sources = configs
            .iter()
            .map(|config| {
                let patterns = match config.format {
                    Format::GoZero => Some(Patterns::new(&config.patterns)?),
                    _ => None,
                };
                Ok(Source {
                    format: config.format,
                    prefix: config.prefix.as_bytes().to_vec(),
                    patterns,
                    suffix: config.suffix.clone(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            sources,
            overlay: None,
            zone: zone.to_owned(),
        })
    }

    /// Reads the overlay's keys under `prefix` too (before any source).
    pub fn with_overlay(mut self, prefix: &str) -> Self {
        self.overlay = Some(prefix.as_bytes().to_vec());
        self
    }

    /// What the sources read: the longest prefix common to all of theirs.
    pub fn watch_prefix(&self) -> String {
        let mut prefixes = self
            .sources
            .iter()
            .map(|s| s.prefix.as_slice())
            .chain(self.overlay.as_deref());
        let mut common: &[u8] = prefixes.next().unwrap_or(&[]);
        for prefix in prefixes {
            let shared = common
                .iter()
                .zip(prefix)
                .take_while(|(a, b)| a == b)
                .count();
            common = &common[..shared];
        }
        // Cut back to a whole UTF-8 character: etcd takes the prefix as
        // bytes, the config holds it as text.
        let mut text = String::from_utf8_lossy(common).into_owned();
        while text.ends_with(char::REPLACEMENT_CHARACTER) {
            text.pop();
        }
        text
    }

    /// Classifies one key/value: the first source that recognises it.
    pub fn classify(&self, key: &[u8], value: &[u8]) -> Classified {
        if let Some(prefix) = &self.overlay
            && key.starts_with(prefix)
        {
            return overlay::classify(key, value, prefix);
        }
        for (index, source) in self.sources.iter().enumerate() {
            if !key.starts_with(&source.prefix) {
                continue;
            }
            let classified = match (source.format, &source.patterns) {
                (Format::GoZero, Some(patterns)) => {
                    gozero::classify(key, value, patterns, &self.with_suffix(source))
                }
                (Format::GoZero, None) => Classified::Ignored,
                (Format::GoMicro, _) => gomicro::classify(key, value, &source.prefix),
                (Format::Kratos, _) => kratos::classify(key, value, &source.prefix),
                (Format::SkyDns, _) => skydns::classify(key, value, &source.prefix, &self.zone),
            };
            match classified {
                Classified::Ignored => continue,
                Classified::Registration(mut registration) => {
                    if let Err(reason) = self.place(index, source, &mut registration) {
                        return Classified::Skipped(reason);
                    }
                    return Classified::Registration(registration);
                }
                Classified::Sky(mut record) => {
                    // Config validation keeps the list far below 256.
                    record.source = u8::try_from(index).unwrap_or(u8::MAX);
                    return Classified::Sky(record);
                }
                Classified::Registrations(mut registrations) => {
                    for registration in &mut registrations {
                        if let Err(reason) = self.place(index, source, registration) {
                            return Classified::Skipped(reason);
                        }
                    }
                    return Classified::Registrations(registrations);
                }
                skipped => return skipped,
            }
        }
        Classified::Ignored
    }

    /// Marks a registration with its source's place in the list, puts it
    /// under the source's suffix, and checks that its
    /// service makes a name in the zone. go-zero checks its service keys
    /// itself (against the zone with the suffix).
    fn place(
        &self,
        index: usize,
        source: &Source,
        registration: &mut Registration,
    ) -> Result<(), SkipReason> {
        // Config validation keeps the list far below 256.
        registration.source = u8::try_from(index).unwrap_or(u8::MAX);
        if !source.suffix.is_empty() {
            registration.service = format!("{}.{}", registration.service, source.suffix);
        }
        if source.format != Format::GoZero
            && !is_valid_service_key(&registration.service, &self.zone)
        {
            return Err(SkipReason::InvalidServiceKey);
        }
        Ok(())
    }

    /// The zone a source's service names must fit under: the apex with
    /// the source's suffix in front.
    fn with_suffix(&self, source: &Source) -> String {
        if source.suffix.is_empty() {
            self.zone.clone()
        } else {
            format!("{}.{}", source.suffix, self.zone)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(format: Format, prefix: &str, suffix: &str) -> SourceConfig {
        SourceConfig {
            format,
            prefix: prefix.to_owned(),
            patterns: vec!["*.rpc".to_owned()],
            suffix: suffix.to_owned(),
        }
    }

    const GREETER: &str = r#"{"name":"greeter","nodes":[{"id":"g1","address":"10.0.0.5:8080"}]}"#;

    #[test]
    fn keys_go_to_the_first_source_that_knows_them() {
        let sources = Sources::new(
            &[
                source(Format::GoZero, "", ""),
                source(Format::GoMicro, "/micro/registry/", "micro"),
            ],
            "svc.local",
        )
        .unwrap();
        assert_eq!(sources.watch_prefix(), "");
        let Classified::Registration(r) = sources.classify(b"sms.rpc/1", b"10.0.0.1:8001") else {
            panic!("go-zero key");
        };
        assert_eq!(r.service, "sms.rpc");
        let Classified::Registration(r) =
            sources.classify(b"/micro/registry/greeter/g1", GREETER.as_bytes())
        else {
            panic!("go-micro key");
        };
        assert_eq!(
            r.service, "greeter.micro",
            "the suffix maps it below micro."
        );
        assert_eq!(sources.classify(b"other/key", b"x"), Classified::Ignored);
        assert_eq!(
            sources.classify(b"/micro/registry/greeter/g1", b"oops"),
            Classified::Skipped(SkipReason::BadJson)
        );
    }

    #[test]
    fn the_watch_covers_every_prefix() {
        let both = |a: &str, b: &str| {
            Sources::new(
                &[
                    source(Format::GoMicro, a, ""),
                    source(Format::GoMicro, b, "x"),
                ],
                "svc.local",
            )
            .unwrap()
            .watch_prefix()
        };
        assert_eq!(both("/micro/registry/", "/micro/other/"), "/micro/");
        assert_eq!(
            both("/micro/registry/", "/micro/registry/"),
            "/micro/registry/"
        );
        assert_eq!(both("/a", "/b"), "/");
        assert_eq!(both("é/", "è/"), "", "never half a character");
    }

    #[test]
    fn the_overlay_comes_first_and_is_watched_too() {
        let sources = Sources::new(
            &[source(Format::GoMicro, "/micro/registry/", "")],
            "svc.local",
        )
        .unwrap()
        .with_overlay("/rpcdns/overlay/");
        assert_eq!(sources.watch_prefix(), "/");
        assert!(matches!(
            sources.classify(b"/rpcdns/overlay/greeter", br#"{"weight": 3}"#),
            Classified::Overlay(_)
        ));
        assert_eq!(
            sources.classify(b"/rpcdns/overlay/greeter", b"3"),
            Classified::Skipped(SkipReason::BadJson)
        );
    }

    #[test]
    fn a_suffix_counts_against_the_name_length() {
        let long = "a".repeat(60);
        let sources = Sources::new(
            &[source(
                Format::GoMicro,
                "/micro/registry/",
                &format!("{long}.{long}.{long}"),
            )],
            "svc.local",
        )
        .unwrap();
        let value = format!(r#"{{"name":"{long}","nodes":[{{"id":"n","address":"10.0.0.1:1"}}]}}"#);
        assert_eq!(
            sources.classify(
                format!("/micro/registry/{long}/n").as_bytes(),
                value.as_bytes()
            ),
            Classified::Skipped(SkipReason::InvalidServiceKey)
        );
    }
}
