//! The load of the edge-economics benchmark: what an ISP's edge gets. Bots from thousands of
//! addresses, each coming back every few seconds with a bogus greeting; among them clean senders
//! delivering 10 kB messages. Run on one thread inside the client namespace (current-thread
//! runtime: sockets belong to the namespace of the thread that opens them).
//!
//! A bot does what bots do: connect, read the banner, greet; if the greeting is accepted, MAIL and
//! RCPT (a server that delays its HELO restrictions refuses it there); then QUIT. Each outcome is
//! counted from the client's side: SYN dropped (no handshake within a second), told why at connect
//! (554 banner), refused (a 5xx), or not refused at all (a bot that got through).

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{tcp::OwnedReadHalf, TcpSocket, TcpStream},
    task::JoinSet,
};

use crate::smtp_load::percentile;

/// The greetings bots use, as the mix has it: their own bare IP, `localhost`, single
/// labels, the server's own IP and domain, random words under made-up suffixes.
fn bot_greeting(i: usize, own_ip: Ipv4Addr, server: &Mix) -> String {
    match i % 6 {
        0 => own_ip.to_string(),
        1 => "localhost".to_owned(),
        2 => format!("desktop-{:04x}", i % 65_536),
        3 => format!("[{}]", server.server.ip()),
        4 => server.domain.clone(),
        _ => format!("{}.lan", ["qwerty", "admin", "user", "pc", "home"][i % 5]),
    }
}

/// What to offer.
#[derive(Clone, Debug)]
pub struct Mix {
    pub server: SocketAddr,
    /// The server's own domain (one of the bots' greetings; the recipients' domain).
    pub domain: String,
    pub rcpt: String,
    /// Bot source addresses (routed to the client namespace).
    pub sources: Vec<Ipv4Addr>,
    /// Bot connections started per second, whatever became of the earlier ones (bots do not wait
    /// for a server to catch up), from the sources in turn; at most `bots_in_flight` open at once
    /// (a start past that is counted as skipped).
    pub bot_rate: u32,
    pub bots_in_flight: usize,
    /// Clean messages started per second, open loop like the bots, at most `clean_in_flight` open.
    pub clean_rate: u32,
    pub clean_in_flight: usize,
    pub message_bytes: usize,
    pub duration: Duration,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BotTally {
    pub attempts: u64,
    /// No handshake within the connect timeout: the SYN was dropped.
    pub syn_dropped: u64,
    /// A 554 banner: a listed source told why.
    pub told_at_connect: u64,
    /// A 5xx to the greeting or to MAIL/RCPT.
    pub refused: u64,
    /// Turned away for now (a 421 banner: Postfix's "All server ports are busy").
    pub shed: u64,
    /// Accepted all the way to RCPT: a bot that got through.
    pub not_refused: u64,
    pub errors: u64,
    /// Not started: `bots_in_flight` were open.
    pub skipped: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CleanTally {
    pub sent: u64,
    pub failed: u64,
    pub first_errors: Vec<String>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    #[serde(skip)]
    pub latencies_us: Vec<u64>,
}

#[derive(Default)]
struct BotCounts {
    attempts: AtomicU64,
    syn_dropped: AtomicU64,
    told_at_connect: AtomicU64,
    refused: AtomicU64,
    shed: AtomicU64,
    not_refused: AtomicU64,
    errors: AtomicU64,
    skipped: AtomicU64,
}

enum BotOutcome {
    SynDropped,
    ToldAtConnect,
    Shed,
    Refused,
    NotRefused,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// One reply: its code, after reading every continuation line. 0 when the server closed.
async fn reply(r: &mut BufReader<OwnedReadHalf>, line: &mut String) -> Result<u16> {
    loop {
        line.clear();
        if tokio::time::timeout(REPLY_TIMEOUT, r.read_line(line)).await?? == 0 {
            return Ok(0);
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0));
        }
    }
}

async fn one_bot(server: SocketAddr, from: Ipv4Addr, helo: &str, domain: &str) -> Result<BotOutcome> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.into(), 0))?;
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(server)).await {
        Err(_) => return Ok(BotOutcome::SynDropped),
        Ok(s) => s?,
    };
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    let outcome = match reply(&mut r, &mut line).await? {
        554 => BotOutcome::ToldAtConnect,
        421 => BotOutcome::Shed,
        220 => {
            w.write_all(format!("EHLO {helo}\r\n").as_bytes()).await?;
            match reply(&mut r, &mut line).await? {
                250 => {
                    w.write_all(format!("MAIL FROM:<bot@{helo}>\r\n").as_bytes()).await?;
                    let mail = reply(&mut r, &mut line).await?;
                    let rcpt = if mail == 250 {
                        w.write_all(format!("RCPT TO:<user@{domain}>\r\n").as_bytes()).await?;
                        reply(&mut r, &mut line).await?
                    } else {
                        mail
                    };
                    if (500..600).contains(&rcpt) {
                        BotOutcome::Refused
                    } else {
                        BotOutcome::NotRefused
                    }
                }
                code if (500..600).contains(&code) => BotOutcome::Refused,
                code => bail!("EHLO answered {code}: {}", line.trim_end()),
            }
        }
        code => bail!("banner {code}: {}", line.trim_end()),
    };
    let _ = w.write_all(b"QUIT\r\n").await;
    let _ = tokio::time::timeout(Duration::from_secs(2), reply(&mut r, &mut line)).await;
    Ok(outcome)
}

