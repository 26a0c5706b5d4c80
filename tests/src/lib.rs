//! Shared harness for the end-to-end tests: privilege checks that never skip quietly under CI,
//! frame builders for BPF_PROG_TEST_RUN, and network namespaces joined by veth pairs.

pub mod frames;
pub mod netns;
pub mod privilege;
