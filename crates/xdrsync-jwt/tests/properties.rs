//! Property tests of the JWT parser and verifier: any text, and any three base64url segments
//! of JSON with any header, give a token or an error — never a panic — and a signature that
//! was not made by the key never verifies.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::json;
use xdrsync_jwt::{Algorithm, Decoded, SigningKey, b64url};

fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate(2048).unwrap())
}

fn alg() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(json!("RS256")),
        Just(json!("PS256")),
        Just(json!("none")),
        Just(json!("HS256")),
        Just(json!(null)),
        Just(json!(7)),
        ".{0,8}".prop_map(|s| json!(s)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_text_parses_or_is_refused(token in ".{0,300}") {
        let _ = Decoded::parse(&token);
    }

    #[test]
    fn any_segments_parse_and_never_verify_without_the_key(
        alg in alg(),
        kid in proptest::option::of(".{0,20}"),
        claims in proptest::collection::btree_map("[a-z]{1,6}", any::<i64>(), 0..6),
        signature in proptest::collection::vec(any::<u8>(), 0..300),
        extra in proptest::option::of(".{0,10}"),
    ) {
        let header = json!({ "alg": alg, "typ": "JWT", "kid": kid });
        let mut token = format!(
            "{}.{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(serde_json::to_string(&claims).unwrap().as_bytes()),
            b64url(&signature)
        );
        if let Some(e) = extra {
            token.push_str(&e);
        }
        if let Ok(d) = Decoded::parse(&token) {
            let public = key().public_key();
            prop_assert!(d.verify(&public, &[Algorithm::RS256, Algorithm::PS256]).is_err());
        }
    }
}
