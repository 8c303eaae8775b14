//! What the binary's end-to-end tests share: running `xdrsync` as a user would.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// `xdrsync ARGS` in `cwd`, with no config or log level from the environment.
pub(crate) fn command(args: &[&str], cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xdrsync"));
    c.args(args)
        .current_dir(cwd)
        .env_remove("XDRSYNC_CONFIG")
        .env_remove("XDRSYNC_LOG");
    c
}

/// Runs xdrsync off the async threads, so the in-process emulator keeps serving.
pub(crate) async fn xdrsync(args: &[&str], cwd: &Path) -> Output {
    let mut c = command(args, cwd);
    tokio::task::spawn_blocking(move || c.output().expect("run xdrsync"))
        .await
        .expect("the command's thread")
}

/// Standard output and standard error, as text.
pub(crate) fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
