//! HTTP routes: registration, login, the WebSocket upgrade, health and metrics, and CORS.
//!
//! HTTP errors carry `{"code","message"}` with the protocol's codes. Registration and login cost a
//! password hash each, the dearest thing a stranger can ask for, so both are budgeted per source
//! address before any hash is made (and login also per source and user id, counting failures
//! only, so a stranger's wrong guesses never lock the owner out), and the hashes run on the
//! bounded [`crate::hashing::HashPool`]: when it is full the answer is `429` with `Retry-After`
//! at once. Their JSON bodies are read with a size cap and a deadline, so a trickled body cannot
//! hold the connection.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, Request, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hark_protocol::{valid_user_id, ErrorCode, MAX_FRAME_BYTES};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use tracing::warn;

use crate::hashing::{HashError, Lane};
use crate::listener::source_of;
use crate::AppState;

/// Bytes the WebSocket reader allocates up front per connection; frames larger than this grow
/// it on demand. Small, because 20,000 idle sessions each hold one.
const WS_READ_BUFFER: usize = 4 * 1024;
/// Largest register or login body: a 1 KiB password, an id and a nickname fit many times over.
const MAX_BODY_BYTES: usize = 16 * 1024;
/// What a client waits before retrying when every password hasher is busy, in seconds.
const HASHING_RETRY_AFTER_S: u64 = 1;
/// Largest message the WebSocket layer accepts at all; between 64 KiB and this the session
/// answers `payload_too_large` and stays open, above it the connection is dropped.
const WS_MAX_MESSAGE: usize = 1024 * 1024;

/// The server's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/register", post(register))
        .route("/v1/login", post(login))
        .route("/v1/ws", get(websocket))
        .route("/healthz", get(healthz))
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
    /// Seconds for `Retry-After`, on refusals that pass.
    retry_after_s: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after_s: None }
    }

    /// `429 rate_limited` with `Retry-After`.
    fn rate_limited(message: impl Into<String>, retry_after_s: u64) -> Self {
        ApiError { retry_after_s: Some(retry_after_s), ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, message) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({"code": self.code, "message": self.message}))).into_response();
        if let Some(seconds) = self.retry_after_s {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<HashError> for ApiError {
    fn from(error: HashError) -> Self {
        match error {
            HashError::Busy => ApiError::rate_limited("the server is busy; try again in a second", HASHING_RETRY_AFTER_S),
            other => internal(other),
        }
    }
}

/// A JSON body of at most [`MAX_BODY_BYTES`], all of which must arrive within the server's
/// request deadline; a slower or larger one is refused and the connection let go.
struct BoundedJson<T>(T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for BoundedJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message);
        let too_large = || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge, "the body is over 16 KiB");
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")));
        if !is_json {
            return Err(bad("send the body as application/json".into()));
        }
        let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(too_large());
        }
        let within = state.config.transport.request_within;
        let bytes = match tokio::time::timeout(within, axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)).await {
            Err(_) => {
                return Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, ErrorCode::BadRequest, "the body did not arrive in time"));
            }
            Ok(Err(_)) => return Err(too_large()),
            Ok(Ok(bytes)) => bytes,
        };
        serde_json::from_slice(&bytes).map(BoundedJson).map_err(|e| bad(format!("bad JSON body: {e}")))
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
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    BoundedJson(body): BoundedJson<RegisterBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    if state.config.closed_registration {
        return Err(ApiError::new(StatusCode::FORBIDDEN, ErrorCode::RegistrationClosed, "registration is closed"));
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
    if body.nickname.as_ref().is_some_and(|n| n.trim().is_empty() || !hark_protocol::valid_name_chars(n)) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, "nickname must be 1 to 64 characters, none of them control characters"));
    }
    let taken = || ApiError::new(StatusCode::CONFLICT, ErrorCode::UserExists, format!("'{}' is taken", body.user));
    // A taken id is refused before it costs a hash (the insert below still decides races), and
    // before it counts: clients that register on every start ("create if missing") meet 409s.
    if state.store.user_exists(&body.user).await.map_err(internal)? {
        return Err(taken());
    }
    // Each registration costs a password hash: each source address has its own budget, so one
    // stranger cannot spend everyone's.
    let source = source_of(peer.ip()).to_string();
    if let Err(wait_s) = state.registrations.take(&source, state.clock.now_ms()) {
        return Err(ApiError::rate_limited("too many registrations from your address; wait a minute", wait_s));
    }
    let hash = match state.passwords.hash(body.password.clone()).await {
        Ok(hash) => hash,
        Err(e) => {
            // Nothing was made: a client that comes back after `Retry-After` has not spent its
            // budget on being turned away.
            state.registrations.refund(&source);
            return Err(e.into());
        }
    };
    let now = state.clock.now_ms();
    if !state.store.create_user(&body.user, Some(&hash), body.nickname.as_deref(), now).await.map_err(internal)? {
        return Err(taken());
    }
    Ok((StatusCode::CREATED, Json(json!({"user": body.user}))))
}

