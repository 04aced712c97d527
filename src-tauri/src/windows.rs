//! Windows, tray and notifications: how a call reaches the person.
//!
//! Which windows live when was decided by measurement (docs/BENCHMARKS.md). A webview window of
//! its own costs a WebKit web process of about 100 MiB, so the call view lives in the `main`
//! window, and the two small windows exist only while needed and share the main window's web
//! process (WebKit's related views) instead of starting their own:
//! - the `incoming` banner, while a call rings: created on the incoming call, closed when the
//!   ring ends. Small, undecorated, always on top, in the screen's top-right corner; with
//!   full-screen incoming chosen, the main window takes the screen instead (and gives it back
//!   when that call is over);
//! - the `mini` window, while a call goes on and the main window is minimised or closed to the
//!   tray: the other person, the timer, mute and hang up, floating in the bottom-right corner;
//!   a click on it brings the call view back.
//!
//! Both ask the shell what is going on when they open, so it does not matter that the event
//! that opened them went by before their page listened.
//!
//! Closing the main window with a tray to come back to lets it go, web process and all: a
//! softphone spends most of its life waiting in the tray, and there it costs about 100 MiB less.
//! The tray's "Show", a second launch, the mini window or an answered call make it anew; its
//! page replays a call in progress. A desktop notification goes out when the main window is
//! hidden; failing to notify is logged, never fatal. The tray carries the status and a menu,
//! since Linux trays give no clicks.

use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Emitter, Manager, WebviewUrl, WebviewWindowBuilder, Wry};
use tauri_plugin_notification::NotificationExt;

use crate::api::{IncomingCall, IncomingPresentation};
use hark_engine::call_log::Mutes;
use crate::AppState;
use hark_engine::core::CallEvent;
use hark_engine::engine::EngineEvent;

/// The banner's label (its capability set allows only what a banner needs).
pub const BANNER: &str = "incoming";
/// The floating mini window's label (its capability set: follow the call, mute, hang up).
pub const MINI: &str = "mini";
const TRAY_ID: &str = "hark";

/// Shows a ringing call the way the settings say.
pub fn present_incoming(app: &AppHandle, incoming: IncomingCall) {
    let state = app.state::<AppState>();
    let presentation = state.settings().incoming;
    let caller = incoming.caller_name.clone();
    let call_id = incoming.call_id.clone();
    *state.incoming.lock().unwrap_or_else(|p| p.into_inner()) = Some(incoming);
    set_tray_status(app, &format!("Incoming call from {caller}"));
    let main = app.get_webview_window("main");
    let main_visible = main.as_ref().and_then(|w| w.is_visible().ok()).unwrap_or(false);
    match presentation {
        IncomingPresentation::Banner => open_banner(app),
        IncomingPresentation::FullScreen => on_main_thread(app, move |app| {
            if let Some(main) = main_window(app) {
                let _ = main.show();
                let _ = main.unminimize();
                // Only a window we made full screen is given back when the ring ends (not one
                // the user had put there with F11).
                if !main.is_fullscreen().unwrap_or(false) {
                    match main.set_fullscreen(true) {
                        Ok(()) => app.state::<AppState>().set_fullscreen_call(&call_id),
                        Err(error) => tracing::warn!(%error, "could not make the main window full screen"),
                    }
                }
                let _ = main.set_focus();
            }
        }),
    }
    if !main_visible {
        let shown = app.notification().builder().title("Hark: incoming call").body(format!("{caller} is calling")).show();
        if let Err(error) = shown {
            tracing::warn!(%error, "could not show a notification");
        }
    }
}

/// The ring of `call_id` is over (answered, declined, cancelled, missed): the banner goes; a
/// main window made full screen for the ring stays so only if the call connected. News about
/// another call (a late end of the previous one while a new one rings) changes nothing; `None`
/// ends whatever rings (signing out).
pub fn incoming_over(app: &AppHandle, call_id: Option<&str>, connected: bool) {
    let state = app.state::<AppState>();
    let was_ringing = {
        let mut incoming = state.incoming.lock().unwrap_or_else(|p| p.into_inner());
        let ringing = incoming.as_ref().map(|call| call.call_id.clone());
        let matches = ringing.is_some() && (call_id.is_none() || ringing.as_deref() == call_id);
        if matches {
            *incoming = None;
        }
        matches
    };
    if was_ringing {
        if let Some(banner) = app.get_webview_window(BANNER) {
            if let Err(error) = banner.destroy() {
                tracing::warn!(%error, "could not close the banner");
            }
        }
        if connected {
            // Answered (from the banner, the tray or the window): bring the call view forward.
            show_main(app);
        }
    }
    // Full screen taken for a ring is given back when that call is over, or never connected.
    if !connected && state.take_fullscreen_call(call_id) {
        if let Some(main) = app.get_webview_window("main") {
            let _ = main.set_fullscreen(false);
        }
    }
}

