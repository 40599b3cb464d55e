//! The secrets of `kci up`, kept beside the data: the token-signing secret, the first admin's
//! password and the storage token. Made from the operating system's randomness (no other
//! source: failing randomness stops `kci up`), written owner-only (mode 0600) before any byte
//! lands, and never silently replaced.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{UpError, io};

/// Reads the secret in `path`, or, when there is none (no file, or an empty one), writes
/// `generate()` into it, readable by the owner only (mode 0600, set before any byte is
/// written). An existing file readable by others is restricted to 0600 first; a file that
/// cannot be read is an error (never silently replaced: tokens signed with it would die).
pub(super) fn persistent_secret(
    path: &Path,
    generate: impl FnOnce() -> Result<String, UpError>,
) -> Result<String, UpError> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => {
            restrict_to_owner(path)?;
            Ok(s.trim().to_owned())
        }
        Ok(_) => write_secret(path, &generate()?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_secret(path, &generate()?),
        Err(e) => Err(io(path)(e)),
    }
}

/// Writes `value` to `path` through a new owner-only file renamed into place.
fn write_secret(path: &Path, value: &str) -> Result<String, UpError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(io(&tmp))?;
    file.write_all(format!("{value}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(value.to_owned())
}

/// Makes `path` readable by its owner only, if others could read it.
fn restrict_to_owner(path: &Path) -> Result<(), UpError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(io(path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(io(path))?;
            eprintln!(
                "kci up: {} was readable by others (mode {:o}); now 0600",
                path.display(),
                mode & 0o777
            );
        }
    }
    Ok(())
}

/// `bytes` random bytes from the operating system, as hex. No randomness is an error: a
/// guessable secret would be worse than none.
pub(super) fn random_hex(bytes: usize) -> Result<String, UpError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| {
        UpError::Secret(format!(
            "no random bytes from the operating system for a secret: {e}"
        ))
    })?;
    Ok(hex::encode(buf))
}

/// The token-signing secret: `from_env` (`SECRET_KEY`, checked by the server), else the one
/// stored in `path` (made on first start). A stored secret shorter than the server's minimum
/// is refused here, naming the file, unless weak secrets are allowed.
pub(super) fn signing_secret(
    from_env: Option<String>,
    path: &Path,
    allow_weak: bool,
) -> Result<String, UpError> {
    if let Some(s) = from_env.filter(|s| !s.trim().is_empty()) {
        return Ok(s);
    }
    let secret = persistent_secret(path, || random_hex(32))?;
    let min = kernelci_server::config::MIN_SECRET_BYTES;
    if secret.len() < min && !allow_weak {
        return Err(UpError::Secret(format!(
            "{}: the secret is {} bytes long; at least {min} are required (delete the file to \
             get a new one, which logs everyone out), or set KCI_ALLOW_WEAK_SECRET=true",
            path.display(),
            secret.len()
        )));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn secrets_are_random_owner_only_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret-key");
        let first = persistent_secret(&path, || random_hex(32)).expect("secret");
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);
        // Kept across starts.
        let again = persistent_secret(&path, || panic!("regenerated")).expect("secret");
        assert_eq!(again, first);
        // Another file gets another secret.
        let other = persistent_secret(&dir.path().join("other"), || random_hex(32)).expect("s");
        assert_ne!(other, first);
        // An empty file is filled.
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        assert_eq!(
            persistent_secret(&empty, || Ok("x".into())).expect("s"),
            "x"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_readable_by_others_is_restricted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin-password");
        std::fs::write(&path, "kept\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(
            persistent_secret(&path, || panic!("regenerated")).expect("s"),
            "kept"
        );
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn an_unreadable_secret_is_an_error_not_a_new_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory where the file should be: reading fails with something else than
        // "not found".
        let path = dir.path().join("secret-key");
        std::fs::create_dir(&path).expect("mkdir");
        let e = persistent_secret(&path, || panic!("regenerated")).expect_err("unreadable");
        assert!(
            e.to_string().starts_with(&path.display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn a_short_stored_secret_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret-key");
        std::fs::write(&path, "short\n").expect("write");
        let e = signing_secret(None, &path, false).expect_err("weak");
        let text = e.to_string();
        assert!(
            text.contains(&path.display().to_string()) && text.contains("5 bytes long"),
            "{text}"
        );
        assert!(!text.contains("short\n"));
        assert_eq!(signing_secret(None, &path, true).expect("allowed"), "short");
        // SECRET_KEY wins over the file (the server checks its length).
        assert_eq!(
            signing_secret(Some("from-env".into()), &path, false).expect("env"),
            "from-env"
        );
    }
}
