//! The text format, for people and for mail-log habits: one line per event,
//! `[time] LEVEL session=<id> word message key=value ...`, with no Rust module path. The session
//! id and the event word (`connect`, `reject`, ...) lead the line so `grep session=ID` and
//! `awk '{print $4}'` work as on Postfix logs.

use std::fmt::{self, Write as _};

use tracing::{
    field::{Field, Visit},
    Event, Subscriber,
};
use tracing_subscriber::{
    fmt::{
        format::Writer,
        time::{FormatTime, SystemTime},
        FmtContext, FormatEvent, FormatFields,
    },
    registry::LookupSpan,
};

pub struct MailOpsText {
    /// Off under journald, which stamps lines itself.
    pub timestamps: bool,
}

impl<S, N> FormatEvent<S, N> for MailOpsText
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        if self.timestamps {
            SystemTime.format_time(&mut w)?;
            w.write_char(' ')?;
        }
        write!(w, "{:<5}", event.metadata().level())?;
        let mut fields = Fields::default();
        event.record(&mut fields);
        for lead in [fields.session.map(|s| format!("session={s}")), fields.event, fields.message].into_iter().flatten() {
            // One event, one line: journald and line-based tools split on newlines.
            write!(w, " {}", lead.replace(['\n', '\r'], " "))?;
        }
        writeln!(w, "{}", fields.rest)
    }
}

#[derive(Default)]
struct Fields {
    session: Option<String>,
    event: Option<String>,
    message: Option<String>,
    /// ` key=value` for every other field, in the order given.
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "session" => self.session = Some(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            "message" => self.message = Some(value.to_owned()),
            name => {
                // Quoted only when it would not read back as one word.
                if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=') {
                    let _ = write!(self.rest, " {name}={value:?}");
                } else {
                    let _ = write!(self.rest, " {name}={value}");
                }
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "session" => self.session = Some(format!("{value:?}")),
            "event" => self.event = Some(format!("{value:?}")),
            "message" => self.message = Some(format!("{value:?}")),
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }
}
