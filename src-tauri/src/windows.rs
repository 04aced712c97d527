//! Windows, tray and notifications: how a call reaches the person.
//!
//! Two windows at most, decided by memory measurements (docs/BENCHMARKS.md): each webview window
//! costs a WebKit process of about 100 MiB, so the call view lives in the `main` window and the
//! `incoming` banner exists only while a call rings — created on the incoming call, closed when
//! the ring ends. The banner is small, undecorated, always on top, in the screen's top-right
//! corner; with full-screen incoming chosen, the main window takes the screen instead (and gives
//! it back when that call is over). A desktop notification goes out when the main window is
//! hidden; failing to notify is logged, never fatal. The tray carries the status and a menu,
//! since Linux trays give no clicks.

use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Manager, WebviewUrl, WebviewWindowBuilder};
use tauri_plugin_notification::NotificationExt;

use crate::api::{IncomingCall, IncomingPresentation};
use crate::AppState;
use hark_engine::core::CallEvent;
use hark_engine::engine::EngineEvent;

/// The banner's label (its capability set allows only what a banner needs).
pub const BANNER: &str = "incoming";
const BANNER_WIDTH: f64 = 360.0;
const BANNER_HEIGHT: f64 = 124.0;
const BANNER_MARGIN: f64 = 16.0;
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
        IncomingPresentation::FullScreen => {
            if let Some(main) = &main {
                let _ = main.show();
                let _ = main.unminimize();
                // Only a window we made full screen is given back when the ring ends (not one
                // the user had put there with F11).
                if !main.is_fullscreen().unwrap_or(false) {
                    match main.set_fullscreen(true) {
                        Ok(()) => state.set_fullscreen_call(&call_id),
                        Err(error) => tracing::warn!(%error, "could not make the main window full screen"),
                    }
                }
                let _ = main.set_focus();
            }
        }
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
            if let Some(main) = app.get_webview_window("main") {
                let _ = main.show();
                let _ = main.unminimize();
                let _ = main.set_focus();
            }
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
    let (x, y) = banner_position(app);
    let built = WebviewWindowBuilder::new(app, BANNER, WebviewUrl::App("index.html".into()))
        .title("Incoming call")
        .inner_size(BANNER_WIDTH, BANNER_HEIGHT)
        // Not `resizable(false)`: on Linux that forces at least 200 px of height (tao#561).
        .min_inner_size(BANNER_WIDTH, BANNER_HEIGHT)
        .max_inner_size(BANNER_WIDTH, BANNER_HEIGHT)
        .position(x, y)
        .decorations(false)
        .always_on_top(true)
        .skip_taskbar(true)
        .visible_on_all_workspaces(true)
        // Never take the keyboard from what the person is typing into: Enter or Escape meant
        // for another app must not answer or decline. A click (or the tray) does.
        .focused(false)
        .build();
    if let Err(error) = built {
        tracing::error!(%error, "could not open the incoming-call banner");
    }
}

/// Top-right corner of the primary monitor, in logical pixels.
fn banner_position(app: &AppHandle) -> (f64, f64) {
    let monitor = app.primary_monitor().ok().flatten();
    match monitor {
        Some(monitor) => {
            let scale = monitor.scale_factor();
            let width = f64::from(monitor.size().width) / scale;
            let origin_x = f64::from(monitor.position().x) / scale;
            let origin_y = f64::from(monitor.position().y) / scale;
            (origin_x + width - BANNER_WIDTH - BANNER_MARGIN, origin_y + BANNER_MARGIN)
        }
        None => (BANNER_MARGIN, BANNER_MARGIN),
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

/// Brings the main window forward (tray "Show", a second launch).
pub fn show_main(app: &AppHandle) {
    if let Some(main) = app.get_webview_window("main") {
        let _ = main.show();
        let _ = main.unminimize();
        let _ = main.set_focus();
    }
}
