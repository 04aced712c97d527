//! Helpers for Hark's end-to-end tests: a small WebDriver client (enough to drive the real app
//! through tauri-driver and WebKitWebDriver) and the processes a scenario needs.
//!
//! Waiting is always "poll until true or a deadline passes": the app's windows, calls and
//! timers take real time, and a fixed sleep would either waste it or flake.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

/// The W3C element key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A child process killed when dropped.
pub struct Guarded(pub Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The workspace's target directory (`CARGO_TARGET_DIR` or `target/` at the root).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target"))
}

/// A built binary of the workspace (debug profile), which must exist.
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = target_dir().join("debug").join(name);
    if !path.exists() {
        bail!("{} is missing: run `cargo xtask test` (it builds the app before the end-to-end tests)", path.display());
    }
    Ok(path)
}

/// A free TCP port on loopback (closed again before use; fine for a test machine).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Seconds shown by a call timer (`MM:SS` or `H:MM:SS`, anywhere in the text).
pub fn timer_seconds(text: &str) -> Option<u64> {
    let token = text.split_whitespace().find(|w| w.contains(':'))?;
    token.split(':').try_fold(0u64, |total, part| Some(total * 60 + part.trim().parse::<u64>().ok()?))
}

/// Polls `check` every 100 ms until it gives `Some` or `within` passes.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + within;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        if Instant::now() > deadline {
            return Err(anyhow!("timed out after {within:?} waiting for {what}; last error: {last_error:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One WebDriver session.
pub struct WebDriver {
    http: reqwest::Client,
    base: String,
    session: String,
}

impl WebDriver {
    /// Starts a session on the driver at `port` with these capabilities, waiting for the driver
    /// to listen first.
    pub async fn start(port: u16, capabilities: Value) -> Result<WebDriver> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        let base = format!("http://127.0.0.1:{port}");
        wait_for("the WebDriver server", Duration::from_secs(20), || {
            let http = http.clone();
            let url = format!("{base}/status");
            async move { Ok(http.get(url).send().await.ok().map(|_| ())) }
        })
        .await?;
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": capabilities}}))
            .send()
            .await?
            .json()
            .await?;
        let session = answer["value"]["sessionId"].as_str().ok_or_else(|| anyhow!("no session: {answer}"))?.to_owned();
        Ok(WebDriver { http, base, session })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.with_context(|| url.clone())?.json().await?;
        if let Some(error) = answer["value"]["error"].as_str() {
            bail!("{path}: {error}: {}", answer["value"]["message"]);
        }
        Ok(answer["value"].clone())
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// The first element matching `css`, if any now.
    pub async fn find(&self, css: &str) -> Result<Option<String>> {
        let found = self.post("/elements", json!({"using": "css selector", "value": css})).await?;
        Ok(found.as_array().and_then(|all| all.first()).and_then(|e| e[ELEMENT].as_str()).map(str::to_owned))
    }

    /// Waits for an element matching `css`.
    pub async fn wait(&self, css: &str, within: Duration) -> Result<String> {
        wait_for(css, within, || self.find(css)).await
    }

    /// Waits until the text of the first element matching `css` satisfies `test`, giving the
    /// text (its `textContent`, whitespace-trimmed: what is drawn, without WebDriver's
    /// visibility rules).
    pub async fn wait_text(&self, css: &str, within: Duration, test: impl Fn(&str) -> bool) -> Result<String> {
        let script = format!("const e = document.querySelector({}); return e ? e.textContent.trim() : null;", json!(css));
        wait_for(&format!("the text of {css}"), within, || async {
            let Some(text) = self.execute(&script).await?.as_str().map(str::to_owned) else { return Ok(None) };
            if test(&text) {
                Ok(Some(text))
            } else {
                // Kept as the last error, so a timeout says what was there instead.
                Err(anyhow!("the text was {text:?}"))
            }
        })
        .await
    }

    /// Clicks an element.
    pub async fn click(&self, element: &str) -> Result<()> {
        self.post(&format!("/element/{element}/click"), json!({})).await.map(|_| ())
    }

    /// Clicks the element matching `css`, waiting for it.
    pub async fn click_css(&self, css: &str, within: Duration) -> Result<()> {
        let element = self.wait(css, within).await?;
        self.click(&element).await
    }

    /// Types into an element (after clearing it).
    pub async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let element = self.wait(css, Duration::from_secs(10)).await?;
        self.post(&format!("/element/{element}/clear"), json!({})).await?;
        self.post(&format!("/element/{element}/value"), json!({"text": text})).await.map(|_| ())
    }

    /// Sends keys to an element (WebDriver key codes such as `\u{E00C}` for Escape).
    pub async fn post_keys(&self, element: &str, keys: &str) -> Result<()> {
        self.post(&format!("/element/{element}/value"), json!({"text": keys})).await.map(|_| ())
    }

    /// An element's visible text.
    pub async fn text(&self, element: &str) -> Result<String> {
        Ok(self.get(&format!("/element/{element}/text")).await?.as_str().unwrap_or_default().to_owned())
    }

    /// Runs a script in the current window.
    pub async fn execute(&self, script: &str) -> Result<Value> {
        self.post("/execute/sync", json!({"script": script, "args": []})).await
    }

    /// Every window handle.
    pub async fn windows(&self) -> Result<Vec<String>> {
        let all = self.get("/window/handles").await?;
        Ok(all.as_array().map(|a| a.iter().filter_map(|h| h.as_str().map(str::to_owned)).collect()).unwrap_or_default())
    }

    /// The current window handle.
    pub async fn current_window(&self) -> Result<String> {
        Ok(self.get("/window").await?.as_str().unwrap_or_default().to_owned())
    }

    /// Switches to a window.
    pub async fn switch_to(&self, handle: &str) -> Result<()> {
        self.post("/window", json!({"handle": handle})).await.map(|_| ())
    }

    /// Clicks a button that closes its own window (the banner's answers, the mini window's):
    /// WebDriver may then report the click's window as gone, which is the click working.
    pub async fn click_closing_window(&self, css: &str, within: Duration) -> Result<()> {
        match self.click_css(css, within).await {
            Err(error) if !error.to_string().contains("no such window") => Err(error.context(format!("clicking {css}"))),
            _ => Ok(()),
        }
    }

    /// Waits for a window that is not in `known` and gives its handle (the handle list is not
    /// in creation order, so new windows are found by difference).
    pub async fn wait_new_window(&self, known: &[String], within: Duration) -> Result<String> {
        wait_for("a new window", within, || async {
            Ok(self.windows().await?.into_iter().find(|h| !known.contains(h)))
        })
        .await
    }

    /// Ends the session (the app quits).
    pub async fn quit(&self) {
        let _ = self.http.delete(format!("{}/session/{}", self.base, self.session)).send().await;
    }
}

/// The desktop app with first-run folders of its own, its built-in server on a free port, and a
/// tauri-driver to start it through: what the end-to-end test and `cargo xtask bench app` share.
pub struct AppUnderTest {
    /// Holds `config/`, `data/`, `state/` (the XDG folders) and logs.
    pub home: tempfile::TempDir,
    /// The built-in server's base URL.
    pub server: String,
    driver_port: u16,
    /// The app's environment, for launching it again.
    envs: Vec<(&'static str, String)>,
    _tauri_driver: Guarded,
}

impl AppUnderTest {
    /// Starts tauri-driver with the app's environment; the app starts with each [`Self::session`].
    pub fn prepare(tauri_driver: &Path) -> Result<AppUnderTest> {
        AppUnderTest::start_driver(tauri_driver, true, &[])
    }

    /// Like [`Self::prepare`], but closing the main window leaves the app in the tray (the
    /// tray icon is created under Xvfb even with no tray host to show it).
    pub fn prepare_keeping_tray(tauri_driver: &Path) -> Result<AppUnderTest> {
        AppUnderTest::start_driver(tauri_driver, false, &[])
    }

    /// Like [`Self::prepare_keeping_tray`], with more of the app's environment (a benchmark's
    /// switches).
    pub fn prepare_keeping_tray_with(tauri_driver: &Path, extra: &[(&'static str, String)]) -> Result<AppUnderTest> {
        AppUnderTest::start_driver(tauri_driver, false, extra)
    }

    fn start_driver(tauri_driver: &Path, quit_on_close: bool, extra: &[(&'static str, String)]) -> Result<AppUnderTest> {
        let home = tempfile::tempdir()?;
        let app_port = free_port()?;
        let (driver_port, native_port) = (free_port()?, free_port()?);
        let path = |sub: &str| home.path().join(sub).display().to_string();
        let envs = [
            ("XDG_CONFIG_HOME", path("config")),
            ("XDG_DATA_HOME", path("data")),
            ("XDG_STATE_HOME", path("state")),
            ("HARK_EMBEDDED_LISTEN", format!("127.0.0.1:{app_port}")),
            // No sound is made; the engine still decodes and reports what would ring.
            ("HARK_SILENT_RINGTONES", "1".into()),
            // No camera on these machines: the moving, numbered test pattern stands in.
            ("HARK_TEST_CAMERA", "test-pattern".into()),
            ("RUST_LOG", "info".into()),
        ];
        // No tray host under Xvfb to bring the window back from: closing it ends the app.
        let quit = quit_on_close.then(|| ("HARK_QUIT_ON_CLOSE", "1".to_owned()));
        let envs: Vec<(&'static str, String)> = envs.into_iter().chain(quit).chain(extra.iter().cloned()).collect();
        let tauri_driver = spawn_logged(
            tauri_driver,
            &["--port", &driver_port.to_string(), "--native-port", &native_port.to_string()],
            &envs,
            &home.path().join("tauri-driver.log"),
        )
        .context("tauri-driver (cargo xtask test installs it into target/tools)")?;
        Ok(AppUnderTest { home, server: format!("http://127.0.0.1:{app_port}"), driver_port, envs, _tauri_driver: tauri_driver })
    }

    /// Launches `app` a second time with `args`, as a desktop launcher does with a clicked link,
    /// and waits for it to exit: the first instance takes its arguments and it goes.
    pub fn launch_again(&self, app: &Path, args: &[&str]) -> Result<std::process::ExitStatus> {
        let mut second = self.command(app);
        second.args(args);
        second.stdout(std::process::Stdio::null()).stderr(std::fs::File::create(self.home.path().join("second-launch.log"))?);
        let mut child = second.spawn().with_context(|| format!("launching {} again", app.display()))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                bail!("the second launch did not hand over and exit within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `program` with the app's environment (its folders, its server's address), for what runs
    /// beside it: a second launch, `xdg-open` with a link.
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command.envs(self.envs.iter().map(|(k, v)| (*k, v.as_str())));
        command
    }

    /// Launches `app` in a new WebDriver session.
    pub async fn session(&self, app: &Path) -> Result<WebDriver> {
        self.session_with_args(app, &[]).await
    }

    /// Launches `app` with `args` (a desktop launcher's `%u`) in a new WebDriver session.
    pub async fn session_with_args(&self, app: &Path, args: &[&str]) -> Result<WebDriver> {
        WebDriver::start(self.driver_port, json!({"tauri:options": {"application": app.display().to_string(), "args": args}})).await
    }

    /// Everything the app has logged so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.home.path().join("state/hark/logs")).into_iter().flatten().flatten() {
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
        text
    }
}

/// Signs up on the sign-in form (the built-in server) and waits for the contacts.
pub async fn sign_up(web: &WebDriver, user: &str, password: &str, nickname: Option<&str>) -> Result<()> {
    const WITHIN: Duration = Duration::from_secs(20);
    web.wait("[data-testid=signin-form]", Duration::from_secs(30)).await?;
    web.click_css("[data-testid=signin-register]", WITHIN).await?;
    web.type_into("[data-testid=signin-user]", user).await?;
    web.type_into("[data-testid=signin-password]", password).await?;
    if let Some(nickname) = nickname {
        web.type_into("[data-testid=signin-nickname]", nickname).await?;
    }
    web.click_css("[data-testid=signin-submit]", WITHIN).await?;
    web.wait("[data-testid=contacts-list]", WITHIN).await.map(|_| ())
}

/// Saves a PNG of the whole X screen (`$DISPLAY`), windows where the window manager put them.
///
/// Taken with `xwd` rather than WebDriver's screenshot: WebKitGTK's snapshot for WebDriver never
/// answers when the app runs with its memory tuning (no DMA-BUF renderer), and the screen also
/// shows the banner's real place beside the main window.
pub fn capture_screen(path: &Path) -> Result<()> {
    let (width, height, rgb) = xwd(&["-root"])?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(file, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(&rgb)?;
    Ok(())
}

/// What `xwd` dumps of the window its `args` name, as RGB: width, height, pixels.
fn xwd(args: &[&str]) -> Result<(u32, u32, Vec<u8>)> {
    let output = Command::new("xwd").arg("-silent").args(args).output().context("running xwd (Debian package x11-apps)")?;
    if !output.status.success() {
        bail!("xwd {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    xwd_to_rgb(&output.stdout)
}

/// Decodes an XWD dump of a TrueColor screen with 32 bits per pixel (what Xvfb at depth 24
/// gives) into RGB bytes.
fn xwd_to_rgb(dump: &[u8]) -> Result<(u32, u32, Vec<u8>)> {
    let field = |index: usize| -> Result<u32> {
        let bytes = dump.get(index * 4..index * 4 + 4).ok_or_else(|| anyhow!("short XWD header"))?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    };
    let (header_size, format, width, height) = (field(0)? as usize, field(2)?, field(4)?, field(5)?);
    let (byte_order, bits_per_pixel, bytes_per_line) = (field(7)?, field(11)?, field(12)? as usize);
    let (red_mask, green_mask, blue_mask, colors) = (field(14)?, field(15)?, field(16)?, field(19)? as usize);
    if format != 2 || bits_per_pixel != 32 {
        bail!("unsupported XWD image: format {format}, {bits_per_pixel} bits per pixel");
    }
    let pixels = dump.get(header_size + colors * 12..).ok_or_else(|| anyhow!("short XWD dump"))?;
    let channel = |pixel: u32, mask: u32| ((pixel & mask) >> mask.trailing_zeros()) as u8;
    let mut rgb = Vec::with_capacity((width * height * 3) as usize);
    for row in 0..height as usize {
        let line = pixels.get(row * bytes_per_line..row * bytes_per_line + width as usize * 4).ok_or_else(|| anyhow!("short XWD rows"))?;
        for p in line.chunks_exact(4) {
            let bytes = [p[0], p[1], p[2], p[3]];
            let pixel = if byte_order == 0 { u32::from_le_bytes(bytes) } else { u32::from_be_bytes(bytes) };
            rgb.extend_from_slice(&[channel(pixel, red_mask), channel(pixel, green_mask), channel(pixel, blue_mask)]);
        }
    }
    Ok((width, height, rgb))
}

/// Starts a window manager (openbox) on the test's X display: minimising a window needs one,
/// since it is the window manager that iconifies on the client's request.
pub fn start_window_manager(log: &Path) -> Result<Guarded> {
    spawn_logged(Path::new("openbox"), &["--sm-disable"], &[], log)
}

/// Asks the window manager to close the top-level window titled exactly `title`, as its title
/// bar's close button does.
pub fn close_window_titled(title: &str) -> Result<()> {
    let status = Command::new("wmctrl").args(["-F", "-c", title]).status().context("running wmctrl")?;
    anyhow::ensure!(status.success(), "wmctrl found no window titled {title:?}");
    Ok(())
}

/// Asks the window manager to minimise every top-level window titled exactly `title`, as a
/// click on a title bar's minimise button does. Without a window manager nothing happens.
pub fn minimise_windows_titled(title: &str) -> Result<()> {
    let pattern = format!("^{title}$");
    let status = Command::new("xdotool")
        .args(["search", "--name", &pattern, "windowminimize", "%@"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running xdotool")?;
    anyhow::ensure!(status.success(), "xdotool found no window titled {title:?}");
    Ok(())
}

/// A window's pixels as the screen shows them, RGB, rows top to bottom.
pub struct ScreenImage {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl ScreenImage {
    /// The box at (`x`, `y`) of `width` x `height` (window pixels, clipped to the window) as an
    /// 8 x 8 grid of sums of R + G + B over each cell, rows first: enough to tell a blank box
    /// from a picture and one picture from the next.
    pub fn grid(&self, x: f64, y: f64, width: f64, height: f64) -> Vec<u64> {
        let clip = |v: f64, max: usize| (v.max(0.0) as usize).min(max);
        let (x0, y0) = (clip(x, self.width), clip(y, self.height));
        let (x1, y1) = (clip(x + width, self.width), clip(y + height, self.height));
        let mut cells = vec![0u64; 64];
        if x1 <= x0 || y1 <= y0 {
            return cells;
        }
        for row in y0..y1 {
            let cell_row = (row - y0) * 8 / (y1 - y0);
            for column in x0..x1 {
                let cell = cell_row * 8 + (column - x0) * 8 / (x1 - x0);
                let at = (row * self.width + column) * 3;
                cells[cell] += self.rgb[at..at + 3].iter().map(|&v| u64::from(v)).sum::<u64>();
            }
        }
        let per_cell = (((x1 - x0) * (y1 - y0)) as u64 / 64).max(1);
        cells.iter().map(|sum| sum / per_cell).collect()
    }

    /// The box at (`x`, `y`) of `width` x `height` (whole pixels inside the window) as a grey
    /// I420 picture: its luma, BT.601 at limited range, for reading a test pattern's stamp
    /// ([`hark_video::pattern::read_number`]) off the screen.
    pub fn luma_picture(&self, x: usize, y: usize, width: usize, height: usize) -> Option<hark_video::I420Frame> {
        if width < 2 || height < 2 || x + width > self.width || y + height > self.height {
            return None;
        }
        let (width, height) = (width & !1, height & !1);
        let mut frame = hark_video::I420Frame::black(width as u32, height as u32);
        let (luma, _, _) = frame.planes_mut();
        for row in 0..height {
            for column in 0..width {
                let at = ((y + row) * self.width + x + column) * 3;
                let [r, g, b] = [self.rgb[at], self.rgb[at + 1], self.rgb[at + 2]].map(f64::from);
                luma[row * width + column] = (16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0).round() as u8;
            }
        }
        Some(frame)
    }
}

/// What the X window named `title` shows now, read from the X server with `xwd` (from
/// x11-apps): pictures the app draws outside its web page too, which WebDriver's screenshots
/// never see.
pub fn window_image(title: &str) -> Result<ScreenImage> {
    let (width, height, rgb) = xwd(&["-name", title])?;
    Ok(ScreenImage { width: width as usize, height: height as usize, rgb })
}

/// Starts `program` with `args` and `envs`, output to `log`.
pub fn spawn_logged(program: &Path, args: &[&str], envs: &[(&str, String)], log: &Path) -> Result<Guarded> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    for (key, value) in envs {
        command.env(key, value);
    }
    Ok(Guarded(command.spawn().with_context(|| format!("starting {}", program.display()))?))
}

#[cfg(test)]
mod screen_tests {
    use super::ScreenImage;

    #[test]
    fn a_box_on_screen_reads_as_eight_by_eight_cells_clipped_to_the_window() {
        // 32 x 16: white left of x = 16, black right of it.
        let (width, height) = (32usize, 16usize);
        let rgb: Vec<u8> = (0..width * height).flat_map(|i| if i % width < 16 { [255u8; 3] } else { [0u8; 3] }).collect();
        let image = ScreenImage { width, height, rgb };
        let whole = image.grid(0.0, 0.0, 32.0, 16.0);
        for row in whole.chunks(8) {
            assert_eq!(row, &[765, 765, 765, 765, 0, 0, 0, 0]);
        }
        // Half the box lies outside the window: only what is inside is read.
        let clipped = image.grid(8.0, 0.0, 40.0, 16.0);
        // 24 columns in eight cells of three: the third holds two white columns and one black.
        assert_eq!(&clipped[..8], &[765, 765, 510, 0, 0, 0, 0, 0], "{clipped:?}");
        assert_eq!(image.grid(40.0, 0.0, 8.0, 8.0), vec![0; 64], "a box off the window reads nothing");
    }
}
