//! Log priorities for journald. Under systemd, stderr is a stream socket to journald, which reads a
//! leading `<N>` on each line as the line's syslog priority (sd-daemon(3)): `journalctl -p warning`
//! then shows warnings and errors only. Prefixes rather than `tracing-journald`'s native protocol:
//! nothing to connect to or fail at start, the same bytes in whatever captures stderr, and the JSON
//! format keeps working under journald (the prefix is stripped before the message is stored).

use std::{fmt, os::unix::fs::MetadataExt};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields},
    registry::LookupSpan,
};

/// Whether stderr is the stream systemd handed to journald: `JOURNAL_STREAM` names its device and
/// inode (systemd.exec(5)), and a child whose stderr was redirected elsewhere inherits the
/// variable but not the stream, so both must match.
pub fn stderr_is_journal() -> bool {
    let Some((dev, ino)) = std::env::var("JOURNAL_STREAM").ok().and_then(|v| parse_stream(&v)) else { return false };
    let stderr = std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned().map(std::fs::File::from);
    matches!(stderr.and_then(|f| f.metadata()), Ok(m) if m.dev() == dev && m.ino() == ino)
}

fn parse_stream(v: &str) -> Option<(u64, u64)> {
    let (dev, ino) = v.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The syslog priority of a level: err, warning, info, debug.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// A format that writes `<N>` before each line of the inner format, when on.
pub struct Prefixed<F> {
    inner: F,
    on: bool,
}

impl<F> Prefixed<F> {
    pub fn new(inner: F, on: bool) -> Self {
        Self { inner, on }
    }
}

impl<S, N, F> FormatEvent<S, N> for Prefixed<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        if self.on {
            write!(w, "<{}>", priority(event.metadata().level()))?;
        }
        self.inner.format_event(ctx, w, event)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_stream;

    #[test]
    fn journal_stream_is_device_colon_inode() {
        assert_eq!(parse_stream("8:1234"), Some((8, 1234)));
        assert_eq!(parse_stream("8"), None);
        assert_eq!(parse_stream("x:1"), None);
    }
}
