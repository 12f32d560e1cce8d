//! Reading files that hold secrets: identity keys and tokens.

use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a secret file could not be used. Never carries the file's content.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    // The cause is the error's source; `{:#}` prints it after this.
    #[error("cannot read {}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// Like ssh with private keys: a secret others can read is no secret.
    #[error(
        "{} can be read by other users (mode {mode:03o}); run: chmod 600 {}",
        path.display(),
        path.display()
    )]
    TooOpen { path: PathBuf, mode: u32 },
    /// A directory, device or the like where a file was expected.
    #[error("{} is {kind}, not a file", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
}

/// Reads a UTF-8 secret file, refusing anything but a regular file, and a
/// file that its group or other users may read or write.
pub fn read(path: &Path) -> Result<String, SecretFileError> {
    let failed = |source| SecretFileError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(failed)?;
    let metadata = file.metadata().map_err(failed)?;
    // Before the mode: a directory's usual 755 would be blamed otherwise.
    if !metadata.is_file() {
        return Err(SecretFileError::NotAFile {
            path: path.to_owned(),
            kind: if metadata.is_dir() {
                "a directory"
            } else {
                "a special file"
            },
        });
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(failed)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_others_can_read_is_refused_and_its_content_not_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "do-not-show-this-secret rw\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = read(&path).unwrap_err();
        assert!(matches!(
            error,
            SecretFileError::TooOpen { mode: 0o644, .. }
        ));
        let shown = error.to_string();
        assert!(shown.contains("chmod 600"), "{shown}");
        assert!(!shown.contains("do-not-show"), "{shown}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read(&path).unwrap(), "do-not-show-this-secret rw\n");
    }
}
