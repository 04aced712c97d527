//! hark-desktop: the Tauri v2 shell around the call engine.
//!
//! Thin by design: [`commands`] are one-line adapters onto the engine; [`session`] carries the
//! engine's events to the UI; [`windows`] decides how a call reaches the person; [`embedded`]
//! runs the built-in server and the echo service when no server is configured; [`store`] keeps
//! settings and the session on disk. Everything the UI sees is typed in [`api`], from which the
//! UI's TypeScript types are generated. Nothing below this crate knows Tauri.

pub mod api;
mod call_log;
mod commands;
pub mod embedded;
mod live;
mod session;
pub mod store;
mod windows;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hark_engine::engine::Engine;
use tauri::{Manager, RunEvent, WindowEvent};

use api::{Account, ApiError, AppInfo, IncomingCall, Settings, SignInRequest};
use store::{AppDirs, SavedSession};

/// Everything the commands share.
pub struct AppState {
    /// Where things are kept.
    pub dirs: AppDirs,
    settings: Mutex<Settings>,
    embedded: tokio::sync::Mutex<Option<embedded::EmbeddedServer>>,
    embedded_url: Mutex<Option<String>>,
    session: Arc<tokio::sync::Mutex<Option<session::Session>>>,
    /// The call ringing now, for the banner.
    pub incoming: Mutex<Option<IncomingCall>>,
    live: live::LiveOutlet,
    /// The ringing call for which the main window was made full screen, if any.
    fullscreen_call: Mutex<Option<String>>,
    /// The call going on, for windows that open in its middle.
    call_log: Mutex<call_log::CallLog>,
}

/// When `run` began, for the launch → contacts figure in the log.
static LAUNCHED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Logs, once, how long after launch the contacts were first sent to the UI
/// (`cargo xtask bench app` reads it).
fn note_contacts_shown() {
    static NOTED: AtomicBool = AtomicBool::new(false);
    if let Some(launched) = LAUNCHED.get() {
        if !NOTED.swap(true, Ordering::Relaxed) {
            tracing::info!(since_launch_ms = launched.elapsed().as_millis() as u64, "contacts listed");
        }
    }
}

