//! Property tests of the config loader: any text, and any mutation of the shipped example
//! (a key dropped, a value swapped for one of another type, a line duplicated), loads or is
//! refused with an error naming the file — never a panic.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::path::Path;

use proptest::prelude::*;
use xdrsync_config::Config;

fn example() -> &'static str {
    include_str!("../../../examples/config/xdrsync.toml")
}

const VALUES: &[&str] = &[
    "\"\"",
    "\"x\"",
    "0",
    "-1",
    "18446744073709551615",
    "9223372036854775807",
    "1e309",
    "true",
    "[]",
    "{}",
    "{ env = \"NOPE\" }",
    "{ file = \"/nonexistent\" }",
    "{ command = [] }",
    "\"2026-13-45T99:99:99Z\"",
    "\"../../etc/passwd\"",
    "\"\\u0000\"",
    "[[1], \"a\"]",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_text_loads_or_is_refused(text in ".{0,400}") {
        if let Err(e) = Config::from_toml(&text, Path::new("/etc/xdrsync/xdrsync.toml")) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn any_mutation_of_the_example_loads_or_is_refused(
        edits in proptest::collection::vec(
            (any::<proptest::sample::Index>(), 0u8..3, proptest::sample::select(VALUES)),
            1..6,
        )
    ) {
        let mut lines: Vec<String> = example().lines().map(str::to_owned).collect();
        for (at, kind, value) in edits {
            let i = at.index(lines.len());
            match kind {
                0 => {
                    lines.remove(i);
                }
                1 => {
                    if let Some((key, _)) = lines[i].split_once(" = ") {
                        lines[i] = format!("{key} = {value}");
                    }
                }
                _ => {
                    let l = lines[i].clone();
                    lines.insert(i, l);
                }
            }
        }
        let text = lines.join("\n");
        if let Err(e) = Config::from_toml(&text, Path::new("/etc/xdrsync/xdrsync.toml")) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}
