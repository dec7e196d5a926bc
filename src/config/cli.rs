//! The command line (SPEC §6): flags that override the file, and the
//! `check-config` subcommand. Values stay text here and are checked with
//! the file's rules (stage 2, `validate`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

/// The command line. Flags override the file; the file is optional. Values
/// are kept as text here and checked by [`super::load`] with the same rules as the
/// file, so flag errors read like file errors (`--ttl: expected …`).
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "rpcdns",
    version,
    about = "DNS discovery bridge: serves go-zero etcd registrations as DNS",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// YAML config file (see config/rpcdns.yaml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// etcd endpoints, comma-separated [default: 127.0.0.1:2379].
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Zone apex [default: svc.local.].
    #[arg(long, value_name = "NAME")]
    pub zone: Option<String>,
    /// DNS listen address, UDP and TCP; repeat for several; replaces the
    /// file's list [default: 127.0.0.1:5353].
    #[arg(long = "dns-listen", value_name = "ADDR:PORT")]
    pub dns_listen: Vec<String>,
    /// HTTP listen address [default: 127.0.0.1:9153].
    #[arg(long = "http-listen", value_name = "ADDR:PORT")]
    pub http_listen: Option<String>,
    /// TTL of positive answers in seconds [default: 5].
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<String>,
    /// Service-key glob; repeat for several; replaces the file's list
    /// [default: *.rpc].
    #[arg(long, value_name = "GLOB")]
    pub pattern: Vec<String>,
    /// Upstream resolver for names outside the zone (port 53 when omitted);
    /// repeat for several; replaces the file's list [default: none].
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub upstream: Vec<String>,
    /// tracing filter directive, e.g. `info` or `rpcdns=debug`; RUST_LOG
    /// wins when set [default: info].
    #[arg(long = "log-level", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long = "log-format", value_name = "text|json")]
    pub log_format: Option<String>,
    /// Directory for the on-disk copy of the zone, served at start while
    /// etcd is unreachable [default: none].
    #[arg(long = "state-dir", value_name = "DIR")]
    pub state_dir: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Validate FILE, print the effective configuration as YAML, and exit.
    CheckConfig {
        /// The YAML config file to check.
        file: PathBuf,
    },
}
