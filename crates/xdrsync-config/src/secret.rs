//! Secret sources (`env`, `file`, `command`, `value`) and credentials: their shapes, how
//! they are resolved (only when a command needs them) and checked (`check-config`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;
use xdrsync_model::SecretString;

use crate::{Config, ConfigError};

/// Where a secret comes from: exactly one of `env`, `file`, `command`, `value`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// Name of an environment variable holding the secret.
    pub env: Option<String>,
    /// A file holding the secret (trailing newline ignored), relative to the config file.
    pub file: Option<PathBuf>,
    /// A command (program and arguments, no shell) whose standard output is the secret, e.g.
    /// `["vault", "kv", "get", "-field=secret", "siem/contoso"]`.
    pub command: Option<Vec<String>>,
    /// The secret itself; refused unless `allow_inline_secrets = true`.
    pub value: Option<String>,
    /// Seconds a secret `command` may take before it is stopped and the secret counts as
    /// unreadable (default 30): a hung vault CLI must not hang a pass.
    pub timeout_secs: Option<u64>,
    /// When the secret expires (as shown in the app registration); `xdrsync auth status`
    /// warns 30 days ahead.
    pub expires: Option<xdrsync_model::Timestamp>,
    /// How a client secret reaches the token endpoint: `post` (default, in the form body) or
    /// `basic` (an HTTP Basic `Authorization` header).
    pub method: Option<SecretMethod>,
}

/// `client_secret_post` or `client_secret_basic`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretMethod {
    /// In the form body.
    #[default]
    Post,
    /// HTTP Basic.
    Basic,
}

/// `client_certificate = { cert_file = "…", key_file = "…", algorithm = "ps256" }` (PEM) or
/// `client_certificate = { pfx_file = "app.pfx", password = { env = "PFX_PASSWORD" } }`
/// (PKCS#12): a certificate registered on the app, and its RSA private key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSource {
    /// The certificate, PEM, relative to the config file.
    pub cert_file: Option<PathBuf>,
    /// Its private key, PEM (PKCS#8 or PKCS#1), relative to the config file.
    pub key_file: Option<PathBuf>,
    /// Or both in one PKCS#12 file (`.pfx`/`.p12`), relative to the config file.
    pub pfx_file: Option<PathBuf>,
    /// The PKCS#12 file's password, given like a secret (`env`, `file`, `command`); none for a
    /// file without one.
    pub password: Option<SecretSource>,
    /// `ps256` (default; `x5t#S256`, Entra's current documentation) or `rs256` (`x5t`).
    #[serde(default)]
    pub algorithm: AssertionAlgorithm,
}

/// A validated certificate credential.
#[derive(Clone, Debug)]
pub struct Certificate {
    /// Where the certificate and key are.
    pub files: CertificateFiles,
    /// The client-assertion algorithm.
    pub algorithm: AssertionAlgorithm,
}

/// Where a certificate and its key are stored.
#[derive(Clone, Debug)]
pub enum CertificateFiles {
    /// A PEM certificate and a PEM key.
    Pem {
        /// The certificate.
        cert_file: PathBuf,
        /// The key.
        key_file: PathBuf,
    },
    /// One PKCS#12 file.
    Pkcs12 {
        /// The file.
        pfx_file: PathBuf,
        /// Its password (none: empty).
        password: Option<SecretSource>,
    },
}

/// The client-assertion signature algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssertionAlgorithm {
    /// RSASSA-PSS with SHA-256 and the SHA-256 thumbprint.
    #[default]
    Ps256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 and the SHA-1 thumbprint.
    Rs256,
}

/// `managed_identity = {}`: tokens from the Azure instance metadata endpoint, for collectors
/// that run in Azure (the identity's `client_id` is the tenant's or app's `client_id`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedIdentitySource {
    /// The metadata endpoint (default `http://169.254.169.254/metadata/identity/oauth2/token`).
    pub endpoint: Option<String>,
}

/// Azure's instance metadata token endpoint.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// How a tenant's app authenticates.
#[derive(Clone, Debug)]
pub enum CredentialSource {
    /// A managed identity.
    ManagedIdentity(Url),
    /// A client secret.
    Secret(SecretSource),
    /// A certificate.
    Certificate(Certificate),
}

