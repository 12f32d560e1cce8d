//! The server's long-lived TLS identity: a self-signed certificate and its
//! key, made on first start and kept in one PEM file only its owner can
//! read. Clients pin it by its fingerprint, so no certificate authority is
//! involved and the certificate's names and dates do not matter.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{secret_file, Fingerprint, SecretFileError};

/// A server identity, ready to serve TLS.
pub struct Identity {
    fingerprint: Fingerprint,
    config: Arc<rustls::ServerConfig>,
}

/// Why the identity could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no configuration directory (is HOME set?); pass --identity FILE")]
    NoConfigDir,
    #[error(transparent)]
    File(#[from] SecretFileError),
    #[error(
        "{} is not a ferry identity ({why}); move it away to make a new one, \
         and clients will see the server's fingerprint change",
        path.display()
    )]
    Invalid { path: PathBuf, why: String },
    // Causes are the errors' sources; `{:#}` prints them after these.
    #[error("cannot create the identity {}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot make a certificate")]
    Generate(#[from] rcgen::Error),
}

impl Identity {
    /// Where the identity is kept unless `--identity` says otherwise.
    pub fn default_path() -> Result<PathBuf, IdentityError> {
        super::config_dir()
            .map(|dir| dir.join("identity.pem"))
            .ok_or(IdentityError::NoConfigDir)
    }

    /// Loads the identity at `path`, making it first if there is none
    /// there. Also says whether it was made now.
    pub fn load_or_create(path: &Path) -> Result<(Identity, bool), IdentityError> {
        match Identity::load(path) {
            Err(IdentityError::File(SecretFileError::Read { source, .. }))
                if source.kind() == io::ErrorKind::NotFound =>
            {
                let created = Identity::create(path)?;
                Ok((Identity::load(path)?, created))
            }
            loaded => Ok((loaded?, false)),
        }
    }

    /// The fingerprint clients pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The rustls server configuration presenting this identity.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.config)
    }

    fn load(path: &Path) -> Result<Identity, IdentityError> {
        let text = secret_file::read(path)?;
        let invalid = |why: &str| IdentityError::Invalid {
            path: path.to_owned(),
            why: why.to_owned(),
        };
        let certificate = CertificateDer::pem_slice_iter(text.as_bytes())
            .next()
            .ok_or_else(|| invalid("no certificate in it"))?
            .map_err(|_| invalid("its certificate is damaged"))?;
        let key = PrivateKeyDer::from_pem_slice(text.as_bytes())
            .map_err(|_| invalid("no usable private key in it"))?;
        let fingerprint = Fingerprint::of_certificate(&certificate);
        // Also refuses a key that does not belong to the certificate.
        let config = tls_config(certificate, key).map_err(|e| invalid(&e.to_string()))?;
        Ok(Identity {
            fingerprint,
            config,
        })
    }

    /// Makes a new identity at `path`, readable by its owner only. Written
    /// aside and linked into place, so a server killed meanwhile leaves no
    /// half-written identity, and of two servers starting at once both end
    /// up with the same one. Returns whether this call made it.
    fn create(path: &Path) -> Result<bool, IdentityError> {
        let failed = |source| IdentityError::Create {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(failed)?;
        }
        let made = rcgen::generate_simple_self_signed(vec!["ferry".to_owned()])?;
        let pem = format!("{}{}", made.cert.pem(), made.signing_key.serialize_pem());
        let aside = path.with_extension(format!("tmp-{}", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&aside)
            .and_then(|mut file| {
                file.write_all(pem.as_bytes())?;
                file.sync_all()
            });
        let linked = written.and_then(|()| std::fs::hard_link(&aside, path));
        // The name aside is only a step; whatever happened, it goes.
        let _ = std::fs::remove_file(&aside);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(failed(e)),
        }
    }
}

/// A rustls server configuration presenting `certificate`: TLS 1.3 only,
/// no client certificates, and no session tickets, which ferry's long
/// connections do not need.
fn tls_config(
    certificate: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(super::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![certificate], key)?;
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_identity_is_made_once_private_and_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conf/ferry/identity.pem");
        let (first, created) = Identity::load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, created) = Identity::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(first.fingerprint(), again.fingerprint());
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn a_damaged_identity_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let error = Identity::load_or_create(&path).err().unwrap();
        assert!(matches!(error, IdentityError::Invalid { .. }), "{error}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a certificate");
    }
}
