//! The relay in-process: a scripted MTA on one duplex pipe, a scripted client on another, paused
//! time where timeouts matter. No root, no sockets.

use std::sync::{Arc, Mutex};

use tokio::io::{duplex, split, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};

use super::*;

/// Refuses RCPTs to `bad@…` and greetings of `bad.example`.
struct TestJudge {
    rcpts: Vec<String>,
}

impl Judge for TestJudge {
    fn rcpt(&mut self, address: &str) -> Option<String> {
        self.rcpts.push(address.to_owned());
        address.starts_with("bad@").then(|| "550 5.7.1 Bogus HELO matches RCPT".to_owned())
    }
    fn greeting(&mut self, arg: &[u8]) -> Option<String> {
        (arg == b"bad.example").then(|| "550 5.7.1 Bogus HELO".to_owned())
    }
}

fn timeouts() -> Timeouts {
    Timeouts {
        command: Duration::from_secs(300),
        reply: Duration::from_secs(600),
        data: Duration::from_secs(600),
        write: Duration::from_secs(60),
        close: Duration::from_secs(10),
        linger: Linger::default(),
    }
}

/// What the scripted MTA received, in order.
type Seen = Arc<Mutex<Vec<Vec<u8>>>>;

/// An MTA that answers each line: DATA with `data_reply`, the end of data with 250, QUIT with
/// 221 (then closes), anything else with `250 ok` (RCPT to `nobody@` with 550).
fn mta(stream: DuplexStream, data_reply: &'static str, seen: Seen) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (r, mut w) = split(stream);
        let mut r = BufReader::new(r);
        let mut in_data = false;
        loop {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                return;
            }
            seen.lock().unwrap().push(line.clone());
            let upper = String::from_utf8_lossy(&line).to_ascii_uppercase();
            let answer = if in_data {
                if line == b".\r\n" {
                    in_data = false;
                    "250 2.0.0 queued\r\n"
                } else {
                    continue;
                }
            } else if upper.starts_with("DATA") {
                in_data = data_reply.starts_with("354");
                data_reply
            } else if upper.starts_with("QUIT") {
                let _ = w.write_all(b"221 2.0.0 Bye\r\n").await;
                return;
            } else if upper.starts_with("RCPT TO:<NOBODY@") {
                "550 5.1.1 no such user\r\n"
            } else {
                "250 2.0.0 ok\r\n"
            };
            if w.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    })
}

struct Rig {
    client: DuplexStream,
    seen: Seen,
    relay: tokio::task::JoinHandle<(RelayEnd, Vec<String>)>,
    _stop: watch::Sender<bool>,
}

fn start(data_reply: &'static str, load: Arc<Load>) -> Rig {
    start_with(data_reply, load, timeouts())
}

fn start_with(data_reply: &'static str, load: Arc<Load>, t: Timeouts) -> Rig {
    let (client, agent_client) = duplex(1 << 20);
    let (agent_mta, mta_end) = duplex(1 << 20);
    let seen = Seen::default();
    mta(mta_end, data_reply, Arc::clone(&seen));
    let (stop, stopped) = watch::channel(false);
    let relay = tokio::spawn(async move {
        let (cr, cw): (ReadHalf<DuplexStream>, WriteHalf<DuplexStream>) = split(agent_client);
        let (mr, mw) = split(agent_mta);
        let mut judge = TestJudge { rcpts: vec![] };
        let end = relay(cr, BytesMut::new(), cw, mr, BytesMut::new(), mw, &mut judge, &load, t, stopped).await;
        (end, judge.rcpts)
    });
    Rig { client, seen, relay, _stop: stop }
}

fn load() -> Arc<Load> {
    Arc::new(Load::new(1000, 80, Duration::from_secs(10)))
}

/// Reads reply lines until `n` replies (last lines) arrived.
async fn replies(client: &mut DuplexStream, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = Vec::new();
    while got.len() < n {
        let mut byte = [0u8; 1];
        if client.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        buf.push(byte[0]);
        if byte[0] == b'\n' {
            let line = String::from_utf8(std::mem::take(&mut buf)).unwrap();
            if line.as_bytes().get(3) != Some(&b'-') {
                got.push(line.trim_end().to_owned());
            }
        }
    }
    got
}

