//! Microsoft's own client libraries (MSAL Python, azure-identity, msgraph-sdk) against
//! `xdrsync emulator serve --tls`, from PyPI in a virtualenv this test creates. It fails, never skips, when Python
//! or PyPI is unavailable: the emulator's claim is that these libraries work unchanged.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The virtualenv with the pinned libraries, created once per target folder.
fn venv() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop-venv");
    let python = dir.join("bin/python");
    let marker = dir.join(".installed");
    let requirements = repo().join("tests/interop/requirements.txt");
    if marker.exists() && std::fs::read(&marker).ok() == std::fs::read(&requirements).ok() {
        return python;
    }
    let status = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&dir)
        .status()
        .expect("python3 is needed for the interop test");
    assert!(status.success(), "python3 -m venv failed");
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements)
        .output()
        .expect("run pip");
    assert!(
        out.status.success(),
        "pip install failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::copy(&requirements, &marker).unwrap();
    python
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn msal_azure_identity_and_msgraph_sdk_work_unchanged() {
    let python = venv();
    let state = tempfile::tempdir().unwrap();
    let fixture = repo().join("tests/interop/fixture.toml");
    let _serve = Serve(
        Command::new(env!("CARGO_BIN_EXE_xdrsync"))
            .arg("--config")
            .arg(&fixture)
            .args([
                "emulator",
                "serve",
                "--tls",
                "--bind",
                "127.0.0.1:0",
                "--state-dir",
            ])
            .arg(state.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let contract = state.path().join("emulator.json");
    let started = Instant::now();
    while !contract.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the emulator did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = Command::new(&python)
        .arg(repo().join("tests/interop/interop.py"))
        .arg(&contract)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("15 passed, 0 failed"), "{stdout}");
}