#[derive(Deserialize)]
struct LoginBody {
    user: String,
    password: String,
}

async fn login(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    BoundedJson(body): BoundedJson<LoginBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let now = state.clock.now_ms();
    // Only real user ids get a bucket: any other string is refused before it can cost memory.
    if !valid_user_id(&body.user) {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::BadCredentials, "wrong user or password"));
    }
    // Two budgets, both keyed by where the attempt comes from: all attempts from a source (each
    // costs a hash, a decoy one for unknown ids), and failures for one id from a source. A
    // stranger hammering alice's password empties the stranger's buckets, never alice's own.
    let source = source_of(peer.ip()).to_string();
    if let Err(wait_s) = state.login_sources.take(&source, now) {
        return Err(ApiError::rate_limited("too many sign-in attempts from your address; wait a minute", wait_s));
    }
    let source_and_user = format!("{source} {}", body.user);
    if let Err(wait_s) = state.logins.take(&source_and_user, now) {
        return Err(ApiError::rate_limited("too many attempts; wait a minute", wait_s));
    }
    let stored = state.store.password_hash(&body.user).await.map_err(internal)?;
    let lane = if state.known_sources.contains(&source_and_user) { Lane::Known } else { Lane::Other };
    let matches = match state.passwords.verify(stored.clone().flatten(), body.password, lane).await {
        Ok(matches) => matches,
        Err(e) => {
            // Not a failed guess, nor an attempt: it never ran.
            state.logins.refund(&source_and_user);
            state.login_sources.refund(&source);
            return Err(e.into());
        }
    };
    if !matches || !matches!(stored, Some(Some(_))) {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::BadCredentials, "wrong user or password"));
    }
    state.logins.refund(&source_and_user);
    state.known_sources.insert(&source_and_user);
    let now_s = now.div_euclid(1000);
    let exp = now_s + state.config.token_ttl_s;
    let token = hark_protocol::token::mint_issued(&state.secret, &body.user, now_s, exp);
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

/// `ok`, or 503 with the reason when the database or (in a cluster) NATS does not answer.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let failing_since = state.metrics.records_failing_since_ms.load(std::sync::atomic::Ordering::Relaxed);
    let log_failing_since = state.metrics.log_failing_since_ms.load(std::sync::atomic::Ordering::Relaxed);
    let now = state.clock.now_ms();
    let log_broken = state.metrics.log_broken.load(std::sync::atomic::Ordering::Relaxed);
    let answer = match crate::health::log_failing(log_failing_since, now, log_broken) {
        Some(reason) => Err(reason),
        None => state.health.check(&state.store, failing_since, now).await,
    };
    match answer {
        Ok(()) => "ok".into_response(),
        Err(reason) => {
            warn!(%reason, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, reason).into_response()
        }
    }
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
