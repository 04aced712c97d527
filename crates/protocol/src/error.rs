//! The error codes of PROTOCOL.md section 5, shared by WebSocket `error` frames and HTTP bodies.

use serde::{Deserialize, Serialize};

/// Why a request was refused. Clients switch on this, never on the message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum ErrorCode {
    /// The frame or request is malformed (not JSON, missing or wrong fields, bad values).
    BadRequest,
    /// The frame or a field in it is over its size limit.
    PayloadTooLarge,
    /// An unknown message `type`.
    Unsupported,
    /// No protocol version in common.
    UnsupportedVersion,
    /// No or bad token, or a request before `hello`.
    Unauthorized,
    /// The token's `exp` has passed.
    TokenExpired,
    /// No such user or call.
    NotFound,
    /// Not a person in that call, or not allowed that action.
    Forbidden,
    /// The call or invitation no longer allows this (e.g. accepting a cancelled call).
    InvalidState,
    /// The call would have more than `max_participants` people.
    TooManyParticipants,
    /// Too many requests of this kind.
    RateLimited,
    /// A fault in the server.
    Internal,
    /// (HTTP) the user id is taken.
    UserExists,
    /// (HTTP) the server does not accept registrations.
    RegistrationClosed,
    /// (HTTP) wrong user or password.
    BadCredentials,
}

impl ErrorCode {
    /// Every code, for metrics and tests.
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::BadRequest,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Unsupported,
        ErrorCode::UnsupportedVersion,
        ErrorCode::Unauthorized,
        ErrorCode::TokenExpired,
        ErrorCode::NotFound,
        ErrorCode::Forbidden,
        ErrorCode::InvalidState,
        ErrorCode::TooManyParticipants,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
        ErrorCode::UserExists,
        ErrorCode::RegistrationClosed,
        ErrorCode::BadCredentials,
    ];

    /// The wire name, e.g. `"invalid_state"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::TooManyParticipants => "too_many_participants",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
            ErrorCode::UserExists => "user_exists",
            ErrorCode::RegistrationClosed => "registration_closed",
            ErrorCode::BadCredentials => "bad_credentials",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
