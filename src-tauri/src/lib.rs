//! hark-desktop: the Tauri v2 shell around the call engine.
//!
//! Thin by design: [`commands`] are one-line adapters onto the engine; [`session`] carries the
//! engine's events to the UI; [`windows`] decides how a call reaches the person; [`embedded`]
//! runs the built-in server and the echo service when no server is configured; [`store`] keeps
//! settings and the session on disk; [`app_state`] is what the commands share (the session, the
//! settings, signing in and out); [`sound_cards`] opens the chosen microphone and speaker for the
//! session and for the settings' meter ([`live`]); [`video`] runs the frame socket the page
//! reads pictures from and gives the engine its camera; [`video_layer`] draws the call view's
//! pictures over the page; [`platform`] tunes WebKitGTK and the heap. Everything the UI sees is
//! typed in [`api`], from which the UI's TypeScript types are generated. Nothing below this
//! crate knows Tauri.

pub mod api;
mod app_state;
mod autostart;
#[cfg(test)]
mod bindings;
mod command_line;
mod commands;
pub mod embedded;
mod links;
mod live;
mod logging;
mod platform;
mod policy;
mod session;
mod sound_cards;
pub mod store;
mod support;
mod tel_links;
mod video;
mod video_layer;
mod windows;

use std::sync::Arc;

use tauri::{Emitter, Manager, RunEvent, WindowEvent};

pub use app_state::AppState;
pub use command_line::answer as command_line_answer;
pub(crate) use app_state::note_contacts_shown;
use app_state::{resume, LAUNCHED};
use logging::init_logging;
pub use platform::tune_webkit;
use platform::{bound_heap_retention, trim_heap_periodically, trim_webkit_caches};
use store::AppDirs;

/// Shows the main window (made hidden, so a login start never flashes it), or, when Hark was
/// started at login with "start hidden in the tray" and there is a tray to come back from, lets
/// it go as closing it would. While "start at login" is on, its entry is written again, to
/// follow this binary.
fn show_main_unless_started_hidden(app: &tauri::App, handle: &tauri::AppHandle) {
    let state = app.state::<AppState>();
    let settings = state.settings();
    if settings.start_at_login {
        if let Err(error) = autostart::apply_for_this_program(&state.dirs.config, true) {
            tracing::warn!(%error, "could not renew the autostart entry");
        }
    }
    if settings.tel_links {
        // Written again, like the autostart entry, to follow this binary.
        if let Err(error) = state.apply_tel_links(true) {
            tracing::warn!(%error, "could not renew the tel: link entry");
        }
    }
    let at_login = autostart::launched_at_login(std::env::args_os().skip(1).filter_map(|arg| arg.into_string().ok()));
    let hidden = at_login && settings.start_at_login && settings.start_hidden && windows::lives_in_tray(handle);
    if let Some(main) = app.get_webview_window("main") {
        if hidden {
            tracing::info!("started at login: waiting in the tray");
            let _ = main.destroy();
        } else if let Err(error) = main.show() {
            tracing::error!(%error, "could not show the main window");
        }
    }
}

