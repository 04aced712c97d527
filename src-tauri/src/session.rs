//! One signed-in account: its engine, and the task that carries the engine's events to the UI.
//!
//! Signing in trades the password for a token at the server (so only the token is remembered),
//! starts an engine with real sound cards (synthetic silence when there are none, so a machine
//! without a microphone can still place calls) and waits for the server's welcome. From then on
//! [`forward_events`] is the one reader of the engine's channel: state-like events go out as the
//! Tauri event `engine`, levels and network quality to the live channel, and an incoming call
//! opens the banner (or the full-screen view) through [`crate::windows`].

use std::time::Duration;

use hark_engine::audio::{NullSink, SilenceSource};
use hark_engine::core::CallEvent;
use hark_engine::engine::{Engine, EngineConfig, EngineEvent};
use hark_engine::media::Devices;
use hark_engine::proxy::ProxySetting;
use hark_engine::ringtone::{RingOutput, RingtoneChoice, RingtoneErrorCode, RingtoneKind, RodioOutput, SilentOutput};
use hark_engine::signaling::{self, Credentials, SignalingConfig, SignalingError};
use hark_engine::voice_processing::ProcessingSettings;
use tauri::{AppHandle, Emitter, Manager};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::{Account, ApiError, AppErrorCode, IncomingCall, LiveUpdate, RingtoneSetting, Settings};
use hark_engine::call_log::Mutes;
use crate::sound_cards::open_sound_cards;
use crate::AppState;

/// How long sign-in waits for the server's welcome.
const SIGN_IN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an incoming call waits for the caller's profile before showing the user id.
const PROFILE_WAIT: Duration = Duration::from_millis(500);

/// A signed-in account and its engine.
pub struct Session {
    /// The engine.
    pub engine: Engine,
    /// Who, where.
    pub account: Account,
}

impl From<SignalingError> for ApiError {
    fn from(error: SignalingError) -> ApiError {
        match error {
            SignalingError::Refused { code, message } => ApiError::new(code, message),
            SignalingError::Transient(message) => ApiError::new(AppErrorCode::Unreachable, message),
        }
    }
}

/// Trades a password for a token, creating the account first when `register`.
pub async fn obtain_token(server: &str, proxy: &ProxySetting, user: &str, password: &str, register: bool, nickname: Option<&str>) -> Result<signaling::SignedToken, ApiError> {
    if register {
        signaling::register_account(server, &[], proxy, user, password, nickname).await?;
    }
    Ok(signaling::log_in(server, &[], proxy, user, password).await?)
}

/// How to reach the server: the built-in one directly, any other as the settings say.
pub fn proxy_setting(embedded: bool, settings: &Settings) -> ProxySetting {
    if embedded { ProxySetting::Direct } else { ProxySetting::from_text(&settings.proxy) }
}

/// Starts an engine with `token` and waits until the server welcomes it.
pub async fn start(app: &AppHandle, server: &str, embedded: bool, token: String, settings: &Settings) -> Result<Session, ApiError> {
    let (source, sink) = open_sound_cards(Some(settings.microphone.clone()), Some(settings.speaker.clone())).await;
    let devices = Devices { source: source.unwrap_or_else(|| Box::new(SilenceSource)), sink: sink.unwrap_or_else(|| Box::new(NullSink)) };
    let (engine, mut events) = Engine::start(EngineConfig {
        signaling: SignalingConfig {
            server: server.to_owned(),
            credentials: Credentials::Token(token),
            device: device_id(app),
            client: concat!("hark-desktop/", env!("CARGO_PKG_VERSION")).into(),
            extra_roots: Vec::new(),
            proxy: proxy_setting(embedded, settings),
        },
        udp_addrs: vec!["0.0.0.0:0".into(), "127.0.0.1:0".into()],
        devices,
        ring_output: ring_output(),
        processing: ProcessingSettings { echo_cancellation: settings.echo_cancellation, noise_suppression: settings.noise_suppression },
        watch_devices: true,
        receive_loss_percent: 0.0,
        video: crate::video::engine_config(&app.state::<AppState>().video, settings),
        policy: app.state::<AppState>().policy.calls(),
    });
    let welcome = async {
        while let Some(event) = events.recv().await {
            match event {
                EngineEvent::SignedIn { user, .. } => return Ok(user),
                EngineEvent::SignInRefused { code, message } => return Err(ApiError::new(code, message)),
                _ => {}
            }
        }
        Err(ApiError::new(AppErrorCode::EngineStopped, "the engine stopped"))
    };
    let user = match tokio::time::timeout(SIGN_IN_TIMEOUT, welcome).await {
        Ok(Ok(user)) => user,
        Ok(Err(error)) => {
            engine.stop().await;
            return Err(error);
        }
        Err(_) => {
            engine.stop().await;
            return Err(ApiError::new(AppErrorCode::TimedOut, format!("no answer from {server}")));
        }
    };
    apply_settings(&engine, settings).await;
    prepare_next_call(&engine, settings).await;
    let profile = engine.profiles(vec![user.clone()]).await.ok().and_then(|mut p| p.pop());
    let account = Account {
        nickname: profile.as_ref().map(|p| p.nickname.clone()).unwrap_or_else(|| user.clone()),
        avatar: profile.and_then(|p| p.avatar),
        user,
        server: server.to_owned(),
        embedded,
    };
    tauri::async_runtime::spawn(forward_events(app.clone(), engine.clone(), events));
    Ok(Session { engine, account })
}