async fn one_clean(server: SocketAddr, rcpt: &str, body: &str, n: u64) -> Result<()> {
    let stream = TcpStream::connect(server).await?;
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    let step = |code: u16, want: u16, what: &str| -> Result<()> {
        if code != want {
            bail!("{what}: expected {want}, got {code}");
        }
        Ok(())
    };
    step(reply(&mut r, &mut line).await?, 220, "banner")?;
    w.write_all(format!("EHLO {}\r\n", crate::smtp_load::CLEAN_HELO).as_bytes()).await?;
    step(reply(&mut r, &mut line).await?, 250, "EHLO")?;
    w.write_all(format!("MAIL FROM:<bench@{}>\r\n", crate::smtp_load::CLEAN_HELO).as_bytes()).await?;
    step(reply(&mut r, &mut line).await?, 250, "MAIL")?;
    w.write_all(format!("RCPT TO:<{rcpt}>\r\n").as_bytes()).await?;
    step(reply(&mut r, &mut line).await?, 250, "RCPT")?;
    w.write_all(b"DATA\r\n").await?;
    step(reply(&mut r, &mut line).await?, 354, "DATA")?;
    let message = format!("Message-ID: <edge-{n}@bench.example>\r\nSubject: edge bench {n}\r\n\r\n{body}.\r\n");
    w.write_all(message.as_bytes()).await?;
    step(reply(&mut r, &mut line).await?, 250, "end of data")?;
    w.write_all(b"QUIT\r\n").await?;
    step(reply(&mut r, &mut line).await?, 221, "QUIT")?;
    Ok(())
}