/// Whether a password may be sent to `server`: over TLS, or plain HTTP to this machine only.
fn secure_or_loopback(server: &str) -> bool {
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

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl AppState {
    fn new(dirs: AppDirs) -> AppState {
        let settings = store::load_settings(&dirs);
        AppState {
            dirs,
            settings: Mutex::new(settings),
            embedded: tokio::sync::Mutex::new(None),
            embedded_url: Mutex::new(None),
            session: Arc::new(tokio::sync::Mutex::new(None)),
            incoming: Mutex::new(None),
            live: live::LiveOutlet::default(),
            fullscreen_call: Mutex::new(None),
            call_log: Mutex::new(call_log::CallLog::default()),
        }
    }

    /// The settings now.
    pub fn settings(&self) -> Settings {
        self.settings.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn embedded_url(&self) -> Option<String> {
        self.embedded_url.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records that the main window went full screen for this ringing call.
    fn set_fullscreen_call(&self, call_id: &str) {
        *self.fullscreen_call.lock().unwrap_or_else(|p| p.into_inner()) = Some(call_id.to_owned());
    }

    /// Whether the main window was made full screen for `call_id` (any call for `None`), forgetting it.
    fn take_fullscreen_call(&self, call_id: Option<&str>) -> bool {
        let mut fullscreen = self.fullscreen_call.lock().unwrap_or_else(|p| p.into_inner());
        if fullscreen.is_some() && (call_id.is_none() || fullscreen.as_deref() == call_id) {
            *fullscreen = None;
            return true;
        }
        false
    }

    /// The call log, locked (a panic elsewhere does not make it unreadable).
    fn call_log(&self) -> std::sync::MutexGuard<'_, call_log::CallLog> {
        self.call_log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Who is signed in.
    async fn account(&self) -> Option<Account> {
        self.session.lock().await.as_ref().map(|s| s.account.clone())
    }

    /// Mutes or unmutes the microphone and/or the call's sound. The engine and the call log
    /// change together, so quick toggles from two windows cannot leave them apart; the windows
    /// hear of it once the lock is let go.
    async fn set_mutes(&self, app: &tauri::AppHandle, microphone: Option<bool>, speaker: Option<bool>) -> Result<(), ApiError> {
        let engine = self.signed_in().await?;
        let mutes = {
            let mut log = self.call_log();
            if let Some(muted) = microphone {
                engine.mute_microphone(muted);
            }
            if let Some(muted) = speaker {
                engine.mute_speaker(muted);
            }
            log.set_mutes(microphone, speaker)
        };
        windows::announce_mutes(app, mutes);
        Ok(())
    }

    /// The engine, if signed in.
    async fn engine(&self) -> Option<Engine> {
        self.session.lock().await.as_ref().map(|s| s.engine.clone())
    }

    async fn signed_in(&self) -> Result<Engine, ApiError> {
        self.engine().await.ok_or_else(ApiError::not_signed_in)
    }

    async fn info(&self) -> AppInfo {
        // Waits for a sign-in under way (the remembered session at launch), so the UI shows
        // contacts rather than flashing the sign-in form.
        let account = self.account().await;
        AppInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            embedded_server: self.embedded_url(),
            account,
            last_user: store::last_user(&self.dirs),
            settings: self.settings(),
        }
    }

    fn server_for(&self, configured: Option<&str>) -> Result<(String, bool), ApiError> {
        match configured.map(str::trim).filter(|s| !s.is_empty()) {
            Some(server) if !secure_or_loopback(server) => {
                Err(ApiError::new("insecure_server", "a server on another machine must be reached over https://"))
            }
            Some(server) => Ok((server.trim_end_matches('/').to_owned(), false)),
            None => self.embedded_url().map(|url| (url, true)).ok_or_else(|| ApiError::new("unreachable", "the built-in server is not running")),
        }
    }

    async fn sign_in(&self, app: &tauri::AppHandle, request: SignInRequest) -> Result<Account, ApiError> {
        let (server, embedded) = self.server_for(request.server.as_deref())?;
        let mut slot = self.session.lock().await;
        if let Some(old) = slot.take() {
            old.engine.stop().await;
        }
        // A call of the session just stopped is no call of the next one.
        *self.call_log() = call_log::CallLog::default();
        let token = session::obtain_token(&server, &request.user, &request.password, request.register, request.nickname.as_deref()).await?;
        let mut session = session::start(app, &server, embedded, token.token.clone(), &self.settings()).await?;
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

    async fn sign_out(&self, app: &tauri::AppHandle) {
        if let Some(session) = self.session.lock().await.take() {
            end_session(session).await;
        }
        windows::incoming_over(app, None, false);
        *self.call_log() = call_log::CallLog::default();
        windows::close_mini(app);
        store::forget_session(&self.dirs);
    }

    async fn save_settings(&self, mut settings: Settings) -> Result<Settings, ApiError> {
        let before = self.settings();
        // The server changes only by signing in to it (which checks it answers).
        settings.server = before.server.clone();
        if settings.ringtone != before.ringtone {
            // A missing or undecodable file is refused here, with its code, and nothing is saved.
            session::check_ringtone(&settings.ringtone).await?;
        }
        store::save_settings(&self.dirs, &settings).map_err(|e| ApiError::new("settings_io", e.to_string()))?;
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = settings.clone();
        if let Some(engine) = self.engine().await {
            session::apply_settings(&engine, &settings).await;
            let microphone = (settings.microphone != before.microphone).then(|| settings.microphone.clone());
            let speaker = (settings.speaker != before.speaker).then(|| settings.speaker.clone());
            let (source, sink) = session::open_sound_cards(microphone, speaker).await;
            if let Some(source) = source {
                engine.set_microphone(source);
            }
            if let Some(sink) = sink {
                engine.set_speaker(sink);
            }
        }
        Ok(settings)
    }

    /// Ends the session and the built-in server (records of live calls are written).
    async fn shutdown(&self) {
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
async fn end_session(session: session::Session) {
    let in_call = session.engine.state().await.is_ok_and(|state| state != hark_engine::core::CallState::Idle);
    if in_call {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), session.engine.hangup()).await;
    }
    session.engine.stop().await;
}

/// Resumes the remembered session at launch, holding the session lock so that `app_info` waits.
async fn resume(app: tauri::AppHandle, mut slot: tokio::sync::OwnedMutexGuard<Option<session::Session>>) {
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
            if error.code == "unauthorized" || error.code == "token_expired" {
                store::forget_session(&state.dirs);
            }
        }
    }
}

fn init_logging(dirs: &AppDirs) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::prelude::*;
    let filter = || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,tao=warn,wry=warn".into());
    let logs = dirs.state.join("logs");
    // The appender prunes old files by listing the folder, which must exist first.
    let _ = std::fs::create_dir_all(&logs);
    let appender = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("hark")
        .filename_suffix("log")
        .max_log_files(7)
        .build(&logs);
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter());
    match appender {
        Ok(appender) => {
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let file = tracing_subscriber::fmt::layer().with_ansi(false).with_writer(writer).with_filter(filter());
            tracing_subscriber::registry().with(stderr).with(file).init();
            Some(guard)
        }
        Err(error) => {
            tracing_subscriber::registry().with(stderr).init();
            tracing::warn!(%error, path = %logs.display(), "no log file");
            None
        }
    }
}

