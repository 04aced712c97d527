//! What the commands share: the settings, the session and its engine, the built-in server, the
//! ringing and going-on call for windows that open late, and signing in and out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hark_engine::call_log::CallSnapshot;
use hark_engine::engine::Engine;
use hark_protocol::ErrorCode;
use tauri::Manager;

use crate::api::{Account, ApiCode, ApiError, AppErrorCode, AppInfo, IncomingCall, Policy, Settings, SignInRequest};
use crate::store::{self, AppDirs, SavedSession};
use crate::{embedded, live, policy, session, windows};

/// Everything the commands share.
pub struct AppState {
    /// Where things are kept.
    pub dirs: AppDirs,
    /// The administrator's policy, read at launch.
    pub(crate) policy: Policy,
    pub(crate) settings: Mutex<Settings>,
    pub(crate) embedded: tokio::sync::Mutex<Option<embedded::EmbeddedServer>>,
    pub(crate) embedded_url: Mutex<Option<String>>,
    pub(crate) session: Arc<tokio::sync::Mutex<Option<session::Session>>>,
    /// The call ringing now, for the banner.
    pub incoming: Mutex<Option<IncomingCall>>,
    pub(crate) live: live::LiveOutlet,
    /// The ringing call for which the main window was made full screen, if any.
    pub(crate) fullscreen_call: Mutex<Option<String>>,
    /// The frame socket and the tiles the engine's pictures go to.
    pub(crate) video: crate::video::AppVideo,
    /// The `hark:` link the app was opened with, until the main window takes it.
    pub(crate) link: Mutex<Option<crate::api::OpenedLink>>,
}

/// When `run` began, for the launch → contacts figure in the log.
pub(crate) static LAUNCHED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Logs, once, how long after launch the contacts were first sent to the UI
/// (`cargo xtask bench app` reads it).
pub(crate) fn note_contacts_shown() {
    static NOTED: AtomicBool = AtomicBool::new(false);
    if let Some(launched) = LAUNCHED.get() {
        if !NOTED.swap(true, Ordering::Relaxed) {
            tracing::info!(since_launch_ms = launched.elapsed().as_millis() as u64, "contacts listed");
        }
    }
}

