//! Sets up `tracing` output on stderr: text or JSON, filtered by RUST_LOG or
//! the configured level.
//!
//! hickory-server logs every query at info, which costs CPU and floods the
//! log (SPEC §6: "never one per query at info"). So whenever the filter lets
//! info or finer through by default, the crates in [`QUIET_CRATES`] are held
//! at warn, unless the directive names them itself (`debug,hickory_server=debug`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

use crate::config::{LogConfig, LogFormat};

/// The environment variable whose filter directive overrides `log.level`.
pub const LOG_ENV_VAR: &str = "RUST_LOG";

/// Crates that are held at warn unless the directive names them: they log
/// per query or per connection at info.
pub const QUIET_CRATES: &[&str] = &["hickory_server", "hickory_proto", "h2", "tower", "hyper"];

/// Where environment variables come from; tests pass a map instead of
/// setting the process environment.
pub trait Env {
    /// The variable's value, `None` when unset or not UTF-8.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Installs the global subscriber, reading RUST_LOG from the process
/// environment. Calling it twice keeps the first subscriber.
pub fn init(log: &LogConfig) {
    init_with_env(log, &ProcessEnv);
}

/// [`init`] with the environment supplied.
pub fn init_with_env(log: &LogConfig, env: &dyn Env) {
    let (directives, rejected) = filter_directives(log, env);
    // `filter_directives` only returns directives that parse (the configured
    // level was validated by config.rs), so the fallback is never taken; it
    // is there so a surprise cannot take logging down.
    let filter = EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| EnvFilter::new(LevelFilter::INFO.to_string()));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let installed = match log.format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
    if installed.is_ok()
        && let Some(reason) = rejected
    {
        tracing::warn!(
            "ignoring {LOG_ENV_VAR}: {reason}; using log level {:?}",
            log.level
        );
    }
}

/// The filter directive to install, and why RUST_LOG was ignored if it was
/// set but invalid. RUST_LOG wins when set and valid; otherwise the
/// configured level. The quiet crates are then capped at warn (see the
/// module doc).
pub fn filter_directives(log: &LogConfig, env: &dyn Env) -> (String, Option<String>) {
    let mut rejected = None;
    let base = match env.var(LOG_ENV_VAR) {
        Some(value) if !value.trim().is_empty() => match EnvFilter::try_new(&value) {
            Ok(_) => value,
            Err(err) => {
                rejected = Some(err.to_string());
                log.level.clone()
            }
        },
        _ => log.level.clone(),
    };
    (with_quiet_crates(&base), rejected)
}

/// Appends `crate=warn` for each quiet crate the directive does not name,
/// when its default level lets info through. With a default of warn or
/// quieter, appending would make those crates louder than the rest.
pub fn with_quiet_crates(directive: &str) -> String {
    let parts: Vec<&str> = directive
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    // A bare level (`info`) sets the default; so does the last one given.
    let default_level = parts
        .iter()
        .rev()
        .find_map(|p| p.parse::<LevelFilter>().ok());
    let chatty = default_level.is_some_and(|level| level >= LevelFilter::INFO);
    if !chatty {
        return directive.to_owned();
    }
    let mut out = parts.join(",");
    for krate in QUIET_CRATES {
        if !parts.iter().any(|p| names_crate(p, krate)) {
            out.push_str(&format!(",{krate}=warn"));
        }
    }
    out
}

/// Whether directive `part` targets `krate` (or one of its modules).
fn names_crate(part: &str, krate: &str) -> bool {
    // A directive is `target[span{field}]=level`; only the target matters.
    let target = part.split(['=', '[']).next().unwrap_or_default().trim();
    target == krate || target.starts_with(&format!("{krate}::"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct MapEnv(HashMap<&'static str, &'static str>);

    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| (*v).to_owned())
        }
    }

    fn env(pairs: &[(&'static str, &'static str)]) -> MapEnv {
        MapEnv(pairs.iter().copied().collect())
    }

    fn log(level: &str) -> LogConfig {
        LogConfig {
            level: level.to_owned(),
            format: LogFormat::Text,
        }
    }

    #[test]
    fn info_quiets_hickory_and_http_crates() {
        let (d, rejected) = filter_directives(&log("info"), &env(&[]));
        assert_eq!(
            d,
            "info,hickory_server=warn,hickory_proto=warn,h2=warn,tower=warn,hyper=warn"
        );
        assert!(rejected.is_none());
        assert!(EnvFilter::try_new(&d).is_ok());
        let (d, _) = filter_directives(&log("debug"), &env(&[]));
        assert!(d.contains("hickory_server=warn"), "{d}");
    }

    #[test]
    fn named_crates_are_left_alone() {
        let d = with_quiet_crates("debug,hickory_server=debug,hyper::proto=trace");
        assert!(!d.contains("hickory_server=warn"), "{d}");
        assert!(!d.contains("hyper=warn"), "{d}");
        assert!(d.contains("hickory_proto=warn"), "{d}");
        assert!(d.starts_with("debug,hickory_server=debug,hyper::proto=trace"));
        // `hyper_util` is not `hyper`.
        let d = with_quiet_crates("info,hyper_util=debug");
        assert!(d.contains("hyper=warn"), "{d}");
    }

    #[test]
    fn quiet_defaults_are_not_made_louder() {
        assert_eq!(with_quiet_crates("warn"), "warn");
        assert_eq!(with_quiet_crates("error"), "error");
        assert_eq!(with_quiet_crates("rpcdns=debug"), "rpcdns=debug");
        assert_eq!(with_quiet_crates("off"), "off");
    }

    #[test]
    fn rust_log_wins_when_set_and_valid() {
        let (d, rejected) = filter_directives(&log("info"), &env(&[("RUST_LOG", "warn")]));
        assert_eq!(d, "warn");
        assert!(rejected.is_none());
        let (d, _) = filter_directives(&log("warn"), &env(&[("RUST_LOG", "rpcdns=trace,info")]));
        assert!(d.starts_with("rpcdns=trace,info,"), "{d}");
        assert!(d.contains("hickory_server=warn"), "{d}");
        // Empty counts as unset.
        let (d, _) = filter_directives(&log("error"), &env(&[("RUST_LOG", " ")]));
        assert_eq!(d, "error");
    }

    #[test]
    fn invalid_rust_log_falls_back_to_the_config() {
        let (d, rejected) = filter_directives(&log("error"), &env(&[("RUST_LOG", "info,=")]));
        assert_eq!(d, "error");
        assert!(rejected.is_some());
    }
}
