//! The one place that talks to S3: a client for one bucket and prefix,
//! the runtime its calls run on, and how S3's errors become refusals.
//!
//! The store's methods block (the server calls them on its blocking
//! pool), while the SDK is async. The bucket therefore owns a small
//! runtime of its own and blocks on it: that works from any thread that
//! is not itself driving a runtime, which is where the server calls the
//! store, and keeps the SDK's connections apart from the server's.

use std::future::Future;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

use super::spec::S3Spec;
use crate::protocol::{ErrorCode, Refusal, RemoteName};

/// How long a connection to S3 may take to open, and how long S3 may
/// be silent in a response, before the call fails (and is retried, up to
/// the SDK's standard three attempts). A store that went away fails a
/// request within about a minute rather than holding it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// A bucket and the prefix ferry serves beneath, with a client for them.
pub struct Bucket {
    client: Client,
    name: String,
    /// Empty, or the prefix with its trailing `/`.
    prefix: String,
    /// Where the SDK's calls run.
    handle: tokio::runtime::Handle,
    _runtime: Runtime,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("name", &self.name)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A runtime dropped without waiting: the store may be dropped by a thread
/// that is driving the server's runtime, where waiting is not allowed.
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Bucket {
    /// A client for the bucket `spec` names; nothing is sent yet.
    pub fn new(spec: &S3Spec) -> std::io::Result<Bucket> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ferry-s3")
            .enable_all()
            .build()?;
        let client = runtime.block_on(client_for(spec));
        let prefix = match spec.prefix.as_str() {
            "" => String::new(),
            prefix => format!("{prefix}/"),
        };
        Ok(Bucket {
            client,
            name: spec.bucket.clone(),
            prefix,
            handle: runtime.handle().clone(),
            _runtime: Runtime(Some(runtime)),
        })
    }

    /// Runs `call` on the bucket's runtime and waits for it. Must not be
    /// called from a thread that drives a runtime (the server's async
    /// threads): the store's methods run on its blocking pool.
    pub fn block_on<F: Future>(&self, call: F) -> F::Output {
        self.handle.block_on(call)
    }

