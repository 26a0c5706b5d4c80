//! Tier B: what a session costs. Prints one JSON report with three parts:
//! - `reject`: bogus greetings, rejected by the agent (user space), by Postfix's
//!   `smtp-sink -Q helo` (the floor: it answers 421 to any HELO), by Postfix smtpd with
//!   `check_helo_access`, and the repeat of a listed name, dropped by XDP and answered by the agent. Load from smtp-source; CPU from a cpuacct cgroup holding every process
//!   of the server's namespace.
//! - `flood`: clean sessions through the agent into a real Postfix, their rate and latency, while
//!   frames with a listed greeting flood the same veth at 0 to 1 Mpps; helo with XDP, helo with XDP
//!   off (the TCP stack and user space see everything), and nftables dropping the frames.
//! - `memory`: the agent's resident set with 10,000 idle sessions open.
//!
//! Every arm is checked: smtp-source must report each session rejected with the arm's own reply,
//! every clean session must end in 250/221 and be delivered, the flood must be counted by the
//! arm's own dropper, and the idle sessions must all hold a socket in the agent.
//!
//! `sessions [reject|flood|memory]...` runs only those parts (default: all). For digging into one
//! arm: `HELO_BENCH_FLOOD_ARM=<start of its label>` runs only that flood arm,
//! `HELO_BENCH_REJECT_ARM=<starts of labels, comma-separated>` only those reject arms (`smtp-sink`
//! the floor, `helo` the user-space agent, `kernel` the kernel-dropped repeat), `HELO_BENCH_REJECT_ROUNDS=<n>` that many reject rounds (a
//! long run to attach strace or perf to: the agents' pids are printed),
//! `HELO_BENCH_AGENT_BASELINE=<path of another helo binary>` adds both agent arms again, run by
//! that binary, interleaved with the others (a change measured against the build before it, in
//! one run), and
//! `HELO_BENCH_AGENT_LOG=debug` sets the agent's log level (default `info`, as in production).