/// Runs `mix` (bots only if `mix.bots > 0`, clean only if `mix.clean > 0`) and tallies both sides.
pub async fn run(mix: Mix) -> (BotTally, CleanTally) {
    let deadline = Instant::now() + mix.duration;
    let counts = Arc::new(BotCounts::default());
    let mix = Arc::new(mix);
    let mut bots = JoinSet::new();
    if mix.bot_rate > 0 {
        let (mix, counts) = (Arc::clone(&mix), Arc::clone(&counts));
        bots.spawn(async move {
            // Starts in batches every 10 ms: the timer's resolution is a millisecond.
            let per_tick = (mix.bot_rate as f64 / 100.0).max(1.0);
            let gate = Arc::new(tokio::sync::Semaphore::new(mix.bots_in_flight));
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut owed = 0.0;
            let mut open = JoinSet::new();
            let mut i = 0usize;
            while Instant::now() < deadline {
                tick.tick().await;
                owed += per_tick;
                while owed >= 1.0 {
                    owed -= 1.0;
                    let Ok(permit) = Arc::clone(&gate).try_acquire_owned() else {
                        counts.skipped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let source = i % mix.sources.len();
                    i += 1;
                    let from = mix.sources[source];
                    let helo = bot_greeting(source, from, &mix);
                    let (mix, counts) = (Arc::clone(&mix), Arc::clone(&counts));
                    counts.attempts.fetch_add(1, Ordering::Relaxed);
                    open.spawn(async move {
                        let _permit = permit;
                        let slot = match one_bot(mix.server, from, &helo, &mix.domain).await {
                            Ok(BotOutcome::SynDropped) => &counts.syn_dropped,
                            Ok(BotOutcome::ToldAtConnect) => &counts.told_at_connect,
                            Ok(BotOutcome::Shed) => &counts.shed,
                            Ok(BotOutcome::Refused) => &counts.refused,
                            Ok(BotOutcome::NotRefused) => &counts.not_refused,
                            Err(_) => &counts.errors,
                        };
                        slot.fetch_add(1, Ordering::Relaxed);
                    });
                }
                while open.try_join_next().is_some() {}
            }
            while open.join_next().await.is_some() {}
        });
    }
    let body: Arc<str> = {
        let line = "This line is part of a ten kilobyte clean message for the edge benchmark.\r\n";
        line.repeat(mix.message_bytes / line.len() + 1).into()
    };
    let clean = {
        let mix = Arc::clone(&mix);
        tokio::spawn(async move {
            let mut total = CleanTally::default();
            if mix.clean_rate == 0 {
                return total;
            }
            let gate = Arc::new(tokio::sync::Semaphore::new(mix.clean_in_flight));
            let every = Duration::from_secs_f64(1.0 / mix.clean_rate as f64);
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut open = JoinSet::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                tick.tick().await;
                let Ok(permit) = Arc::clone(&gate).try_acquire_owned() else {
                    total.failed += 1;
                    if total.first_errors.len() < 5 {
                        total.first_errors.push(format!("{} clean sessions open: not started", mix.clean_in_flight));
                    }
                    continue;
                };
                n += 1;
                let (mix, body) = (Arc::clone(&mix), Arc::clone(&body));
                open.spawn(async move {
                    let _permit = permit;
                    let started = Instant::now();
                    match tokio::time::timeout(Duration::from_secs(30), one_clean(mix.server, &mix.rcpt, &body, n)).await {
                        Ok(Ok(())) => Ok(started.elapsed().as_micros() as u64),
                        Ok(Err(e)) => Err(format!("{e:#}")),
                        Err(_) => Err("no end within 30 s".to_owned()),
                    }
                });
            }
            while let Some(done) = open.join_next().await {
                match done {
                    Ok(Ok(us)) => {
                        total.sent += 1;
                        total.latencies_us.push(us);
                    }
                    Ok(Err(e)) => {
                        total.failed += 1;
                        if total.first_errors.len() < 5 {
                            total.first_errors.push(e);
                        }
                    }
                    Err(e) => {
                        total.failed += 1;
                        total.first_errors.push(format!("panicked: {e}"));
                    }
                }
            }
            total
        })
    };
    while bots.join_next().await.is_some() {}
    let mut total = clean.await.unwrap_or_default();
    total.p50_ms = percentile(&mut total.latencies_us, 50.0) / 1000.0;
    total.p99_ms = percentile(&mut total.latencies_us, 99.0) / 1000.0;
    let c = &counts;
    let bots = BotTally {
        attempts: c.attempts.load(Ordering::Relaxed),
        syn_dropped: c.syn_dropped.load(Ordering::Relaxed),
        told_at_connect: c.told_at_connect.load(Ordering::Relaxed),
        refused: c.refused.load(Ordering::Relaxed),
        shed: c.shed.load(Ordering::Relaxed),
        not_refused: c.not_refused.load(Ordering::Relaxed),
        errors: c.errors.load(Ordering::Relaxed),
        skipped: c.skipped.load(Ordering::Relaxed),
    };
    (bots, total)
}
