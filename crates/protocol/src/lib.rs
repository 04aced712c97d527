//! Hark signaling protocol, version 1, as Rust types.
//!
//! This crate is the wire contract of `docs/PROTOCOL.md` and nothing else: serde types for every
//! frame a client sends ([`ClientMessage`]) and every frame the server sends ([`ServerMessage`]),
//! the error codes ([`ErrorCode`]), the user-id rule ([`valid_user_id`]) and the token format
//! ([`token`]). It does no IO and knows no runtime, so the server, the engine, the load generator
//! and the UI type generator can all share it.
//!
//! Frames are JSON objects tagged by `type`. Requests may carry an `id`; answers carry it back as
//! `re`. Unknown fields are ignored everywhere (forward compatibility), which is serde's default.
//! [`parse_client_frame`] is the one place that turns a text frame into a request and decides
//! between `bad_request`, `payload_too_large` and `unsupported`, so every server agrees on it.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod error;
mod message;
pub mod token;

pub use error::ErrorCode;
pub use message::*;

/// The protocol versions this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest text frame the server accepts (64 KiB); larger ones get `payload_too_large`.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Largest `signal` payload (32 KiB, as serialized JSON).
pub const MAX_SIGNAL_PAYLOAD_BYTES: usize = 32 * 1024;

/// Largest `user_data` of an invitation (4 KiB).
pub const MAX_USER_DATA_BYTES: usize = 4 * 1024;

/// Largest avatar (URL or data URI) in a profile (16 KiB).
pub const MAX_AVATAR_BYTES: usize = 16 * 1024;

/// Most distinct users one `users.get` may name: 50 profiles with 16 KiB avatars keep the answer
/// under [`MAX_SERVER_FRAME_BYTES`].
pub const MAX_USERS_GET: usize = 50;

/// Largest frame the server sends (1 MiB); the server answers an over-large request with an error
/// rather than a bigger frame.
pub const MAX_SERVER_FRAME_BYTES: usize = 1024 * 1024;

/// Largest request `id` (64 characters).
pub const MAX_REQUEST_ID_CHARS: usize = 64;

/// Ring timeout bounds and default, in seconds.
pub const RING_TIMEOUT_RANGE_S: std::ops::RangeInclusive<u32> = 5..=120;

/// Whether `id` is a valid user id: 1 to 32 characters of `a-z 0-9 _ . -`, starting with a letter
/// or a digit.
pub fn valid_user_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 32
        && bytes[0].is_ascii_lowercase() | bytes[0].is_ascii_digit()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
}

/// Longest nickname or contact alias, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Whether `name` may be a nickname or a contact alias as far as its characters go: at most
/// [`MAX_NAME_CHARS`] of them and no control characters, which no name needs and which some
/// databases cannot keep (PostgreSQL's text refuses NUL). A nickname must also not be blank.
pub fn valid_name_chars(name: &str) -> bool {
    name.chars().count() <= MAX_NAME_CHARS && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["Alice", "Zoë 用户", "", &"x".repeat(64)] {
            assert!(valid_name_chars(ok), "{ok:?}");
        }
        for bad in ["a\u{0}b", "line\nbreak", "tab\t", &"x".repeat(65)] {
            assert!(!valid_name_chars(bad), "{bad:?}");
        }
    }

    #[test]
    fn user_ids() {
        for ok in ["a", "alice", "bob.smith", "7up", "a_b-c.d", &"x".repeat(32)] {
            assert!(valid_user_id(ok), "{ok} should be valid");
        }
        for bad in ["", "Alice", "_a", ".a", "-a", "a b", "a/b", "é", &"x".repeat(33)] {
            assert!(!valid_user_id(bad), "{bad} should be invalid");
        }
    }
}
