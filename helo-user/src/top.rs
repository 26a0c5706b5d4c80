//! `helo top`: a live view of a running agent, read over the admin socket once a second.
//!
//! Rates are the difference between two readings. It fits an 80×24 terminal, and quits on `q`,
//! Esc or Ctrl-C.

use std::{
    collections::VecDeque,
    io,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use ratatui::{
    crossterm::{
        event::{self, Event, KeyCode, KeyModifiers},
        execute,
        terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen},
    },
    layout::{Constraint, Direction, Layout},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Paragraph, Sparkline},
    Frame, Terminal,
};

use crate::{
    admin::{
        client::call,
        protocol::{Request, Stats},
    },
    cli::TopArgs,
};

/// A minute of per-second samples.
const HISTORY: usize = 60;

/// Whether a counter (by name) counts towards a row.
type CountsIn = fn(&str) -> bool;

/// Kernel outcomes shown, with the counters that make each up: read off the counter names
/// (`helo_common::maps::counter::NAMES`), so a new pass reason is counted without being listed
/// here too.
const KERNEL_ROWS: [(&str, CountsIn); 3] = [
    ("dropped by HELO", |n| n == "drop_helo"),
    ("dropped by source", |n| n == "drop_source"),
    ("passed", |n| n.starts_with("pass_") || n.starts_with("observe_")),
];

struct View {
    last: Option<(Instant, Stats)>,
    now: Stats,
    kernel_rates: Vec<f64>,
    kernel_history: Vec<VecDeque<u64>>,
    verdict_rates: Vec<(String, f64)>,
}

fn sum(s: &Stats, counts: CountsIn) -> u64 {
    s.kernel.iter().filter(|(name, _)| counts(name)).map(|(_, n)| *n).sum()
}

impl View {
    fn update(&mut self, stats: Stats) {
        let now = Instant::now();
        if let Some((at, prev)) = &self.last {
            let secs = now.duration_since(*at).as_secs_f64().max(0.001);
            self.kernel_rates =
                KERNEL_ROWS.iter().map(|(_, counts)| sum(&stats, *counts).saturating_sub(sum(prev, *counts)) as f64 / secs).collect();
            for (i, rate) in self.kernel_rates.iter().enumerate() {
                let h = &mut self.kernel_history[i];
                if h.len() == HISTORY {
                    h.pop_front();
                }
                h.push_back(rate.round() as u64);
            }
            self.verdict_rates = stats
                .verdicts
                .iter()
                .map(|(rule, n)| (rule.clone(), n.saturating_sub(prev.verdicts.get(rule).copied().unwrap_or(0)) as f64 / secs))
                .collect();
        }
        self.now = stats.clone();
        self.last = Some((now, stats));
    }

    fn draw(&self, f: &mut Frame) {
        let s = &self.now;
        let rows = Layout::default()
            .direction(Direction::Vertical)
            .constraints([Constraint::Length(2), Constraint::Length(8), Constraint::Min(6), Constraint::Length(1)])
            .split(f.area());
        let head = format!(
            "helo top  XDP program {} ({} mode)  sessions {} active / {} total\nhand-offs {}  backend errors {}  ring events lost {}  listed: {} helo, {} source",
            s.program_id,
            s.xdp_mode,
            s.sessions_active,
            s.sessions_total,
            s.hand_offs,
            s.backend_errors,
            s.kernel.get("events_lost").copied().unwrap_or(0),
            s.helo_entries,
            s.source_entries
        );
        f.render_widget(Paragraph::new(head).style(Style::default().add_modifier(Modifier::BOLD)), rows[0]);

        let mid = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Percentage(55), Constraint::Percentage(45)])
            .split(rows[1]);
        let kernel_block = Block::default().borders(Borders::ALL).title("kernel, per second (last minute)");
        let inner = kernel_block.inner(mid[0]);
        f.render_widget(kernel_block, mid[0]);
        let lines = Layout::default().direction(Direction::Vertical).constraints([Constraint::Length(2); 3]).split(inner);
        for (i, (label, _)) in KERNEL_ROWS.iter().enumerate() {
            let cols = Layout::default()
                .direction(Direction::Horizontal)
                .constraints([Constraint::Length(27), Constraint::Min(5)])
                .split(lines[i]);
            let rate = self.kernel_rates.get(i).copied().unwrap_or(0.0);
            f.render_widget(Paragraph::new(format!("{label:<18}{rate:>8.1}")), cols[0]);
            let data: Vec<u64> = self.kernel_history[i].iter().copied().collect();
            let color = if i < 2 { Color::Red } else { Color::Blue };
            f.render_widget(Sparkline::default().data(&data).style(Style::default().fg(color)), cols[1]);
        }
        let verdicts: Vec<Line> = self
            .verdict_rates
            .iter()
            .filter(|(rule, _)| rule == "accept" || s.verdicts.get(rule).copied().unwrap_or(0) > 0)
            .map(|(rule, r)| Line::from(format!("{rule:<20}{r:>8.1}/s {:>9}", s.verdicts.get(rule).copied().unwrap_or(0))))
            .collect();
        f.render_widget(Paragraph::new(verdicts).block(Block::default().borders(Borders::ALL).title("agent verdicts")), mid[1]);

        let top: Vec<Line> = if s.top.is_empty() {
            vec![Line::from("no kernel drops in the last minute")]
        } else {
            s.top.iter().map(|(kind, name, hits)| Line::from(format!("{kind:<7}{name:<56}{hits:>8}"))).collect()
        };
        f.render_widget(
            Paragraph::new(top).block(Block::default().borders(Borders::ALL).title("top blocked: dropped connections in the last minute")),
            rows[2],
        );
        f.render_widget(Paragraph::new("q: quit").style(Style::default().fg(Color::DarkGray)), rows[3]);
    }
}

pub fn run(args: &TopArgs) -> Result<()> {
    let (socket, state_dir) = args.admin.resolve()?;
    let stop_at = args.exit_after.map(|s| Instant::now() + Duration::from_secs(s));
    let fetch = || -> Result<Stats> { call(&socket, &state_dir, Request::Stats)?.stats.context("no stats in the answer") };
    let first = fetch()?; // fail before touching the terminal
    enable_raw_mode()?;
    execute!(io::stdout(), EnterAlternateScreen)?;
    let result = (|| -> Result<()> {
        let mut terminal = Terminal::new(ratatui::backend::CrosstermBackend::new(io::stdout()))?;
        let mut view = View {
            last: None,
            now: Stats::default(),
            kernel_rates: vec![0.0; KERNEL_ROWS.len()],
            kernel_history: vec![VecDeque::new(); KERNEL_ROWS.len()],
            verdict_rates: vec![],
        };
        view.update(first);
        let mut next = Instant::now() + Duration::from_secs(1);
        loop {
            terminal.draw(|f| view.draw(f))?;
            if stop_at.is_some_and(|t| Instant::now() >= t) {
                return Ok(());
            }
            let wait = next.saturating_duration_since(Instant::now());
            if event::poll(wait)? {
                if let Event::Key(k) = event::read()? {
                    let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c {
                        return Ok(());
                    }
                }
                continue;
            }
            view.update(fetch()?);
            next = Instant::now() + Duration::from_secs(1);
        }
    })();
    disable_raw_mode()?;
    execute!(io::stdout(), LeaveAlternateScreen)?;
    result
}
