//! `cargo xtask <command>`: the project's entry points for setup, build, test and run.
//!
//! Each command does the setup a fresh machine lacks first (idempotently), so the README needs only
//! two commands: `cargo xtask test` and `cargo xtask run -- ARGS`.

mod bench;
mod compile;
mod lab;
mod package;
mod proc;
mod run;
mod setup;
mod test;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "Setup, build, test and run helo")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what this machine lacks: nightly rust-src, bpf-linker, the Debian packages the tests use.
    Setup,
    /// Setup, build (eBPF included) and run every test; ARGS go to `cargo test`.
    Test {
        /// Extra arguments for `cargo test` (a filter, or `-- --nocapture` for the test binaries).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks (as root) and rewrite BENCHMARKS.md with its plot.
    Bench {
        /// Only the Tier A reports (xdp-cost, xdp-live): the same as `--only tier-a`.
        #[arg(long)]
        tier_a: bool,
        /// Only these parts: rewrite their sections (and plots), keep the rest of BENCHMARKS.md
        /// as it is.
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<bench::Part>,
        /// With `--only`: render the reports the parts' last run kept in target/bench-reports
        /// instead of running them (after a change to the tables or plots).
        #[arg(long, requires = "only")]
        reuse_reports: bool,
    },
    /// See it work: namespaces, the agent, Postfix, a mix of traffic and a live view; ARGS go to
    /// the lab (`--duration S`, `--no-tui`).
    Lab {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, build, then the Debian package (target/debian/helo_VERSION-1_ARCH.deb): the binary,
    /// the systemd unit, /etc/helo/helo.toml, man pages, completions, licences.
    Package,
    /// Setup, build, then run `helo` as root; ARGS go to it (`run` is implied for flags).
    Run {
        /// Arguments for `helo`, e.g. `--iface eth1 --hostname mx1.example.net`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    proc::ensure_cargo_bin_on_path();
    // Errors are printed as their chain of causes only: an environment with RUST_BACKTRACE=1
    // (which the tests get too) would otherwise bury a one-line reason under a backtrace.
    match dispatch(Cli::parse().command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> Result<u8> {
    match command {
        Command::Setup => setup::run(setup::Scope::Everything).map(|()| 0),
        // cargo test's own exit code, clamped to what a process can return.
        Command::Test { args } => test::run(&args).map(|code| u8::try_from(code).unwrap_or(1)),
        Command::Run { args } => run::run(&args).map(|()| 0),
        Command::Bench { tier_a, mut only, reuse_reports } => {
            if tier_a && !only.contains(&bench::Part::TierA) {
                only.push(bench::Part::TierA);
            }
            bench::run(&only, reuse_reports).map(|()| 0)
        }
        Command::Lab { args } => lab::run(&args).map(|()| 0),
        Command::Package => package::run().map(|_| 0),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};

    fn args_of(argv: &[&str]) -> Vec<String> {
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Test { args } | Command::Run { args } | Command::Lab { args } => args,
            Command::Setup | Command::Bench { .. } | Command::Package => panic!("not a command with args"),
        }
    }

    /// `cargo xtask test -- X` reaches us as `test -- X` (the alias ends in `--`).
    #[test]
    fn passes_arguments_through() {
        assert_eq!(args_of(&["x", "test"]), Vec::<String>::new());
        assert_eq!(args_of(&["x", "test", "--", "netns"]), ["netns"]);
        assert_eq!(args_of(&["x", "test", "--", "--", "--nocapture"]), ["--", "--nocapture"]);
        assert_eq!(args_of(&["x", "test", "-p", "helo-common"]), ["-p", "helo-common"]);
        assert_eq!(args_of(&["x", "run", "--", "--iface", "eth1", "--xdp-mode", "skb"]), ["--iface", "eth1", "--xdp-mode", "skb"]);
        assert_eq!(args_of(&["x", "run", "--iface", "eth1"]), ["--iface", "eth1"]);
        assert_eq!(args_of(&["x", "run", "--", "classify", "--hostname", "h"]), ["classify", "--hostname", "h"]);
    }
}
