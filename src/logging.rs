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
        .with_ansi(colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Colour only on a terminal, and never when `NO_COLOR` is set to anything but nothing
/// (<https://no-color.org>): a log file or a pipe gets plain text.
pub fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(super::colour(true, None));
        assert!(super::colour(true, Some(OsStr::new(""))));
        assert!(!super::colour(true, Some(OsStr::new("1"))));
        assert!(!super::colour(false, None));
    }
}
