//! Log output: human lines on a terminal, journald-friendly lines under systemd (no colours,
//! no timestamp — the journal adds its own — and a `<N>` syslog priority prefix, so
//! `journalctl -p warning` works), or JSON. `RUST_LOG` filters.

use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Auto if stderr_is_journal() => {
            let inner = tracing_subscriber::fmt::format().with_ansi(false).without_time();
            builder.with_ansi(false).event_format(JournalPriority(inner)).try_init()
        }
        LogFormat::Auto => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
}

/// systemd sets `$JOURNAL_STREAM` to `DEV:INODE` of the stream it connected to stderr; it is
/// ours only if stderr still is that stream (not redirected by a wrapper script).
fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = v.to_str().and_then(parse_journal_stream) else { return false };
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(m) => m.dev() == dev && m.ino() == ino,
        Err(_) => true, // no /proc: trust the variable
    }
}

fn parse_journal_stream(v: &str) -> Option<(u64, u64)> {
    let (dev, ino) = v.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The sd-daemon(3) syslog priority of a level.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Prefixes each event with its `<N>` priority, then formats it as `F` does.
struct JournalPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_and_priorities() {
        assert_eq!(parse_journal_stream("8:12345"), Some((8, 12345)));
        assert_eq!(parse_journal_stream("nonsense"), None);
        assert_eq!((priority(&Level::ERROR), priority(&Level::WARN), priority(&Level::INFO)), (3, 4, 6));
    }
}
