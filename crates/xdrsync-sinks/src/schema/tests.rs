//! Every format's document for the same fixtures, pinned (`src/schema/snapshots/`).

use super::Format;
use crate::fixtures;

const NAMES: [&str; 6] = [
    "graph_incident",
    "xdr_incident",
    "graph_alert",
    "mde_alert",
    "siem_detection",
    "hunt_row",
];

fn pretty(doc: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(doc).expect("every document is JSON");
    serde_json::to_string_pretty(&v).unwrap()
}

#[test]
fn every_format_of_every_fixture_is_pinned() {
    let stored = fixtures::stored();
    assert_eq!(stored.len(), NAMES.len());
    for format in [Format::Raw, Format::Xdrsync, Format::Ocsf, Format::Ecs] {
        for (v, name) in stored.iter().zip(NAMES) {
            let doc = format.to_string(v).unwrap();
            assert!(!doc.contains('\n'), "{} {name}: one line", format.as_str());
            insta::assert_snapshot!(format!("{}_{name}", format.as_str()), pretty(&doc));
        }
    }
}

#[test]
fn raw_is_the_api_json_byte_for_byte() {
    let stored = fixtures::stored();
    for v in &stored {
        assert_eq!(Format::Raw.to_string(v).unwrap(), v.raw);
    }
}

#[test]
fn pretty_printed_raw_json_becomes_one_line_with_its_key_order() {
    let mut v = fixtures::stored().remove(0);
    v.raw = "{\n  \"id\": \"1\",\n  \"b\": 1.50,\n  \"a\": [1, 2]\n}".into();
    assert_eq!(
        Format::Raw.to_string(&v).unwrap(),
        r#"{"id":"1","b":1.50,"a":[1,2]}"#
    );
}

#[test]
fn raw_without_the_raw_json_is_an_error_not_an_empty_line() {
    let mut v = fixtures::stored().remove(0);
    v.raw.clear();
    assert!(Format::Raw.to_string(&v).is_err());
}

#[test]
fn ocsf_classes_and_types() {
    let stored = fixtures::stored();
    let doc = |i: usize| super::ocsf::document(&stored[i]);
    let inc = doc(0);
    assert_eq!(inc["class_uid"], 2005);
    assert_eq!(inc["category_uid"], 2);
    assert_eq!(inc["type_uid"], 200501);
    assert_eq!(inc["severity_id"], 4);
    assert_eq!(inc["verdict_id"], 2);
    assert_eq!(inc["finding_info_list"].as_array().unwrap().len(), 2);
    assert_eq!(inc["metadata"]["uid"], stored[0].event_id.as_str());
    // The legacy incident is resolved: a Close activity.
    assert_eq!(doc(1)["activity_id"], 3);
    assert_eq!(doc(1)["type_uid"], 200503);
    let alert = doc(2);
    assert_eq!(alert["class_uid"], 2004);
    assert_eq!(alert["evidences"].as_array().unwrap().len(), 5);
    assert_eq!(
        alert["evidences"][1]["file"]["hashes"][0]["algorithm_id"],
        3
    );
    assert_eq!(
        doc(4)["finding_info"]["uid"],
        "636688558380765161_2136280442:0"
    );
    // A hunt's row: a new Detection Finding titled by its hunt, its entities as evidence,
    // the whole row kept.
    let row = doc(5);
    assert_eq!(
        (row["class_uid"].clone(), row["activity_id"].clone()),
        (2004.into(), 1.into())
    );
    assert_eq!(row["severity_id"], 4);
    assert_eq!(row["finding_info"]["title"], "encoded-powershell");
    assert_eq!(
        row["finding_info"]["analytic"]["name"],
        "encoded-powershell"
    );
    let kinds: Vec<String> = row["evidences"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_object()?.keys().next().cloned())
        .collect();
    assert_eq!(
        kinds,
        ["device", "user", "user", "src_endpoint", "process", "file"]
    );
    assert_eq!(row["unmapped"]["row"], fixtures::hunt_row());
    assert_eq!(row["metadata"]["log_name"], "hunts");
}

#[test]
fn ecs_follows_the_elastic_integration() {
    let stored = fixtures::stored();
    let inc = super::ecs::document(&stored[0]);
    assert_eq!(inc["event"]["kind"], "alert");
    assert_eq!(inc["event"]["id"], "2972395");
    assert_eq!(inc["event"]["severity"], 4);
    assert_eq!(inc["event"]["category"][0], "email");
    assert_eq!(inc["cloud"]["account"]["id"], fixtures::TENANT);
    assert_eq!(inc["@timestamp"], "2026-11-30T11:46:02.2933333Z");
    assert_eq!(
        inc["threat"]["technique"]["id"],
        serde_json::json!(["T1566", "T1059"])
    );
    assert_eq!(
        inc["threat"]["technique"]["subtechnique"]["id"],
        serde_json::json!(["T1566.002", "T1059.001"])
    );
    assert_eq!(inc["xdrsync"]["event_id"], stored[0].event_id.as_str());
    let alert = super::ecs::document(&stored[2]);
    assert_eq!(alert["host"]["hostname"], "ws-0042.contoso.com");
    assert_eq!(alert["related"]["ip"][0], "203.0.113.7");
    let row = super::ecs::document(&stored[5]);
    assert_eq!(row["event"]["dataset"], "m365_defender.hunting");
    assert_eq!(row["rule"]["name"], "encoded-powershell");
    assert_eq!(row["host"]["hostname"], "ws-fin-017.contoso.com");
    assert_eq!(row["user"]["name"], "j.doe@contoso.com");
    assert_eq!(row["event"]["start"], "2026-11-30T09:58:41.1234567Z");
    assert_eq!(row["@timestamp"], "2026-11-30T12:00:00.0000000Z");
    assert_eq!(
        row["file"]["hash"]["sha256"],
        "de96a6e69944335375dc1ac238336066889d9ffc7d73628ef4fe1b1b160ab32c"
    );
    assert_eq!(row["m365_defender"]["hunting"]["row"], fixtures::hunt_row());
}