/// GTK and WebKitGTK settings that cut the app's memory, chosen by measurement
/// (docs/BENCHMARKS.md, `cargo xtask bench app`): the UI is a few flat panels, so GPU buffer
/// sharing (DMA-BUF), accelerated compositing and GTK's own GL context buy nothing here and cost
/// tens of MiB each. Must run before GTK starts; a variable the user set wins, and
/// `HARK_WEBKIT_TUNING=0` turns all of it off.
pub fn tune_webkit() {
    if std::env::var("HARK_WEBKIT_TUNING").as_deref() == Ok("0") {
        return;
    }
    for (variable, value) in [("WEBKIT_DISABLE_DMABUF_RENDERER", "1"), ("WEBKIT_DISABLE_COMPOSITING_MODE", "1"), ("GDK_GL", "disable")] {
        if std::env::var_os(variable).is_none() {
            // Still single-threaded: nothing else reads the environment yet.
            std::env::set_var(variable, value);
        }
    }
    // Only when nothing in this process draws with GL: not when the user turned any of these
    // back on.
    let no_gl_here = std::env::var("WEBKIT_DISABLE_DMABUF_RENDERER").is_ok_and(|value| value != "0")
        && std::env::var("WEBKIT_DISABLE_COMPOSITING_MODE").is_ok_and(|value| value != "0")
        && std::env::var("GDK_GL").is_ok_and(|value| value == "disable");
    if no_gl_here {
        keep_egl_out_of_this_process();
    }
}

/// With the DMA-BUF renderer off, this process shows the web process's frames from shared
/// memory and never draws with EGL, yet WebKit opens an EGL display here anyway. Under Mesa that
/// loads the driver and, for llvmpipe (and radeonsi), all of LLVM: about 20 MiB of PSS for
/// nothing (docs/BENCHMARKS.md). The web process does need EGL (it aborts without it), so only
/// this process is kept from it: libglvnd reads `__EGL_VENDOR_LIBRARY_FILENAMES` once, at its
/// first call, so the variable is set, libEGL asked one harmless question, and the variable
/// removed before any WebKit process is started with this environment. Without libglvnd or
/// libEGL nothing changes.
fn keep_egl_out_of_this_process() {
    #[cfg(target_os = "linux")]
    {
        const VENDORS: &str = "__EGL_VENDOR_LIBRARY_FILENAMES";
        const EGL_EXTENSIONS: i32 = 0x3055;
        if std::env::var_os(VENDORS).is_some() {
            return;
        }
        // Still single-threaded: nothing else reads the environment yet.
        std::env::set_var(VENDORS, "/dev/null");
        // SAFETY: dlopen/dlsym with NUL-terminated names; `eglQueryString` has this C signature
        // and accepts EGL_NO_DISPLAY (a null pointer) for the client extensions.
        unsafe {
            let egl = libc::dlopen(c"libEGL.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
            if !egl.is_null() {
                let query = libc::dlsym(egl, c"eglQueryString".as_ptr());
                if !query.is_null() {
                    let query: extern "C" fn(*mut std::ffi::c_void, i32) -> *const std::ffi::c_char = std::mem::transmute(query);
                    query(std::ptr::null_mut(), EGL_EXTENSIONS);
                }
            }
        }
        std::env::remove_var(VENDORS);
    }
}

/// Fixes glibc's thresholds instead of letting them follow the program. By default, freeing one
/// large block (a decoded ringtone, a buffer in WebKit) raises the mmap threshold to its size and
/// the trim threshold to twice that, up to 64 MiB; a thread's arena then keeps that much free
/// memory at its top, and `malloc_trim` does not shrink other threads' arena tops. Measured: a
/// one-time 20 MiB that stayed in the app process from launch or the first ring
/// (docs/BENCHMARKS.md). With fixed thresholds, blocks over 256 KiB are mapped and unmapped on
/// their own and an arena gives back what lies free above 1 MiB.
fn bound_heap_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
    }
}

