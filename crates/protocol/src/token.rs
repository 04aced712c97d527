//! Session tokens: `B64URL(payload) "." B64URL(HMAC-SHA256(secret, B64URL(payload)))`.
//!
//! The payload is the JSON `{"user":…,"exp":…}` with `exp` in Unix seconds, and optionally `iat`
//! (issued at, Unix seconds). The server mints them at login with `iat`; an operator's backend may
//! mint them with the shared secret (the "UserSig" model), with or without `iat`. `iat` is what
//! lets a server refuse tokens issued before an account was removed, so that they do not carry
//! over to a later account of the same id.
//! Verification checks the signature in constant time before it reads the payload, so a forged
//! token tells an attacker nothing about its contents' validity.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// The user id.
    pub user: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// When it was issued, Unix seconds (absent in tokens minted without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not two base64url parts, or the payload is not the expected JSON.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match.
    #[error("bad token signature")]
    BadSignature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
}

/// Mints a token for `user` that expires at `exp` (Unix seconds), with no `iat`: the form an
/// operator's backend is documented to mint.
pub fn mint(secret: &[u8], user: &str, exp: i64) -> String {
    mint_claims(secret, &TokenClaims { user: user.to_owned(), exp, iat: None })
}

/// Mints a token for `user` issued at `iat` that expires at `exp` (both Unix seconds).
pub fn mint_issued(secret: &[u8], user: &str, iat: i64, exp: i64) -> String {
    mint_claims(secret, &TokenClaims { user: user.to_owned(), exp, iat: Some(iat) })
}

fn mint_claims(secret: &[u8], claims: &TokenClaims) -> String {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialize"));
    let signature = URL_SAFE_NO_PAD.encode(sign(secret, payload.as_bytes()).finalize().into_bytes());
    format!("{payload}.{signature}")
}

/// Verifies `token` against `secret` at `now_s` (Unix seconds).
pub fn verify(secret: &[u8], token: &str, now_s: i64) -> Result<TokenClaims, TokenError> {
    let (payload, signature) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
    // `verify_slice` compares in constant time.
    sign(secret, payload.as_bytes())
        .verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
    let claims: TokenClaims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if claims.exp <= now_s {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

fn sign(secret: &[u8], payload: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(payload);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn mint_then_verify() {
        let token = mint(SECRET, "alice", 1_767_225_600);
        let claims = verify(SECRET, &token, 1_767_225_599).unwrap();
        assert_eq!(claims, TokenClaims { user: "alice".into(), exp: 1_767_225_600, iat: None });
    }

    #[test]
    fn issued_at_travels_in_the_payload() {
        let token = mint_issued(SECRET, "alice", 1_767_225_000, 1_767_225_600);
        let payload = token.split('.').next().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(json, serde_json::json!({"user":"alice","exp":1767225600,"iat":1767225000}));
        assert_eq!(verify(SECRET, &token, 1_767_225_001).unwrap().iat, Some(1_767_225_000));
    }

    #[test]
    fn payload_is_the_documented_json() {
        let token = mint(SECRET, "alice", 1_767_225_600);
        let payload = token.split('.').next().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(json, serde_json::json!({"user":"alice","exp":1767225600}));
    }

    #[test]
    fn expired_at_exp() {
        let token = mint(SECRET, "alice", 100);
        assert_eq!(verify(SECRET, &token, 100), Err(TokenError::Expired));
    }

    #[test]
    fn forged_tokens_are_refused() {
        let token = mint(SECRET, "alice", 1_767_225_600);
        assert_eq!(verify(b"another secret", &token, 0), Err(TokenError::BadSignature));
        // Swap in a payload for another user, keep the signature.
        let (_, signature) = token.split_once('.').unwrap();
        let forged_payload = URL_SAFE_NO_PAD.encode(br#"{"user":"mallory","exp":1767225600}"#);
        assert_eq!(verify(SECRET, &format!("{forged_payload}.{signature}"), 0), Err(TokenError::BadSignature));
        assert_eq!(verify(SECRET, "no-dot", 0), Err(TokenError::Malformed));
        assert_eq!(verify(SECRET, "a.!!!", 0), Err(TokenError::Malformed));
        assert_eq!(verify(SECRET, "", 0), Err(TokenError::Malformed));
    }

    #[test]
    fn signed_garbage_payload_is_malformed() {
        let payload = URL_SAFE_NO_PAD.encode(b"not json");
        let signature = URL_SAFE_NO_PAD.encode(sign(SECRET, payload.as_bytes()).finalize().into_bytes());
        assert_eq!(verify(SECRET, &format!("{payload}.{signature}"), 0), Err(TokenError::Malformed));
    }
}
