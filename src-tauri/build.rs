//! Generates Tauri's context and one permission per app command (`allow-<command>`), so each
//! window's capability lists exactly the commands it may call: the banner can only read the
//! ringing call, accept and decline; the mini window can only follow the call, mute, hang up and
//! bring the main window back.

const COMMANDS: &[&str] = &[
    "app_info",
    "sign_in",
    "sign_out",
    "set_profile",
    "contacts",
    "add_contact",
    "remove_contact",
    "profiles",
    "place_call",
    "accept_call",
    "reject_call",
    "hang_up",
    "invite_more",
    "join_call",
    "incoming_call",
    "active_calls",
    "history",
    "delete_history",
    "clear_history",
    "mute_microphone",
    "mute_speaker",
    "devices",
    "play_test_sound",
    "watch_live",
    "microphone_meter",
    "settings",
    "save_settings",
    "ringtones",
    "choose_ringtone_file",
    "preview_ringtone",
    "stop_preview",
    "call_replay",
    "show_main",
];

fn main() {
    let attributes = tauri_build::Attributes::new().app_manifest(tauri_build::AppManifest::new().commands(COMMANDS));
    if let Err(error) = tauri_build::try_build(attributes) {
        // The usual cause: `ui/dist` is missing. `cargo xtask test` and `cargo xtask run` build
        // the UI first; by hand, run `npm ci && npm run build` in `ui/`.
        panic!("tauri-build failed: {error:#}");
    }
}
