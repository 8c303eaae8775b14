//! The signature and batch id.

use super::{batch_id, sign};

#[test]
fn signature_is_hmac_sha256_of_timestamp_dot_body() {
    // Computed independently: python3 -c "import hmac,hashlib;
    // print(hmac.new(b'Jefe', b'1764503162.{\"a\":1}', hashlib.sha256).hexdigest())"
    assert_eq!(
        sign(b"Jefe", 1764503162, br#"{"a":1}"#),
        "sha256=89c1bcb50aee90e7054b65b1355d4d4f20531c3f0ca08f0507b231dd77c785a7"
    );
}

#[test]
fn batch_id_depends_on_the_event_ids_only() {
    let a = batch_id(["e1", "e2"].into_iter());
    assert_eq!(a, batch_id(["e1", "e2"].into_iter()));
    assert_ne!(a, batch_id(["e2", "e1"].into_iter()));
    assert_ne!(a, batch_id(["e1e2"].into_iter()));
    assert_eq!(a.len(), 32);
}
