//! Logging through tracing-subscriber: `RUST_LOG` filters, `--log-format` picks text or JSON.
//! Logs go to stderr so that stdout stays clean for `--json` output and plans.

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Install the global subscriber. Safe to call more than once (later calls are ignored), which
/// keeps tests that run the CLI in-process simple.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // openraft logs every retry to an unreachable peer at error level, several times a
        // second; the cluster says what matters itself (a peer lost and back, a write
        // without quorum). `RUST_LOG=openraft=info` shows it all.
        EnvFilter::new(format!("{default_level},openraft=off"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
