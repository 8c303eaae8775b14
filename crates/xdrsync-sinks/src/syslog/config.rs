//! `[sinks.syslog]`.

use std::path::PathBuf;

use serde::Deserialize;
use xdrsync_config::ConfigError;

use crate::config::Ctx;
use crate::schema::Format;

/// How messages travel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogTransport {
    /// One datagram per message; no acknowledgement.
    Udp,
    /// A TCP connection per chunk (the default).
    #[default]
    Tcp,
    /// TLS over TCP (RFC 5425).
    Tls,
}

/// The syslog header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `<PRI>1 TIMESTAMP HOST APP - MSGID [SD] MSG` (the default).
    #[default]
    Rfc5424,
    /// `<PRI>Mmm dd hh:mm:ss HOST APP: MSG` (BSD syslog).
    Rfc3164,
}

/// The message after the header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Message {
    /// ArcSight Common Event Format (the default).
    #[default]
    Cef,
    /// IBM QRadar Log Event Extended Format 2.0.
    Leef,
    /// The sink's `format` document as one line of JSON.
    Json,
}

/// How messages are separated on a stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// `LEN SP MSG` (RFC 6587 §3.4.1, RFC 5425): safe for any message (the default).
    #[default]
    OctetCounting,
    /// `MSG LF` (RFC 6587 §3.4.2): for receivers without octet counting; messages carry no
    /// raw newline (CEF and LEEF escape them, JSON has none).
    Newline,
}

/// `[sinks.syslog]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `host:port` of the collector.
    pub address: String,
    /// `udp`, `tcp` (default) or `tls`.
    #[serde(default)]
    pub transport: SyslogTransport,
    /// `rfc5424` (default) or `rfc3164`.
    #[serde(default)]
    pub protocol: Protocol,
    /// `cef` (default), `leef` or `json`.
    #[serde(default)]
    pub message: Message,
    /// TCP/TLS framing: `octet_counting` (default) or `newline`.
    #[serde(default)]
    pub framing: Framing,
    /// Facility, by name (`local0` … `local7`, `user`, `auth`, `security`, …) or number.
    #[serde(default = "default_facility")]
    pub facility: String,
    /// APP-NAME / TAG.
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// HOSTNAME (default: this machine's name).
    pub hostname: Option<String>,
    /// The RFC 5424 structured-data id (`name@enterprise-number`); 32473 is IANA's
    /// documentation number: set your own.
    #[serde(default = "default_sd_id")]
    pub sd_id: String,
    /// TLS: extra CA certificate (PEM) to trust, relative to the config file.
    pub ca_file: Option<PathBuf>,
    /// TLS: the name the server's certificate must carry (default: the address's host).
    pub server_name: Option<String>,
    /// UDP: the largest datagram; a longer message fails the delivery instead of being cut.
    #[serde(default = "default_max_udp_bytes")]
    pub max_udp_bytes: usize,
    /// Connect, write and acknowledgement timeout.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_facility() -> String {
    "local0".into()
}
fn default_app_name() -> String {
    "xdrsync".into()
}
fn default_sd_id() -> String {
    "xdrsync@32473".into()
}
fn default_max_udp_bytes() -> usize {
    8192
}
fn default_timeout_secs() -> u64 {
    30
}

/// Validated `[sinks.syslog]`.
#[derive(Debug, Clone)]
pub struct Validated {
    pub(crate) address: String,
    pub(crate) transport: SyslogTransport,
    pub(crate) protocol: Protocol,
    pub(crate) message: Message,
    pub(crate) framing: Framing,
    pub(crate) facility: u8,
    pub(crate) app_name: String,
    pub(crate) hostname: Option<String>,
    pub(crate) sd_id: String,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) server_name: String,
    pub(crate) max_udp_bytes: usize,
    pub(crate) timeout_secs: u64,
}

fn facility(name: &str) -> Option<u8> {
    if let Ok(n) = name.parse::<u8>() {
        return (n <= 23).then_some(n);
    }
    Some(match name {
        "kern" => 0,
        "user" => 1,
        "mail" => 2,
        "daemon" => 3,
        "auth" | "security" => 4,
        "syslog" => 5,
        "lpr" => 6,
        "news" => 7,
        "uucp" => 8,
        "cron" => 9,
        "authpriv" => 10,
        "ftp" => 11,
        "ntp" => 12,
        "audit" => 13,
        "alert" => 14,
        "clock" => 15,
        l => {
            let n = l.strip_prefix("local")?.parse::<u8>().ok();
            16 + n.filter(|n| *n <= 7)?
        }
    })
}

fn printable(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| (33..=126).contains(&b))
}

impl SyslogConfig {
    pub(crate) fn validate(self, ctx: &Ctx<'_>) -> Result<Validated, ConfigError> {
        let (host, _port) = self
            .address
            .rsplit_once(':')
            .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
            .ok_or_else(|| {
                ctx.invalid(
                    "syslog.address",
                    format!("`{}`: expected host:port", self.address),
                )
            })?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let facility = facility(&self.facility).ok_or_else(|| {
            ctx.invalid(
                "syslog.facility",
                format!(
                    "`{}`: expected a facility name (local0 … local7, user, auth, …) or 0..=23",
                    self.facility
                ),
            )
        })?;
        if !printable(&self.app_name, 48) {
            return Err(ctx.invalid(
                "syslog.app_name",
                "1 to 48 printable ASCII characters, no spaces",
            ));
        }
        if let Some(h) = &self.hostname
            && !printable(h, 255)
        {
            return Err(ctx.invalid(
                "syslog.hostname",
                "1 to 255 printable ASCII characters, no spaces",
            ));
        }
        let sd_ok = self.sd_id.split_once('@').is_some_and(|(n, e)| {
            printable(n, 32)
                && !n.contains(['=', ']', '"'])
                && e.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && !e.is_empty()
        });
        if !sd_ok {
            return Err(ctx.invalid(
                "syslog.sd_id",
                "expected name@enterprise-number, e.g. xdrsync@32473",
            ));
        }
        if self.timeout_secs == 0 {
            return Err(ctx.invalid("syslog.timeout_secs", "must be at least 1"));
        }
        if self.transport != SyslogTransport::Tls
            && (self.ca_file.is_some() || self.server_name.is_some())
        {
            return Err(ctx.invalid(
                "syslog",
                "ca_file and server_name apply only to transport = \"tls\"",
            ));
        }
        Ok(Validated {
            address: self.address.clone(),
            server_name: self.server_name.clone().unwrap_or(host),
            transport: self.transport,
            protocol: self.protocol,
            message: self.message,
            framing: self.framing,
            facility,
            app_name: self.app_name,
            hostname: self.hostname,
            sd_id: self.sd_id,
            ca_file: self.ca_file.as_deref().map(|p| ctx.resolve(p)),
            max_udp_bytes: self.max_udp_bytes.clamp(480, 65_000),
            timeout_secs: self.timeout_secs,
        })
    }
}

impl Validated {
    /// Checks the sink's `format` against the message: CEF and LEEF are built from the
    /// normalized record, so `format` (other than the default) applies only to JSON messages,
    /// and a setting that would silently do nothing is refused.
    pub(crate) fn check_format(&self, format: Format, ctx: &Ctx<'_>) -> Result<(), ConfigError> {
        if self.message != Message::Json && format != Format::Xdrsync {
            return Err(ctx.invalid(
                "format",
                format!(
                    "`{}` applies to JSON messages; CEF and LEEF messages are built from the normalized record (set syslog.message = \"json\", or remove format)",
                    format.as_str()
                ),
            ));
        }
        Ok(())
    }
}
