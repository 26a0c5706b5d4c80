//! Injecting crafted frames as XDP frames: the project's tiny XDP_TX program, run through
//! BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES from inside a namespace, sends each frame
//! out of that namespace's interface. Far faster than a socket, and it bypasses the sender's
//! TCP stack, which is the point: these are frames, not connections.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context, Result};
use aya::{
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
    Ebpf,
};
use helo_common::maps::GENERATOR_PROGRAM_NAME;
use helo_user::kernel::XDP_OBJECT;

use crate::netns::Netns;

enum Job {
    /// Send a frame this many times, as fast as the kernel goes.
    Send(Vec<u8>, u32, mpsc::Sender<Result<()>>),
    /// Send a frame at an average rate until told to stop; see [`Injector::flood`].
    Flood(Vec<u8>, u64, Arc<AtomicBool>, mpsc::Sender<Result<(u64, f64)>>),
}

/// A thread inside the sending namespace that owns the generator program.
pub struct Injector {
    jobs: mpsc::Sender<Job>,
}

fn generator_loop(ifname: String, jobs: mpsc::Receiver<Job>, ready: mpsc::Sender<Result<()>>) {
    let setup = || -> Result<(Ebpf, u32)> {
        let mut ebpf = Ebpf::load(XDP_OBJECT)?;
        let prog: &mut Xdp = ebpf.program_mut(GENERATOR_PROGRAM_NAME).context("no generator program")?.try_into()?;
        prog.load()?;
        anchor_in_dispatcher(prog)?;
        let c = std::ffi::CString::new(ifname.clone())?;
        // SAFETY: if_nametoindex reads a NUL-terminated string; it resolves in this thread's
        // namespace, where the frames are sent too.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
        anyhow::ensure!(ifindex != 0, "no interface {ifname}");
        Ok((ebpf, ifindex))
    };
    let (ebpf, ifindex) = match setup() {
        Ok(v) => {
            let _ = ready.send(Ok(()));
            v
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let prog: &Xdp = ebpf.program(GENERATOR_PROGRAM_NAME).unwrap().try_into().unwrap();
    for job in jobs {
        match job {
            Job::Send(frame, count, done) => {
                let _ = done.send(send(prog, ifindex, &frame, count));
            }
            Job::Flood(frame, rate, stop, done) => {
                let _ = done.send(flood(prog, ifindex, &frame, rate, &stop));
            }
        }
    }
}

/// A live-frames run with repeat > 1 puts its program into the kernel's XDP dispatcher and takes
/// it out again, each a synchronize_rcu (~25 ms here, whatever the frame count), unless the
/// program is already there: attached in driver mode somewhere. So it is attached to a veth pair
/// of its own, in this namespace, that carries nothing (no addresses); both go with the namespace.
fn anchor_in_dispatcher(prog: &mut Xdp) -> Result<()> {
    let id = crate::netns::unique_id();
    let (a, b) = (format!("hgx{id}"), format!("hgy{id}"));
    // The thread is in the sending namespace, and so are the commands it starts.
    crate::netns::ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
    crate::netns::ip(&["link", "set", &a, "up"])?;
    crate::netns::ip(&["link", "set", &b, "up"])?;
    prog.attach(&a, aya::programs::XdpMode::Driver).with_context(|| format!("attaching the generator to {a}"))?;
    Ok(())
}

fn send(prog: &Xdp, ifindex: u32, frame: &[u8], count: u32) -> Result<()> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let mut ctx = Vec::with_capacity(24);
    for v in [0u32, frame.len() as u32, 0, ifindex, 0, 0] {
        ctx.extend_from_slice(&v.to_ne_bytes());
    }
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        ctx_in: Some(&ctx),
        repeat: count,
        attrs: TestRunAttrs::new().xdp_live_frames(64),
        ..Default::default()
    })
    .map(|_| ())
    .context("BPF_PROG_TEST_RUN with live frames")
}

/// Frames per live-frames run in a flood: a small part of a veth's 256-frame receive ring, so
/// that a burst never fills it on its own.
const FLOOD_BURST: u32 = 128;
/// One thread's share of a flood: a few threads, each sending small bursts at its own pace,
/// interleave into a steadier stream than one thread could.
const FLOOD_PER_THREAD: u64 = 500_000;
const FLOOD_MAX_THREADS: u64 = 8;

fn flood(prog: &Xdp, ifindex: u32, frame: &[u8], rate: u64, stop: &AtomicBool) -> Result<(u64, f64)> {
    let threads = rate.div_ceil(FLOOD_PER_THREAD).clamp(1, FLOOD_MAX_THREADS);
    let per_thread = rate as f64 / threads as f64;
    let started = Instant::now();
    let sent = AtomicU64::new(0);
    // Threads inherit this thread's network namespace, where `ifindex` lives.
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                let sent = &sent;
                s.spawn(move || -> Result<()> {
                    // Spread the threads' first bursts over one burst interval.
                    let interval = Duration::from_secs_f64(FLOOD_BURST as f64 / per_thread);
                    let mut next = started + interval.mul_f64(i as f64 / threads as f64);
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(wait) = next.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        send(prog, ifindex, frame, FLOOD_BURST)?;
                        sent.fetch_add(FLOOD_BURST as u64, Ordering::Relaxed);
                        next += interval;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow!("a flood thread panicked"))??;
        }
        Ok(())
    })?;
    Ok((sent.load(Ordering::Relaxed), started.elapsed().as_secs_f64()))
}

impl Injector {
    /// Starts the generator thread in `ns`, sending out of `ifname`.
    pub fn start(ns: &Netns, ifname: &str) -> Result<Self> {
        let (jobs_tx, jobs_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let ifname = ifname.to_owned();
        ns.spawn(move || generator_loop(ifname, jobs_rx, ready_tx))?;
        ready_rx.recv().map_err(|_| anyhow!("the generator thread died"))??;
        Ok(Self { jobs: jobs_tx })
    }

    /// Sends `frame` `count` times; returns once they are sent.
    pub fn send(&self, frame: &[u8], count: u32) -> Result<()> {
        let (done_tx, done_rx) = mpsc::channel();
        self.jobs.send(Job::Send(frame.to_vec(), count, done_tx)).map_err(|_| anyhow!("the generator thread is gone"))?;
        done_rx.recv().map_err(|_| anyhow!("the generator thread is gone"))?
    }

    /// Sends `frame` at an average of `rate` frames per second, in ring-sized bursts from many
    /// threads, until `stop` is set. Returns the frames sent and the seconds taken: a generator
    /// that cannot keep up shows as a lower rate, never as a silent shortfall.
    pub fn flood(&self, frame: &[u8], rate: u64, stop: Arc<AtomicBool>) -> Result<(u64, f64)> {
        let (done_tx, done_rx) = mpsc::channel();
        self.jobs.send(Job::Flood(frame.to_vec(), rate, stop, done_tx)).map_err(|_| anyhow!("the generator thread is gone"))?;
        done_rx.recv().map_err(|_| anyhow!("the generator thread is gone"))?
    }
}