    /// Starts `call` on the bucket's runtime without waiting for it: for
    /// clean-ups from `Drop`, which may run on an async thread.
    pub fn spawn<F>(&self, call: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(call);
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key prefix served beneath: empty, or ending in `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key that holds the file `name`.
    pub fn key(&self, name: &RemoteName) -> String {
        format!("{}{}", self.prefix, name.as_str())
    }
}

async fn client_for(spec: &S3Spec) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts);
    if let Some(endpoint) = &spec.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(region) = &spec.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(keys) = &spec.credentials {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            &keys.access_key_id,
            &keys.secret_access_key,
            None,
            None,
            "ferry",
        ));
    }
    let shared = loader.load().await;
    let mut config = aws_sdk_s3::config::Builder::from(&shared)
        // Checksums only where S3 requires them: BLAKE3 already covers
        // every body end to end, and several S3-compatible stores refuse
        // the newer checksum headers.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if shared.region().is_none() {
        config = config.region(Region::new("us-east-1"));
    }
    if spec.endpoint.is_some() {
        // S3-compatible stores rarely have a DNS name per bucket.
        config = config.force_path_style(true);
    }
    Client::from_conf(config.build())
}

/// What a HEAD of one object tells.
#[derive(Debug, Clone)]
pub struct Head {
    pub size: u64,
    /// The object's ETag, quotes included, as S3 gives it: what an
    /// `If-Match` names to be sure the same object is read on.
    pub etag: String,
    /// Seconds since the Unix epoch.
    pub modified: i64,
    /// The object's user metadata (`x-amz-meta-*`), keys without the
    /// prefix.
    pub metadata: std::collections::HashMap<String, String>,
}

impl Bucket {
    /// HEADs the object `key`: `None` if there is no such key.
    pub fn head(&self, key: &str) -> Result<Option<Head>, Failure> {
        let call = self.client.head_object().bucket(&self.name).key(key).send();
        match self.block_on(call) {
            Ok(object) => Ok(Some(Head {
                size: object.content_length().unwrap_or(0).max(0) as u64,
                etag: object.e_tag().unwrap_or_default().to_owned(),
                modified: object.last_modified().map_or(0, |t| t.secs()),
                metadata: object.metadata().cloned().unwrap_or_default(),
            })),
            Err(error) => {
                let failure = Failure::of(&error);
                if failure.is_not_found() {
                    Ok(None)
                } else {
                    Err(failure)
                }
            }
        }
    }

    /// Whether any key starts with `prefix` (which ends in `/` for a
    /// directory): one LIST of at most one key.
    pub fn has_keys_under(&self, prefix: &str) -> Result<bool, Failure> {
        let call = (self.client.list_objects_v2())
            .bucket(&self.name)
            .prefix(prefix)
            .max_keys(1)
            // A key with a character XML 1.0 cannot carry makes the
            // answer unreadable unless keys come percent-encoded.
            .encoding_type(aws_sdk_s3::types::EncodingType::Url)
            .send();
        let listed = self.block_on(call).map_err(|e| Failure::of(&e))?;
        Ok(!listed.contents().is_empty())
    }
}

impl Bucket {
    /// The whole body of the small object `key` (ferry's own records):
    /// `None` if there is no such key.
    pub fn get_small(&self, key: &str) -> Result<Option<Vec<u8>>, Failure> {
        Ok(self.get_small_tagged(key)?.map(|(body, _etag)| body))
    }

    /// Writes the small object `key` (ferry's own records), replacing it.
    pub fn put_small(&self, key: &str, body: Vec<u8>) -> Result<(), Failure> {
        let call = (self.client.put_object())
            .bucket(&self.name)
            .key(key)
            .body(body.into())
            .send();
        self.block_on(call).map(drop).map_err(|e| Failure::of(&e))
    }

    /// The body of the small object `key` with its ETag, for a later
    /// [`Bucket::put_small_if`]: `None` if there is no such key.
    pub fn get_small_tagged(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, Failure> {
        self.block_on(async {
            let object = (self.client.get_object())
                .bucket(&self.name)
                .key(key)
                .send()
                .await;
            match object {
                Ok(object) => {
                    let etag = object.e_tag().unwrap_or_default().to_owned();
                    match object.body.collect().await {
                        Ok(body) => Ok(Some((body.into_bytes().to_vec(), etag))),
                        Err(e) => Err(Failure::broken(e.to_string())),
                    }
                }
                Err(e) => {
                    let failure = Failure::of(&e);
                    if failure.is_not_found() {
                        Ok(None)
                    } else {
                        Err(failure)
                    }
                }
            }
        })
    }

    /// Writes the small object `key` only if it is still as last seen: the
    /// object of ETag `last`, or, for `None`, no object at all. A
    /// compare-and-swap: a write that lost fails with 412 (or 404 for a
    /// key gone meanwhile). Gives the new object's ETag.
    pub fn put_small_if(
        &self,
        key: &str,
        body: Vec<u8>,
        last: Option<&str>,
    ) -> Result<String, Failure> {
        let call = (self.client.put_object())
            .bucket(&self.name)
            .key(key)
            .set_if_match(last.map(str::to_owned))
            .set_if_none_match(last.is_none().then(|| "*".to_owned()))
            .body(body.into())
            .send();
        let put = self.block_on(call).map_err(|e| Failure::of(&e))?;
        Ok(put.e_tag.unwrap_or_default())
    }

    /// Deletes the object `key`; a missing key is no error (S3 says 204).
    pub fn delete_key(&self, key: &str) -> Result<(), Failure> {
        let call = (self.client.delete_object())
            .bucket(&self.name)
            .key(key)
            .send();
        self.block_on(call).map(drop).map_err(|e| Failure::of(&e))
    }
}

impl Bucket {
    /// Deletes the object `key` only if its ETag is still `etag`: a record
    /// another server has written since stays.
    pub fn delete_key_if(&self, key: &str, etag: &str) -> Result<(), Failure> {
        let call = (self.client.delete_object())
            .bucket(&self.name)
            .key(key)
            .if_match(etag)
            .send();
        self.block_on(call).map(drop).map_err(|e| Failure::of(&e))
    }
}

/// An error and its causes, each said once: the SDK's errors repeat
/// their cause in their own message, and end in a debug dump that
/// `DisplayErrorContext` would print.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut said: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(error) = next {
        let text = error.to_string();
        if !said.iter().any(|earlier| earlier.contains(&text)) {
            said.push(text);
        }
        next = error.source();
    }
    said.join(": ")
}

/// What S3 said about a failed call, in the terms of ferry's refusals.
#[derive(Debug)]
pub struct Failure {
    /// The HTTP status, if an answer came.
    pub status: Option<u16>,
    /// S3's error code (`NoSuchKey`, `PreconditionFailed`, …), if any.
    pub code: Option<String>,
    /// The whole error, for messages.
    pub message: String,
}

impl Failure {
    /// Reads a failed SDK call.
    pub fn of<E>(error: &SdkError<E>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        Failure {
            status: error.raw_response().map(|r| r.status().as_u16()),
            code: error.code().map(str::to_owned),
            message: causes(error),
        }
    }

    /// A call that failed without an S3 error: a body cut off midway.
    pub fn broken(message: String) -> Failure {
        Failure {
            status: None,
            code: None,
            message,
        }
    }

    /// Whether S3 answered that the key or bucket is not there.
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }

    /// Whether a conditional request's condition did not hold: for a
    /// create with `If-None-Match: *`, the key was taken.
    pub fn is_precondition_failed(&self) -> bool {
        self.status == Some(412)
    }

    /// The refusal a client is sent, `doing` naming what was tried
    /// (`"reading the object"`).
    pub fn refusal(&self, doing: &str) -> Refusal {
        let code = match self.status {
            Some(404) => ErrorCode::NotFound,
            Some(412) => ErrorCode::AlreadyExists,
            Some(401 | 403) => ErrorCode::PermissionDenied,
            _ => ErrorCode::Io,
        };
        let why = match (self.status, &self.code) {
            (Some(status), Some(code)) => format!("S3 answered {status} {code}"),
            (Some(status), None) => format!("S3 answered {status}"),
            (None, _) => format!("S3 did not answer: {}", self.message),
        };
        Refusal::new(code, format!("{doing}: {why}"))
    }
}
