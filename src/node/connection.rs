//! The guard's connection to the API server, kept apart from its lifecycle: one `kube::Client`,
//! built from the kubeconfig and the credential with bounded timeouts and no retries of kube's
//! own, and reused across calls and passes while
//! - the same kubeconfig is found, and neither it nor any file it names (CA, token file, client
//!   certificate and key) changed (device, inode, size, mtime, ctime): a rotated kubelet client
//!   certificate or token file is picked up by the next call;
//! - an exec plugin's credential has not reached its `expirationTimestamp` (less a minute, as
//!   kube-rs and client-go refresh); one without an expiry serves the current pass only, and
//!   the plugin runs again at the next;
//! - the API server has not answered 401 with it.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use std::time::Duration;

use http::Response;
use http_body_util::combinators::MapErr;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::client::DynBody;
use kube::config::AuthInfo;
use secrecy::{ExposeSecret, SecretString};
use tower::BoxError;
use tower::util::{MapErrLayer, MapResponseLayer};

use super::credential::{self, Credential, to_base64};
use super::error::{Error, KubeError};
use super::kubeconfig::{self, Loaded, Located, locate};
use super::timing::Timing;

/// How long before its expiry a plugin's credential is fetched again.
const EXPIRY_MARGIN: SignedDuration = SignedDuration::from_secs(60);

/// What identifies one version of a file; `None` for a missing file.
type FileStamp = Option<(u64, u64, u64, i64, i64, i64, i64)>;

fn stamp(path: &Path) -> FileStamp {
    std::fs::metadata(path).ok().map(|m| {
        (
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        )
    })
}

struct Connection {
    path: PathBuf,
    client: kube::Client,
    inputs: Vec<(PathBuf, FileStamp)>,
    expires: Option<Timestamp>,
    this_pass_only: bool,
}

impl Connection {
    fn fresh(&self, path: &Path, now: Timestamp) -> bool {
        self.path == path
            && self.inputs.iter().all(|(file, was)| stamp(file) == *was)
            && self
                .expires
                .is_none_or(|at| now.checked_add(EXPIRY_MARGIN).is_ok_and(|soon| soon < at))
    }
}

/// The cached connection, and the kubeconfig last used (to log a change once).
#[derive(Default)]
pub struct Link {
    current: Option<Connection>,
    used: Option<PathBuf>,
}

impl Link {
    /// A client for the kubeconfig found now (`setting`, else `KUBECONFIG` as `env` gives it,
    /// else the defaults): the cached one while it is fresh, else a new one with a newly
    /// resolved credential.
    pub async fn client(
        &mut self,
        setting: Option<&Path>,
        env: Option<&OsStr>,
        timing: &Timing,
    ) -> Result<kube::Client, Error> {
        let path = match locate(setting, env, Path::exists) {
            Located::Found(path) => path,
            Located::Missing(tried) => {
                self.current = None;
                return Err(Error::NoKubeconfig { tried });
            }
        };
        if let Some(c) = &self.current
            && c.fresh(&path, Timestamp::now())
        {
            return Ok(c.client.clone());
        }
        self.current = None;
        // Stamps are taken before the files are read: a change while reading shows next time.
        let mut inputs = vec![(path.clone(), stamp(&path))];
        let loaded = kubeconfig::load(&path).await?;
        inputs.extend(loaded.files.iter().map(|f| (f.clone(), stamp(f))));
        let credential = credential::resolve(&loaded, timing.exec_timeout).await?;
        inputs.extend(credential.files.iter().map(|f| (f.clone(), stamp(f))));
        let timeouts = Timeouts {
            connect: timing.connect_timeout,
            request: timing.request_timeout,
        };
        let client = client(&loaded, &credential, timeouts)?;
        if self.used.as_deref() != Some(path.as_path()) {
            log::info!("using kubeconfig {}", path.display());
            self.used = Some(path.clone());
        }
        self.current = Some(Connection {
            path,
            client: client.clone(),
            inputs,
            expires: credential.expires,
            this_pass_only: credential.from_plugin && credential.expires.is_none(),
        });
        Ok(client)
    }

    /// The end of a pass (or of a call outside one): a plugin credential without expiry goes.
    pub fn end_pass(&mut self) {
        if self.current.as_ref().is_some_and(|c| c.this_pass_only) {
            self.current = None;
        }
    }