/// Applies the ringtone and processing settings to a running engine. A ringtone file that is
/// gone or unreadable falls back to the bundled default (the engine reports it as an event).
pub async fn apply_settings(engine: &Engine, settings: &Settings) {
    engine.set_processing(ProcessingSettings { echo_cancellation: settings.echo_cancellation, noise_suppression: settings.noise_suppression });
    engine.set_ringtone_volume(f32::from(settings.ringtone_volume.min(100)) / 100.0);
    engine.set_ringtone_muted(settings.ringtone_muted);
    engine.set_connect_early(!settings.connect_after_answer);
    match bundled_or_file(&settings.ringtone) {
        Ok(choice) => {
            if let Err(error) = engine.set_ringtone(RingtoneKind::Incoming, choice).await {
                tracing::warn!(%error, ringtone = ?settings.ringtone, "ringtone refused; the default rings instead");
            }
        }
        Err(error) => tracing::warn!(?error, "bad ringtone setting"),
    }
}

/// "Start calls with…" changed while no call goes on: turned on, the next call starts so; turned
/// off, it starts with the camera on and the microphone open again.
pub async fn between_calls_changed(engine: &Engine, before: &Settings, settings: &Settings) {
    if settings.camera_off_at_start != before.camera_off_at_start || settings.microphone_muted_at_start != before.microphone_muted_at_start {
        prepare_next_call(engine, settings).await;
    }
    if before.camera_off_at_start && !settings.camera_off_at_start {
        if let Err(error) = engine.set_camera(true).await {
            tracing::warn!(%error, "could not turn the camera back on for the next call");
        }
    }
    if before.microphone_muted_at_start && !settings.microphone_muted_at_start {
        engine.mute_microphone(false);
    }
}

/// "Start calls with my camera off" and "with my microphone muted": set while no call goes on
/// (at sign-in, when a call ends, when the setting is turned on), so the next call starts so.
/// The engine keeps the camera as it was left and lifts mutes when a call ends.
pub async fn prepare_next_call(engine: &Engine, settings: &Settings) {
    if settings.camera_off_at_start {
        if let Err(error) = engine.set_camera(false).await {
            tracing::warn!(%error, "could not turn the camera off for the next call");
        }
    }
    if settings.microphone_muted_at_start {
        engine.mute_microphone(true);
    }
}

/// Checks a ringtone setting: a bundled name must be one of the bundled sounds, a file of the
/// user's is decoded once, so a missing or corrupt file is refused with its code
/// (`ringtone_unreadable`, `ringtone_undecodable`, …) before it is saved.
pub async fn check_ringtone(setting: &RingtoneSetting) -> Result<RingtoneChoice, ApiError> {
    let choice = bundled_or_file(setting)?;
    if let RingtoneChoice::Custom(_) = &choice {
        let probe = choice.clone();
        tokio::task::spawn_blocking(move || hark_engine::ringtone::Sound::decode(&probe))
            .await
            .map_err(|e| ApiError::new(AppErrorCode::Internal, e.to_string()))?
            .map_err(|e| ApiError::new(e.code(), e.to_string()))?;
    }
    Ok(choice)
}

