//! The real app end to end: `hark-desktop` under Xvfb, driven by tauri-driver + WebKitWebDriver,
//! with its built-in server and echo service, and `hark-cli` as the other person.
//!
//! Run by `cargo xtask test` inside `dbus-run-session -- xvfb-run`, after it has built the app
//! (with the UI) and hark-cli. Screenshots of each step go to `target/e2e/`. The scenario: sign
//! up; call the echo service and reach connected; minimise the window (through openbox) and
//! follow the call in the mini window, mute there, come back; hark-cli calls the app, the banner window
//! appears, accept by click, the call view shows the caller and a running timer, hark-cli hangs
//! up, history lists the call with its duration; a custom ringtone file typed into settings is
//! what rings at the next incoming call (read from the app's log, where the engine reports
//! what it plays), and Escape on the banner declines it; closed to the tray, the app answers the
//! next call from the banner and opens its window again on the call. Then video: bob calls with
//! video, the app answers and shows him moving, its own test-pattern camera reaches bob (who
//! records it and the test reads its frame numbers), camera off is seen at bob's, and switching
//! to audio releases the cameras.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use hark_e2e::{binary, sign_up, spawn_logged, target_dir, timer_seconds, wait_for, AppUnderTest, Guarded, WebDriver};

const SHORT: Duration = Duration::from_secs(15);
const CALL: Duration = Duration::from_secs(40);

fn tauri_driver() -> PathBuf {
    std::env::var_os("TAURI_DRIVER").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("tauri-driver"))
}

struct Scene {
    app: AppUnderTest,
    driver: WebDriver,
    shots: PathBuf,
}

impl Scene {
    async fn shot(&self, name: &str) -> Result<()> {
        hark_e2e::capture_screen(&self.shots.join(format!("{name}.png")))
    }

    /// `hark-cli` as `user`, calling the app's user with these extra arguments.
    fn cli_call(&self, user: &str, extra: &[&str], log: &str) -> Result<Guarded> {
        let mut args = vec!["--server", &self.app.server, "--user", user, "--password", "bob's password 1", "--register", "--json"];
        args.extend(["--mic", "tone:440", "--speaker", "none", "--bind", "127.0.0.1:0", "call", "alice"]);
        args.extend(extra);
        spawn_logged(&binary("hark-cli")?, &args, &[], &self.app.home.path().join(log))
    }
}

/// Waits until the main window has left the call view (the call ended).
async fn wait_for_call_view_to_close(web: &WebDriver) -> Result<()> {
    wait_for("the call view to close", CALL, || async { Ok(web.find("[data-testid=call-view]").await?.is_none().then_some(())) }).await
}

