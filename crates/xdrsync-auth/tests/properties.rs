//! Property tests of PKCS#12 and certificate parsing: random bytes and real files with bytes
//! flipped, cut or appended give a credential or an error — never a panic, never a hang (the
//! iteration count a file claims is capped).

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use proptest::prelude::*;
use xdrsync_auth::{CertificateCredential, certificate_not_after};
use xdrsync_jwt::Algorithm;

const PFX: &[&[u8]] = &[
    include_bytes!("data/cert.pfx"),
    include_bytes!("data/cert-nopass.pfx"),
    include_bytes!("data/cert-chain.pfx"),
    include_bytes!("data/cert-legacy.pfx"),
];

/// The DER of the test certificate.
fn cert_der() -> Vec<u8> {
    let pem = include_str!("data/cert.pem");
    xdrsync_jwt::pem_block(pem, "CERTIFICATE").unwrap()
}

/// `base` with some bytes flipped, the end cut or junk appended.
fn mutate(
    base: &[u8],
    flips: &[(proptest::sample::Index, u8)],
    cut: Option<proptest::sample::Index>,
    tail: &[u8],
) -> Vec<u8> {
    let mut b = base.to_vec();
    for (at, x) in flips {
        let i = at.index(b.len());
        b[i] ^= x | 1;
    }
    if let Some(c) = cut {
        b.truncate(c.index(b.len()));
    }
    b.extend_from_slice(tail);
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_are_not_a_pkcs12_file(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        prop_assert!(CertificateCredential::from_pkcs12(&bytes, "correct-horse", Algorithm::PS256).is_err());
    }

    #[test]
    fn a_damaged_pkcs12_file_is_refused_or_read(
        which in 0usize..4,
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<proptest::sample::Index>()),
        tail in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let damaged = mutate(PFX[which], &flips, cut, &tail);
        let password = if which == 1 { "" } else { "correct-horse" };
        let _ = CertificateCredential::from_pkcs12(&damaged, password, Algorithm::PS256);
    }

    #[test]
    fn a_damaged_certificate_has_a_date_or_none(
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<proptest::sample::Index>()),
        tail in proptest::collection::vec(any::<u8>(), 0..8),
        random in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let _ = certificate_not_after(&mutate(&cert_der(), &flips, cut, &tail));
        let _ = certificate_not_after(&random);
    }
}