fn long_rcpt(user: &str, octets: usize) -> String {
    let head = format!("RCPT TO:<{user}@example.com> ORCPT=rfc822;");
    format!("{head}{}\r\n", "x".repeat(octets - head.len() - 2))
}

#[tokio::test]
async fn a_pipelined_group_with_a_long_rcpt_is_relayed_whole_and_in_order() {
    let mut rig = start("354 go ahead\r\n", load());
    let long = long_rcpt("carol", 534);
    assert_eq!(long.len(), 534);
    let group = format!("MAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\n{long}DATA\r\n");
    rig.client.write_all(group.as_bytes()).await.unwrap();
    let got = replies(&mut rig.client, 4).await;
    assert_eq!(got, ["250 2.0.0 ok", "250 2.0.0 ok", "250 2.0.0 ok", "354 go ahead"]);
    assert_eq!(rig.seen.lock().unwrap()[2], long.as_bytes(), "the long RCPT reached the MTA byte for byte");
    // In the message now: nothing is judged, a body line that looks like a RCPT included.
    rig.client.write_all(b"RCPT TO:<bad@example.com>\r\nhello\r\n.\r\nQUIT\r\n").await.unwrap();
    assert_eq!(replies(&mut rig.client, 2).await, ["250 2.0.0 queued", "221 2.0.0 Bye"]);
    let (end, judged) = rig.relay.await.unwrap();
    assert_eq!(end, RelayEnd::Finished);
    assert_eq!(judged, ["bob@example.com", "carol@example.com"]);
}

