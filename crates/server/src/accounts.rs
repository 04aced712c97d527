//! Secrets and credentials: the token signing key and TURN REST credentials. Password hashes are
//! [`crate::hashing`]'s.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;

/// File in the data dir that holds the signing secret.
pub const SECRET_FILE: &str = "signing.key";

/// Loads the signing secret from `DIR/signing.key`, creating it (owner-only) on first start.
///
/// The key is the file's text, trimmed: 64 hex characters, which an operator's backend can copy
/// to mint tokens itself.
pub fn load_or_create_secret(data_dir: &Path) -> std::io::Result<Vec<u8>> {
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().as_bytes().to_vec()),
        Ok(_) => return Err(std::io::Error::other(format!("{} is empty", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    writeln!(file, "{hex}")?;
    file.sync_all()?;
    Ok(hex.into_bytes())
}

/// Shortest signing key a key file may hold, in characters (the generated ones have 64).
pub const MIN_KEY_CHARS: usize = 32;

/// Reads the signing key from a file an operator made (`--signing-key FILE`), so that several
/// servers share one: its text, trimmed, at least [`MIN_KEY_CHARS`] long. A file that others
/// than its owner may read is refused, as ssh refuses such a private key: whoever reads it can
/// sign in as anyone.
pub fn load_key_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "{} may be read by others (mode {:o}); make it owner-only (chmod 600)",
            path.display(),
            mode & 0o777
        )));
    }
    let text = std::fs::read_to_string(path)?;
    let key = text.trim();
    if key.chars().count() < MIN_KEY_CHARS {
        return Err(std::io::Error::other(format!("{} holds a key of under {MIN_KEY_CHARS} characters", path.display())));
    }
    Ok(key.as_bytes().to_vec())
}

/// The signing key a server uses: the operator's key file if it names one, else the data
/// folder's (created on first start).
pub fn signing_key(key_file: Option<&Path>, data_dir: &Path) -> std::io::Result<Vec<u8>> {
    match key_file {
        Some(path) => load_key_file(path),
        None => load_or_create_secret(data_dir),
    }
}

/// Reads an existing secret (for the `token` subcommand, which must not invent one).
pub fn load_secret(data_dir: &Path) -> std::io::Result<Vec<u8>> {
    let text = std::fs::read_to_string(data_dir.join(SECRET_FILE))?;
    Ok(text.trim().as_bytes().to_vec())
}

/// TURN REST credentials (coturn `use-auth-secret`): `username = "<expiry>:<user>"`,
/// `credential = base64(HMAC-SHA1(secret, username))`.
pub fn turn_credentials(secret: &str, user: &str, expiry_s: i64) -> (String, String) {
    let username = format!("{expiry_s}:{user}");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    (username.clone(), STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_shared_key_file_must_be_owner_only_and_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        std::fs::write(&path, format!("{}\n", "k".repeat(40))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let refused = load_key_file(&path).unwrap_err().to_string();
        assert!(refused.contains("chmod 600"), "{refused}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(signing_key(Some(&path), dir.path()).unwrap(), "k".repeat(40).into_bytes());
        assert!(!dir.path().join(SECRET_FILE).exists(), "the data folder's key is not made when a file is named");
        std::fs::write(&path, "short\n").unwrap();
        assert!(load_key_file(&path).unwrap_err().to_string().contains("under 32"));
        assert!(load_key_file(&dir.path().join("missing.key")).is_err());
    }

    #[test]
    fn secret_is_created_once_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_secret(dir.path()).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(load_or_create_secret(dir.path()).unwrap(), first);
        assert_eq!(load_secret(dir.path()).unwrap(), first);
        let mode = std::fs::metadata(dir.path().join(SECRET_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn turn_rest_credentials_match_a_known_value() {
        // Computed independently: printf '1700000000:alice' | openssl dgst -sha1 -hmac secret -binary | base64
        let (username, credential) = turn_credentials("secret", "alice", 1_700_000_000);
        assert_eq!(username, "1700000000:alice");
        assert_eq!(credential, "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
    }
}