impl SecretSource {
    /// Checks the source as written in the config file at `config_path` (exactly one of
    /// `env`, `file`, `command`, `value`; `value` only with `allow_inline`) and resolves a
    /// relative `file` against the file's folder. Reads nothing.
    pub fn validated(
        &self,
        field: &str,
        config_path: &Path,
        allow_inline: bool,
    ) -> Result<SecretSource, ConfigError> {
        let invalid = |message: &str| ConfigError::Invalid {
            path: config_path.to_owned(),
            field: field.to_owned(),
            message: message.to_owned(),
        };
        let set = [
            self.env.is_some(),
            self.file.is_some(),
            self.command.is_some(),
            self.value.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            return Err(invalid(
                "give exactly one of `env`, `file`, `command` or `value`",
            ));
        }
        if self.value.is_some() && !allow_inline {
            return Err(invalid(
                "inline secrets are refused: use `env` or `file`, or set `allow_inline_secrets = true` at the top of the file",
            ));
        }
        let base = config_path.parent().unwrap_or(Path::new(""));
        let mut out = self.clone();
        out.file = self.file.as_deref().map(|p| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        });
        Ok(out)
    }

    /// Reads the secret. `field` names it in errors; the value never appears in them.
    pub fn resolve(&self, field: &str) -> Result<SecretString, ConfigError> {
        let err = |message: String| ConfigError::Secret {
            field: field.to_owned(),
            message,
        };
        let secret = if let Some(var) = &self.env {
            std::env::var(var).map_err(|_| err(format!("environment variable {var} is not set")))?
        } else if let Some(path) = &self.file {
            let text = fs_err::read_to_string(path)
                .map_err(|e| err(format!("cannot read secret file: {e}")))?;
            text.trim_end_matches(['\r', '\n']).to_owned()
        } else if let Some(command) = &self.command {
            let timeout = std::time::Duration::from_secs(
                self.timeout_secs
                    .unwrap_or(DEFAULT_SECRET_COMMAND_TIMEOUT_SECS),
            );
            run_secret_command(command, timeout).map_err(err)?
        } else if let Some(value) = &self.value {
            value.clone()
        } else {
            return Err(err(
                "no secret source: set `env`, `file` or `command`".into()
            ));
        };
        if secret.is_empty() {
            return Err(err("the secret is empty".into()));
        }
        Ok(SecretString::new(secret))
    }
}

impl SecretSource {
    /// Checks, without reading the secret or running anything, that it can be read: the
    /// environment variable is set and not empty, the file is readable, the command's program
    /// is on `PATH` (or is an executable path). `field` names it in errors.
    pub fn check(&self, field: &str) -> Result<(), ConfigError> {
        let err = |message: String| ConfigError::Secret {
            field: field.to_owned(),
            message,
        };
        if let Some(var) = &self.env {
            match std::env::var_os(var) {
                None => return Err(err(format!("environment variable {var} is not set"))),
                Some(v) if v.is_empty() => {
                    return Err(err(format!("environment variable {var} is empty")));
                }
                Some(_) => {}
            }
        } else if let Some(path) = &self.file {
            readable(path).map_err(|e| err(format!("secret file {}: {e}", path.display())))?;
        } else if let Some(command) = &self.command {
            let program = command
                .first()
                .ok_or_else(|| err("`command` is empty".into()))?;
            if find_program(program).is_none() {
                return Err(err(format!(
                    "`{program}` is not an executable file nor found on PATH"
                )));
            }
        }
        Ok(())
    }
}

/// Opens `path` for reading (and reads nothing): whether this process could read it.
pub fn readable(path: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(path)?;
    if f.metadata()?.is_dir() {
        return Err(std::io::Error::other("is a folder, not a file"));
    }
    Ok(())
}

/// Where `program` would run from: itself when it names a path, else the first executable
/// of that name on `PATH`.
fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

