//! Generates Tauri's context and one permission per app command (`allow-<command>`), so each
//! window's capability lists exactly the commands it may call: the banner can only read the
//! ringing call, accept and decline; the mini window can only follow the call, mute, hang up and
//! bring the main window back.

// The one list of command names, shared with the bindings test, which writes it for the UI.
const COMMANDS: &[&str] = include!("src/command_names.in");

fn main() {
    let attributes = tauri_build::Attributes::new().app_manifest(tauri_build::AppManifest::new().commands(COMMANDS));
    if let Err(error) = tauri_build::try_build(attributes) {
        // The usual cause: `ui/dist` is missing. `cargo xtask test` and `cargo xtask run` build
        // the UI first; by hand, run `npm ci && npm run build` in `ui/`.
        panic!("tauri-build failed: {error:#}");
    }
}