/// The engine's choice for a setting: a bundled name that exists, or a file path that is not empty.
pub fn bundled_or_file(setting: &RingtoneSetting) -> Result<RingtoneChoice, ApiError> {
    match setting {
        RingtoneSetting::Bundled { name } if !hark_engine::ringtone::bundled_names().any(|n| n == name) => {
            Err(ApiError::new(RingtoneErrorCode::RingtoneUnknown, format!("no bundled ringtone named {name}")))
        }
        RingtoneSetting::Custom { path } if path.trim().is_empty() => Err(ApiError::new(AppErrorCode::BadArgument, "a ringtone file needs a path")),
        _ => Ok(setting.choice()),
    }
}

fn ring_output() -> Box<dyn RingOutput> {
    // `HARK_SILENT_RINGTONES=1`: for machines where no sound may be made (CI); the engine still
    // decodes the chosen file and reports what it would play.
    if std::env::var_os("HARK_SILENT_RINGTONES").is_some() {
        Box::new(SilentOutput)
    } else {
        Box::new(RodioOutput::new())
    }
}

/// A stable id for this installation, so the server recognises a reconnect as the same device.
fn device_id(app: &AppHandle) -> String {
    let state = app.state::<AppState>();
    let path = state.dirs.config.join("device_id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        if !id.trim().is_empty() {
            return id.trim().to_owned();
        }
    }
    let id = format!("desktop-{:016x}", rand::random::<u64>());
    if let Err(error) = std::fs::create_dir_all(&state.dirs.config).and_then(|()| std::fs::write(&path, &id)) {
        tracing::warn!(%error, "could not keep the device id");
    }
    id
}

