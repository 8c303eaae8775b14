//! A tiny deterministic PRNG (SplitMix64).
//!
//! The emulator's data must be the same for the same seed in every build and every release, so
//! it cannot depend on a general-purpose RNG whose algorithm may change between versions.

/// SplitMix64: fast, statistically fine for synthetic data, and stable forever.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator for the `n`th sub-stream of `seed`.
    pub(crate) fn derive(seed: u64, n: u64) -> Self {
        let mut r = Self(seed ^ n.wrapping_mul(0xA076_1D64_78BD_642F));
        r.next_u64();
        r
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A value in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 1.0 < p
    }

    /// One of `items` (which must not be empty: every caller passes a constant list).
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let i = self.below(items.len() as u64) as usize;
        // In range by construction (`below(n) < n`); an empty list is a programming error.
        #[allow(clippy::indexing_slicing)]
        &items[i]
    }

    pub(crate) fn hex(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from_digit(self.below(16) as u32, 16).unwrap_or('0'))
            .collect()
    }

    /// A GUID-shaped string.
    pub(crate) fn guid(&mut self) -> String {
        format!(
            "{}-{}-{}-{}-{}",
            self.hex(8),
            self.hex(4),
            self.hex(4),
            self.hex(4),
            self.hex(12)
        )
    }
}

/// A deterministic GUID derived from a name, so fixtures keep their ids across runs.
pub(crate) fn name_guid(namespace: &str, name: &str) -> String {
    let mut seed = 0xCBF2_9CE4_8422_2325u64;
    for b in namespace.bytes().chain([0]).chain(name.bytes()) {
        seed = (seed ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
    }
    Rng::new(seed).guid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_is_pinned() {
        // SplitMix64 reference values for seed 0 (Vigna's reference implementation).
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn name_guids_are_stable_and_distinct() {
        assert_eq!(
            name_guid("tenant", "contoso"),
            name_guid("tenant", "contoso")
        );
        assert_ne!(
            name_guid("tenant", "contoso"),
            name_guid("tenant", "northwind")
        );
        assert_eq!(name_guid("tenant", "contoso").len(), 36);
    }
}
