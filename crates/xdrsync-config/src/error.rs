//! What can be wrong with a configuration; every variant names the file and the field.

use std::path::PathBuf;

/// A configuration problem. Every variant names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line, column and the offending key.
        message: String,
    },
    /// A value is well-formed TOML but not acceptable.
    #[error("invalid config file {path}: `{field}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The dotted path of the field, e.g. `tenants[1].tenant_id`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A command-line value names nothing the config has (an unknown `--tenant` or
    /// `--stream`): a usage error, not a fault of the file.
    #[error("{flag}: {message}")]
    Usage {
        /// The flag, e.g. `--tenant`.
        flag: String,
        /// What is wrong and what would be accepted.
        message: String,
    },
    /// A secret could not be resolved.
    #[error("`{field}`: {message}")]
    Secret {
        /// The dotted path of the field.
        field: String,
        /// What is wrong (never the secret itself).
        message: String,
    },
}
