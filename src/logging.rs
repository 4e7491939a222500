//! Process logs (not the access log): text for a terminal, JSON lines for a collector.
//!
//! `--log-format auto` (the default) writes text with colours when stderr is a terminal
//! and JSON lines otherwise (a systemd journal, a container runtime, a pipe); `text` never
//! colours unless stderr is a terminal. The level is `--log-level` when given, else
//! `RUST_LOG` (`info`, or a filter such as `membrane_proxy=debug,info`), else `info`.

use clap::ValueEnum;
use std::io::IsTerminal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

/// Installs the process-wide subscriber. A filter that does not parse is reported and
/// `info` used.
pub fn init(format: LogFormat, level: Option<&str>) {
    let filter = match level {
        Some(l) => tracing_subscriber::EnvFilter::try_new(l).unwrap_or_else(|e| {
            eprintln!("membrane: --log-level {l}: {e}; using info");
            tracing_subscriber::EnvFilter::new("info")
        }),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    let terminal = std::io::stderr().is_terminal();
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !terminal,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init();
    } else {
        builder.with_ansi(terminal).init();
    }
}