#[tokio::test]
async fn a_refused_rcpt_takes_its_own_place_in_the_pipelined_replies() {
    let mut rig = start("354 go ahead\r\n", load());
    rig.client.write_all(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nRCPT TO:<bad@example.com>\r\nDATA\r\n").await.unwrap();
    let got = replies(&mut rig.client, 4).await;
    assert_eq!(
        got,
        ["250 2.0.0 ok", "250 2.0.0 ok", "550 5.7.1 Bogus HELO matches RCPT", "550 5.7.1 Bogus HELO matches RCPT"],
        "MAIL and bob get the MTA's replies, the refused RCPT its refusal, the DATA behind it the same"
    );
    rig.client.write_all(b"QUIT\r\n").await.unwrap();
    let mut rest = String::new();
    rig.client.read_to_string(&mut rest).await.unwrap();
    assert_eq!(rest, "221 2.0.0 Bye\r\n");
    let (end, _) = rig.relay.await.unwrap();
    assert_eq!(end, RelayEnd::Refused);
    let seen = rig.seen.lock().unwrap();
    let seen: Vec<&[u8]> = seen.iter().map(|l| &l[..]).collect();
    assert_eq!(seen, [&b"MAIL FROM:<a@b.example>\r\n"[..], b"RCPT TO:<bob@example.com>\r\n", b"QUIT\r\n"]);
}

#[tokio::test]
async fn a_data_the_mta_refused_keeps_the_relay_judging() {
    let mut rig = start("503 5.5.1 Error: need RCPT command\r\n", load());
    rig.client.write_all(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<nobody@example.com>\r\nDATA\r\n").await.unwrap();
    let got = replies(&mut rig.client, 3).await;
    assert_eq!(got, ["250 2.0.0 ok", "550 5.1.1 no such user", "503 5.5.1 Error: need RCPT command"]);
    rig.client.write_all(b"RCPT TO:<bad@example.com>\r\n").await.unwrap();
    assert_eq!(replies(&mut rig.client, 1).await, ["550 5.7.1 Bogus HELO matches RCPT"]);
    drop(rig.client);
    assert_eq!(rig.relay.await.unwrap().0, RelayEnd::Refused);
}

#[tokio::test]
async fn a_bdat_chunk_is_copied_and_the_command_phase_goes_on() {
    let mut rig = start("354 go ahead\r\n", load());
    // 27 octets of chunk that look like a command: copied, not judged.
    let chunk = b"RCPT TO:<bad@example.com>\r\n";
    let mut group = b"MAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\n".to_vec();
    group.extend_from_slice(format!("BDAT {}\r\n", chunk.len()).as_bytes());
    group.extend_from_slice(chunk);
    rig.client.write_all(&group).await.unwrap();
    // The scripted MTA reads the chunk as a line and answers it like a command: 4 replies.
    let got = replies(&mut rig.client, 4).await;
    assert_eq!(got.len(), 4);
    rig.client.write_all(b"RCPT TO:<bad@example.com>\r\n").await.unwrap();
    assert_eq!(replies(&mut rig.client, 1).await, ["550 5.7.1 Bogus HELO matches RCPT"]);
    drop(rig.client);
    let (end, judged) = rig.relay.await.unwrap();
    assert_eq!(end, RelayEnd::Refused);
    assert_eq!(judged, ["bob@example.com", "bad@example.com"]);
}

#[tokio::test]
async fn a_second_greeting_is_judged() {
    let mut rig = start("354 go ahead\r\n", load());
    rig.client.write_all(b"RSET\r\nEHLO bad.example\r\n").await.unwrap();
    assert_eq!(replies(&mut rig.client, 2).await, ["250 2.0.0 ok", "550 5.7.1 Bogus HELO"]);
    drop(rig.client);
    assert_eq!(rig.relay.await.unwrap().0, RelayEnd::Refused);
}

#[tokio::test]
async fn a_line_past_the_relay_cap_is_passed_through_unread() {
    let mut rig = start("354 go ahead\r\n", load());
    let huge = format!("NOOP {}\r\n", "y".repeat(RELAY_LINE + 10_000));
    rig.client.write_all(huge.as_bytes()).await.unwrap();
    rig.client.write_all(b"RCPT TO:<bad@example.com>\r\n").await.unwrap();
    assert_eq!(replies(&mut rig.client, 2).await, ["250 2.0.0 ok", "550 5.7.1 Bogus HELO matches RCPT"]);
    assert_eq!(rig.seen.lock().unwrap()[0].len(), huge.len());
    drop(rig.client);
    rig.relay.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_idle_client_is_told_421_after_the_command_timeout() {
    let mut rig = start("354 go ahead\r\n", load());
    let started = Instant::now();
    let mut got = String::new();
    rig.client.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "421 4.4.2 Timeout exceeded\r\n");
    assert_eq!(rig.relay.await.unwrap().0, RelayEnd::TimedOut);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(300) && waited < Duration::from_secs(301), "{waited:?}");
    assert_eq!(rig.seen.lock().unwrap().last().map(|l| &l[..]), Some(&b"QUIT\r\n"[..]));
}

#[tokio::test(start_paused = true)]
async fn the_command_timeout_counts_from_the_clients_last_command() {
    // The relay sets its timer again only when it fires: the deadline that moved later with the
    // MAIL must still be the one that ends the session.
    let mut rig = start("354 go ahead\r\n", load());
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(200)).await;
    rig.client.write_all(b"MAIL FROM:<a@example.org>\r\n").await.unwrap();
    assert_eq!(replies(&mut rig.client, 1).await, ["250 2.0.0 ok"]);
    let mut got = String::new();
    rig.client.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "421 4.4.2 Timeout exceeded\r\n");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(500) && waited < Duration::from_secs(501), "{waited:?}");
    assert_eq!(rig.relay.await.unwrap().0, RelayEnd::TimedOut);
}

