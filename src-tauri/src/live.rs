//! The live channel: speaking levels, network quality and the settings' microphone meter.
//!
//! These come several times a second, so they travel on a Tauri channel the main window hands
//! over (`watch_live`) rather than as broadcast events. The microphone meter opens the chosen
//! microphone outside any call and reports its level every 100 ms until turned off; the flag it
//! polls is the only thing shared with it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hark_engine::audio::{voice_level, FRAME};
use tauri::ipc::Channel;
use tauri::{AppHandle, Manager};

use crate::api::LiveUpdate;
use crate::AppState;

/// The channel and the meter, owned by [`AppState`].
#[derive(Default)]
pub struct LiveOutlet {
    channel: std::sync::Mutex<Option<Channel<LiveUpdate>>>,
    meter: std::sync::Mutex<Option<Arc<AtomicBool>>>,
}

impl LiveOutlet {
    /// Sends from now on to `channel` (replacing an older one: a reloaded page).
    pub fn watch(&self, channel: Channel<LiveUpdate>) {
        *lock(&self.channel) = Some(channel);
    }
}

/// Sends an update if a window is watching; a closed channel is forgotten.
pub fn send(app: &AppHandle, update: LiveUpdate) {
    let state = app.state::<AppState>();
    let mut channel = lock(&state.live.channel);
    if let Some(open) = channel.as_ref() {
        if open.send(update).is_err() {
            *channel = None;
        }
    }
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
