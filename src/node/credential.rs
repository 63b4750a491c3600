//! The user's credential, resolved by us rather than by kube-rs (which panics on a token that is
//! not a valid header value, fails on a token file ending in a newline, and runs exec plugins
//! synchronously several times per client): an inline `token`, a `tokenFile` (trimmed, as
//! client-go trims it), a client certificate and key (files or data), or an exec plugin. kube
//! gets a static, validated credential. Precedence is client-go's: a token, token file or client
//! certificate makes the exec plugin unused.
//!
//! Never logs a token, a key, or anything a plugin printed on stdout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::config::AuthInfo;
use secrecy::{ExposeSecret, SecretString};

use super::error::{CredentialError, Error};
use super::exec;
use super::kubeconfig::Loaded;
use crate::bounded::{self, Limit};

/// The largest token file read: a service account token is about 1 KiB.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;
/// The largest client certificate or key file read (a PEM chain of a few certificates).
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// A credential kube can use as it is.
pub struct Credential {
    /// The bearer token, a valid header value.
    pub token: Option<SecretString>,
    /// Client certificate and key, PEM.
    pub identity: Option<(Vec<u8>, SecretString)>,
    /// When it expires (exec plugins that say so).
    pub expires: Option<Timestamp>,
    /// It came from an exec plugin.
    pub from_plugin: bool,
    /// The files it was read from (token file, certificate, key), to notice a rotation.
    pub files: Vec<PathBuf>,
}

impl Credential {
    /// No credential: for a client built only to check what the kubeconfig's cluster entry
    /// allows (TLS roots, proxy).
    pub fn none() -> Self {
        Credential {
            token: None,
            identity: None,
            expires: None,
            from_plugin: false,
            files: Vec::new(),
        }
    }
}

/// Checks what the user entry says inline, as [`resolve`] does, without reading a file or
/// running a plugin: an auth method we refuse, an inline token that is not a header value,
/// `client-*-data` that is not base64, a certificate without its key.
pub fn check_inline(loaded: &Loaded) -> Result<(), Error> {
    let user = &loaded.config.auth_info;
    if let Some(why) = unsupported(user) {
        return Err(loaded.refused(format!("user \"{}\": {why}", loaded.user)));
    }
    if let Some(token) = &user.token
        && !is_header_value(token.expose_secret())
    {
        return Err(loaded.refused(format!(
            "user \"{}\": the token is not a valid HTTP header value (a line break or another control character; `token: |` keeps the line break after the token: write `token: |-`, or the token on the same line)",
            loaded.user
        )));
    }
    let cert = user.client_certificate_data.is_some() || user.client_certificate.is_some();
    let key = user.client_key_data.is_some() || user.client_key.is_some();
    if cert != key {
        return Err(loaded.refused(format!(
            "user \"{}\": a client certificate needs its key, and a key its certificate",
            loaded.user
        )));
    }
    let key_data = user.client_key_data.as_ref().map(|k| k.expose_secret());
    for (what, data) in [
        ("certificate", user.client_certificate_data.as_deref()),
        ("key", key_data),
    ] {
        if let Some(data) = data
            && base64(data).is_none()
        {
            return Err(loaded.refused(format!(
                "user \"{}\": client-{what}-data is not valid base64",
                loaded.user
            )));
        }
    }
    Ok(())
}

/// True when `token` can follow `Bearer ` in an HTTP header: no control character but tab (the
/// rule of the `http` crate, and of Go's net/http that kubectl uses).
pub fn is_header_value(token: &str) -> bool {
    token
        .bytes()
        .all(|b| (b >= 0x20 && b != 0x7f) || b == b'\t')
}

/// Resolves the credential of `loaded`'s user entry; an exec plugin gets `plugin_limit`.
pub async fn resolve(loaded: &Loaded, plugin_limit: Duration) -> Result<Credential, Error> {
    let user = &loaded.config.auth_info;
    // What the entry says inline is refused first, as check-config refuses it.
    check_inline(loaded)?;
    let failed = |source: CredentialError| Error::Credential {
        path: loaded.path.clone(),
        user: loaded.user.clone(),
        source,
    };
    let mut files = Vec::new();
    let token = if let Some(token) = &user.token {
        // A valid header value: check_inline refused it otherwise (kubectl does not trim an
        // inline token either: `token: |` is refused by both).
        Some(token.clone())
    } else if let Some(path) = &user.token_file {
        let path = PathBuf::from(path);
        files.push(path.clone());
        Some(read_token_file(&path).await.map_err(failed)?)
    } else {
        None
    };
    let identity = identity(loaded, &mut files).await?;
    if token.is_some() || identity.is_some() {
        if let Some(plugin) = &user.exec {
            log::debug!(
                "kubeconfig {}: user \"{}\" has a token or client certificate: its exec plugin {} is not run (as client-go does)",
                loaded.path.display(),
                loaded.user,
                exec::shown(plugin)
            );
        }
        return Ok(Credential {
            token,
            identity,
            expires: None,
            from_plugin: false,
            files,
        });
    }
    let Some(plugin) = &user.exec else {
        return Ok(Credential {
            token: None,
            identity: None,
            expires: None,
            from_plugin: false,
            files,
        });
    };
    if let Some(why) = exec::refusal(plugin) {
        return Err(loaded.refused(format!("user \"{}\": {why}", loaded.user)));
    }
    let issued = exec::run(plugin, plugin_limit)
        .await
        .map_err(|e| failed(e.into()))?;
    if let Some(token) = &issued.token
        && !is_header_value(token.expose_secret())
    {
        return Err(failed(CredentialError::InvalidPluginToken {
            command: exec::shown(plugin),
        }));
    }
    Ok(Credential {
        token: issued.token,
        identity: issued.identity.map(|(cert, key)| (cert.into_bytes(), key)),
        expires: issued.expires,
        from_plugin: true,
        files,
    })
}