/// Runs the app until it quits.
pub fn run() {
    bound_heap_retention();
    let dirs = AppDirs::from_env();
    let _log = init_logging(&dirs);
    support::install_crash_reports(dirs.state.join("logs"));
    let launched = *LAUNCHED.get_or_init(std::time::Instant::now);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "hark-desktop starting");

    // Bound before the window exists: the page's CSP names the socket's port.
    let frame_socket = video::bind();
    let tiles = hark_frames::FrameTiles::default();
    let mut context = tauri::generate_context!();
    if let Some(socket) = &frame_socket {
        video::allow_in_csp(context.config_mut(), &socket.csp_source());
    }
    let app_video = video::AppVideo {
        tiles: tiles.clone(),
        socket: frame_socket.as_ref().map(|s| api::FrameSocketInfo { port: s.port(), token: s.token().to_owned() }),
        resolution: std::sync::Arc::default(),
        layer: video_layer::VideoLayer::new(tiles.clone()),
    };

    let app = tauri::Builder::default()
        // A second launch (a `hark:` link clicked while Hark runs) comes here with its arguments.
        .plugin(tauri_plugin_single_instance::init(|app, args, _cwd| {
            if let Some(link) = links::from_args(args) {
                app.state::<AppState>().hold_link(link, "a second launch");
                if let Err(error) = app.emit_to("main", "link", ()) {
                    tracing::warn!(%error, "could not tell the main window about a link");
                }
            }
            windows::show_main(app)
        }))
        .plugin(tauri_plugin_notification::init())
        .plugin(tauri_plugin_dialog::init())
        .manage(AppState::new(dirs, app_video))
        .setup(move |app| {
            trim_webkit_caches(app);
            // Launched by a `hark:` link: the main window takes it once it is ready.
            // `args_os`: an argument that is not UTF-8 (`args` would panic on it) is no link.
            if let Some(link) = links::from_args(std::env::args_os().skip(1).filter_map(|arg| arg.into_string().ok())) {
                app.state::<AppState>().hold_link(link, "the launch");
            }
            if let Some(socket) = frame_socket {
                // `serve` spawns onto the runtime it is called in: Tauri's.
                if let Err(error) = tauri::async_runtime::block_on(async move { socket.serve(tiles) }) {
                    tracing::error!(%error, "the frame socket did not start");
                }
            }
            trim_heap_periodically();
            let handle = app.handle().clone();
            let state = app.state::<AppState>();
            // The built-in server starts before any window asks for it (a few ms: a socket
            // and a SQLite file); a configured server makes it unnecessary, and a policy may
            // turn it off.
            if state.settings().server.is_none() && state.policy.builtin_server {
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
            show_main_unless_started_hidden(app, &handle);
            tracing::info!(elapsed_ms = launched.elapsed().as_millis() as u64, "set up");
            Ok(())
        })
        // A main page that reloads takes its video boxes with it.
        .on_page_load(|webview, payload| {
            if webview.label() == "main" && payload.event() == tauri::webview::PageLoadEvent::Started {
                let app = webview.app_handle();
                app.state::<AppState>().video.layer.forget_page(app);
            }
        })
        .on_window_event(|window, event| {
            if let WindowEvent::Destroyed = event {
                // A window that is gone reads no more levels.
                window.app_handle().state::<AppState>().live.forget(window.label());
            }
            if window.label() != "main" {
                return;
            }
            match event {
                // Closing the main window with a tray to come back from lets the window go, and
                // with it the WebKit web process (about 100 MiB, docs/BENCHMARKS.md): the tray,
                // the banner or the mini window carry Hark until the tray's "Show" or an
                // answered call makes the window anew. Without a tray, closing quits.
                WindowEvent::Destroyed => {
                    // The settings' camera preview went with the page that asked for it, and the
                    // video layer's boxes with the window.
                    let app = window.app_handle().clone();
                    app.state::<AppState>().video.layer.forget_page(&app);
                    tauri::async_runtime::spawn(async move {
                        if let Some(engine) = app.state::<AppState>().engine().await {
                            engine.preview_camera(false);
                        }
                    });
                    windows::main_window_changed(window.app_handle());
                }
                // GTK reports minimising and restoring as a move and a resize.
                WindowEvent::Moved(_) | WindowEvent::Resized(_) | WindowEvent::Focused(true) => windows::main_window_changed(window.app_handle()),
                _ => {}
            }
        })
        .invoke_handler(tauri::generate_handler![
            commands::app_info,
            commands::policy,
            commands::take_link,
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
            commands::frame_socket,
            commands::video_layer,
            commands::place_video,
            commands::set_camera,
            commands::audio_only,
            commands::cameras,
            commands::preview_camera,
            commands::diagnostics,
            commands::open_log_folder,
            commands::take_crash_report,
        ])
        .build(context);
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
