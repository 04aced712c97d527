//! The Tauri commands: one-line adapters from the UI onto the engine and the app's state.
//!
//! Each returns `Result<_, ApiError>`; anything that needs an account says `not_signed_in`
//! without one. Argument names are what the UI sends, in camelCase (Tauri's convention).

use hark_engine::camera::CameraInfo;
use hark_engine::sound_card::DeviceInfo;
use hark_protocol::{CallRecord, CallSummary, Contact, Media, UserId, UserProfile};
use tauri::ipc::Channel;
use tauri::{AppHandle, State};

use crate::api::{Account, ApiError, AppErrorCode, AppInfo, CallReplay, CrashReport, FrameSocketInfo, IncomingCall, LiveUpdate, RingtoneOption, RingtoneSetting, Settings, SignInRequest, VideoLayerNews, VideoPlacement};
use crate::AppState;

type Answer<T> = Result<T, ApiError>;

/// The `hark:` link the app was opened with, once (`None` when there is none, or it was taken).
#[tauri::command]
pub fn take_link(state: State<'_, AppState>) -> Answer<Option<crate::api::OpenedLink>> {
    Ok(state.link.lock().unwrap_or_else(|p| p.into_inner()).take())
}

#[tauri::command]
pub async fn app_info(state: State<'_, AppState>) -> Answer<AppInfo> {
    Ok(state.info().await)
}

/// The administrator's policy alone, for the banner (which is not given `app_info`).
#[tauri::command]
pub fn policy(state: State<'_, AppState>) -> Answer<crate::api::Policy> {
    Ok(state.policy.clone())
}

#[tauri::command]
pub async fn sign_in(app: AppHandle, state: State<'_, AppState>, request: SignInRequest) -> Answer<Account> {
    state.sign_in(&app, request).await
}

#[tauri::command]
pub async fn sign_out(app: AppHandle, state: State<'_, AppState>) -> Answer<()> {
    state.sign_out(&app).await;
    Ok(())
}

#[tauri::command]
pub async fn set_profile(state: State<'_, AppState>, nickname: Option<String>, avatar: Option<String>) -> Answer<()> {
    Ok(state.signed_in().await?.set_profile(nickname, avatar).await?)
}

#[tauri::command]
pub async fn contacts(state: State<'_, AppState>) -> Answer<Vec<Contact>> {
    let engine = state.signed_in().await?;
    let contacts = engine.contacts().await?;
    // Follow their presence from now on; the list already carries the current status.
    let users: Vec<UserId> = contacts.iter().map(|c| c.user.clone()).collect();
    if !users.is_empty() {
        engine.subscribe_presence(users).await?;
    }
    crate::note_contacts_shown();
    Ok(contacts)
}

#[tauri::command]
pub async fn add_contact(state: State<'_, AppState>, user: UserId, alias: Option<String>) -> Answer<()> {
    let engine = state.signed_in().await?;
    engine.add_contact(user.clone(), alias).await?;
    engine.subscribe_presence(vec![user]).await?;
    Ok(())
}

#[tauri::command]
pub async fn remove_contact(state: State<'_, AppState>, user: UserId) -> Answer<()> {
    Ok(state.signed_in().await?.remove_contact(user).await?)
}

#[tauri::command]
pub async fn profiles(state: State<'_, AppState>, users: Vec<UserId>) -> Answer<Vec<UserProfile>> {
    Ok(state.signed_in().await?.profiles(users).await?)
}

#[tauri::command]
pub async fn place_call(state: State<'_, AppState>, to: Vec<UserId>, media: Media) -> Answer<()> {
    Ok(state.signed_in().await?.call(to, media, None, None).await?)
}

#[tauri::command]
pub async fn accept_call(state: State<'_, AppState>, audio_only: Option<bool>) -> Answer<()> {
    let engine = state.signed_in().await?;
    match audio_only {
        Some(true) => Ok(engine.accept_audio_only().await?),
        _ => Ok(engine.accept().await?),
    }
}

#[tauri::command]
pub async fn reject_call(state: State<'_, AppState>) -> Answer<()> {
    Ok(state.signed_in().await?.reject().await?)
}

#[tauri::command]
pub async fn hang_up(state: State<'_, AppState>) -> Answer<()> {
    Ok(state.signed_in().await?.hangup().await?)
}

/// Turns our camera off (released) or on again; the call goes on either way.
#[tauri::command]
pub async fn set_camera(state: State<'_, AppState>, on: bool) -> Answer<()> {
    Ok(state.signed_in().await?.set_camera(on).await?)
}

