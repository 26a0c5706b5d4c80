//! The test bed, shared by the end-to-end tests (`tests/`), the benchmarks (`benches/`) and the
//! lab (`lab/`): privilege checks that never skip quietly under CI,
//! frame builders for BPF_PROG_TEST_RUN, a client that frames an SMTP session as a test asks,
//! network namespaces joined by veth pairs, the agent binary, and the kernel state of a running
//! agent.

pub mod agent;
pub mod frames;
pub mod framing;
pub mod inject;
pub mod kernel_state;
pub mod lab;
pub mod netns;
pub mod postfix;
pub mod privilege;
pub mod prometheus;
pub mod redis;
pub mod sender;
pub mod tmpfs;