/// Whether a password may be sent to `server`: over TLS, or plain HTTP to this machine only.
pub(crate) fn secure_or_loopback(server: &str) -> bool {
    if server.starts_with("https://") {
        return true;
    }
    let Some(rest) = server.strip_prefix("http://") else { return false };
    let host = rest.split('/').next().unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(host, _)| host),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl AppState {
    pub(crate) fn new(dirs: AppDirs, video: crate::video::AppVideo) -> AppState {
        // Read once, at launch: a changed policy takes effect when Hark next starts.
        let policy = policy::read(&policy::file(), store::saved_server(&dirs).as_deref());
        if let Some(file) = &policy.file {
            tracing::info!(file, video = policy.video, invite_more = policy.invite_more, relay_only = policy.relay_only, custom_ringtones = policy.custom_ringtones, server_locked = policy.server_locked, builtin_server = policy.builtin_server, incoming_locked = policy.incoming_locked, "the administrator's policy");
        }
        for problem in &policy.problems {
            tracing::error!(problem, "the administrator's policy file is broken; that part is read at its safest");
        }
        let mut settings = store::load_settings(&dirs, policy.default_settings());
        policy.clamp(&mut settings);
        AppState {
            dirs,
            policy,
            settings: Mutex::new(settings),
            embedded: tokio::sync::Mutex::new(None),
            embedded_url: Mutex::new(None),
            session: Arc::new(tokio::sync::Mutex::new(None)),
            incoming: Mutex::new(None),
            live: live::LiveOutlet::default(),
            fullscreen_call: Mutex::new(None),
            video,
            link: Mutex::new(None),
        }
    }

    /// Keeps a `hark:` link (from `source`, for the log; the people stay out of it) until the
    /// main window takes it; a newer link replaces one not taken yet.
    pub(crate) fn hold_link(&self, link: crate::api::OpenedLink, source: &str) {
        tracing::info!(kind = link.kind(), source, "a hark: link came");
        *self.link.lock().unwrap_or_else(|p| p.into_inner()) = Some(link);
    }

    /// The settings now.
    pub fn settings(&self) -> Settings {
        self.settings.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn embedded_url(&self) -> Option<String> {
        self.embedded_url.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records that the main window went full screen for this ringing call.
    pub(crate) fn set_fullscreen_call(&self, call_id: &str) {
        *self.fullscreen_call.lock().unwrap_or_else(|p| p.into_inner()) = Some(call_id.to_owned());
    }

    /// Whether the main window was made full screen for `call_id` (any call for `None`), forgetting it.
    pub(crate) fn take_fullscreen_call(&self, call_id: Option<&str>) -> bool {
        let mut fullscreen = self.fullscreen_call.lock().unwrap_or_else(|p| p.into_inner());
        if fullscreen.is_some() && (call_id.is_none() || fullscreen.as_deref() == call_id) {
            *fullscreen = None;
            return true;
        }
        false
    }

    /// Who is signed in.
    pub(crate) async fn account(&self) -> Option<Account> {
        self.session.lock().await.as_ref().map(|s| s.account.clone())
    }

    /// Whether a call we placed or answered goes on (what the call view, or the mini window in
    /// its stead, shows), read without waiting: `false` while a sign-in holds the session.
    pub(crate) fn call_shown_now(&self) -> bool {
        self.call_now().is_some_and(|call| call.placed_or_answered)
    }

    /// The call going on, read without waiting: `None` signed out or while a sign-in holds the
    /// session.
    pub(crate) fn call_now(&self) -> Option<CallSnapshot> {
        self.session.try_lock().ok().and_then(|slot| slot.as_ref().map(|session| session.engine.call_snapshot()))
    }

    /// The call going on now (none when signed out), as the engine records it.
    pub(crate) async fn call_snapshot(&self) -> CallSnapshot {
        self.engine().await.map(|engine| engine.call_snapshot()).unwrap_or_default()
    }

    /// The engine, if signed in.
    pub(crate) async fn engine(&self) -> Option<Engine> {
        self.session.lock().await.as_ref().map(|s| s.engine.clone())
    }

    pub(crate) async fn signed_in(&self) -> Result<Engine, ApiError> {
        self.engine().await.ok_or_else(ApiError::not_signed_in)
    }

    pub(crate) async fn info(&self) -> AppInfo {
        // Waits for a sign-in under way (the remembered session at launch), so the UI shows
        // contacts rather than flashing the sign-in form.
        let account = self.account().await;
        AppInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            embedded_server: self.embedded_url(),
            account,
            last_user: store::last_user(&self.dirs),
            settings: self.settings(),
            policy: self.policy.clone(),
        }
    }

    pub(crate) fn server_for(&self, configured: Option<&str>) -> Result<(String, bool), ApiError> {
        let configured = configured.map(str::trim).filter(|s| !s.is_empty());
        self.policy.check_server(configured)?;
        match configured {
            Some(server) if !secure_or_loopback(server) => {
                Err(ApiError::new(AppErrorCode::InsecureServer, "a server on another machine must be reached over https://"))
            }
            Some(server) => Ok((server.trim_end_matches('/').to_owned(), false)),
            None => self.embedded_url().map(|url| (url, true)).ok_or_else(|| ApiError::new(AppErrorCode::Unreachable, "the built-in server is not running")),
        }
    }

    pub(crate) async fn sign_in(&self, app: &tauri::AppHandle, request: SignInRequest) -> Result<Account, ApiError> {
        let (server, embedded) = self.server_for(request.server.as_deref())?;
        let mut slot = self.session.lock().await;
        if let Some(old) = slot.take() {
            old.engine.stop().await;
        }
        let mut chosen = self.settings();
        if let Some(proxy) = &request.proxy {
            chosen.proxy = proxy.trim().to_owned();
        }
        let proxy = session::proxy_setting(embedded, &chosen);
        let token = session::obtain_token(&server, &proxy, &request.user, &request.password, request.register, request.nickname.as_deref()).await?;
        let mut session = session::start(app, &server, embedded, token.token.clone(), &chosen).await?;
        if request.nickname.is_some() || request.avatar.is_some() {
            // The account exists and is signed in by now: a refused profile (an avatar over the
            // server's limit, say) must not leave a running engine behind a failed sign-in.
            match session.engine.set_profile(request.nickname.clone(), request.avatar.clone()).await {
                Ok(()) => {
                    if let Some(nickname) = request.nickname {
                        session.account.nickname = nickname;
                    }
                    session.account.avatar = request.avatar.or(session.account.avatar);
                }
                Err(error) => tracing::warn!(%error, "signed in, but the profile was refused"),
            }
        }
        let saved = SavedSession { server: (!embedded).then(|| server.clone()), user: session.account.user.clone(), token: token.token, expires_at: token.expires_at };
        if let Err(error) = store::save_session(&self.dirs, &saved) {
            tracing::warn!(%error, "could not remember the session");
        }
        store::save_last_user(&self.dirs, &session.account.user);
        let settings = {
            let mut settings = self.settings.lock().unwrap_or_else(|p| p.into_inner());
            settings.server = saved.server.clone();
            settings.proxy = chosen.proxy.clone();
            settings.clone()
        };
        // The server chosen at sign-in is the one the next launch uses (and whether the
        // built-in server starts at all).
        if let Err(error) = store::save_settings(&self.dirs, &settings) {
            tracing::warn!(%error, "could not save the server choice");
        }
        let account = session.account.clone();
        *slot = Some(session);
        tracing::info!(user = %account.user, server = %account.server, "signed in");
        Ok(account)
    }

    pub(crate) async fn sign_out(&self, app: &tauri::AppHandle) {
        if let Some(session) = self.session.lock().await.take() {
            end_session(session).await;
        }
        windows::incoming_over(app, None, false);
        windows::close_mini(app);
        store::forget_session(&self.dirs);
    }

    pub(crate) async fn save_settings(&self, mut settings: Settings) -> Result<Settings, ApiError> {
        let before = self.settings();
        // The server and the proxy to it change only by signing in (which checks they answer).
        settings.server = before.server.clone();
        settings.proxy = before.proxy.clone();
        self.policy.check_change(&before, &settings)?;
        if settings.ringtone != before.ringtone {
            // A missing or undecodable file is refused here, with its code, and nothing is saved.
            session::check_ringtone(&settings.ringtone).await?;
        }
        if settings.tel_links != before.tel_links {
            self.apply_tel_links(settings.tel_links).map_err(|e| ApiError::new(AppErrorCode::SettingsIo, format!("the tel: link handler: {e}")))?;
        }
        if settings.start_at_login != before.start_at_login {
            // Before the settings are saved: an entry that cannot be written leaves both as they were.
            crate::autostart::apply_for_this_program(&self.dirs.config, settings.start_at_login)
                .map_err(|e| ApiError::new(AppErrorCode::SettingsIo, format!("the autostart entry: {e}")))?;
        }
        store::save_settings(&self.dirs, &settings).map_err(|e| ApiError::new(AppErrorCode::SettingsIo, e.to_string()))?;
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = settings.clone();
        if let Some(engine) = self.engine().await {
            session::apply_settings(&engine, &settings).await;
            let microphone = (settings.microphone != before.microphone).then(|| settings.microphone.clone());
            let speaker = (settings.speaker != before.speaker).then(|| settings.speaker.clone());
            let (source, sink) = crate::sound_cards::open_sound_cards(microphone, speaker).await;
            if let Some(source) = source {
                engine.set_microphone(source);
            }
            if let Some(sink) = sink {
                engine.set_speaker(sink);
            }
            if engine.call_snapshot().events.is_empty() {
                session::between_calls_changed(&engine, &before, &settings).await;
            }
            if settings.video_resolution != before.video_resolution {
                // Read when the camera next opens, and by the next call: a running camera goes on.
                *self.video.resolution.lock().unwrap_or_else(|p| p.into_inner()) = settings.video_resolution;
                engine.set_video_resolution(settings.video_resolution);
            }
            if settings.camera != before.camera {
                engine.set_camera_device(crate::video::camera_opener(&self.video, &settings));
            }
        }
        Ok(settings)
    }

    /// Makes this binary the user's `tel:` handler, or gives the links back.
    pub(crate) fn apply_tel_links(&self, on: bool) -> std::io::Result<()> {
        let places = crate::tel_links::TelPlaces::for_dirs(&self.dirs.config, &self.dirs.data);
        crate::tel_links::apply(&places, &std::env::current_exe()?, on)
    }

    /// Ends the session and the built-in server (records of live calls are written).
    pub(crate) async fn shutdown(&self) {
        if let Some(session) = self.session.lock().await.take() {
            end_session(session).await;
        }
        if let Some(server) = self.embedded.lock().await.take() {
            server.shutdown().await;
        }
    }
}

/// Leaves any call properly (so the other side is not left in a silent call until the server's
/// reconnect grace runs out), then stops the engine.
pub(crate) async fn end_session(session: session::Session) {
    let in_call = session.engine.state().await.is_ok_and(|state| state != hark_engine::core::CallState::Idle);
    if in_call {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), session.engine.hangup()).await;
    }
    session.engine.stop().await;
}

