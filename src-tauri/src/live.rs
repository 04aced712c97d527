//! The live channel: speaking levels, network quality and the settings' microphone meter.
//!
//! These come several times a second, so they travel on a Tauri channel each window that shows
//! them hands over (`watch_live`: the main window, and the mini window, which follows who speaks)
//! rather than as broadcast events. The microphone meter opens the chosen
//! microphone outside any call and reports its level every 100 ms until turned off; the flag it
//! polls is the only thing shared with it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hark_engine::audio::{voice_level, FRAME};
use tauri::ipc::Channel;
use tauri::{AppHandle, Manager};

use crate::api::LiveUpdate;
use crate::AppState;

/// The windows' channels and the meter, owned by [`AppState`].
#[derive(Default)]
pub struct LiveOutlet {
    /// By window label.
    channels: std::sync::Mutex<HashMap<String, Channel<LiveUpdate>>>,
    meter: std::sync::Mutex<Option<Arc<AtomicBool>>>,
}

impl LiveOutlet {
    /// Sends from now on to `channel` for the window `label` (replacing that window's older one:
    /// a reloaded page, a mini window opened again).
    pub fn watch(&self, label: &str, channel: Channel<LiveUpdate>) {
        lock(&self.channels).insert(label.to_owned(), channel);
    }

    /// Stops sending to the window `label` (it closed).
    pub fn forget(&self, label: &str) {
        lock(&self.channels).remove(label);
    }
}

/// Sends an update to every watching window; a closed channel is forgotten.
pub fn send(app: &AppHandle, update: LiveUpdate) {
    let state = app.state::<AppState>();
    lock(&state.live.channels).retain(|_, channel| channel.send(update.clone()).is_ok());
}

/// Turns the settings' microphone meter on (with `device`, `None` for the default) or off.
pub fn meter(app: &AppHandle, on: bool, device: Option<String>) {
    let state = app.state::<AppState>();
    let mut running = lock(&state.live.meter);
    if let Some(flag) = running.take() {
        flag.store(false, Ordering::Relaxed);
    }
    if !on {
        return;
    }
    let flag = Arc::new(AtomicBool::new(true));
    *running = Some(Arc::clone(&flag));
    let app = app.clone();
    // A thread of its own: opening a sound card blocks, and cpal's stream is read by polling.
    let spawned = std::thread::Builder::new().name("mic-meter".into()).spawn(move || {
        let mut source = crate::sound_cards::open_microphone(device.as_deref());
        let mut frame = [0i16; FRAME];
        let mut loudest = 0u8;
        let mut frames = 0;
        while flag.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
            source.read_frame(&mut frame);
            loudest = loudest.max(voice_level(&frame));
            frames += 1;
            if frames == 5 {
                send(&app, LiveUpdate::MicrophoneLevel { level: loudest });
                loudest = 0;
                frames = 0;
            }
        }
    });
    if let Err(error) = spawned {
        tracing::warn!(%error, "could not start the microphone meter");
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
