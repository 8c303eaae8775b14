//! TLS for the emulator: a local CA and a server certificate for `localhost`/`127.0.0.1`/`::1`
//! and for Microsoft's own host names ([`MICROSOFT_HOSTS`]), so a client told to connect there
//! (`[cloud] connect_to`) reaches the emulator as `graph.microsoft.com`,
//! `eu.api.security.microsoft.com` or `wdatp-alertexporter-uk.windows.com`. The CA is trusted
//! only where a client is given it (`ca_file`); it could sign any name anyway.
//!
//! Microsoft's client libraries (MSAL, azure-identity, the Rust `azure_identity`) refuse plain
//! HTTP authorities, so the emulator serves HTTPS with a CA the tests trust. The files are kept
//! in the state folder and reused on the next start, so a CA trusted once stays trusted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The first line of a server certificate file that certifies [`MICROSOFT_HOSTS`] (PEM readers
/// skip text outside the armour).
const SAN_MARKER: &str = "# xdrsync emulator: localhost and Microsoft host names";

/// Every host a client of the Microsoft clouds calls (defender-api.md §1.2, §3.1, §7): login,
/// Graph, the Defender XDR API and its regional hosts (current and older names), the MDE API
/// and its regional hosts, the SIEM exporters, each national cloud's.
pub const MICROSOFT_HOSTS: &[&str] = &[
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "graph.microsoft.com",
    "graph.microsoft.us",
    "dod-graph.microsoft.us",
    "api.security.microsoft.com",
    "us.api.security.microsoft.com",
    "eu.api.security.microsoft.com",
    "uk.api.security.microsoft.com",
    "au.api.security.microsoft.com",
    "swa.api.security.microsoft.com",
    "ina.api.security.microsoft.com",
    "aea.api.security.microsoft.com",
    "api-us.security.microsoft.com",
    "api-eu.security.microsoft.com",
    "api-uk.security.microsoft.com",
    "api.securitycenter.microsoft.com",
    "api-us.securitycenter.microsoft.com",
    "api-eu.securitycenter.microsoft.com",
    "api-uk.securitycenter.microsoft.com",
    "api-au.securitycenter.microsoft.com",
    "api-gcc.security.microsoft.us",
    "api-gov.security.microsoft.us",
    "api-gcc.securitycenter.microsoft.us",
    "api-gov.securitycenter.microsoft.us",
    "wdatp-alertexporter-us.windows.com",
    "wdatp-alertexporter-eu.windows.com",
    "wdatp-alertexporter-uk.windows.com",
];

/// The PEM files of the emulator's TLS identity.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA certificate clients trust.
    pub ca_cert: PathBuf,
    /// The server certificate (leaf, then CA).
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
}

/// A TLS set-up failure.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing a PEM file failed.
    #[error("TLS file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// Certificate generation failed.
    #[error("generating the emulator's certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate or key.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Reuses the TLS files in `dir`, or creates a new CA and server certificate there.
pub fn ensure(dir: &Path) -> Result<TlsFiles, TlsError> {
    let files = TlsFiles {
        ca_cert: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
    };
    // A server certificate from before the Microsoft names were added is made again (the CA,
    // which clients may already trust, is kept only with the certificate: both are renewed).
    let current =
        fs_err::read_to_string(&files.server_cert).is_ok_and(|pem| pem.contains(SAN_MARKER));
    if files.ca_cert.exists() && current && files.server_key.exists() {
        return Ok(files);
    }
    // Private from the first byte (the key especially): 0600 files.
    let write = |path: &Path, text: &str| {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| TlsError::File {
                path: path.to_owned(),
                message: e.to_string(),
            })
    };
    fs_err::create_dir_all(dir).map_err(|e| TlsError::File {
        path: dir.to_owned(),
        message: e.to_string(),
    })?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "xdrsync emulator local CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate()?;
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(MICROSOFT_HOSTS.iter().map(|h| (*h).to_owned()));
    let mut server = CertificateParams::new(names)?;
    server
        .distinguished_name
        .push(DnType::CommonName, "xdrsync emulator");
    let server_cert = server.signed_by(&server_key, &issuer)?;
    write(&files.ca_cert, &ca_cert.pem())?;
    write(
        &files.server_cert,
        &format!("{SAN_MARKER}\n{}{}", server_cert.pem(), ca_cert.pem()),
    )?;
    write(&files.server_key, &server_key.serialize_pem())?;
    restrict(&files.server_key);
    Ok(files)
}

#[cfg(unix)]
fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict(_: &Path) {}

/// A TLS acceptor serving `files`.
pub fn acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let file_err = |path: &Path, e: rustls_pki_types::pem::Error| TlsError::File {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.server_cert)
        .map_err(|e| file_err(&files.server_cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(&files.server_cert, e))?;
    let key = PrivateKeyDer::from_pem_file(&files.server_key)
        .map_err(|e| file_err(&files.server_key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
