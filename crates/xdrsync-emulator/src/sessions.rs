//! Interactive-grant state: authorization codes, refresh tokens and device codes.

use std::collections::HashMap;

use xdrsync_model::Timestamp;

use crate::directory::Resource;

/// A signed-in user.
#[derive(Clone, Debug)]
pub(crate) struct User {
    pub(crate) upn: String,
    pub(crate) tenant: String,
}

/// What a user consented to for an app: one resource and its delegated scopes, plus the
/// OpenID scopes (`openid`, `offline_access`, …).
#[derive(Clone, Debug)]
pub(crate) struct Grant {
    pub(crate) client_id: String,
    pub(crate) user: User,
    pub(crate) resource: Resource,
    /// The resource as the client named it (echoed in v1 responses).
    pub(crate) resource_id: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) openid: bool,
    pub(crate) offline: bool,
}

/// An issued authorization code.
#[derive(Clone, Debug)]
pub(crate) struct Code {
    pub(crate) grant: Grant,
    pub(crate) redirect_uri: String,
    pub(crate) challenge: Option<(String, String)>,
    pub(crate) nonce: Option<String>,
    pub(crate) issued: Timestamp,
    pub(crate) redeemed: bool,
}

/// An issued refresh token.
#[derive(Clone, Debug)]
pub(crate) struct Refresh {
    pub(crate) grant: Grant,
    pub(crate) issued: Timestamp,
    pub(crate) last_used: Timestamp,
    pub(crate) revoked: bool,
}

/// A pending device-code sign-in.
#[derive(Clone, Debug)]
pub(crate) struct Device {
    pub(crate) user_code: String,
    pub(crate) grant: Grant,
    pub(crate) expires: Timestamp,
    pub(crate) last_poll: Option<Timestamp>,
    pub(crate) approved: bool,
    pub(crate) declined: bool,
    pub(crate) polls: u32,
}

/// All interactive-grant state.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    pub(crate) codes: HashMap<String, Code>,
    pub(crate) refresh: HashMap<String, Refresh>,
    pub(crate) devices: HashMap<String, Device>,
}

/// An opaque random token of `bytes` bytes, base64url.
pub(crate) fn opaque(bytes: usize) -> String {
    let mut out = Vec::with_capacity(bytes);
    while out.len() < bytes {
        out.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    out.truncate(bytes);
    xdrsync_jwt::b64url(&out)
}