#[tokio::test]
async fn a_message_larger_than_a_read_reaches_the_mta_byte_for_byte() {
    let mut rig = start("354 go ahead\r\n", load());
    rig.client.write_all(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n").await.unwrap();
    assert_eq!(replies(&mut rig.client, 3).await, ["250 2.0.0 ok", "250 2.0.0 ok", "354 go ahead"]);
    let body: String = (0..2000).map(|i| format!("line {i} of a message bigger than the relay's raw read\r\n")).collect();
    assert!(body.len() > 4 * RAW_READ);
    rig.client.write_all(body.as_bytes()).await.unwrap();
    rig.client.write_all(b".\r\nQUIT\r\n").await.unwrap();
    assert_eq!(replies(&mut rig.client, 2).await, ["250 2.0.0 queued", "221 2.0.0 Bye"]);
    assert_eq!(rig.relay.await.unwrap().0, RelayEnd::Finished);
    let seen = rig.seen.lock().unwrap().concat();
    let want = format!("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n{body}.\r\nQUIT\r\n");
    assert!(seen == want.as_bytes(), "the MTA got {} bytes, not the {} sent", seen.len(), want.len());
}

#[tokio::test(start_paused = true)]
async fn under_load_the_command_timeout_shrinks() {
    let load = Arc::new(Load::new(10, 80, Duration::from_secs(10)));
    let _held: Vec<_> = (0..8).map(|_| load.enter()).collect();
    let mut rig = start("354 go ahead\r\n", Arc::clone(&load));
    let started = Instant::now();
    let mut got = String::new();
    rig.client.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "421 4.4.2 Timeout exceeded\r\n");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(10) && waited < Duration::from_secs(11), "{waited:?}");
    rig.relay.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_mta_that_stalls_mid_message_frees_the_session() {
    // DATA accepted, then the client sends half a message and both sides go quiet.
    let t = Timeouts { data: Duration::from_secs(30), ..timeouts() };
    let mut rig = start_with("354 go ahead\r\n", load(), t);
    rig.client.write_all(b"DATA\r\n").await.unwrap();
    assert_eq!(replies(&mut rig.client, 1).await, ["354 go ahead"]);
    rig.client.write_all(b"Subject: half\r\n").await.unwrap();
    let started = Instant::now();
    let (end, _) = rig.relay.await.unwrap();
    assert_eq!(end, RelayEnd::TimedOut);
    assert!(started.elapsed() <= Duration::from_secs(31));
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_reads_is_let_go_after_the_write_timeout() {
    // A tiny pipe the client never drains, and an MTA that keeps talking.
    let (_client, agent_client) = duplex(64);
    let (agent_mta, mut mta_end) = duplex(1 << 20);
    let (_stop, stopped) = watch::channel(false);
    let relay = tokio::spawn(async move {
        let (cr, cw) = split(agent_client);
        let (mr, mw) = split(agent_mta);
        let mut judge = TestJudge { rcpts: vec![] };
        relay(cr, BytesMut::new(), cw, mr, BytesMut::new(), mw, &mut judge, &load(), timeouts(), stopped).await
    });
    mta_end.write_all(&b"250-x\r\n".repeat(1000)).await.unwrap();
    assert_eq!(relay.await.unwrap(), RelayEnd::TimedOut);
}

#[tokio::test]
async fn when_the_mta_closes_the_client_is_closed() {
    let mut rig = start("354 go ahead\r\n", load());
    rig.client.write_all(b"QUIT\r\n").await.unwrap();
    let mut got = String::new();
    rig.client.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "221 2.0.0 Bye\r\n");
    assert_eq!(rig.relay.await.unwrap().0, RelayEnd::Finished);
}

#[tokio::test]
async fn at_shutdown_an_idle_client_is_told_421() {
    let (client, agent_client) = duplex(4096);
    let (agent_mta, mta_end) = duplex(4096);
    let seen = Seen::default();
    mta(mta_end, "354 go\r\n", Arc::clone(&seen));
    let (stop, stopped) = watch::channel(false);
    let relay = tokio::spawn(async move {
        let (cr, cw) = split(agent_client);
        let (mr, mw) = split(agent_mta);
        let mut judge = TestJudge { rcpts: vec![] };
        relay(cr, BytesMut::new(), cw, mr, BytesMut::new(), mw, &mut judge, &load(), timeouts(), stopped).await
    });
    stop.send(true).unwrap();
    let mut client = client;
    let mut got = String::new();
    client.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "421 4.3.2 Service shutting down, try later\r\n");
    assert_eq!(relay.await.unwrap(), RelayEnd::ShutDown);
}