/// Takes the whole call down to audio (every camera is released).
#[tauri::command]
pub async fn audio_only(state: State<'_, AppState>) -> Answer<()> {
    Ok(state.signed_in().await?.audio_only().await?)
}

/// The cameras there are now (the first is the default).
#[tauri::command]
pub async fn cameras() -> Answer<Vec<CameraInfo>> {
    // Listing opens each video node: not on a runtime worker.
    tokio::task::spawn_blocking(crate::video::cameras).await.map_err(|e| ApiError::new(AppErrorCode::Internal, e.to_string()))
}

/// Opens the camera outside a call for the settings' preview, or closes it.
#[tauri::command]
pub async fn preview_camera(state: State<'_, AppState>, on: bool) -> Answer<()> {
    state.signed_in().await?.preview_camera(on);
    Ok(())
}

/// Where the page reads video pictures.
#[tauri::command]
pub fn frame_socket(state: State<'_, AppState>) -> Answer<FrameSocketInfo> {
    state.video.socket.clone().ok_or_else(|| ApiError::new(AppErrorCode::Internal, "the frame socket is not running"))
}

/// Draws video pictures over this window's page, if it can: `false`, the page draws them itself.
/// The layer's news (a tile's picture showing or not) go to `channel`.
#[tauri::command]
pub async fn video_layer(window: tauri::WebviewWindow, state: State<'_, AppState>, channel: Channel<VideoLayerNews>) -> Answer<bool> {
    Ok(state.video.layer.open(&window, channel).await)
}

/// Where the video layer draws which tiles now, in order (none: an empty list).
#[tauri::command]
pub fn place_video(app: AppHandle, state: State<'_, AppState>, placements: Vec<VideoPlacement>) -> Answer<()> {
    state.video.layer.place(&app, placements);
    Ok(())
}

#[tauri::command]
pub async fn invite_more(state: State<'_, AppState>, to: Vec<UserId>) -> Answer<()> {
    Ok(state.signed_in().await?.invite_more(to).await?)
}

#[tauri::command]
pub async fn join_call(state: State<'_, AppState>, call_id: String, media: Media) -> Answer<()> {
    Ok(state.signed_in().await?.join(call_id, media).await?)
}

#[tauri::command]
pub fn incoming_call(state: State<'_, AppState>) -> Answer<Option<IncomingCall>> {
    Ok(state.incoming.lock().unwrap_or_else(|p| p.into_inner()).clone())
}

#[tauri::command]
pub async fn active_calls(state: State<'_, AppState>) -> Answer<Vec<CallSummary>> {
    Ok(state.signed_in().await?.active_calls().await?)
}

#[tauri::command]
pub async fn history(state: State<'_, AppState>) -> Answer<Vec<CallRecord>> {
    Ok(state.signed_in().await?.history(None, Some(200)).await?)
}

#[tauri::command]
pub async fn delete_history(state: State<'_, AppState>, call_ids: Vec<String>) -> Answer<()> {
    Ok(state.signed_in().await?.delete_records(call_ids).await?)
}

#[tauri::command]
pub async fn clear_history(state: State<'_, AppState>) -> Answer<()> {
    let engine = state.signed_in().await?;
    // The server answers at most a page per query: delete page by page, and stop if a page
    // comes back unchanged rather than loop forever.
    let mut last_page = Vec::new();
    loop {
        let page: Vec<String> = engine.history(None, Some(200)).await?.into_iter().map(|r| r.call_id).collect();
        if page.is_empty() {
            return Ok(());
        }
        if page == last_page {
            return Err(ApiError::new(AppErrorCode::Internal, "the server kept records it was asked to delete"));
        }
        engine.delete_records(page.clone()).await?;
        last_page = page;
    }
}

#[tauri::command]
pub async fn mute_microphone(state: State<'_, AppState>, muted: bool) -> Answer<()> {
    // The engine owns the mutes and tells every window (the `mutes` event).
    state.signed_in().await?.mute_microphone(muted);
    Ok(())
}

#[tauri::command]
pub async fn mute_speaker(state: State<'_, AppState>, muted: bool) -> Answer<()> {
    state.signed_in().await?.mute_speaker(muted);
    Ok(())
}

#[tauri::command]
pub async fn call_replay(state: State<'_, AppState>) -> Answer<CallReplay> {
    let me = state.account().await.map(|account| account.user);
    let call = state.call_snapshot().await;
    Ok(CallReplay { me, events: call.events, mutes: call.mutes, camera_on: call.camera_on })
}

