//! `helo-user`: the agent's command line.
fn main() {}
