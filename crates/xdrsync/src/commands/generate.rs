//! `xdrsync generate --dir DIR`: shell completions and man pages from the command-line model,
//! for the Debian package (`scripts/package`). Generated, never hand-written, so they cannot
//! drift from the binary they ship with.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::cli::{Cli, GenerateArgs};

pub(crate) fn run(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let completions = args.dir.join("completions");
    let man = args.dir.join("man");
    for d in [&completions, &man] {
        fs_err::create_dir_all(d)?;
    }
    let mut cmd = Cli::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "xdrsync", &completions)
            .with_context(|| format!("writing the {shell} completions"))?;
    }
    clap_mangen::generate_to(Cli::command(), &man).context("writing the man pages")?;
    eprintln!(
        "Wrote completions to {} and man pages to {}.",
        completions.display(),
        man.display()
    );
    Ok(ExitCode::SUCCESS)
}
