//! The OCSF and ECS documents checked against the schemas themselves, by validators from the
//! package registries (`scripts/schema-tools` installs them: PyPI `ocsf-json-schema` — the
//! official schema.ocsf.io export — with `jsonschema`, and npm `@elastic/ecs`'s field
//! definitions), not only against snapshots of what the code produces.
//!
//! Missing validators fail the test (`scripts/services` installs them).

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use xdrsync_store::Store as _;

use xdrsync_sinks::fixtures;
use xdrsync_sinks::schema::Format;
use xdrsync_store::StoredVersion;

fn tools() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("XDRSYNC_SCHEMA_TOOLS")
            .unwrap_or_else(|_| "/var/lib/xdrsync-test/schema-tools".into()),
    );
    assert!(
        dir.join("venv/bin/python").exists() && dir.join("ecs_flat.json").exists(),
        "the schema validators are missing in {}: run scripts/schema-tools (scripts/services does)",
        dir.display()
    );
    dir
}

fn validator() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/schemas/validate_events.py")
}

/// Every kind of stored version the sinks send: the five fixtures (Graph and legacy
/// incidents, Graph and MDE alerts, a SIEM detection), with and without a tenant name, as
/// replays, and a spread of varied copies.
fn versions() -> Vec<StoredVersion> {
    let mut all = fixtures::stored();
    let mut plain = fixtures::stored();
    for v in &mut plain {
        v.tenant_name = None;
    }
    let mut replays = fixtures::stored();
    for v in &mut replays {
        v.replay = true;
    }
    all.extend(plain);
    all.extend(replays);
    all.extend(
        fixtures::store_with(&fixtures::many(60, 4))
            .versions_after(0, 1000)
            .unwrap(),
    );
    all
}

/// Writes `format`'s documents of every version to an NDJSON file and runs the validator.
fn validate(format: Format, mode: &str, extra: &[&str]) {
    let tools = tools();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{mode}.ndjson"));
    let mut text = String::new();
    let versions = versions();
    for v in &versions {
        text.push_str(&format.to_string(v).unwrap());
        text.push('\n');
    }
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(tools.join("venv/bin/python"))
        .arg(validator())
        .arg(mode)
        .arg(&file)
        .args(extra)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains(&format!(
            "{} events, {} valid",
            versions.len(),
            versions.len()
        )),
        "{report}"
    );
}

#[test]
fn ocsf_documents_validate_against_the_ocsf_1_5_schema() {
    validate(
        Format::Ocsf,
        "ocsf",
        &["--ocsf-version", "1.5.0", "--strict-version"],
    );
}

#[test]
fn ecs_documents_validate_against_the_ecs_field_definitions() {
    let flat = tools().join("ecs_flat.json");
    // `m365_defender.*` is the Elastic integration's own namespace; `xdrsync.*` our envelope.
    validate(
        Format::Ecs,
        "ecs",
        &[
            "--ecs-flat",
            flat.to_str().unwrap(),
            "--custom",
            "m365_defender",
            "--custom",
            "xdrsync",
        ],
    );
}

/// The validators themselves reject what they should (a test that could not fail proves
/// nothing): a broken OCSF and a broken ECS document.
#[test]
fn the_schema_validators_refuse_a_broken_document() {
    let tools = tools();
    let dir = tempfile::tempdir().unwrap();
    let v = &fixtures::stored()[0];
    let mut ocsf: serde_json::Value =
        serde_json::from_str(&Format::Ocsf.to_string(v).unwrap()).unwrap();
    ocsf["severity_id"] = serde_json::json!(42);
    ocsf["not_an_attribute"] = serde_json::json!(1);
    let mut ecs: serde_json::Value =
        serde_json::from_str(&Format::Ecs.to_string(v).unwrap()).unwrap();
    ecs["event"]["kind"] = serde_json::json!("finding");
    ecs["user"] = serde_json::json!({ "nmae": "typo" });
    for (mode, doc, extra) in [
        ("ocsf", ocsf, vec![]),
        (
            "ecs",
            ecs,
            vec![
                "--ecs-flat".to_owned(),
                tools.join("ecs_flat.json").display().to_string(),
                "--custom".to_owned(),
                "m365_defender".to_owned(),
                "--custom".to_owned(),
                "xdrsync".to_owned(),
            ],
        ),
    ] {
        let file = dir.path().join(format!("{mode}.ndjson"));
        std::fs::write(&file, format!("{doc}\n")).unwrap();
        let out = Command::new(tools.join("venv/bin/python"))
            .arg(validator())
            .arg(mode)
            .arg(&file)
            .args(&extra)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(1), "{mode}: {report}");
        let expected: &[&str] = if mode == "ocsf" {
            &["severity_id", "not_an_attribute"]
        } else {
            &["event.kind", "user.nmae"]
        };
        for e in expected {
            assert!(report.contains(e), "{mode}: {e} not reported: {report}");
        }
    }
}
