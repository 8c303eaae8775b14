//! `[sinks.file]`.

use std::path::PathBuf;

use serde::Deserialize;
use xdrsync_config::ConfigError;

use crate::config::Ctx;

/// How the file sink writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileMode {
    /// One document per line, appended to `path`, rotated by size and age.
    #[default]
    Ndjson,
    /// One JSON array per delivery, `Latest Incidents <timestamp>.json` in `dir` (the Hello
    /// World seed's output).
    JsonArray,
}

/// `[sinks.file]`: where and how events are written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `ndjson` (default) or `json_array`.
    #[serde(default)]
    pub mode: FileMode,
    /// `ndjson`: the file appended to, relative to the config file's folder.
    pub path: Option<PathBuf>,
    /// `json_array`: the folder the files are written to, relative to the config file.
    pub dir: Option<PathBuf>,
    /// `ndjson`: rotate before the file would pass this size (0: never).
    #[serde(default = "default_rotate_max_bytes")]
    pub rotate_max_bytes: u64,
    /// `ndjson`: rotate a file older than this (0: never).
    #[serde(default)]
    pub rotate_max_age_secs: u64,
    /// `ndjson`: rotated files kept, oldest removed first (0: keep all).
    #[serde(default)]
    pub keep_rotated: usize,
}

fn default_rotate_max_bytes() -> u64 {
    1 << 30
}

/// Validated `[sinks.file]`.
#[derive(Debug, Clone)]
pub struct Validated {
    pub(crate) mode: FileMode,
    /// NDJSON: the active file. JSON array: the folder. Absolute or relative to the config.
    pub(crate) path: PathBuf,
    pub(crate) rotate_max_bytes: u64,
    pub(crate) rotate_max_age_secs: u64,
    pub(crate) keep_rotated: usize,
}

impl FileConfig {
    pub(crate) fn validate(self, ctx: &Ctx<'_>) -> Result<Validated, ConfigError> {
        let path = match self.mode {
            FileMode::Ndjson => self.path.ok_or_else(|| {
                ctx.invalid(
                    "file.path",
                    "the NDJSON file is required (mode = \"ndjson\")",
                )
            })?,
            FileMode::JsonArray => self.dir.ok_or_else(|| {
                ctx.invalid("file.dir", "the folder is required (mode = \"json_array\")")
            })?,
        };
        Ok(Validated {
            mode: self.mode,
            path: ctx.resolve(&path),
            rotate_max_bytes: self.rotate_max_bytes,
            rotate_max_age_secs: self.rotate_max_age_secs,
            keep_rotated: self.keep_rotated,
        })
    }
}
