//! SMTP load for the session benchmarks, run on a thread inside the client namespace:
//! - clean sessions: a whole transaction each (banner, EHLO, MAIL, RCPT, DATA, QUIT), timed from
//!   connect to the 221, by a fixed number of concurrent workers for a fixed time;
//! - idle sessions: connected, banner read, then silent, for the memory measure.
//!
//! A reply other than the expected code is a failure, counted and kept (the first few) for the
//! report: a benchmark that silently measured refusals would be measuring the wrong thing.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpStream,
    },
    sync::Semaphore,
    task::JoinSet,
};

/// The clean sender's greeting and envelope.
pub const CLEAN_HELO: &str = "mail.client-bench.net";
const SESSION_TIMEOUT: Duration = Duration::from_secs(15);

/// What a run of sessions saw: those that went as expected (with their durations), and those
/// that did not.
#[derive(Debug, Default)]
pub struct Tally {
    pub ok: u64,
    pub failures: u64,
    /// The first few failures, for the report.
    pub first_errors: Vec<String>,
    pub latencies_us: Vec<u64>,
    pub elapsed: Duration,
}

impl Tally {
    fn fail(&mut self, e: String) {
        self.failures += 1;
        if self.first_errors.len() < 5 {
            self.first_errors.push(e);
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.failures += other.failures;
        self.latencies_us.extend(other.latencies_us);
        for e in other.first_errors {
            if self.first_errors.len() < 5 {
                self.first_errors.push(e);
            }
        }
    }
}

/// Runs `session(n)` back to back on `parallel` workers for as long as `more()` says so, each
/// under [`SESSION_TIMEOUT`], and tallies them.
async fn drive<S, F>(parallel: usize, more: Arc<dyn Fn() -> bool + Send + Sync>, session: S) -> Tally
where
    S: Fn(u64) -> F + Clone + Send + 'static,
    F: std::future::Future<Output = Result<()>> + Send,
{
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for w in 0..parallel {
        let (more, session) = (Arc::clone(&more), session.clone());
        workers.spawn(async move {
            let mut tally = Tally::default();
            let mut n = (w as u64) << 32;
            while more() {
                n += 1;
                let t = Instant::now();
                match tokio::time::timeout(SESSION_TIMEOUT, session(n)).await {
                    Ok(Ok(())) => {
                        tally.ok += 1;
                        tally.latencies_us.push(t.elapsed().as_micros() as u64);
                    }
                    Ok(Err(e)) => tally.fail(format!("{e:#}")),
                    Err(_) => tally.fail(format!("no answer within {SESSION_TIMEOUT:?}")),
                }
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(done) = workers.join_next().await {
        match done {
            Ok(tally) => total.merge(tally),
            Err(e) => total.fail(format!("a worker panicked: {e}")),
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// Reads one reply (every continuation line) and checks its code.
async fn expect(r: &mut BufReader<OwnedReadHalf>, code: &str, line: &mut String) -> Result<()> {
    loop {
        line.clear();
        if r.read_line(line).await? == 0 {
            bail!("connection closed while waiting for {code}");
        }
        if !line.starts_with(code) {
            bail!("expected {code}, got {:?}", line.trim_end());
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(());
        }
    }
}

/// Connects and reads the 220 banner: the reader, the writer and a line buffer to go on with.
async fn greeted(server: SocketAddr) -> Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf, String)> {
    let stream = TcpStream::connect(server).await?;
    stream.set_nodelay(true)?;
    let (r, w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    expect(&mut r, "220", &mut line).await?;
    Ok((r, w, line))
}

async fn one_clean_session(server: SocketAddr, rcpt: &str, n: u64) -> Result<()> {
    let (mut r, mut w, mut line) = greeted(server).await?;
    w.write_all(format!("EHLO {CLEAN_HELO}\r\n").as_bytes()).await?;
    expect(&mut r, "250", &mut line).await?;
    w.write_all(format!("MAIL FROM:<bench@{CLEAN_HELO}>\r\n").as_bytes()).await?;
    expect(&mut r, "250", &mut line).await?;
    w.write_all(format!("RCPT TO:<{rcpt}>\r\n").as_bytes()).await?;
    expect(&mut r, "250", &mut line).await?;
    w.write_all(b"DATA\r\n").await?;
    expect(&mut r, "354", &mut line).await?;
    let body = format!("From: <bench@{CLEAN_HELO}>\r\nTo: <{rcpt}>\r\nSubject: bench {n}\r\n\r\nA clean message, number {n}.\r\n.\r\n");
    w.write_all(body.as_bytes()).await?;
    expect(&mut r, "250", &mut line).await?;
    w.write_all(b"QUIT\r\n").await?;
    expect(&mut r, "221", &mut line).await?;
    Ok(())
}

/// `concurrency` workers run clean sessions back to back until `duration` is up.
pub async fn clean_sessions(server: SocketAddr, rcpt: String, concurrency: usize, duration: Duration) -> Tally {
    let deadline = Instant::now() + duration;
    let rcpt: Arc<str> = rcpt.into();
    drive(concurrency, Arc::new(move || Instant::now() < deadline), move |n| {
        let rcpt = Arc::clone(&rcpt);
        async move { one_clean_session(server, &rcpt, n).await }
    })
    .await
}

/// One bogus session: banner, `HELO name`, the reply, then QUIT (which a server that already
/// closed, as smtp-sink -Q and the agent do, never reads).
async fn one_rejected_session(server: SocketAddr, helo: &str, expect_text: &str) -> Result<()> {
    let (mut r, mut w, mut line) = greeted(server).await?;
    w.write_all(format!("HELO {helo}\r\n").as_bytes()).await?;
    line.clear();
    r.read_line(&mut line).await?;
    if !line.contains(expect_text) {
        bail!("HELO answered {:?}", line.trim_end());
    }
    let _ = w.write_all(b"QUIT\r\n").await;
    Ok(())
}

/// `total` bogus sessions, `parallel` at a time: the same load smtp-source makes (connect, banner,
/// HELO, reply), for servers that close after a 5xx, which smtp-source takes as fatal.
pub async fn rejected_sessions(server: SocketAddr, helo: &'static str, expect_text: &'static str, parallel: usize, total: usize) -> Tally {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let more = Arc::new(move || next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total);
    drive(parallel, more, move |_| one_rejected_session(server, helo, expect_text)).await
}

/// Opens `count` sessions from address `local` and reads each one's banner, at most `in_flight`
/// connecting at once. The sessions stay open until the returned sockets are dropped.
pub async fn open_idle(server: SocketAddr, local: std::net::IpAddr, count: usize, in_flight: usize) -> Result<Vec<TcpStream>> {
    let gate = Arc::new(Semaphore::new(in_flight));
    let mut tasks = JoinSet::new();
    for _ in 0..count {
        let permit = Arc::clone(&gate).acquire_owned().await?;
        tasks.spawn(async move {
            let _permit = permit;
            let socket = if local.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
            socket.bind(SocketAddr::new(local, 0))?;
            let mut stream = socket.connect(server).await?;
            let mut banner = [0u8; 512];
            let mut got = 0;
            while !banner[..got].ends_with(b"\r\n") {
                let n = tokio::io::AsyncReadExt::read(&mut stream, &mut banner[got..]).await?;
                if n == 0 || got + n == banner.len() {
                    bail!("no banner line");
                }
                got += n;
            }
            if !banner.starts_with(b"220") {
                bail!("banner was {:?}", String::from_utf8_lossy(&banner[..got]));
            }
            Ok(stream)
        });
    }
    let mut open = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        open.push(done.context("an idle-session task panicked")??);
    }
    Ok(open)
}

/// p-th percentile (0..=100) of unsorted samples, nearest rank.
pub fn percentile(samples: &mut [u64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil().max(1.0) as usize;
    samples[rank.min(samples.len()) - 1] as f64
}