/// Hands freed heap back to the system every ten seconds. glibc keeps what threads free in
/// their arenas for reuse; with a GTK main loop, tokio workers, WebRTC and the built-in server
/// all allocating, that retained memory was about 40 MiB of the app process's PSS at idle
/// (docs/BENCHMARKS.md). A trim takes well under a millisecond.
fn trim_heap_periodically() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tauri::async_runtime::spawn(async {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; start trimming once the launch has settled.
        every.tick().await;
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        loop {
            // SAFETY: malloc_trim only walks and shrinks the allocator's own free lists.
            unsafe { libc::malloc_trim(0) };
            every.tick().await;
        }
    });
}

/// Makes the main window's WebKit cache for a single local document (no browsing history, no
/// page cache): the UI is one page served from the app itself.
fn trim_webkit_caches(app: &tauri::App) {
    #[cfg(target_os = "linux")]
    if std::env::var("HARK_WEBKIT_TUNING").as_deref() != Ok("0") {
        if let Some(main) = app.get_webview_window("main") {
            let _ = main.with_webview(|webview| {
                use webkit2gtk::{WebContextExt, WebViewExt};
                if let Some(context) = webview.inner().context() {
                    context.set_cache_model(webkit2gtk::CacheModel::DocumentViewer);
                }
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = app;
}

/// Runs the app until it quits.
pub fn run() {
    bound_heap_retention();
    let dirs = AppDirs::from_env();
    let _log = init_logging(&dirs);
    let launched = *LAUNCHED.get_or_init(std::time::Instant::now);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "hark-desktop starting");

    let app = tauri::Builder::default()
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| windows::show_main(app)))
        .plugin(tauri_plugin_notification::init())
        .plugin(tauri_plugin_dialog::init())
        .manage(AppState::new(dirs))
        .setup(move |app| {
            trim_webkit_caches(app);
            trim_heap_periodically();
            let handle = app.handle().clone();
            let state = app.state::<AppState>();
            // The built-in server starts before any window asks for it (a few ms: a socket
            // and a SQLite file); a configured server makes it unnecessary.
            if state.settings().server.is_none() {
                let data = state.dirs.data.join("server");
                match tauri::async_runtime::block_on(embedded::start(&data)) {
                    Ok(server) => {
                        *state.embedded_url.lock().unwrap_or_else(|p| p.into_inner()) = Some(server.url());
                        if let Ok(mut slot) = state.embedded.try_lock() {
                            *slot = Some(server);
                        }
                    }
                    Err(error) => tracing::error!(%error, "the built-in server did not start"),
                }
            }
            if let Ok(guard) = Arc::clone(&state.session).try_lock_owned() {
                tauri::async_runtime::spawn(resume(handle.clone(), guard));
            }
            if let Err(error) = windows::create_tray(&handle) {
                tracing::warn!(%error, "no tray icon");
            }
            tracing::info!(elapsed_ms = launched.elapsed().as_millis() as u64, "set up");
            Ok(())
        })
        .on_window_event(|window, event| {
            if window.label() != "main" {
                return;
            }
            match event {
                // Closing the main window with a tray to come back from lets the window go, and
                // with it the WebKit web process (about 100 MiB, docs/BENCHMARKS.md): the tray,
                // the banner or the mini window carry Hark until the tray's "Show" or an
                // answered call makes the window anew. Without a tray, closing quits.
                WindowEvent::Destroyed => windows::main_window_changed(window.app_handle()),
                // GTK reports minimising and restoring as a move and a resize.
                WindowEvent::Moved(_) | WindowEvent::Resized(_) | WindowEvent::Focused(true) => windows::main_window_changed(window.app_handle()),
                _ => {}
            }
        })
        .invoke_handler(tauri::generate_handler![
            commands::app_info,
            commands::call_replay,
            commands::show_main,
            commands::sign_in,
            commands::sign_out,
            commands::set_profile,
            commands::contacts,
            commands::add_contact,
            commands::remove_contact,
            commands::profiles,
            commands::place_call,
            commands::accept_call,
            commands::reject_call,
            commands::hang_up,
            commands::invite_more,
            commands::join_call,
            commands::incoming_call,
            commands::active_calls,
            commands::history,
            commands::delete_history,
            commands::clear_history,
            commands::mute_microphone,
            commands::mute_speaker,
            commands::devices,
            commands::play_test_sound,
            commands::watch_live,
            commands::microphone_meter,
            commands::settings,
            commands::save_settings,
            commands::ringtones,
            commands::choose_ringtone_file,
            commands::preview_ringtone,
            commands::stop_preview,
        ])
        .build(tauri::generate_context!());
    let app = match app {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(%error, "could not start the app");
            eprintln!("hark-desktop: {error}");
            std::process::exit(1);
        }
    };
    app.run(|handle, event| {
        // The last window closed (not the tray's Quit, which gives a code): Hark stays in the
        // tray, reachable for calls.
        if let RunEvent::ExitRequested { code: None, api, .. } = &event {
            if windows::lives_in_tray(handle) {
                api.prevent_exit();
                return;
            }
        }
        if let RunEvent::ExitRequested { .. } = event {
            let state = handle.state::<AppState>();
            tauri::async_runtime::block_on(state.shutdown());
        }
    });
}

