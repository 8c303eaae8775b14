//! Every environment variable xdrsync reads, declared once.

/// Path of the config file (default `./xdrsync.toml`).
pub const XDRSYNC_CONFIG: &str = "XDRSYNC_CONFIG";
/// Log filter, e.g. `info`, `xdrsync=debug` (default `info`).
pub const XDRSYNC_LOG: &str = "XDRSYNC_LOG";
/// The token vault key: 32 bytes, standard base64.
pub const XDRSYNC_VAULT_KEY: &str = "XDRSYNC_VAULT_KEY";
