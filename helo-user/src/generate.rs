//! `helo generate DIR` (hidden): the man pages and shell completions, written from the clap
//! definitions themselves so they cannot drift from `--help`. `cargo xtask package` runs it and
//! puts the files in the Debian package.

use std::{fs, path::Path};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// Writes `DIR/man/helo.1`, one `helo-SUBCOMMAND.1` per subcommand (nested ones too), and
/// `DIR/completions/{helo.bash,_helo,helo.fish}`. Returns the paths written.
pub fn write_all(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut written = vec![];
    let man = dir.join("man");
    fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    let mut cmd = public_command();
    // Subcommand pages are named after their full path (`helo-blocklist-add`), as git's are.
    cmd.build();
    write_man_pages(&cmd, &man, &mut written)?;
    let completions = dir.join("completions");
    fs::create_dir_all(&completions).with_context(|| format!("creating {}", completions.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut public_command(), "helo", &completions)
            .with_context(|| format!("writing the {shell} completions"))?;
        written.push(path);
    }
    Ok(written)
}

/// The command line without its hidden subcommands (this one), which clap_complete would offer.
/// Rebuilt rather than edited: clap cannot take a subcommand out of a command.
fn public_command() -> clap::Command {
    let full = Cli::command();
    let mut cmd = clap::Command::new("helo").version(env!("CARGO_PKG_VERSION")).subcommand_required(true);
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    cmd.subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

fn write_man_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<std::path::PathBuf>) -> Result<()> {
    if cmd.is_hide_set() {
        return Ok(());
    }
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name()).to_owned();
    let path = dir.join(format!("{name}.1"));
    let mut page = vec![];
    clap_mangen::Man::new(cmd.clone()).render(&mut page).with_context(|| format!("rendering {name}.1"))?;
    fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_man_pages(sub, dir, written)?;
    }
    Ok(())
}