impl Config {
    /// Every problem `check-config` can find without contacting anything: secret environment
    /// variables unset, secret, certificate and CA files unreadable, secret commands missing.
    /// With `resolve`, secrets are also read (commands run) to prove they produce a value.
    /// Each problem names the file and the field; nothing secret is in them.
    pub fn check_sources(&self, resolve: bool) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        let check = |problems: &mut Vec<ConfigError>, field: String, source: &SecretSource| {
            let r = if resolve {
                source
                    .check(&field)
                    .and_then(|()| source.resolve(&field).map(drop))
            } else {
                source.check(&field)
            };
            if let Err(e) = r {
                problems.push(e);
            }
        };
        let mut seen = BTreeSet::new();
        for t in &self.tenants {
            // Tenants sharing an `[[apps]]` entry share its credential: check it once.
            if !seen.insert(t.credential_field.clone()) {
                continue;
            }
            match &t.credential {
                CredentialSource::Secret(s) => check(&mut problems, t.credential_field.clone(), s),
                CredentialSource::Certificate(c) => match &c.files {
                    CertificateFiles::Pem {
                        cert_file,
                        key_file,
                    } => {
                        for (name, f) in [("cert_file", cert_file), ("key_file", key_file)] {
                            if let Err(e) = readable(f) {
                                problems.push(ConfigError::Invalid {
                                    path: self.path.clone(),
                                    field: format!("{}.{name}", t.credential_field),
                                    message: format!("{}: {e}", f.display()),
                                });
                            }
                        }
                    }
                    CertificateFiles::Pkcs12 { pfx_file, password } => {
                        if let Err(e) = readable(pfx_file) {
                            problems.push(ConfigError::Invalid {
                                path: self.path.clone(),
                                field: format!("{}.pfx_file", t.credential_field),
                                message: format!("{}: {e}", pfx_file.display()),
                            });
                        }
                        if let Some(p) = password {
                            check(&mut problems, format!("{}.password", t.credential_field), p);
                        }
                    }
                },
                CredentialSource::ManagedIdentity(_) => {}
            }
        }
        if let Some(ca) = &self.ca_file
            && let Err(e) = readable(ca)
        {
            problems.push(ConfigError::Invalid {
                path: self.path.clone(),
                field: "cloud.ca_file".into(),
                message: format!("{}: {e}", ca.display()),
            });
        }
        if let Some(key) = &self.vault_key_file
            && self.tenants.iter().any(|t| t.delegated)
            && let Err(e) = readable(key)
        {
            problems.push(ConfigError::Invalid {
                path: self.path.clone(),
                field: "auth.vault_key_file".into(),
                message: format!("{}: {e}", key.display()),
            });
        }
        problems
    }
}

/// How long a secret command may run by default.
pub const DEFAULT_SECRET_COMMAND_TIMEOUT_SECS: u64 = 30;

/// A secret never shows in `Debug`: only which source it comes from.
impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSource")
            .field("env", &self.env)
            .field("file", &self.file)
            .field("command", &self.command)
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("timeout_secs", &self.timeout_secs)
            .field("expires", &self.expires)
            .field("method", &self.method)
            .finish()
    }
}

/// Runs a secret command; its trimmed standard output (at most 64 KiB) is the secret. It is
/// stopped after `timeout`. Its standard error is not repeated in errors (a vault CLI may print
/// sensitive context there).
fn run_secret_command(command: &[String], timeout: std::time::Duration) -> Result<String, String> {
    use std::io::Read as _;
    const MAX_OUTPUT: u64 = 64 * 1024;
    let (program, args) = command.split_first().ok_or("`command` is empty")?;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    let stdout = child.stdout.take().ok_or("no standard output")?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout
            .take(MAX_OUTPUT + 1)
            .read_to_end(&mut out)
            .map(|_| out)
    });
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{program}` did not finish within {}s (timeout_secs); it was stopped",
                    timeout.as_secs()
                ));
            }
            Err(e) => return Err(format!("waiting for `{program}`: {e}")),
        }
    };
    let out = reader
        .join()
        .map_err(|_| format!("reading `{program}`'s output stopped"))?
        .map_err(|e| format!("reading `{program}`'s output: {e}"))?;
    if !status.success() {
        return Err(format!("`{program}` failed with {status}"));
    }
    if out.len() as u64 > MAX_OUTPUT {
        return Err(format!("`{program}` printed more than 64 KiB"));
    }
    let text = String::from_utf8(out)
        .map_err(|_| format!("`{program}` printed something that is not UTF-8"))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}