/// The one reader of the engine's events while the session lasts.
async fn forward_events(app: AppHandle, engine: Engine, mut events: UnboundedReceiver<EngineEvent>) {
    while let Some(event) = events.recv().await {
        match &event {
            EngineEvent::VoiceLevel { user, level } => {
                crate::live::send(&app, LiveUpdate::Level { user: user.clone(), level: *level });
                continue;
            }
            EngineEvent::NetworkQuality { user, loss_percent, rtt_ms, jitter_ms, relayed, weak, r_factor, mos } => {
                let quality = LiveUpdate::Quality {
                    user: user.clone(),
                    loss_percent: *loss_percent,
                    rtt_ms: *rtt_ms,
                    jitter_ms: *jitter_ms,
                    relayed: *relayed,
                    weak: *weak,
                    r_factor: *r_factor,
                    mos: *mos,
                };
                crate::live::send(&app, quality);
                continue;
            }
            EngineEvent::Call(CallEvent::IncomingCall { call_id, caller, invitees, media, .. }) => {
                // The banner must not wait on a slow server: the user id will do.
                let lookup = tokio::time::timeout(PROFILE_WAIT, engine.profiles(vec![caller.clone()]));
                let profile = lookup.await.ok().and_then(Result::ok).and_then(|mut p| p.pop());
                let incoming = IncomingCall {
                    call_id: call_id.clone(),
                    caller_name: profile.as_ref().map(|p| p.nickname.clone()).unwrap_or_else(|| caller.clone()),
                    caller_avatar: profile.and_then(|p| p.avatar),
                    caller: caller.clone(),
                    invitees: invitees.clone(),
                    media: *media,
                };
                tracing::info!(call_id = %incoming.call_id, caller = %incoming.caller, "incoming call");
                crate::windows::present_incoming(&app, incoming);
            }
            EngineEvent::Call(CallEvent::CallBegan { call_id, .. }) => {
                tracing::info!(%call_id, "call connected");
                crate::windows::incoming_over(&app, Some(call_id), true);
            }
            EngineEvent::Call(CallEvent::NotConnected { call_id, reason }) => {
                tracing::info!(?call_id, ?reason, "call did not connect");
                crate::windows::incoming_over(&app, call_id.as_deref(), false);
            }
            EngineEvent::Call(CallEvent::CallEnded { call_id, reason, duration_s }) => {
                tracing::info!(%call_id, ?reason, duration_s, "call ended");
                crate::windows::incoming_over(&app, Some(call_id), false);
            }
            EngineEvent::RingtonePlaying { kind, source } => tracing::info!(kind, %source, "ringtone playing"),
            EngineEvent::RingtoneFailed { code, message } => tracing::warn!(?code, %message, "ringtone failed"),
            EngineEvent::SignalingLost { reason, .. } => tracing::warn!(%reason, "signaling lost; reconnecting"),
            EngineEvent::SignInRefused { code, message } => tracing::warn!(%code, %message, "sign-in refused"),
            _ => {}
        }
        match &event {
            // The engine recorded the event before sending it: a call it ended is gone from its
            // snapshot, and with it the mini window.
            EngineEvent::Call(CallEvent::CallEnded { .. } | CallEvent::NotConnected { .. }) if engine.call_snapshot().events.is_empty() => {
                crate::windows::close_mini(&app);
                let settings = app.state::<AppState>().settings();
                prepare_next_call(&engine, &settings).await;
            }
            EngineEvent::Call(CallEvent::MediaChanged { media }) => crate::windows::fit_mini(&app, *media == hark_protocol::Media::Video),
            // Every window shows the engine's mutes (one window's button, the others' view, and
            // the lift when a call ends).
            EngineEvent::Mutes { microphone, speaker } => crate::windows::announce_mutes(&app, Mutes { microphone: *microphone, speaker: *speaker }),
            _ => {}
        }
        crate::windows::on_call_event(&app, &event);
        if let Err(error) = app.emit("engine", &event) {
            tracing::warn!(%error, "could not deliver an engine event to the UI");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ringtone_settings_are_checked_before_they_are_kept() {
        let bundled = |name: &str| RingtoneSetting::Bundled { name: name.into() };
        let custom = |path: &std::path::Path| RingtoneSetting::Custom { path: path.display().to_string() };
        assert_eq!(check_ringtone(&bundled("chime")).await.unwrap(), RingtoneChoice::Bundled("chime".into()));
        assert_eq!(check_ringtone(&bundled("nope")).await.unwrap_err().code, RingtoneErrorCode::RingtoneUnknown.into());
        assert_eq!(check_ringtone(&RingtoneSetting::Custom { path: " ".into() }).await.unwrap_err().code, AppErrorCode::BadArgument.into());

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone.wav");
        assert_eq!(check_ringtone(&custom(&missing)).await.unwrap_err().code, RingtoneErrorCode::RingtoneUnreadable.into());
        let corrupt = dir.path().join("corrupt.wav");
        std::fs::write(&corrupt, b"RIFF\0\0\0\0WAVEnot really a wave file").unwrap();
        assert_eq!(check_ringtone(&custom(&corrupt)).await.unwrap_err().code, RingtoneErrorCode::RingtoneUndecodable.into());
        let good = dir.path().join("mine.wav");
        std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/ringtones/chime.wav"), &good).unwrap();
        assert_eq!(check_ringtone(&custom(&good)).await.unwrap(), RingtoneChoice::Custom(good));
    }

    #[test]
    fn a_ringtone_setting_reads_its_typed_form_and_the_old_string_form() {
        let read = |json: &str| serde_json::from_str::<RingtoneSetting>(json);
        assert_eq!(read(r#"{"kind":"bundled","name":"chime"}"#).unwrap(), RingtoneSetting::Bundled { name: "chime".into() });
        assert_eq!(read(r#""bundled:chime""#).unwrap(), RingtoneSetting::Bundled { name: "chime".into() });
        assert_eq!(read(r#""custom:/home/me/ring.ogg""#).unwrap(), RingtoneSetting::Custom { path: "/home/me/ring.ogg".into() });
        assert!(read(r#""chime""#).is_err() && read(r#"{"kind":"other"}"#).is_err());
        let written = serde_json::to_string(&RingtoneSetting::Custom { path: "/a.wav".into() }).unwrap();
        assert_eq!(written, r#"{"kind":"custom","path":"/a.wav"}"#);
    }
}