/// The mini window's way back to the call view.
#[tauri::command]
pub fn show_main(app: AppHandle) -> Answer<()> {
    crate::windows::show_main(&app);
    Ok(())
}

#[tauri::command]
pub async fn devices() -> Answer<Vec<DeviceInfo>> {
    tauri::async_runtime::spawn_blocking(hark_engine::sound_card::list_devices)
        .await
        .map_err(|e| ApiError::new(AppErrorCode::NoDevice, e.to_string()))?
        .map_err(|e| ApiError::new(AppErrorCode::NoDevice, e.to_string()))
}

#[tauri::command]
pub async fn play_test_sound(state: State<'_, AppState>) -> Answer<()> {
    preview(&state, &RingtoneSetting::Bundled { name: "chime".into() }).await
}

#[tauri::command]
pub fn watch_live(window: tauri::Window, state: State<'_, AppState>, channel: Channel<LiveUpdate>) -> Answer<()> {
    state.live.watch(window.label(), channel);
    Ok(())
}

#[tauri::command]
pub fn microphone_meter(app: AppHandle, state: State<'_, AppState>, on: bool) -> Answer<()> {
    crate::live::meter(&app, on, state.settings().microphone);
    Ok(())
}

#[tauri::command]
pub fn settings(state: State<'_, AppState>) -> Answer<Settings> {
    Ok(state.settings())
}

#[tauri::command]
pub async fn save_settings(state: State<'_, AppState>, settings: Settings) -> Answer<Settings> {
    state.save_settings(settings).await
}

#[tauri::command]
pub fn ringtones() -> Answer<Vec<RingtoneOption>> {
    Ok(hark_engine::ringtone::bundled_names()
        .filter(|name| *name != "dialing")
        .map(|name| RingtoneOption { source: RingtoneSetting::Bundled { name: name.to_owned() }, name: name.to_owned() })
        .collect())
}

#[tauri::command]
pub async fn choose_ringtone_file(app: AppHandle) -> Answer<Option<String>> {
    use tauri_plugin_dialog::DialogExt;
    let (answer, chosen) = tokio::sync::oneshot::channel();
    app.dialog()
        .file()
        .set_title("Choose a ringtone")
        .add_filter("Sound", &["wav", "ogg", "mp3", "flac"])
        .pick_file(move |path| {
            let _ = answer.send(path);
        });
    let path = chosen.await.map_err(|_| ApiError::new(AppErrorCode::Cancelled, "the dialog closed"))?;
    Ok(path.and_then(|p| p.into_path().ok()).map(|p| p.display().to_string()))
}

#[tauri::command]
pub async fn preview_ringtone(state: State<'_, AppState>, source: RingtoneSetting) -> Answer<()> {
    preview(&state, &source).await
}

#[tauri::command]
pub async fn stop_preview(state: State<'_, AppState>) -> Answer<()> {
    state.signed_in().await?.stop_ringtone();
    Ok(())
}

async fn preview(state: &State<'_, AppState>, source: &RingtoneSetting) -> Answer<()> {
    let choice = crate::session::bundled_or_file(source)?;
    state.signed_in().await?.preview_ringtone(choice).await.map_err(|e| ApiError::new(e.code(), e.to_string()))
}

/// The text "Copy diagnostics" puts on the clipboard (support.rs: no token, password or SDP).
#[tauri::command]
pub async fn diagnostics(state: State<'_, AppState>) -> Answer<String> {
    let settings = state.settings();
    let server = settings.server.clone().unwrap_or_else(|| format!("built into this app ({})", state.embedded_url().unwrap_or_else(|| "not running".into())));
    let devices = devices().await.unwrap_or_default();
    let cameras = cameras().await.unwrap_or_default();
    let log = crate::support::newest_log(&state.dirs.state.join("logs"));
    Ok(crate::support::diagnostics(&settings, &server, &state.policy.summary(), &devices, &cameras, &log))
}

/// Shows the log folder in the file manager.
#[tauri::command]
pub fn open_log_folder(state: State<'_, AppState>) -> Answer<()> {
    crate::support::open_folder(&state.dirs.state.join("logs")).map_err(|e| ApiError::new(AppErrorCode::Internal, format!("opening the log folder: {e}")))
}

/// The problem report a panic left since the last start, once.
#[tauri::command]
pub fn take_crash_report(state: State<'_, AppState>) -> Answer<Option<CrashReport>> {
    Ok(crate::support::take_crash_report(&state.dirs.state.join("logs")))
}