fn open_banner(app: &AppHandle) {
    if let Some(banner) = app.get_webview_window(BANNER) {
        // A new call while one still rings here: the banner asks again on this event.
        let _ = banner.show();
        return;
    }
    open_floating(app, &BANNER_WINDOW);
}

/// The main window was minimised, restored, hidden or shown: a call going on while the call
/// view is out of sight floats as the mini window, which goes when the call view is back.
pub fn main_window_changed(app: &AppHandle) {
    let out_of_sight = match app.get_webview_window("main") {
        Some(main) => main.is_minimized().unwrap_or(false) || !main.is_visible().unwrap_or(true),
        // Closed to the tray; without a tray, closed means quitting, and nothing may hold it up.
        None if lives_in_tray(app) => true,
        None => false,
    };
    let call_shown = app.state::<AppState>().call_shown_now();
    if !(out_of_sight && call_shown) {
        close_mini(app);
    } else if app.get_webview_window(MINI).is_none() {
        tracing::info!("call view out of sight: opening the mini window");
        // A video call's mini window shows the other person's picture above the controls.
        let video = app.state::<AppState>().call_now().is_some_and(|call| call.is_video());
        open_floating(app, if video { &MINI_VIDEO_WINDOW } else { &MINI_WINDOW });
    }
}

/// The call changed media while the mini window is open: it takes the size of what it now
/// shows (a video call gone to audio loses its picture), its bottom edge where it was, so a
/// window the person dragged stays there.
pub fn fit_mini(app: &AppHandle, video: bool) {
    on_main_thread(app, move |app| {
        let Some(mini) = app.get_webview_window(MINI) else { return };
        let wanted = if video { &MINI_VIDEO_WINDOW } else { &MINI_WINDOW };
        let scale = mini.scale_factor().unwrap_or(1.0);
        let Ok(size) = mini.inner_size() else { return };
        let height = size.to_logical::<f64>(scale).height;
        if (height - wanted.height).abs() < 1.0 {
            return;
        }
        tracing::info!(video, "fitting the mini window to the call's media");
        let size = tauri::LogicalSize::new(wanted.width, wanted.height);
        let position = mini.outer_position().map(|at| at.to_logical::<f64>(scale));
        // The bound that moves away first, so that the minimum never exceeds the maximum.
        let bounds = if wanted.height > height {
            mini.set_max_size(Some(size)).and_then(|()| mini.set_min_size(Some(size)))
        } else {
            mini.set_min_size(Some(size)).and_then(|()| mini.set_max_size(Some(size)))
        };
        let resized = bounds.and_then(|()| mini.set_size(size));
        let moved = position.and_then(|at| mini.set_position(tauri::LogicalPosition::new(at.x, at.y + height - wanted.height)));
        if let Err(error) = resized.and(moved) {
            tracing::warn!(%error, "could not fit the mini window");
        }
    });
}

/// Closes the mini window, if open (the call view is back, or the call is over).
pub fn close_mini(app: &AppHandle) {
    if let Some(mini) = app.get_webview_window(MINI) {
        tracing::info!("closing the mini window");
        if let Err(error) = mini.destroy() {
            tracing::warn!(%error, "could not close the mini window");
        }
    }
}

/// Tells every window the mutes changed (one window's button, the others' view).
pub fn announce_mutes(app: &AppHandle, mutes: Mutes) {
    if let Err(error) = app.emit("mutes", mutes) {
        tracing::warn!(%error, "could not announce the mutes");
    }
}

/// A small undecorated window floating over everything in a corner of the screen.
struct Floating {
    label: &'static str,
    title: &'static str,
    width: f64,
    height: f64,
    corner: Corner,
    margin: f64,
}

#[derive(Clone, Copy)]
enum Corner {
    TopRight,
    BottomRight,
}

const BANNER_WINDOW: Floating = Floating { label: BANNER, title: "Incoming call", width: 360.0, height: 124.0, corner: Corner::TopRight, margin: 16.0 };
const MINI_WINDOW: Floating = Floating { label: MINI, title: "Hark call", width: 300.0, height: 84.0, corner: Corner::BottomRight, margin: 24.0 };
/// The same with a 16:9 picture above the controls.
const MINI_VIDEO_WINDOW: Floating = Floating { height: 84.0 + 169.0, ..MINI_WINDOW };