#[cfg(test)]
mod bindings {
    //! The UI's TypeScript types, generated from the Rust types. `HARK_WRITE_BINDINGS=1 cargo
    //! test -p hark-desktop bindings` rewrites `ui/src/lib/bindings/`; without it the test fails
    //! when the committed files differ from what the Rust types say.

    use std::path::{Path, PathBuf};
    use ts_rs::TS;

    fn export_all(dir: &Path) {
        macro_rules! export {
            ($($t:ty),* $(,)?) => { $( <$t>::export_all_to(dir).unwrap(); )* };
        }
        export!(
            crate::api::ApiError,
            crate::api::SignInRequest,
            crate::api::Account,
            crate::api::AppInfo,
            crate::api::Settings,
            crate::api::IncomingCall,
            crate::api::CallReplay,
            crate::api::Mutes,
            crate::api::RingtoneOption,
            crate::api::LiveUpdate,
            hark_engine::engine::EngineEvent,
            hark_engine::sound_card::DeviceInfo,
            hark_protocol::CallRecord,
            hark_protocol::CallSummary,
            hark_protocol::Contact,
            hark_protocol::UserProfile,
        );
        // serde_json writes i64/u64 as JSON numbers (every value here is far below 2^53), but
        // ts-rs types them `bigint`, which `JSON.parse` never produces.
        for (name, text) in files(dir) {
            if text.contains("bigint") {
                std::fs::write(dir.join(name), text.replace("bigint", "number")).unwrap();
            }
        }
    }

    fn files(dir: &Path) -> Vec<(String, String)> {
        let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    #[test]
    fn bindings_are_current() {
        let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ui/src/lib/bindings");
        if std::env::var_os("HARK_WRITE_BINDINGS").is_some() {
            let _ = std::fs::remove_dir_all(&committed);
            export_all(&committed);
            return;
        }
        let fresh = tempfile::tempdir().unwrap();
        export_all(fresh.path());
        assert_eq!(files(&committed), files(fresh.path()), "ui/src/lib/bindings is stale: run HARK_WRITE_BINDINGS=1 cargo test -p hark-desktop bindings");
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
