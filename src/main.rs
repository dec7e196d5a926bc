//! rpcdns binary: parse the command line, load the config, run.
//!
//! Exit codes (SPEC §6, STYLE.md): 0 for a clean stop, 1 for a runtime
//! failure, 2 for bad configuration or usage (clap exits 2 on its own).

use std::error::Error;
use std::process::ExitCode;

use clap::Parser;
use rpcdns::config::{self, Cli, Command};
use rpcdns::ops::logging;

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match config::load(&cli) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("rpcdns: error: {}", chain(&err));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // The files etcd.tls names are configuration too: unreadable or not PEM
    // is a config error (exit 2), found before any port is bound, and by
    // check-config.
    if let Some(tls) = &config.etcd.tls
        && let Err(err) = rpcdns::source::etcd::tls_options(tls, config.etcd.dial_timeout)
    {
        eprintln!("rpcdns: error: {}", chain(&err));
        return ExitCode::from(EXIT_CONFIG);
    }
    if let Some(Command::CheckConfig { .. }) = cli.command {
        print!("{}", config.to_redacted_yaml());
        return ExitCode::SUCCESS;
    }

    logging::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("rpcdns: error: failed to start the tokio runtime: {err}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match runtime.block_on(rpcdns::app::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rpcdns: error: {}", chain(&err));
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// The error and its sources joined by `: `, each cause once: a source whose
/// text the message already ends with (thiserror's `{source}` in a format
/// string) is not repeated.
fn chain(err: &dyn Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