type Builder<'a> = WebviewWindowBuilder<'a, Wry, AppHandle>;

/// Opens a floating window running the UI's page, as a related view of the main window's
/// webview so that it lives in the main window's web process: about 100 MiB less than a process
/// of its own (docs/BENCHMARKS.md). Without a main window it gets its own process. The window is
/// made on the main thread, where the main webview can be reached; the page asks the shell what
/// to show, so the moment it appears does not matter.
fn open_floating(app: &AppHandle, window: &'static Floating) {
    // On the main thread, where the main webview is looked up and reached in one go: from
    // another thread the build would be queued behind a main window that may be gone by then.
    on_main_thread(app, move |app| {
        let (x, y) = corner_position(app, window);
        let builder = describe(WebviewWindowBuilder::new(app, window.label, WebviewUrl::App("index.html".into())), window, x, y);
        #[cfg(target_os = "linux")]
        let builder = match app.get_webview_window("main").filter(|_| share_web_process()).and_then(|main| main_webkit_view(&main)) {
            Some(view) => builder.with_related_view(view),
            None => builder,
        };
        if let Err(error) = builder.build() {
            tracing::error!(%error, label = window.label, "could not open a window");
        }
    });
}

#[cfg(target_os = "linux")]
thread_local! {
    /// The main window's WebKit view, handed out of [`main_webkit_view`]'s callback (main thread only).
    static HANDED_OUT: std::cell::RefCell<Option<webkit2gtk::WebView>> = const { std::cell::RefCell::new(None) };
}

/// The main window's WebKit view, for a new window to share its web process. Main thread only.
///
/// Only taken out here, never used inside `with_webview`'s callback: on the main thread Tauri runs
/// that callback while holding the main window's id lock, and building a window there waits for
/// Tauri's webview list, which an `emit` on another thread holds while it waits for that id lock
/// (a deadlock seen in the end-to-end test, with an event emitted as the banner opened).
#[cfg(target_os = "linux")]
fn main_webkit_view(main: &tauri::WebviewWindow) -> Option<webkit2gtk::WebView> {
    let asked = main.with_webview(|webview| HANDED_OUT.with(|slot| *slot.borrow_mut() = Some(webview.inner())));
    if let Err(error) = asked {
        tracing::warn!(%error, "could not reach the main webview; the window gets a web process of its own");
    }
    // The callback ran already: on the main thread Tauri runs it in place.
    HANDED_OUT.with(|slot| slot.borrow_mut().take())
}

/// Runs `work` on the main (GTK) thread: at once when called there, queued otherwise. Window
/// creation goes through here, so two threads can never both find "no main window" and make one.
fn on_main_thread(app: &AppHandle, work: impl FnOnce(&AppHandle) + Send + 'static) {
    let handle = app.clone();
    if let Err(error) = app.run_on_main_thread(move || work(&handle)) {
        tracing::error!(%error, "could not reach the main thread");
    }
}

fn describe<'a>(builder: Builder<'a>, window: &Floating, x: f64, y: f64) -> Builder<'a> {
    builder
        .title(window.title)
        .inner_size(window.width, window.height)
        // Not `resizable(false)`: on Linux that forces at least 200 px of height (tao#561).
        .min_inner_size(window.width, window.height)
        .max_inner_size(window.width, window.height)
        .position(x, y)
        .decorations(false)
        .always_on_top(true)
        .skip_taskbar(true)
        .visible_on_all_workspaces(true)
        // Never take the keyboard from what the person is typing into: Enter or Escape meant
        // for another app must not answer or decline a call. A click (or the tray) does.
        .focused(false)
}

/// Whether floating windows share the main window's web process: yes, unless
/// `HARK_RELATED_VIEWS=0` (for `cargo xtask bench app` to measure what sharing saves).
fn share_web_process() -> bool {
    std::env::var("HARK_RELATED_VIEWS").map_or(true, |value| value != "0")
}

/// Where `window` sits in its corner of the primary monitor, in logical pixels.
fn corner_position(app: &AppHandle, window: &Floating) -> (f64, f64) {
    let monitor = app.primary_monitor().ok().flatten();
    match monitor {
        Some(monitor) => {
            let scale = monitor.scale_factor();
            let origin_x = f64::from(monitor.position().x) / scale;
            let origin_y = f64::from(monitor.position().y) / scale;
            let x = origin_x + f64::from(monitor.size().width) / scale - window.width - window.margin;
            match window.corner {
                Corner::TopRight => (x, origin_y + window.margin),
                Corner::BottomRight => (x, origin_y + f64::from(monitor.size().height) / scale - window.height - window.margin),
            }
        }
        None => (window.margin, window.margin),
    }
}