async fn start() -> Result<Scene> {
    let shots = target_dir().join("e2e");
    std::fs::create_dir_all(&shots)?;
    let app = AppUnderTest::prepare_keeping_tray(&tauri_driver())?;
    // Launched by a link, as a desktop launcher does when Hark is not running yet.
    let driver = app.session_with_args(&binary("hark-desktop")?, &["hark:call/echo"]).await?;
    Ok(Scene { app, driver, shots })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_call_echo_answer_from_the_banner_history_and_ringtone() -> Result<()> {
    let scene = start().await?;
    let outcome = scenario(&scene).await;
    if outcome.is_err() {
        let _ = scene.shot("zz-failure").await;
        eprintln!("app log:\n{}", scene.app.log());
    }
    scene.driver.quit().await;
    outcome
}

async fn scenario(scene: &Scene) -> Result<()> {
    let web = &scene.driver;
    let main = web.current_window().await?;

    // Sign up on the built-in server.
    web.wait("[data-testid=signin-form]", Duration::from_secs(30)).await?;
    scene.shot("01-sign-in").await?;
    sign_up(web, "alice", "alice's password 1", Some("Alice Liddell")).await?;
    // The link the app was launched with waited for sign-in; it is offered, and no is no.
    web.wait_text("[data-testid=link-question]", SHORT, |t| t == "Call echo?").await?;
    scene.shot("02-link-at-launch").await?;
    web.click_css("[data-testid=link-cancel]", SHORT).await?;
    wait_for("the link's offer to close", SHORT, || async { Ok(web.find("[data-testid=link-prompt]").await?.is_none().then_some(())) }).await?;
    anyhow::ensure!(web.find("[data-testid=call-view]").await?.is_none(), "a link called although the person said no");
    scene.shot("02-contacts").await?;

    // Call the echo service from the dial box and reach connected.
    web.type_into("[data-testid=dial-input]", "echo").await?;
    web.click_css("[data-testid=dial-audio]", SHORT).await?;
    web.wait("[data-testid=call-view]", SHORT).await?;
    web.wait_text("[data-testid=call-timer]", CALL, |t| timer_seconds(t).is_some_and(|s| s >= 1)).await?;
    scene.shot("03-echo-connected").await?;

    // Minimised mid-call through a window manager, as a person would: the mini window floats
    // with the call; muting there shows in the call view; a click on it brings the call back.
    let _window_manager = hark_e2e::start_window_manager(&scene.app.home.path().join("openbox.log"))?;
    let known = web.windows().await?;
    // The window manager takes a moment to start managing: ask again until the mini window shows.
    let mini = wait_for("the mini window", CALL, || async {
        hark_e2e::minimise_windows_titled("Hark")?;
        let shown = web.wait_new_window(&known, Duration::from_secs(2)).await;
        Ok(shown.ok())
    })
    .await?;
    web.switch_to(&mini).await?;
    web.wait_text("[data-testid=mini-name]", SHORT, |t| t.to_lowercase().contains("echo")).await?;
    web.wait_text("[data-testid=mini-status]", SHORT, |t| timer_seconds(t).is_some_and(|s| s >= 1)).await?;
    scene.shot("03b-minimised-mini-window").await?;
    web.click_css("[data-testid=mini-mute]", SHORT).await?;
    web.wait("[data-testid=mini-mute][aria-pressed=true]", SHORT).await?;
    web.switch_to(&main).await?;
    web.wait("[data-testid=mute-mic][aria-pressed=true]", SHORT).await?;
    web.switch_to(&mini).await?;
    web.click_closing_window("[data-testid=mini-back]", SHORT).await?;
    web.switch_to(&main).await?;
    wait_for("the mini window to close", SHORT, || async { Ok((!web.windows().await?.contains(&mini)).then_some(())) }).await?;
    web.click_css("[data-testid=mute-mic]", SHORT).await?;
    web.wait("[data-testid=mute-mic][aria-pressed=false]", SHORT).await?;
    scene.shot("03c-call-view-back").await?;
    web.click_css("[data-testid=hangup]", SHORT).await?;
    wait_for_call_view_to_close(web).await?;

    // hark-cli (bob) calls; the banner opens; accept by click.
    let known = web.windows().await?;
    let _bob = scene.cli_call("bob", &["--duration", "6"], "bob-1.log")?;
    let banner = web.wait_new_window(&known, CALL).await?;
    web.switch_to(&banner).await?;
    web.wait_text("[data-testid=banner-caller]", SHORT, |t| t.contains("bob")).await?;
    scene.shot("04-banner").await?;
    web.click_closing_window("[data-testid=banner-accept]", SHORT).await?;
    web.switch_to(&main).await?;
    web.wait("[data-testid=tile-bob]", CALL).await?;
    let first = web.wait_text("[data-testid=call-timer]", CALL, |t| timer_seconds(t).is_some()).await?;
    let first = timer_seconds(&first).unwrap_or_default();
    let later = web.wait_text("[data-testid=call-timer]", SHORT, |t| timer_seconds(t).is_some_and(|s| s > first)).await?;
    eprintln!("timer: {first} s, then {later}");
    scene.shot("05-in-call-with-bob").await?;

    // bob hangs up after 6 s; history lists the call with its duration.
    wait_for_call_view_to_close(web).await?;
    web.click_css("[data-testid=nav-recents]", SHORT).await?;
    let row = web.wait_text("[data-testid^=history-row-]", SHORT, |t| t.contains("bob")).await?;
    // bob hung up 6 s after connecting: the record says 5 to 7 s.
    let duration = web.wait_text("[data-testid^=history-duration-]", SHORT, |t| timer_seconds(t).is_some()).await?;
    let seconds = timer_seconds(&duration).unwrap_or_default();
    assert!((5..=7).contains(&seconds), "a duration of about 6 s: {duration} in {row}");
    scene.shot("06-history").await?;

    // Choose a custom ringtone file in settings.
    let ringtone = scene.app.home.path().join("my ringtone.wav");
    std::fs::copy(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/ringtones/chime.wav"), &ringtone)?;
    web.click_css("[data-testid=nav-settings]", SHORT).await?;
    web.type_into("[data-testid=ringtone-path]", &ringtone.display().to_string()).await?;
    web.click_css("[data-testid=ringtone-use]", SHORT).await?;
    let settings_file = scene.app.home.path().join("config/hark/settings.json");
    let saved = serde_json::json!({ "kind": "custom", "path": ringtone.display().to_string() });
    wait_for("the ringtone to be saved", SHORT, || async {
        let settings: Option<serde_json::Value> = std::fs::read_to_string(&settings_file).ok().and_then(|s| serde_json::from_str(&s).ok());
        Ok(settings.filter(|s| s["ringtone"] == saved).map(|_| ()))
    })
    .await?;
    // The engine names the sound it plays this way in the log.
    let expected = format!("custom:{}", ringtone.display());
    let chosen = "[data-testid=ringtone-select] option:checked";
    web.wait_text(chosen, SHORT, |t| t.contains("my ringtone.wav")).await?;
    scene.shot("07-settings-ringtone").await?;

    // The next incoming call rings with that file; Escape on the banner declines.
    let known = web.windows().await?;
    let _bob = scene.cli_call("bob", &[], "bob-2.log")?;
    let banner = web.wait_new_window(&known, CALL).await?;
    let needle = format!("ringtone playing kind=\"incoming\" source={expected}");
    wait_for("the custom ringtone to play", SHORT, || async { Ok(scene.app.log().contains(&needle).then_some(())) })
        .await
        .with_context(|| format!("looking for `{needle}`"))?;
    web.switch_to(&banner).await?;
    web.wait_text("[data-testid=banner-caller]", SHORT, |t| t.contains("bob")).await?;
    scene.shot("08-banner-custom-ringtone").await?;
    let body = web.wait("body", SHORT).await?;
    let escape = web.post_keys(&body, "\u{E00C}").await;
    if let Err(error) = escape {
        anyhow::ensure!(error.to_string().contains("no such window"), "escape: {error}");
    }
    web.switch_to(&main).await?;
    wait_for("bob's call to be declined", CALL, || async {
        let log = std::fs::read_to_string(scene.app.home.path().join("bob-2.log")).unwrap_or_default();
        Ok(log.contains("rejected").then_some(()))
    })
    .await?;

    // Closed to the tray: the window goes (and its web process with it); Hark stays for calls.
    // bob calls: the banner comes up; answering opens the window again, on the call.
    hark_e2e::close_window_titled("Hark")?;
    wait_for("the main window to go", SHORT, || async { Ok((!web.windows().await?.contains(&main)).then_some(())) }).await?;
    let known = web.windows().await?;
    let _bob = scene.cli_call("bob", &["--duration", "5"], "bob-3.log")?;
    let banner = web.wait_new_window(&known, CALL).await?;
    web.switch_to(&banner).await?;
    web.wait_text("[data-testid=banner-caller]", SHORT, |t| t.contains("bob")).await?;
    scene.shot("09-banner-from-the-tray").await?;
    web.click_closing_window("[data-testid=banner-accept]", SHORT).await?;
    let reopened = wait_for("the main window to open again", CALL, || async {
        Ok(web.windows().await?.into_iter().find(|handle| !known.contains(handle) && *handle != banner))
    })
    .await?;
    web.switch_to(&reopened).await?;
    web.wait("[data-testid=tile-bob]", CALL).await?;
    web.wait_text("[data-testid=call-timer]", CALL, |t| timer_seconds(t).is_some_and(|s| s >= 1)).await?;
    scene.shot("10-reopened-on-the-call").await?;
    wait_for_call_view_to_close(web).await?;

    video_call(scene, web).await?;
    link_calls(scene, web).await
}

/// `hark:` links clicked while Hark runs: each second launch hands its link to the running app
/// and exits. A malformed one is refused with its reason; a good one is offered, and placed on
/// yes (a video call to the echo service), then hung up.
async fn link_calls(scene: &Scene, web: &WebDriver) -> Result<()> {
    let app = binary("hark-desktop")?;
    let status = scene.app.launch_again(&app, &["hark:call/../../etc/passwd"])?;
    anyhow::ensure!(status.success(), "the second launch failed: {status}");
    web.wait("[data-testid=link-refused][data-reason=bad_user]", SHORT).await?;
    scene.shot("16-link-refused").await?;
    web.click_css("[data-testid=link-ok]", SHORT).await?;
    wait_for("the refusal to close", SHORT, || async { Ok(web.find("[data-testid=link-prompt]").await?.is_none().then_some(())) }).await?;
    anyhow::ensure!(web.find("[data-testid=call-view]").await?.is_none(), "a refused link started a call");

    scene.app.launch_again(&app, &["hark:call/echo?video"])?;
    web.wait_text("[data-testid=link-users]", SHORT, |t| t == "echo").await?;
    web.wait_text("[data-testid=link-question]", SHORT, |t| t.starts_with("Video call")).await?;
    anyhow::ensure!(web.find("[data-testid=call-view]").await?.is_none(), "a link called before the person said yes");
    scene.shot("17-link-offered").await?;
    web.click_css("[data-testid=link-call]", SHORT).await?;
    web.wait_text("[data-testid=call-timer]", CALL, |t| timer_seconds(t).is_some_and(|s| s >= 1)).await?;
    web.wait("[data-testid=tile-alice][data-video=true]", SHORT).await?;
    scene.shot("18-link-call").await?;
    web.click_css("[data-testid=hangup]", SHORT).await?;
    wait_for_call_view_to_close(web).await
}

/// Where `tile`'s box is in the main window's page: x, y, width, height.
async fn tile_box(web: &WebDriver, tile: &str) -> Result<[f64; 4]> {
    let script = format!("const r = document.querySelector('[data-testid=\"video-{tile}\"]')?.getBoundingClientRect(); return r ? [r.x, r.y, r.width, r.height] : null;");
    let rect: Vec<f64> = web.execute(&script).await?.as_array().map(|a| a.iter().filter_map(|v| v.as_f64()).collect()).unwrap_or_default();
    rect.try_into().map_err(|_| anyhow::anyhow!("no box for {tile} in the page"))
}

/// What the main window shows in `tile`'s box, read from the screen (the app's video layer
/// draws it over the page, outside anything the page or WebDriver can read): an 8 x 8 grid of
/// R + G + B sums.
async fn tile_on_screen(web: &WebDriver, tile: &str) -> Result<Vec<u64>> {
    let [x, y, width, height] = tile_box(web, tile).await?;
    Ok(hark_e2e::window_image("Hark")?.grid(x, y, width, height))
}

/// The frame number of the 16:9 test pattern shown in `tile`'s box (fitted, `contain`), read
/// from the screen.
async fn number_on_screen(web: &WebDriver, tile: &str) -> Result<Option<u32>> {
    let [x, y, width, height] = tile_box(web, tile).await?;
    let shown_height = (width * 9.0 / 16.0).min(height);
    let top = y + (height - shown_height) / 2.0;
    let image = hark_e2e::window_image("Hark")?;
    let picture = image.luma_picture(x.ceil() as usize, top.ceil() as usize, width.floor() as usize, shown_height.floor() as usize);
    Ok(picture.as_ref().and_then(hark_video::pattern::read_number))
}

/// What the app's canvas for `tile` shows: a luma-like sum per 8x8 block, read in the page.
async fn tile_pixels(web: &WebDriver, tile: &str) -> Result<Vec<u64>> {
    let script = format!(
        "const canvas = document.querySelector('[data-testid=\"video-{tile}\"]');
         if (!canvas || !canvas.width) return null;
         const copy = document.createElement('canvas');
         copy.width = 8; copy.height = 8;
         const context = copy.getContext('2d', {{ willReadFrequently: true }});
         context.drawImage(canvas, 0, 0, 8, 8);
         return Array.from(context.getImageData(0, 0, 8, 8).data);"
    );
    let value = web.execute(&script).await?;
    let bytes: Vec<u64> = value.as_array().map(|a| a.iter().filter_map(|v| v.as_u64()).collect()).unwrap_or_default();
    Ok(bytes.chunks(4).map(|p| p[..3].iter().sum()).collect())
}

/// bob calls the app with video (his test pattern); the app answers from the banner and shows
/// him, moving; the app's own test-pattern camera reaches bob, counting up; camera off is seen
/// at bob's; minimised, the mini window shows bob; switching to audio releases both cameras and
/// shrinks the mini window to its controls.
async fn video_call(scene: &Scene, web: &WebDriver) -> Result<()> {
    let recording = scene.app.home.path().join("alice-at-bob.y4m");
    let recording_spec = format!("record:{}", recording.display());
    let known = web.windows().await?;
    let _bob = scene.cli_call("bob", &["--video", "--duration", "30", "--camera", "test-pattern", "--video-out", &recording_spec], "bob-video.log")?;
    let banner = web.wait_new_window(&known, CALL).await?;
    web.switch_to(&banner).await?;
    web.wait_text("[data-testid=banner-media]", SHORT, |t| t.contains("video")).await?;
    scene.shot("11-banner-video-call").await?;
    web.click_closing_window("[data-testid=banner-accept]", SHORT).await?;
    let main = wait_for("the main window", SHORT, || async {
        let windows = web.windows().await?;
        Ok(windows.into_iter().find(|handle| *handle != banner))
    })
    .await?;
    web.switch_to(&main).await?;

    // bob's moving picture shows large, ours small, both drawn by the app's video layer over
    // the page: read from the screen.
    web.wait("[data-testid=tile-bob][data-video=true]", CALL).await?;
    web.wait("[data-testid=tile-alice][data-video=true]", CALL).await?;
    let drawn_by = |tile: &str| format!("return document.querySelector('[data-testid=\"video-{tile}\"]')?.dataset.drawnBy ?? null");
    let (bob_by, own_by) = (web.execute(&drawn_by("bob")).await?, web.execute(&drawn_by("self")).await?);
    anyhow::ensure!(bob_by == "layer" && own_by == "layer", "who draws bob's tile: {bob_by}, ours: {own_by}");
    // It is bob's test pattern, and it moves on: the frame numbers stamped on it, read off the
    // screen, go up.
    let number = wait_for("bob's frame number on screen", SHORT, || async { number_on_screen(web, "bob").await }).await?;
    // Our own test pattern moves too (its name's caption alone would not).
    let spread = |cells: &[u64]| cells.iter().max().copied().unwrap_or(0) - cells.iter().min().copied().unwrap_or(0);
    let own = tile_on_screen(web, "self").await?;
    anyhow::ensure!(spread(&own) > 60, "our own small view is not blank: {own:?}");
    wait_for("our own picture to move", SHORT, || async { Ok((tile_on_screen(web, "self").await? != own).then_some(())) }).await?;
    scene.shot("12-video-call").await?;
    let later = wait_for("a later frame of bob's on screen", SHORT, || async { Ok(number_on_screen(web, "bob").await?.filter(|&n| n > number)) }).await?;
    eprintln!("bob's frames {number} then {later} read off the screen");
    scene.shot("13-video-call-later").await?;

    // What bob decodes of alice (he records it as it comes): her test pattern's numbers, going up.
    let numbers = wait_for("bob's recording", SHORT, || async {
        let Ok(mut reader) = hark_video::y4m::Y4mReader::open(&recording) else { return Ok(None) };
        let mut numbers = Vec::new();
        while let Ok(Some(frame)) = reader.read_frame() {
            numbers.extend(hark_video::pattern::read_number(&frame));
        }
        Ok((numbers.len() >= 30).then_some(numbers))
    })
    .await?;
    anyhow::ensure!(numbers.windows(2).all(|w| w[1] > w[0]), "alice's frame numbers go up at bob's: {numbers:?}");
    eprintln!("bob decoded {} numbered pictures of alice", numbers.len());

    // Our camera off: bob's engine says our video stopped; on again after a moment.
    let bob_log = scene.app.home.path().join("bob-video.log");
    let bob_says = |what: &'static str| {
        let log = bob_log.clone();
        move || {
            let log = log.clone();
            async move { Ok(std::fs::read_to_string(&log).unwrap_or_default().contains(what).then_some(())) }
        }
    };
    web.click_css("[data-testid=camera]", SHORT).await?;
    web.wait("[data-testid=camera][aria-pressed=true]", SHORT).await?;
    wait_for("bob to see alice's video stop", SHORT, bob_says("remote_video_unavailable")).await?;
    scene.shot("14-video-camera-off").await?;
    web.click_css("[data-testid=camera]", SHORT).await?;
    web.wait("[data-testid=tile-alice][data-video=true]", SHORT).await?;

    // Minimised, the call floats as the mini window with bob's picture above the controls.
    let _window_manager = hark_e2e::start_window_manager(&scene.app.home.path().join("openbox-video.log"))?;
    let known = web.windows().await?;
    let mini = wait_for("the mini window", CALL, || async {
        hark_e2e::minimise_windows_titled("Hark")?;
        Ok(web.wait_new_window(&known, Duration::from_secs(2)).await.ok())
    })
    .await?;
    web.switch_to(&mini).await?;
    web.wait_text("[data-testid=mini-name]", SHORT, |t| t.to_lowercase().contains("bob")).await?;
    let inner_height = |want: f64| {
        move || async move { Ok(web.execute("return window.innerHeight;").await?.as_f64().filter(|h| (h - want).abs() < 2.0).map(|_| ())) }
    };
    wait_for("the mini window at its video height", SHORT, inner_height(84.0 + 169.0)).await?;
    web.wait("[data-testid=mini-picture][data-video=true]", SHORT).await?;
    // The mini window draws in its page: WebKitGTK decodes VP8 (GStreamer's vp8dec, which its
    // package depends on), so bob's video crossed as it came and the page decoded and drew it.
    let decoded = web.execute("return document.querySelector('[data-testid=\"video-bob\"]')?.dataset.decodedBy ?? null").await?;
    anyhow::ensure!(decoded == "page", "who decoded bob's picture in the mini window: {decoded}");
    let mini_cells = wait_for("bob's picture in the mini window", SHORT, || async {
        let cells = tile_pixels(web, "bob").await?;
        Ok((cells.len() == 64 && spread(&cells) > 60).then_some(cells))
    })
    .await?;
    anyhow::ensure!(mini_cells.len() == 64);
    scene.shot("14b-mini-window-video").await?;

    // Switch to audio (the call view's button, its window out of sight): both cameras are
    // released, the call goes on, and the mini window shrinks to its controls.
    web.switch_to(&main).await?;
    let released = scene.app.log().matches("camera released").count();
    web.execute("document.querySelector('[data-testid=to-audio]').click(); return true;").await?;
    wait_for("bob to hear the call go down to audio", SHORT, bob_says("\"media_changed\"")).await?;
    wait_for("the app's camera to be released", SHORT, || async { Ok((scene.app.log().matches("camera released").count() > released).then_some(())) }).await?;
    web.switch_to(&mini).await?;
    wait_for("the mini window at its audio height", SHORT, inner_height(84.0)).await?;
    wait_for("the mini window's picture to go", SHORT, || async { Ok(web.find("[data-testid=mini-picture]").await?.is_none().then_some(())) }).await?;
    scene.shot("15-video-to-audio-mini").await?;
    web.click_closing_window("[data-testid=mini-back]", SHORT).await?;
    web.switch_to(&main).await?;
    wait_for("the mini window to close", SHORT, || async { Ok((!web.windows().await?.contains(&mini)).then_some(())) }).await?;
    web.wait("[data-testid=tile-bob][data-video=false]", SHORT).await?;
    scene.shot("15-video-to-audio").await?;
    wait_for_call_view_to_close(web).await?;

    Ok(())
}