    /// After the API server refused the credential (401): the next call builds anew.
    pub fn forget(&mut self) {
        self.current = None;
    }
}

/// True when the system has CA certificates to check an API server's certificate with (the
/// store kube falls back to when the kubeconfig names no CA; `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` as OpenSSL reads them).
fn system_roots() -> bool {
    !rustls_native_certs::load_native_certs().certs.is_empty()
}

/// Timeouts of one client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP and TLS connect.
    pub connect: Duration,
    /// Each request: sending it, and waiting for the answer.
    pub request: Duration,
}

/// Builds a client for `loaded` presenting `credential`, with bounded timeouts and no retries
/// of kube's own.
pub fn client(
    loaded: &Loaded,
    credential: &Credential,
    timeouts: Timeouts,
) -> Result<kube::Client, Error> {
    let mut config = loaded.config.clone();
    config.auth_info = AuthInfo {
        token: credential.token.clone(),
        client_certificate_data: credential.identity.as_ref().map(|(c, _)| to_base64(c)),
        client_key_data: credential
            .identity
            .as_ref()
            .map(|(_, k)| SecretString::from(to_base64(k.expose_secret().as_bytes()))),
        ..AuthInfo::default()
    };
    config.connect_timeout = Some(timeouts.connect);
    config.read_timeout = Some(timeouts.request);
    config.write_timeout = Some(timeouts.request);
    // A pass may keep a pooled connection idle for minutes: count from each request instead.
    config.reset_reader_on_write = true;
    let plain_http = config.cluster_url.scheme_str() == Some("http");
    if config.root_cert.is_none() {
        if plain_http || config.accept_invalid_certs {
            // No certificate is checked: spare kube the system's CA store, which it would
            // otherwise load (and fail on, on a system without ca-certificates).
            config.root_cert = Some(Vec::new());
        } else if !system_roots() {
            return Err(Error::NoCaStore {
                path: loaded.path.clone(),
                cluster: loaded.cluster.clone(),
            });
        }
    }
    // kube 5 retries 429/503/504 by itself up to 15 times with backoff up to 1000 s (honouring
    // Retry-After): that would unbound a pass. Our own retries are bounded instead.
    config.default_retry = false;
    if config.accept_invalid_certs {
        log::warn!(
            "kubeconfig {}: cluster \"{}\" sets insecure-skip-tls-verify: the API server's certificate is not checked, anyone on the path can act as it",
            loaded.path.display(),
            loaded.cluster
        );
    }
    let url = config.cluster_url.to_string();
    let builder =
        kube::client::ClientBuilder::try_from(config).map_err(|source| Error::Client {
            path: loaded.path.clone(),
            source: KubeError(source),
        })?;
    Ok(builder
        // Every answer's body bounded (kube collects it whole).
        .with_layer(&MapResponseLayer::new(|r: Response<Box<DynBody>>| {
            r.map(bounded_body)
        }))
        // A failure to reach the server names it.
        .with_layer(&MapErrLayer::new(move |source: BoxError| -> BoxError {
            Box::new(Unreachable {
                url: url.clone(),
                source,
            })
        }))
        .build())
}

/// The largest answer body read from the API server: a Node (its images listed) is some tens
/// of KiB.
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// An answer's body as read: through a limit, its error reworded.
type BoundedBody = MapErr<Limited<Box<DynBody>>, fn(BoxError) -> BoxError>;

/// An answer's body, failing once past [`MAX_ANSWER_BYTES`] with an error that says so.
fn bounded_body(body: Box<DynBody>) -> BoundedBody {
    let too_large: fn(BoxError) -> BoxError = |e| {
        if e.is::<LengthLimitError>() {
            format!(
                "the API server's answer is larger than {} MiB",
                MAX_ANSWER_BYTES >> 20
            )
            .into()
        } else {
            e
        }
    };
    Limited::new(body, MAX_ANSWER_BYTES).map_err(too_large)
}

/// A request that got no answer, naming the server.
#[derive(Debug)]
struct Unreachable {
    url: String,
    source: BoxError,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "API server {}", self.url.trim_end_matches('/'))
    }
}

impl std::error::Error for Unreachable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}