use std::{
    net::{IpAddr, SocketAddr},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use helo_benches::{
    cgroup::CpuGroup,
    rig::{mac, nft_drop_greeting, nft_dropped, nft_remove, rx_packets, sh},
    smtp_load, Spread,
};
use helo_common::maps::counter;
use helo_testbed::{
    agent::{binary, AgentProcess, Launch},
    frames::{Frame, TCP_SYN},
    inject::Injector,
    kernel_state,
    lab::{agent_admin_socket, agent_args, agent_state_dir, one_source_many_names, BpfFs},
    netns::{enter_named, link, Endpoint, Netns},
    postfix::{Postfix, PostfixConfig},
};
use helo_user::{
    kernel::{KernelFilter, LoadOptions},
    modes::AttachMode,
};
use serde_json::{json, Value};

const ROUNDS: usize = 5;
const BOGUS: &str = "rad.internal";
const DOMAIN: &str = "example.com";
const USER: &str = "user@example.com";

fn main() -> Result<()> {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    let want = |part: &str| wanted.is_empty() || wanted.iter().any(|w| w == part);
    // The idle-session part holds 10,000 sockets on each side (the agent inherits the limit).
    helo_user::limits::raise_open_files_limit();
    let mut report = serde_json::Map::new();
    if want("reject") {
        report.insert("reject".into(), reject::run()?);
    }
    if want("flood") {
        report.insert("flood".into(), flood::run()?);
    }
    if want("memory") {
        report.insert("memory".into(), memory::run()?);
    }
    println!("{}", serde_json::to_string_pretty(&Value::Object(report))?);
    Ok(())
}

/// A child process killed (and reaped) on drop.
struct Guarded(Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(ns: &Netns, addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if ns.enter(move || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())? {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on {addr}")
}

/// One agent with its own state, admin socket and bpffs (unmounting it detaches a pinned link).
struct Agent {
    process: AgentProcess,
    _pins: BpfFs,
    dir: tempfile::TempDir,
}

impl Agent {
    /// `xdp: false` runs with `--no-xdp`.
    fn start(ns: &Netns, end: &Endpoint, xdp: bool, extra: &[&str]) -> Result<Self> {
        Self::start_binary(ns, end, xdp, extra, None)
    }

    /// [`Agent::start`] with another build of the agent than the one beside this benchmark.
    fn start_binary(ns: &Netns, end: &Endpoint, xdp: bool, extra: &[&str], binary: Option<&str>) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let pins = BpfFs::mount(dir.path().join("bpffs"))?;
        let listen: SocketAddr = format!("{}:25", end.v4).parse()?;
        let mut args = agent_args(end, dir.path(), xdp);
        args.extend(extra.iter().map(|s| s.to_string()));
        let level = std::env::var("HELO_BENCH_AGENT_LOG").unwrap_or_else(|_| "info".into());
        // The test bed starts its own build of the agent; a wrapper that drops that path runs
        // another instead.
        let launch = Launch {
            wrapper: binary.map_or(vec![], |b| vec!["sh".into(), "-c".into(), format!("shift; exec '{b}' \"$@\""), "sh".into()]),
            ..Default::default()
        };
        let process = AgentProcess::start_with(ns, &args, listen, dir.path().join("agent.log"), &level, &launch)?;
        Ok(Self { process, _pins: pins, dir })
    }

    fn blocklist_add(&self, name: &str) -> Result<()> {
        let out = Command::new(binary()?)
            .args(["blocklist", "--admin-socket"])
            .arg(agent_admin_socket(self.dir.path()))
            .arg("--state-dir")
            .arg(agent_state_dir(self.dir.path()))
            .args(["add", name])
            .output()?;
        ensure!(out.status.success(), "blocklist add {name}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    }

    fn program_id(&self) -> Result<u32> {
        kernel_state::program_id_from_log(&self.process.log_text()).context("the agent logged no XDP program id")
    }

    fn stop(mut self) -> Result<()> {
        self.process.stop()?;
        Ok(())
    }
}

fn postfix(ns: &Netns, end: &Endpoint, extra: Vec<String>) -> Result<Postfix> {
    Postfix::start(
        ns,
        PostfixConfig {
            listen_ip: end.v4.clone(),
            proxy_port: 10025,
            plain_port: 10026,
            domains: vec![DOMAIN.into()],
            users: vec![USER.into()],
            myhostname: "backend.example.com".into(),
            extra_main_cf: extra,
            ..Default::default()
        },
    )
}

mod reject {
    //! Sessions per second and CPU per session, rejecting a bogus greeting.
    //!
    //! Two load generators, each run against every arm it can drive, interleaved: smtp-source
    //! (with -A, which goes on after a rejected HELO) and the project's own client, which makes
    //! the same sessions. smtp-source treats a server that closes after its 5xx as fatal, and the
    //! agent does exactly that (a rejected sender gets its reply and is disconnected), so the
    //! agent is measured with the project's client only; the floor and Postfix with both.

    use super::*;

    const SESSIONS: usize = 4000;
    const PARALLEL: usize = 20;

    struct Arm {
        label: &'static str,
        /// What every rejection reply must contain.
        reply: &'static str,
        addr: SocketAddr,
        ns: String,
        cpu: CpuGroup,
        smtp_source: bool,
        /// The XDP program that must drop every session's greeting (the kernel-drop arm).
        dropped_by: Option<u32>,
    }

    /// An arm served by a helo agent on port 25 in `ns`; `dropped_by`: its XDP program, which must
    /// drop every greeting (the kernel-dropped arms).
    fn helo_arm(label: &'static str, ns: &Netns, end: &Endpoint, cpu: &str, dropped_by: Option<u32>) -> Result<Arm> {
        Ok(Arm {
            label,
            reply: "550 5.7.1 Bogus HELO",
            addr: format!("{}:25", end.v4).parse()?,
            ns: ns.name.clone(),
            cpu: CpuGroup::new(cpu)?,
            smtp_source: false,
            dropped_by,
        })
    }

    #[derive(Default)]
    struct Samples {
        rate: Vec<f64>,
        per_cpu: Vec<f64>,
    }

    impl Samples {
        fn json(self, generator: &str) -> Value {
            let per_cpu = Spread::of(self.per_cpu);
            json!({
                "generator": generator,
                "sessions_per_s": Spread::of(self.rate),
                "cpu_us_per_session": 1e6 / per_cpu.median,
                "sessions_per_cpu_s": per_cpu,
            })
        }
    }

    /// smtp-source's sessions: it must report every HELO rejected with the arm's reply.
    fn smtp_source(client: &Netns, arm: &Arm) -> Result<()> {
        let out = client
            .command("smtp-source")
            .args(["-A", "-s", &PARALLEL.to_string(), "-m", &SESSIONS.to_string(), "-M", BOGUS])
            .arg(arm.addr.to_string())
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let rejected = stderr.lines().filter(|l| l.contains("HELO rejected") && l.contains(arm.reply)).count();
        if rejected != SESSIONS || !out.status.success() {
            bail!(
                "smtp-source against {}: {rejected} of {SESSIONS} sessions rejected with {:?}: {}",
                arm.label,
                arm.reply,
                stderr.lines().filter(|l| !l.contains(arm.reply)).take(5).collect::<Vec<_>>().join(" | ")
            );
        }
        Ok(())
    }

    fn own_client(client: &Netns, arm: &Arm) -> Result<()> {
        let (addr, reply) = (arm.addr, arm.reply);
        let run = enter_named(&client.name, move || -> Result<smtp_load::Tally> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            Ok(rt.block_on(smtp_load::rejected_sessions(addr, BOGUS, reply, PARALLEL, SESSIONS)))
        })??;
        if run.ok != SESSIONS as u64 {
            bail!("{}: {} of {SESSIONS} sessions rejected with {reply:?}: {:?}", arm.label, run.ok, run.first_errors);
        }
        Ok(())
    }

    /// Runs one generator against one arm; returns (sessions/s, sessions per CPU-second).
    fn measure(arm: &Arm, load: impl FnOnce() -> Result<()>) -> Result<(f64, f64)> {
        let cpu_before = arm.cpu.usage_ns()?;
        let started = Instant::now();
        load()?;
        let wall = started.elapsed().as_secs_f64();
        let cpu_s = (arm.cpu.usage_ns()? - cpu_before) as f64 / 1e9;
        Ok((SESSIONS as f64 / wall, SESSIONS as f64 / cpu_s))
    }

    pub fn run() -> Result<Value> {
        let client = Netns::new("rc")?;
        let (sink_ns, pf_ns, agent_ns) = (Netns::new("rs")?, Netns::new("rp")?, Netns::new("ra")?);
        let (_, sink_end) = link(&client, &sink_ns, 71)?;
        let (_, pf_end) = link(&client, &pf_ns, 72)?;
        let (_, agent_end) = link(&client, &agent_ns, 73)?;
        let drop_ns = Netns::new("rd")?;
        let (_, drop_end) = link(&client, &drop_ns, 74)?;

        let sink_addr: SocketAddr = format!("{}:25", sink_end.v4).parse()?;
        let _sink = Guarded(
            sink_ns
                .command("smtp-sink")
                .args(["-u", "nobody", "-Q", "helo", &sink_addr.to_string(), "1024"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting smtp-sink (Debian package postfix)")?,
        );
        wait_listening(&sink_ns, sink_addr)?;
        let _pf = postfix(
            &pf_ns,
            &pf_end,
            vec![
                "smtpd_helo_required = yes".into(),
                // Reject at HELO, as the agent does, rather than at RCPT.
                "smtpd_delay_reject = no".into(),
                format!("smtpd_helo_restrictions = check_helo_access inline:{{ {{ {BOGUS} = REJECT Bogus HELO }} }}"),
            ],
        )?;
        // One client address sends every session: the offender ladder (which would soon answer
        // its connections with a 554 banner, then drop its SYNs) is off and the per-source caps
        // raised, so that each arm does the same work every session.
        let config_dir = tempfile::tempdir()?;
        let one_source = one_source_many_names(config_dir.path())?;
        let one_source: Vec<&str> = one_source.iter().map(String::as_str).collect();
        let agent = Agent::start(&agent_ns, &agent_end, false, &one_source)?;
        // The repeat of a listed name: XDP drops the greeting, the agent answers the flow from its
        // drop event.
        let dropper = Agent::start(&drop_ns, &drop_end, true, &one_source)?;
        dropper.blocklist_add(BOGUS)?;

        // The same two agents again, another build of them (HELO_BENCH_AGENT_BASELINE).
        let baseline_binary = std::env::var("HELO_BENCH_AGENT_BASELINE").ok();
        let mut baseline = None;
        if let Some(b) = &baseline_binary {
            let (user_ns, drop_ns) = (Netns::new("rb")?, Netns::new("re")?);
            let (_, user_end) = link(&client, &user_ns, 76)?;
            let (_, drop_end) = link(&client, &drop_ns, 77)?;
            let user = Agent::start_binary(&user_ns, &user_end, false, &one_source, Some(b))?;
            let drop = Agent::start_binary(&drop_ns, &drop_end, true, &one_source, Some(b))?;
            drop.blocklist_add(BOGUS)?;
            baseline = Some((user_ns, user_end, user, drop_ns, drop_end, drop));
        }
        let mut arms = vec![
            Arm {
                label: "smtp-sink -Q helo (floor)",
                reply: "421",
                addr: sink_addr,
                ns: sink_ns.name.clone(),
                cpu: CpuGroup::new("sink")?,
                smtp_source: true,
                dropped_by: None,
            },
            Arm {
                label: "Postfix smtpd, check_helo_access",
                reply: "Bogus HELO",
                addr: format!("{}:10026", pf_end.v4).parse()?,
                ns: pf_ns.name.clone(),
                cpu: CpuGroup::new("postfix")?,
                smtp_source: true,
                dropped_by: None,
            },
            helo_arm("helo agent (user space, --no-xdp)", &agent_ns, &agent_end, "agent", None)?,
            helo_arm(
                "kernel-dropped repeat: helo agent, name listed, XDP native",
                &drop_ns,
                &drop_end,
                "dropper",
                Some(dropper.program_id()?),
            )?,
        ];
        if let Some((user_ns, user_end, _, drop_ns, drop_end, drop)) = &baseline {
            arms.push(helo_arm("baseline build: helo agent (user space, --no-xdp)", user_ns, user_end, "agent-base", None)?);
            arms.push(helo_arm("baseline build: kernel-dropped repeat", drop_ns, drop_end, "dropper-base", Some(drop.program_id()?))?);
        }
        for arm in &arms {
            ensure!(arm.cpu.adopt_namespace(&arm.ns)? > 0, "{}: no process to measure", arm.label);
        }
        let arms: Vec<Arm> = arms
            .into_iter()
            .filter(|a| std::env::var("HELO_BENCH_REJECT_ARM").map_or(true, |only| only.split(',').any(|p| a.label.starts_with(p))))
            .collect();
        ensure!(!arms.is_empty(), "HELO_BENCH_REJECT_ARM matches no arm");
        let rounds = std::env::var("HELO_BENCH_REJECT_ROUNDS").ok().map(|r| r.parse()).transpose()?.unwrap_or(ROUNDS);
        eprintln!("reject: agent (--no-xdp) pid {}, kernel-drop agent pid {}", agent.process.pid(), dropper.process.pid());
        let mut own: Vec<Samples> = arms.iter().map(|_| Samples::default()).collect();
        let mut source: Vec<Samples> = arms.iter().map(|_| Samples::default()).collect();
        for round in 0..rounds {
            // Every other round in reverse: no arm always runs right after the same one.
            let order: Vec<usize> = if round % 2 == 0 { (0..arms.len()).collect() } else { (0..arms.len()).rev().collect() };
            for i in order {
                let arm = &arms[i];
                let drops_before = arm.dropped_by.map(|id| kernel_state::counters(id).map(|c| c.get(counter::DROP_HELO))).transpose()?;
                let (rate, per_cpu) = measure(arm, || own_client(&client, arm))?;
                if let (Some(id), Some(before)) = (arm.dropped_by, drops_before) {
                    let dropped = kernel_state::counters(id)?.get(counter::DROP_HELO) - before;
                    ensure!(dropped >= SESSIONS as u64, "{}: the kernel dropped {dropped} greetings of {SESSIONS}", arm.label);
                }
                eprintln!("reject round {round}: {} (project client): {rate:.0} sessions/s, {per_cpu:.0} per CPU-s", arm.label);
                own[i].rate.push(rate);
                own[i].per_cpu.push(per_cpu);
                if arm.smtp_source {
                    let (rate, per_cpu) = measure(arm, || smtp_source(&client, arm))?;
                    eprintln!("reject round {round}: {} (smtp-source): {rate:.0} sessions/s, {per_cpu:.0} per CPU-s", arm.label);
                    source[i].rate.push(rate);
                    source[i].per_cpu.push(per_cpu);
                }
            }
        }
        agent.stop()?;
        dropper.stop()?;
        if let Some((_, _, user, _, _, drop)) = baseline {
            user.stop()?;
            drop.stop()?;
        }
        let arms: Vec<Value> = arms
            .iter()
            .zip(own.into_iter().zip(source))
            .map(|(arm, (own, source))| {
                let mut runs = vec![own.json("project client")];
                if arm.smtp_source {
                    runs.push(source.json("smtp-source"));
                }
                json!({ "arm": arm.label, "runs": runs })
            })
            .collect();
        Ok(json!({ "sessions": SESSIONS, "parallel": PARALLEL, "rounds": rounds, "greeting": BOGUS, "arms": arms }))
    }
}

mod flood {
    //! Clean sessions while a listed greeting floods in as XDP frames.

    use super::*;

    const RATES: [u64; 4] = [0, 250_000, 500_000, 1_000_000];
    const DURATION: Duration = Duration::from_secs(3);
    const CONCURRENCY: usize = 8;

    #[derive(Clone, Copy, PartialEq)]
    enum Arm {
        HeloXdp,
        HeloNoXdp,
        Nftables,
    }

    impl Arm {
        fn label(self) -> &'static str {
            match self {
                Arm::HeloXdp => "helo, XDP native",
                Arm::HeloNoXdp => "helo, XDP off (--no-xdp): the TCP stack answers",
                Arm::Nftables => "helo --no-xdp, nftables netdev ingress drops",
            }
        }
    }

    struct Point {
        failures: u64,
        first_errors: Vec<String>,
        sessions_per_s: Vec<f64>,
        p50_ms: Vec<f64>,
        p99_ms: Vec<f64>,
        offered_pps: Vec<f64>,
        filtered_pps: Vec<f64>,
    }

    /// The helo program, loaded but never configured (so it passes every frame), attached natively.
    fn pass_all(edge: &Netns, ifname: &str) -> Result<KernelFilter> {
        let ifname = ifname.to_owned();
        enter_named(&edge.name, move || -> Result<KernelFilter> {
            let mut filter = KernelFilter::load(LoadOptions::default())?;
            let mode = filter.attach(&ifname, AttachMode::Native)?;
            ensure!(mode == AttachMode::Native, "the pass-all program attached in {} mode", mode.as_str());
            Ok(filter)
        })?
    }

    /// What the arm's own dropper counted so far.
    fn filtered(arm: Arm, agent: &Agent, edge: &Netns, ifname: &str) -> Result<u64> {
        Ok(match arm {
            Arm::HeloXdp => kernel_state::counters(agent.program_id()?)?.get(counter::DROP_HELO),
            Arm::Nftables => nft_dropped(edge)?,
            Arm::HeloNoXdp => rx_packets(edge, ifname)?,
        })
    }

    pub fn run() -> Result<Value> {
        let client = Netns::new("fc")?;
        let edge = Netns::new("fe")?;
        let (c_end, e_end) = link(&client, &edge, 74)?;
        let e_if = e_end.ifname.clone();
        // GRO on, as on a NIC. NAPI stays in softirq context (not threaded): receive work then
        // takes precedence over user space, as a NIC's interrupts do.
        sh(&edge, &format!("ethtool -K {e_if} gro on >/dev/null"))?;
        let pf = postfix(&edge, &e_end, vec![])?;
        let mac = mac(&edge, &e_if)?;
        let mut f = Frame::tcp(c_end.v4.parse::<IpAddr>()?, e_end.v4.parse()?, format!("EHLO {BOGUS}\r\n").as_bytes());
        // Outside the ephemeral port range, so no clean session's flow ever shares its key.
        f.sport = 61500;
        let mut syn = f.syn();
        syn.tcp_flags = TCP_SYN;
        let (mut syn, mut frame) = (syn.build(), f.build());
        syn[..6].copy_from_slice(&mac);
        frame[..6].copy_from_slice(&mac);
        let injector = Injector::start(&client, &c_end.ifname)?;
        let server: SocketAddr = format!("{}:25", e_end.v4).parse()?;

        let arms: Vec<Arm> = [Arm::HeloXdp, Arm::HeloNoXdp, Arm::Nftables]
            .into_iter()
            .filter(|a| std::env::var("HELO_BENCH_FLOOD_ARM").map_or(true, |only| a.label().starts_with(&only)))
            .collect();
        let mut points: Vec<Vec<Point>> = arms
            .iter()
            .map(|_| {
                RATES
                    .iter()
                    .map(|_| Point {
                        failures: 0,
                        first_errors: vec![],
                        sessions_per_s: vec![],
                        p50_ms: vec![],
                        p99_ms: vec![],
                        offered_pps: vec![],
                        filtered_pps: vec![],
                    })
                    .collect()
            })
            .collect();
        let mut clean_total = 0u64;
        for round in 0..ROUNDS {
            for (ai, &arm) in arms.iter().enumerate() {
                let agent = Agent::start(&edge, &e_end, arm == Arm::HeloXdp, &[])?;
                // A veth with an XDP program queues every packet through its 256-frame ring, as a
                // NIC's driver does; without one, locally sent packets skip the ring and only the
                // flood queues there, an advantage no NIC gives. So the arms without helo's
                // filter get a program that passes everything: helo's own, left unconfigured.
                let _pass_all = match arm {
                    Arm::HeloXdp => None,
                    Arm::HeloNoXdp | Arm::Nftables => Some(pass_all(&edge, &e_if)?),
                };
                if arm == Arm::HeloXdp {
                    agent.blocklist_add(BOGUS)?;
                }
                if arm == Arm::Nftables {
                    nft_drop_greeting(&edge, &e_if, BOGUS)?;
                }
                for (ri, &rate) in RATES.iter().enumerate() {
                    // One SYN makes the flow known to the XDP program: each copy of the greeting
                    // segment is then that flow's first payload.
                    injector.send(&syn, 1)?;
                    let before = filtered(arm, &agent, &edge, &e_if)?;
                    let stop = Arc::new(AtomicBool::new(false));
                    let (run, flood) = thread::scope(|s| -> Result<_> {
                        let pacer = (rate > 0).then(|| s.spawn(|| injector.flood(&frame, rate, Arc::clone(&stop))));
                        let run = enter_named(&client.name, move || {
                            tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()
                                .map(|rt| rt.block_on(smtp_load::clean_sessions(server, USER.into(), CONCURRENCY, DURATION)))
                        })??;
                        stop.store(true, Ordering::Relaxed);
                        let flood = match pacer {
                            Some(p) => p.join().map_err(|_| anyhow::anyhow!("the pacer panicked"))??,
                            None => (0, DURATION.as_secs_f64()),
                        };
                        Ok((run, flood))
                    })?;
                    let dropped = filtered(arm, &agent, &edge, &e_if)? - before;
                    let mut run = run;
                    // A failed clean session is reported, never dropped from the figures; more
                    // than 1% fails the run.
                    if run.failures * 100 > run.ok + run.failures {
                        let log = agent.process.log_text();
                        let tail: Vec<&str> = log.lines().filter(|l| !l.contains(" INFO ")).rev().take(10).collect();
                        bail!(
                            "{} at {rate} pps: {} clean sessions failed: {:?}; agent log: {tail:?}; maillog: {}",
                            arm.label(),
                            run.failures,
                            run.first_errors,
                            pf.maillog_tail(10)
                        );
                    }
                    ensure!(run.ok > 0, "{} at {rate} pps: no clean session completed", arm.label());
                    // Proof the arm saw the flood. Not all of it: what the receiver cannot take
                    // in time is lost in the veth's ring, which the report shows as filtered
                    // below offered.
                    if rate > 0 {
                        ensure!(dropped >= 1000, "{} at {rate} pps: its dropper counted {dropped} of {} frames", arm.label(), flood.0);
                    }
                    clean_total += run.ok;
                    let p = &mut points[ai][ri];
                    p.failures += run.failures;
                    p.first_errors.extend(run.first_errors.iter().take(2).cloned());
                    p.sessions_per_s.push(run.ok as f64 / run.elapsed.as_secs_f64());
                    p.p50_ms.push(smtp_load::percentile(&mut run.latencies_us, 50.0) / 1000.0);
                    p.p99_ms.push(smtp_load::percentile(&mut run.latencies_us, 99.0) / 1000.0);
                    p.offered_pps.push(flood.0 as f64 / flood.1);
                    p.filtered_pps.push(dropped as f64 / flood.1);
                    eprintln!(
                        "flood round {round}: {} at {rate} pps (offered {:.0}): {:.1} sessions/s, p99 {:.1} ms",
                        arm.label(),
                        flood.0 as f64 / flood.1,
                        run.ok as f64 / run.elapsed.as_secs_f64(),
                        p.p99_ms.last().unwrap()
                    );
                }
                if arm == Arm::Nftables {
                    nft_remove(&edge)?;
                }
                agent.stop()?;
            }
        }
        // Every accepted clean message reached the MTA's mailbox.
        let delivered = pf
            .wait_for_messages(USER, clean_total as usize, Duration::from_secs(120))
            .map(|m| m.len())
            .unwrap_or_else(|_| pf.maildir_messages(USER).len());
        ensure!(delivered as u64 == clean_total, "{clean_total} clean messages accepted, {delivered} delivered");
        let arms: Vec<Value> = arms
            .iter()
            .zip(points)
            .map(|(arm, pts)| {
                let rates: Vec<Value> = RATES
                    .iter()
                    .zip(pts)
                    .map(|(rate, p)| {
                        json!({
                            "target_pps": rate,
                            "sessions_per_s": Spread::of(p.sessions_per_s),
                            "p50_ms": Spread::of(p.p50_ms),
                            "p99_ms": Spread::of(p.p99_ms),
                            "offered_pps": Spread::of(p.offered_pps),
                            "filtered_pps": Spread::of(p.filtered_pps),
                            "failed_sessions": p.failures,
                            "first_errors": p.first_errors,
                        })
                    })
                    .collect();
                json!({ "arm": arm.label(), "rates": rates })
            })
            .collect();
        Ok(json!({
            "rounds": ROUNDS, "seconds": DURATION.as_secs(), "concurrency": CONCURRENCY,
            "clean_delivered": delivered, "arms": arms,
        }))
    }
}

mod memory {
    //! Resident set of the agent with many idle sessions.

    use super::*;

    const IDLE: usize = 10_000;

    fn rss_kib(pid: u32) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
        Ok(line.split_whitespace().nth(1).context("bad VmRSS")?.parse()?)
    }

    fn sockets(pid: u32) -> Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?
            .filter_map(|e| e.ok())
            .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")))
            .count())
    }

    pub fn run() -> Result<Value> {
        let client = Netns::new("mc")?;
        let edge = Netns::new("me")?;
        let (c_end, e_end) = link(&client, &edge, 75)?;
        let server: SocketAddr = format!("{}:25", e_end.v4).parse()?;
        // A client address per round: a round leaves its 10,000 ports in TIME_WAIT.
        let sources: Vec<IpAddr> = (0..ROUNDS).map(|r| format!("198.18.75.{}", 10 + r).parse()).collect::<Result<_, _>>()?;
        for src in &sources {
            client.ip(&["addr", "add", &format!("{src}/24"), "dev", &c_end.ifname])?;
        }
        let limits = ["--max-sessions", "12000", "--max-sessions-per-source", "12000", "--command-timeout-s", "600"];
        let (mut per_session, mut base_kib, mut loaded_kib) = (vec![], vec![], vec![]);
        for &source in &sources {
            let agent = Agent::start(&edge, &e_end, true, &limits)?;
            let pid = agent.process.pid();
            thread::sleep(Duration::from_millis(500));
            let base = rss_kib(pid)?;
            let base_sockets = sockets(pid)?;
            let (loaded, held) = enter_named(&client.name, move || -> Result<(u64, usize)> {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(async {
                    let open = smtp_load::open_idle(server, source, IDLE, 256).await?;
                    ensure!(open.len() == IDLE, "{} of {IDLE} sessions opened", open.len());
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let out = (rss_kib(pid)?, sockets(pid)?);
                    drop(open);
                    Ok(out)
                })
            })??;
            ensure!(held >= base_sockets + IDLE, "the agent held {held} sockets with {IDLE} idle sessions (baseline {base_sockets})");
            let per = (loaded.saturating_sub(base)) as f64 * 1024.0 / IDLE as f64;
            eprintln!("memory round from {source}: {base} KiB idle, {loaded} KiB with {IDLE} sessions: {per:.0} bytes per session");
            per_session.push(per);
            base_kib.push(base as f64);
            loaded_kib.push(loaded as f64);
            agent.stop()?;
        }
        Ok(json!({
            "idle_sessions": IDLE, "rounds": ROUNDS,
            "bytes_per_session": Spread::of(per_session),
            "baseline_kib": Spread::of(base_kib),
            "loaded_kib": Spread::of(loaded_kib),
        }))
    }
}