/// Resumes the remembered session at launch, holding the session lock so that `app_info` waits.
pub(crate) async fn resume(app: tauri::AppHandle, mut slot: tokio::sync::OwnedMutexGuard<Option<session::Session>>) {
    let state = app.state::<AppState>();
    let Some(saved) = store::load_session(&state.dirs, now_ms()) else { return };
    let Ok((server, embedded)) = state.server_for(saved.server.as_deref()) else { return };
    match session::start(&app, &server, embedded, saved.token, &state.settings()).await {
        Ok(session) => {
            tracing::info!(user = %session.account.user, "resumed the remembered session");
            *slot = Some(session);
        }
        Err(error) => {
            tracing::info!(code = %error.code, "the remembered session was refused; signing in again");
            if matches!(error.code, ApiCode::Server(ErrorCode::Unauthorized | ErrorCode::TokenExpired)) {
                store::forget_session(&state.dirs);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::secure_or_loopback;

    #[test]
    fn passwords_go_over_tls_or_stay_on_this_machine() {
        for ok in ["https://hark.example.org", "https://10.0.0.2:7600", "http://127.0.0.1:7600", "http://localhost:7600/", "http://[::1]:7600", "http://127.0.0.2"] {
            assert!(secure_or_loopback(ok), "{ok}");
        }
        for refused in ["http://hark.example.org", "http://10.0.0.2:7600", "http://127.0.0.1.evil.example:80", "ftp://127.0.0.1", "hark.example.org"] {
            assert!(!secure_or_loopback(refused), "{refused}");
        }
    }
}