/// Keeps the tray's status line in step with the call.
pub fn on_call_event(app: &AppHandle, event: &EngineEvent) {
    let status = match event {
        EngineEvent::Call(CallEvent::Dialing { invitees, .. }) => format!("Calling {}", invitees.join(", ")),
        EngineEvent::Call(CallEvent::CallBegan { .. }) => "In a call".to_owned(),
        EngineEvent::Call(CallEvent::CallEnded { .. } | CallEvent::NotConnected { .. }) => "Available".to_owned(),
        EngineEvent::SignalingLost { .. } => "Reconnecting…".to_owned(),
        EngineEvent::SignedIn { .. } => "Available".to_owned(),
        _ => return,
    };
    set_tray_status(app, &status);
}

fn set_tray_status(app: &AppHandle, status: &str) {
    if let Some(tray) = app.tray_by_id(TRAY_ID) {
        let _ = tray.set_tooltip(Some(format!("Hark — {status}")));
        let _ = tray.set_title(Some(status));
    }
}

/// Puts the tray icon up. Without a tray host (a bare X server) this fails quietly.
pub fn create_tray(app: &AppHandle) -> tauri::Result<()> {
    let show = MenuItem::with_id(app, "show", "Show Hark", true, None::<&str>)?;
    let answer = MenuItem::with_id(app, "answer", "Answer", true, None::<&str>)?;
    let decline = MenuItem::with_id(app, "decline", "Decline", true, None::<&str>)?;
    let hang_up = MenuItem::with_id(app, "hang_up", "Hang up", true, None::<&str>)?;
    let quit = MenuItem::with_id(app, "quit", "Quit Hark", true, None::<&str>)?;
    let separator = PredefinedMenuItem::separator(app)?;
    let menu = Menu::with_items(app, &[&show, &answer, &decline, &hang_up, &separator, &quit])?;
    let mut tray = TrayIconBuilder::with_id(TRAY_ID).menu(&menu).tooltip("Hark — Available").on_menu_event(|app, event| {
        let app = app.clone();
        let action = event.id().as_ref().to_owned();
        tauri::async_runtime::spawn(async move { tray_action(&app, &action).await });
    });
    if let Some(icon) = app.default_window_icon() {
        tray = tray.icon(icon.clone());
    }
    tray.build(app)?;
    Ok(())
}

async fn tray_action(app: &AppHandle, action: &str) {
    if action == "show" {
        show_main(app);
        return;
    }
    if action == "quit" {
        app.state::<AppState>().shutdown().await;
        app.exit(0);
        return;
    }
    let Some(engine) = app.state::<AppState>().engine().await else { return };
    let outcome = match action {
        "answer" => engine.accept().await,
        "decline" => engine.reject().await,
        "hang_up" => engine.hangup().await,
        _ => Ok(()),
    };
    if let Err(error) = outcome {
        tracing::info!(action, %error, "tray action refused");
    }
}

/// Whether closing the main window leaves Hark running in the tray: there is a tray, and
/// `HARK_QUIT_ON_CLOSE` is not set (the end-to-end tests set it: Xvfb has no tray host).
pub fn lives_in_tray(app: &AppHandle) -> bool {
    app.tray_by_id(TRAY_ID).is_some() && std::env::var_os("HARK_QUIT_ON_CLOSE").is_none()
}

/// The main window, made anew from the app's configuration if it was closed to the tray. Its
/// page starts like at launch and replays a call in progress (`call_replay`). Main thread only
/// ([`on_main_thread`]).
fn main_window(app: &AppHandle) -> Option<tauri::WebviewWindow> {
    if let Some(main) = app.get_webview_window("main") {
        return Some(main);
    }
    let config = app.config().app.windows.iter().find(|window| window.label == "main")?.clone();
    tracing::info!("opening the main window again");
    match WebviewWindowBuilder::from_config(app, &config).and_then(|builder| builder.build()) {
        Ok(main) => Some(main),
        Err(error) => {
            tracing::error!(%error, "could not open the main window");
            None
        }
    }
}

/// Brings the main window forward (tray "Show", a second launch, the mini window, an answered
/// call), opening it again if it was closed to the tray.
pub fn show_main(app: &AppHandle) {
    on_main_thread(app, |app| {
        if let Some(main) = main_window(app) {
            let _ = main.show();
            let _ = main.unminimize();
            let _ = main.set_focus();
            // The call view is back in sight. (Without a window manager there is no state
            // change to report it, so this does not wait for one.)
            close_mini(app);
        }
    });
}
