//! Injecting crafted frames as XDP frames: the project's tiny XDP_TX program, run through
//! BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES from inside a namespace, sends each frame
//! out of that namespace's interface. Far faster than a socket, and it bypasses the sender's
//! TCP stack, which is the point: these are frames, not connections.

use std::sync::mpsc;

use anyhow::{anyhow, Context, Result};
use aya::{
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
    Ebpf,
};
use helo_common::maps::GENERATOR_PROGRAM_NAME;
use helo_user::kernel::XDP_OBJECT;

use crate::netns::Netns;

type Job = (Vec<u8>, u32, mpsc::Sender<Result<()>>);

/// A thread inside the sending namespace that owns the generator program.
pub struct Injector {
    jobs: mpsc::Sender<Job>,
}

fn generator_loop(ifname: String, jobs: mpsc::Receiver<Job>, ready: mpsc::Sender<Result<()>>) {
    let setup = || -> Result<(Ebpf, u32)> {
        let mut ebpf = Ebpf::load(XDP_OBJECT)?;
        let prog: &mut Xdp = ebpf.program_mut(GENERATOR_PROGRAM_NAME).context("no generator program")?.try_into()?;
        prog.load()?;
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
    for (frame, count, done) in jobs {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
        let mut ctx = Vec::with_capacity(24);
        for v in [0u32, frame.len() as u32, 0, ifindex, 0, 0] {
            ctx.extend_from_slice(&v.to_ne_bytes());
        }
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                ctx_in: Some(&ctx),
                repeat: count,
                attrs: TestRunAttrs::new().xdp_live_frames(64),
                ..Default::default()
            })
            .map(|_| ())
            .context("BPF_PROG_TEST_RUN with live frames");
        let _ = done.send(r);
    }
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
        self.jobs.send((frame.to_vec(), count, done_tx)).map_err(|_| anyhow!("the generator thread is gone"))?;
        done_rx.recv().map_err(|_| anyhow!("the generator thread is gone"))?
    }
}