/// What a user entry asks for that we do not do (kube-rs would have honoured some of it).
fn unsupported(user: &AuthInfo) -> Option<&'static str> {
    if user.auth_provider.is_some() {
        Some("auth-provider plugins are not supported (use an exec credential plugin)")
    } else if user.username.is_some() || user.password.is_some() {
        Some("username/password (basic authentication) is not supported")
    } else if user.impersonate.is_some()
        || user.impersonate_uid.is_some()
        || user.impersonate_groups.is_some()
        || user.impersonate_user_extra.is_some()
    {
        Some("impersonation (as, as-uid, as-groups, as-user-extra) is not supported")
    } else {
        None
    }
}

/// client-go's token file: whitespace trimmed, empty refused.
async fn read_token_file(path: &Path) -> Result<SecretString, CredentialError> {
    let bytes = bounded::read_file_async("token file", path, Limit::bytes(MAX_TOKEN_BYTES)).await?;
    let bytes = secrecy::SecretSlice::from(bytes);
    let text = String::from_utf8_lossy(bytes.expose_secret());
    let token = text.trim();
    if token.is_empty() {
        return Err(CredentialError::EmptyTokenFile {
            path: path.to_path_buf(),
        });
    }
    if !is_header_value(token) {
        return Err(CredentialError::InvalidTokenFile {
            path: path.to_path_buf(),
        });
    }
    Ok(SecretString::from(token.to_string()))
}

/// The client certificate and key: data wins over a file, as in kube and client-go.
async fn identity(
    loaded: &Loaded,
    files: &mut Vec<PathBuf>,
) -> Result<Option<(Vec<u8>, SecretString)>, Error> {
    let user = &loaded.config.auth_info;
    let cert = tls_part(
        loaded,
        "client certificate",
        user.client_certificate_data.as_deref(),
        user.client_certificate.as_deref(),
        files,
    )
    .await?;
    let key_data = user.client_key_data.as_ref().map(|k| k.expose_secret());
    let key = tls_part(
        loaded,
        "client key",
        key_data,
        user.client_key.as_deref(),
        files,
    )
    .await?;
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => {
            let key = String::from_utf8(key).map_err(|_| {
                loaded.refused(format!(
                    "user \"{}\": the client key is not PEM text",
                    loaded.user
                ))
            })?;
            Ok(Some((cert, SecretString::from(key))))
        }
        _ => Err(loaded.refused(format!(
            "user \"{}\": a client certificate needs its key, and a key its certificate",
            loaded.user
        ))),
    }
}

async fn tls_part(
    loaded: &Loaded,
    what: &'static str,
    data: Option<&str>,
    file: Option<&str>,
    files: &mut Vec<PathBuf>,
) -> Result<Option<Vec<u8>>, Error> {
    if let Some(data) = data {
        return base64(data).map(Some).ok_or_else(|| {
            loaded.refused(format!(
                "user \"{}\": {}-data is not valid base64",
                loaded.user,
                what.replace(' ', "-")
            ))
        });
    }
    let Some(path) = file else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    files.push(path.clone());
    match bounded::read_file_async(what, &path, Limit::bytes(MAX_PEM_BYTES)).await {
        Ok(bytes) => Ok(Some(bytes)),
        // Not there yet (TLS bootstrap), or mid-rotation: tried again later.
        Err(source) => Err(Error::Credential {
            path: loaded.path.clone(),
            user: loaded.user.clone(),
            source: CredentialError::File(source),
        }),
    }
}

/// Standard base64 with padding, as kubeconfig `*-data` fields are.
fn base64(text: &str) -> Option<Vec<u8>> {
    // k8s-openapi's ByteString is exactly this encoding; reusing it spares a dependency.
    serde_json::from_value::<k8s_openapi::ByteString>(serde_json::Value::String(
        text.trim().to_string(),
    ))
    .ok()
    .map(|b| b.0)
}

/// `bytes` as standard base64, for the `*-data` fields handed to kube.
pub fn to_base64(bytes: &[u8]) -> String {
    match serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec())) {
        Ok(serde_json::Value::String(text)) => text,
        // ByteString always serialises to a string.
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values() {
        assert!(is_header_value("abc.DEF-123_~+/="));
        assert!(is_header_value("with space\tand tab"));
        assert!(!is_header_value("abc\n"));
        assert!(!is_header_value("a\rb"));
        assert!(!is_header_value("a\u{7f}"));
        assert!(!is_header_value("\0"));
    }

    #[test]
    fn base64_round_trips() {
        let text = "-----BEGIN CERTIFICATE-----\nMII\n";
        assert_eq!(
            base64(&to_base64(text.as_bytes())),
            Some(text.as_bytes().to_vec())
        );
        assert_eq!(base64("not base64!"), None);
    }
}
