//! HTTP routes: registration, login, the WebSocket upgrade, health and metrics, and CORS.
//!
//! HTTP errors carry `{"code","message"}` with the protocol's codes. Password hashing runs on the
//! blocking pool: argon2id is deliberately slow and must not stall the async threads.

use std::sync::{Arc, OnceLock};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Request, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hark_protocol::{valid_user_id, ErrorCode, MAX_FRAME_BYTES};
use serde::Deserialize;
use serde_json::json;
use tracing::warn;

use crate::accounts::{hash_password, verify_password};
use crate::AppState;

/// Bytes the WebSocket reader allocates up front per connection; frames larger than this grow
/// it on demand. Small, because 20,000 idle sessions each hold one.
const WS_READ_BUFFER: usize = 4 * 1024;
/// Largest message the WebSocket layer accepts at all; between 64 KiB and this the session
/// answers `payload_too_large` and stays open, above it the connection is dropped.
const WS_MAX_MESSAGE: usize = 1024 * 1024;

/// The server's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/register", post(register))
        .route("/v1/login", post(login))
        .route("/v1/ws", get(websocket))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), cors))
        .with_state(state)
}

/// An HTTP error with its protocol code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"code": self.code, "message": self.message}))).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, rejection.body_text())
    }
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    warn!(%error, "request failed");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, "internal error")
}

#[derive(Deserialize)]
struct RegisterBody {
    user: String,
    password: String,
    nickname: Option<String>,
}

async fn register(
    State(state): State<Arc<AppState>>,
    body: Result<Json<RegisterBody>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Json(body) = body?;
    if state.config.closed_registration {
        return Err(ApiError::new(StatusCode::FORBIDDEN, ErrorCode::RegistrationClosed, "registration is closed"));
    }
    // Each registration costs an argon2 hash: anonymous callers share one budget.
    if !state.registrations.allow("", state.clock.now_ms()) {
        return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, "too many registrations; wait a minute"));
    }
    if !valid_user_id(&body.user) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "user ids are 1 to 32 of a-z 0-9 _ . -, starting with a letter or digit",
        ));
    }
    if !(8..=1024).contains(&body.password.len()) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, "passwords are 8 to 1024 bytes"));
    }
    if body.nickname.as_ref().is_some_and(|n| n.trim().is_empty() || n.chars().count() > 64) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, "nickname must be 1 to 64 characters"));
    }
    let password = body.password;
    let hash = tokio::task::spawn_blocking(move || hash_password(&password)).await.map_err(internal)?.map_err(internal)?;
    let now = state.clock.now_ms();
    if !state.store.create_user(&body.user, Some(&hash), body.nickname.as_deref(), now).await.map_err(internal)? {
        return Err(ApiError::new(StatusCode::CONFLICT, ErrorCode::UserExists, format!("'{}' is taken", body.user)));
    }
    Ok((StatusCode::CREATED, Json(json!({"user": body.user}))))
}

#[derive(Deserialize)]
struct LoginBody {
    user: String,
    password: String,
}

/// A hash to verify against when the account does not exist, so a wrong user id costs the same
/// time as a wrong password and ids cannot be probed by timing.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password").expect("hashing a constant works"))
}

async fn login(
    State(state): State<Arc<AppState>>,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(body) = body?;
    let now = state.clock.now_ms();
    // Only real user ids get a bucket: any other string is refused before it can cost memory.
    if !valid_user_id(&body.user) {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::BadCredentials, "wrong user or password"));
    }
    if !state.logins.allow(&body.user, now) {
        return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, "too many attempts; wait a minute"));
    }
    let stored = state.store.password_hash(&body.user).await.map_err(internal)?;
    let hash = stored.clone().flatten();
    let password = body.password;
    let matches = tokio::task::spawn_blocking(move || verify_password(hash.as_deref().unwrap_or(decoy_hash()), &password))
        .await
        .map_err(internal)?;
    if !matches || !matches!(stored, Some(Some(_))) {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::BadCredentials, "wrong user or password"));
    }
    let exp = now.div_euclid(1000) + state.config.token_ttl_s;
    let token = hark_protocol::token::mint(&state.secret, &body.user, exp);
    Ok(Json(json!({"token": token, "expires_at": exp * 1000})))
}

async fn websocket(State(state): State<Arc<AppState>>, headers: HeaderMap, upgrade: WebSocketUpgrade) -> Response {
    if let Some(origin) = headers.get(header::ORIGIN) {
        if !origin_allowed(&state, origin) {
            return ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, "origin not allowed").into_response();
        }
    }
    upgrade
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(WS_MAX_MESSAGE)
        .max_frame_size(WS_MAX_MESSAGE.max(MAX_FRAME_BYTES))
        .on_upgrade(move |socket| crate::session::serve(socket, state))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

fn origin_allowed(state: &AppState, origin: &HeaderValue) -> bool {
    let allowed = &state.config.allowed_origins;
    allowed.is_empty() || origin.to_str().is_ok_and(|o| allowed.iter().any(|a| a == o))
}

/// Answers CORS preflights on `/v1/*` and marks allowed origins on the answers.
async fn cors(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let on_api = request.uri().path().starts_with("/v1/");
    let (Some(origin), true) = (origin, on_api) else { return next.run(request).await };
    let allowed = origin_allowed(&state, &origin);
    if request.method() == Method::OPTIONS {
        if !allowed {
            return ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, "origin not allowed").into_response();
        }
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type, authorization"));
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("origin"));
        return response;
    }
    let mut response = next.run(request).await;
    if allowed {
        response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        response.headers_mut().insert(header::VARY, HeaderValue::from_static("origin"));
    }
    response
}
