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
