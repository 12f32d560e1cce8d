//! Where an S3 store is: the bucket and prefix a `s3://BUCKET[/PREFIX]`
//! address names, and how to reach the service.

use std::fmt;

/// An S3 store's address and connection settings, before it is opened.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Spec {
    /// The bucket's name.
    pub bucket: String,
    /// The key prefix every served name is beneath: empty, or components
    /// joined by `/` with no leading or trailing `/`.
    pub prefix: String,
    /// The service's address, for S3-compatible stores; `None`: AWS.
    pub endpoint: Option<String>,
    /// The region; `None`: from the environment or profile, else
    /// `us-east-1`.
    pub region: Option<String>,
    /// Keys to sign with; `None`: the usual AWS chain (environment
    /// variables, then the shared profile files).
    pub credentials: Option<Credentials>,
}

/// An access key pair given directly rather than found by the AWS chain.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

// Written by hand so that a secret never reaches a log line.
impl fmt::Debug for S3Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Spec")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("credentials", &self.credentials.as_ref().map(|_| "given"))
            .finish()
    }
}

/// Why an `s3://` address was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadAddress(String);

impl S3Spec {
    /// Reads `s3://BUCKET[/PREFIX]`; the endpoint, region and credentials
    /// are left to their defaults.
    pub fn parse(address: &str) -> Result<S3Spec, BadAddress> {
        let rest = address
            .strip_prefix("s3://")
            .ok_or_else(|| BadAddress(format!("{address:?} does not start with s3://")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket(bucket)?;
        let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
        if !prefix.is_empty() {
            for component in prefix.split('/') {
                if component.is_empty() || component == "." || component == ".." {
                    return Err(BadAddress(format!(
                        "the prefix {prefix:?} has an empty, . or .. component"
                    )));
                }
            }
        }
        Ok(S3Spec {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            endpoint: None,
            region: None,
            credentials: None,
        })
    }

    /// The address as `parse` reads it, for the start line.
    pub fn address(&self) -> String {
        match self.prefix.as_str() {
            "" => format!("s3://{}", self.bucket),
            prefix => format!("s3://{}/{prefix}", self.bucket),
        }
    }
}

/// S3's rules for bucket names: 3 to 63 lowercase letters, digits, dots
/// and hyphens, starting and ending with a letter or digit. Checked here so
/// a typo is a usage error rather than a signing failure.
fn check_bucket(bucket: &str) -> Result<(), BadAddress> {
    let edges_ok =
        |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let chars_ok = bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    if (3..=63).contains(&bucket.len())
        && chars_ok
        && edges_ok(bucket.chars().next())
        && edges_ok(bucket.chars().last())
    {
        Ok(())
    } else {
        Err(BadAddress(format!(
            "{bucket:?} is not a bucket name (3 to 63 lowercase letters, digits, dots and hyphens)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_alone_and_with_prefix() {
        let spec = S3Spec::parse("s3://files").unwrap();
        assert_eq!((spec.bucket.as_str(), spec.prefix.as_str()), ("files", ""));
        assert_eq!(spec.address(), "s3://files");
        let spec = S3Spec::parse("s3://files/team/a/").unwrap();
        assert_eq!(spec.prefix, "team/a");
        assert_eq!(spec.address(), "s3://files/team/a");
    }

    #[test]
    fn bad_addresses_are_refused() {
        for address in [
            "files",
            "s3:/files",
            "s3://",
            "s3://Files",
            "s3://ab",
            "s3://-files",
            "s3://files/a//b",
            "s3://files/../b",
            "s3://files/a/.",
        ] {
            assert!(S3Spec::parse(address).is_err(), "{address} was accepted");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let mut spec = S3Spec::parse("s3://files").unwrap();
        spec.credentials = Some(Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "very-secret".into(),
        });
        let shown = format!("{spec:?}");
        assert!(
            !shown.contains("very-secret") && !shown.contains("AKIDEXAMPLE"),
            "{shown}"
        );
    }
}
