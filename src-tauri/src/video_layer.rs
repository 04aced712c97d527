//! The main window's video layer: the call view's pictures drawn by GTK over the page, not by
//! WebKit in it.
//!
//! Why: drawing 30 pictures a second inside the page made WebKitGTK repaint the page in software
//! for each (Skia on the CPU, a fresh shared-memory bitmap per update, a copy into the UI
//! process); measured, that was most of a 720p call's cost (docs/BENCHMARKS.md). Here a picture
//! is converted once to the window's pixel format (SIMD, `hark_video`) on a runtime worker and
//! painted by Cairo in the web view's own `draw`, after WebKit painted the page: a new picture
//! redraws its box from the page WebKit already has, and the web process does nothing. The page
//! says where the boxes are, and where it has something over a picture (a name, a badge, a
//! button, a smaller view: the "holes" the layer leaves alone in that box).
//! `../shared/VIDEO.md` §2 lists this as the native fallback; WebDriver screenshots do not see
//! it (the end-to-end test reads the screen).
//!
//! Two ways that did not work, for whoever tries again: a widget over the web view (a
//! `GtkOverlay` child) made WebKit count the page as hidden and stop updating it; a clear page
//! over a layer under it left every change in the clear parts painted over the last (WebKitGTK
//! 2.50's backing store blends updates instead of replacing them).
//!
//! The layer is a [`hark_frames::TileView`] per box, a viewer like a page: the engine decodes and
//! scales for it only while a box shows. Latest-picture semantics: a worker keeps only the newest
//! converted picture of each tile until the GTK thread takes it, and asks for one redraw of the
//! boxes that changed, whatever came meanwhile. Linux only; elsewhere (and with
//! `HARK_VIDEO_LAYER=0`) the page draws its pictures itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use hark_frames::{FrameTiles, TileView};
use tauri::ipc::Channel;

use crate::api::{VideoFit, VideoLayerNews, VideoPlacement};

/// A picture converted for Cairo: B, G, R, 255 per pixel, rows packed.
struct Bitmap {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
    /// When the picture reached the layer (the engine had decoded and scaled it).
    arrived: std::time::Instant,
}

/// What the workers hand the GTK thread.
#[derive(Default)]
struct Handover {
    /// The newest picture of each tile not yet taken (`None`: the tile cleared).
    pictures: HashMap<String, Option<Bitmap>>,
    /// Whether a redraw is already asked for: the pictures that come meanwhile ride on it.
    asked: bool,
    /// New pictures drawn since boxes were placed after none, and when that was, and how long
    /// each took from reaching the layer to being drawn, in ms (logged when the boxes go:
    /// `cargo xtask bench app` reads the rate and the latency the layer adds).
    drawn: u64,
    latencies: Vec<f64>,
    since: Option<std::time::Instant>,
}

/// The layer's side that any thread holds (in [`crate::AppState`]); the GTK side lives on the
/// GTK thread.
pub struct VideoLayer {
    tiles: FrameTiles,
    /// One view and its worker per tile placed.
    views: Mutex<HashMap<String, PlacedView>>,
    handover: Arc<Mutex<Handover>>,
    /// Off by `HARK_VIDEO_LAYER=0`, and outside Linux.
    enabled: bool,
}

struct PlacedView {
    view: TileView,
    mirror: bool,
    worker: tauri::async_runtime::JoinHandle<()>,
}

impl Drop for PlacedView {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

/// At most this many boxes (a group call's nine, ourselves and spares).
const MAX_PLACEMENTS: usize = 16;
/// At most this many holes in a box (its name, badges, hints, buttons, a smaller view).
const MAX_HOLES: usize = 32;

impl VideoLayer {
    pub fn new(tiles: FrameTiles) -> VideoLayer {
        let enabled = cfg!(target_os = "linux") && std::env::var("HARK_VIDEO_LAYER").as_deref() != Ok("0");
        VideoLayer { tiles, views: Mutex::default(), handover: Arc::default(), enabled }
    }

    /// Draws the layer in the main window's page (once per window made) and sends its news to
    /// `channel`. `false`: no layer here, the page draws its pictures itself.
    pub async fn open(&self, window: &tauri::WebviewWindow, channel: Channel<VideoLayerNews>) -> bool {
        if !self.enabled || window.label() != "main" {
            return false;
        }
        let opened = gtk_side::attach(window, channel, Arc::clone(&self.handover)).await;
        if !opened {
            tracing::warn!("no video layer in this window: the page draws the pictures");
        }
        opened
    }

    /// Shows the tiles at `placements` from now on, in that order (an empty list: none).
    pub fn place(&self, app: &tauri::AppHandle, placements: Vec<VideoPlacement>) {
        if !self.enabled {
            return;
        }
        let mut placements = placements;
        placements.retain(|p| p.tile.len() <= hark_frames::MAX_NAME_LEN && [p.x, p.y, p.width, p.height].iter().all(|v| v.is_finite()));
        placements.truncate(MAX_PLACEMENTS);
        for placement in &mut placements {
            placement.holes.retain(|h| [h.x, h.y, h.width, h.height].iter().all(|v| v.is_finite()) && h.width > 0.0 && h.height > 0.0);
            placement.holes.truncate(MAX_HOLES);
        }
        {
            let mut views = lock(&self.views);
            let mut handover = lock(&self.handover);
            if placements.is_empty() && !views.is_empty() {
                let pictures = std::mem::take(&mut handover.drawn);
                let seconds = handover.since.take().map(|since| since.elapsed().as_secs_f64()).unwrap_or_default();
                let mut latencies = std::mem::take(&mut handover.latencies);
                latencies.sort_by(f64::total_cmp);
                let at = |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q).round().max(0.0) as usize).copied().unwrap_or(f64::NAN);
                let (latency_p50_ms, latency_p95_ms) = (at(0.5), at(0.95));
                tracing::info!(pictures, seconds, latency_p50_ms, latency_p95_ms, "video layer: the boxes went");
            } else if !placements.is_empty() && handover.since.is_none() {
                handover.since = Some(std::time::Instant::now());
            }
            drop(handover);
            views.retain(|tile, placed| placements.iter().any(|p| &p.tile == tile && p.mirror == placed.mirror));
            for placement in &placements {
                if !views.contains_key(&placement.tile) {
                    let Some(view) = self.tiles.view(&placement.tile) else { continue };
                    let worker = tauri::async_runtime::spawn(convert_pictures(placement.tile.clone(), view.pictures(), placement.mirror, Arc::clone(&self.handover)));
                    views.insert(placement.tile.clone(), PlacedView { view, mirror: placement.mirror, worker });
                }
                let (width, height) = device_size(placement);
                let fit = match placement.fit {
                    VideoFit::Contain => hark_frames::Fit::Contain,
                    VideoFit::Cover => hark_frames::Fit::Cover,
                };
                if let Some(placed) = views.get(&placement.tile) {
                    placed.view.show(width, height, fit);
                }
            }
        }
        if let Err(error) = app.run_on_main_thread(move || gtk_side::place(placements)) {
            tracing::warn!(%error, "could not place the video layer's boxes");
        }
    }

    /// Takes every box away and lets go of the page's layer: its page is going (a reload, or
    /// the window closed). A new page opens the layer again when it shows video.
    pub fn forget_page(&self, app: &tauri::AppHandle) {
        self.place(app, Vec::new());
        if self.enabled {
            if let Err(error) = app.run_on_main_thread(gtk_side::detach) {
                tracing::warn!(%error, "could not let go of the video layer");
            }
        }
    }
}

/// Device pixels per CSS pixel of a box's page (a broken or absurd scale counts as 1, at most 4).
fn device_scale(placement: &VideoPlacement) -> f64 {
    if placement.scale.is_finite() && placement.scale > 0.0 {
        placement.scale.min(4.0)
    } else {
        1.0
    }
}

/// A box's size in device pixels (0 x 0 for an empty or absurd box: nothing is decoded for it).
fn device_size(placement: &VideoPlacement) -> (u32, u32) {
    let scale = device_scale(placement);
    let side = |css: f64| (css * scale).round().clamp(0.0, 8192.0) as u32;
    let (width, height) = (side(placement.width), side(placement.height));
    if width == 0 || height == 0 {
        (0, 0)
    } else {
        (width, height)
    }
}

/// Converts each new picture of `tile` for Cairo and leaves it for the GTK thread.
async fn convert_pictures(tile: String, mut pictures: hark_frames::Pictures, mirror: bool, handover: Arc<Mutex<Handover>>) {
    while let Some(picture) = pictures.next().await {
        let arrived = std::time::Instant::now();
        let bitmap = picture.map(|frame| Bitmap { width: frame.width(), height: frame.height(), pixels: frame.to_bgra(mirror), arrived });
        let ask = {
            let mut handover = lock(&handover);
            handover.pictures.insert(tile.clone(), bitmap);
            !std::mem::replace(&mut handover.asked, true)
        };
        if ask {
            gtk_side::redraw_soon(Arc::clone(&handover));
        }
    }
}

/// Where a `picture_width` x `picture_height` picture (device pixels) goes in the placement's
/// box (CSS pixels), fitted and centred: its top left and its scale from device pixels to CSS
/// pixels. A picture within a pixel of the box's size is drawn as it is, at a whole device pixel,
/// so Cairo copies it instead of resampling it.
fn fitted(placement: &VideoPlacement, picture_width: u32, picture_height: u32) -> (f64, f64, f64) {
    let device = device_scale(placement);
    let (width, height) = (f64::from(picture_width) / device, f64::from(picture_height) / device);
    let cover = placement.fit == VideoFit::Cover;
    let mut scale = hark_engine::video::view_scale(picture_width, picture_height, device_size(placement), cover).unwrap_or(1.0);
    if (scale - 1.0).abs() * width.max(height) < 1.0 {
        scale = 1.0;
    }
    let mut x = placement.x + (placement.width - width * scale) / 2.0;
    let mut y = placement.y + (placement.height - height * scale) / 2.0;
    if scale == 1.0 {
        (x, y) = ((x * device).round() / device, (y * device).round() / device);
    }
    (x, y, scale / device)
}

/// A rectangle: x, y, width, height.
type Rect = (f64, f64, f64, f64);

/// What of `area` the holes leave, as rectangles that do not overlap (a clip made of overlapping
/// holes would give back what two holes share). Each hole cuts every piece it meets into at
/// most four: above it, below it, left and right of it.
fn uncovered(area: Rect, holes: &[crate::api::VideoHole]) -> Vec<Rect> {
    let mut pieces = vec![area];
    for hole in holes {
        let (hx0, hy0, hx1, hy1) = (hole.x, hole.y, hole.x + hole.width, hole.y + hole.height);
        let mut next = Vec::with_capacity(pieces.len() + 3);
        for (x, y, w, h) in pieces {
            let (x1, y1) = (x + w, y + h);
            if hx0 >= x1 || hx1 <= x || hy0 >= y1 || hy1 <= y {
                next.push((x, y, w, h));
                continue;
            }
            let (top, bottom) = (hy0.max(y), hy1.min(y1));
            let candidates = [(x, y, w, top - y), (x, bottom, w, y1 - bottom), (x, top, hx0.max(x) - x, bottom - top), (hx1.min(x1), top, x1 - hx1.min(x1), bottom - top)];
            next.extend(candidates.into_iter().filter(|&(_, _, w, h)| w > 0.0 && h > 0.0));
        }
        pieces = next;
    }
    pieces
}

/// A box's whole-pixel bounds in the window, for a redraw.
fn bounds(placement: &VideoPlacement) -> (i32, i32, i32, i32) {
    let (x0, y0) = (placement.x.floor(), placement.y.floor());
    let (x1, y1) = ((placement.x + placement.width).ceil(), (placement.y + placement.height).ceil());
    (x0 as i32, y0 as i32, (x1 - x0).max(0.0) as i32, (y1 - y0).max(0.0) as i32)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(target_os = "linux")]
mod gtk_side {
    //! The GTK thread's part: the boxes, the pictures as Cairo surfaces, and the drawing. All of
    //! it runs on the GTK thread.

    use std::cell::RefCell;
    use std::collections::{HashMap, HashSet};
    use std::sync::{Arc, Mutex};

    use gtk::prelude::*;
    use gtk::{cairo, glib};
    use tauri::ipc::Channel;

    use super::{bounds, device_scale, fitted, lock, uncovered, Bitmap, Handover};
    use crate::api::{VideoLayerNews, VideoPlacement};

    struct Layer {
        webview: webkit2gtk::WebView,
        handover: Arc<Mutex<Handover>>,
        placements: Vec<VideoPlacement>,
        pictures: HashMap<String, cairo::ImageSurface>,
        /// Tiles whose picture is new since it was last drawn, and when it reached the layer (the
        /// bench's count and latency).
        fresh: HashMap<String, std::time::Instant>,
        /// The tiles whose picture the page was told is showing.
        told: HashSet<String>,
        news: Channel<VideoLayerNews>,
    }

    thread_local! {
        static LAYER: RefCell<Option<Layer>> = const { RefCell::new(None) };
        /// The web views whose `draw` the layer is connected to (once each: a reloaded page
        /// opens the layer again on the same web view).
        static HOOKED: RefCell<Vec<glib::WeakRef<webkit2gtk::WebView>>> = const { RefCell::new(Vec::new()) };
    }

    /// Draws the layer in the window's web view, after WebKit paints the page.
    pub(super) async fn attach(window: &tauri::WebviewWindow, news: Channel<VideoLayerNews>, handover: Arc<Mutex<Handover>>) -> bool {
        let (done, answer) = tokio::sync::oneshot::channel();
        let asked = window.with_webview(move |platform| {
            attach_to(platform.inner(), news, handover);
            let _ = done.send(());
        });
        asked.is_ok() && answer.await.is_ok()
    }

    /// A web view's draw handler is connected once; a window made anew (after it was closed to
    /// the tray) gets its own. Each page opens the layer once, and its loading let go of the
    /// last page's ([`super::VideoLayer::forget_page`]).
    fn attach_to(webview: webkit2gtk::WebView, news: Channel<VideoLayerNews>, handover: Arc<Mutex<Handover>>) {
        let hooked = HOOKED.with(|hooked| {
            let mut hooked = hooked.borrow_mut();
            hooked.retain(|weak| weak.upgrade().is_some());
            let known = hooked.iter().any(|weak| weak.upgrade().as_ref() == Some(&webview));
            if !known {
                hooked.push(webview.downgrade());
            }
            known
        });
        if !hooked {
            // "After": WebKit's own handler (the class handler) has painted the page by then.
            webview.connect_local("draw", true, |values| {
                if let Some(Ok(cr)) = values.get(1).map(|v| v.get::<cairo::Context>()) {
                    draw(&cr);
                }
                Some(false.to_value())
            });
        }
        LAYER.with(|layer| {
            *layer.borrow_mut() = Some(Layer { webview, handover, placements: Vec::new(), pictures: HashMap::new(), fresh: HashMap::new(), told: HashSet::new(), news });
        });
        tracing::info!("video layer in the main window's web view");
    }

    /// Lets go of the web view (its page or window is going).
    pub(super) fn detach() {
        LAYER.with(|layer| layer.borrow_mut().take());
    }

    /// Shows the boxes at `placements`.
    pub(super) fn place(placements: Vec<VideoPlacement>) {
        LAYER.with(|layer| {
            let mut layer = layer.borrow_mut();
            let Some(layer) = layer.as_mut() else { return };
            let kept: HashSet<&str> = placements.iter().map(|p| p.tile.as_str()).collect();
            layer.pictures.retain(|tile, _| kept.contains(tile.as_str()));
            layer.fresh.retain(|tile, _| kept.contains(tile.as_str()));
            // A tile without a box shows nothing: the page hears so (a later box for it waits
            // for its next picture, which may never come: a camera turned off).
            let gone: Vec<String> = layer.told.iter().filter(|tile| !kept.contains(tile.as_str())).cloned().collect();
            for tile in gone {
                layer.told.remove(&tile);
                let _ = layer.news.send(VideoLayerNews { tile, showing: false });
            }
            lock(&layer.handover).pictures.retain(|tile, _| kept.contains(tile.as_str()));
            // The boxes' old places are redrawn too: the page shows there again.
            for placement in layer.placements.iter().chain(&placements) {
                let (x, y, w, h) = bounds(placement);
                layer.webview.queue_draw_area(x, y, w, h);
            }
            layer.placements = placements;
        });
    }

    /// Asks the GTK thread to take the newest pictures and redraw their boxes. A source on the
    /// default main context, which only the GTK thread runs (`invoke` would run it here, on a
    /// runtime worker, whenever nobody held the context).
    pub(super) fn redraw_soon(handover: Arc<Mutex<Handover>>) {
        glib::MainContext::default().spawn(async move {
            let pictures = {
                let mut handover = lock(&handover);
                handover.asked = false;
                std::mem::take(&mut handover.pictures)
            };
            LAYER.with(|layer| {
                let mut layer = layer.borrow_mut();
                let Some(layer) = layer.as_mut() else { return };
                for (tile, bitmap) in pictures {
                    // A worker stopped while it converted a picture: its box is gone.
                    if !layer.placements.iter().any(|p| p.tile == tile) {
                        continue;
                    }
                    let arrived = bitmap.as_ref().map(|bitmap| bitmap.arrived);
                    match bitmap.and_then(surface).zip(arrived) {
                        Some((surface, arrived)) => {
                            layer.pictures.insert(tile.clone(), surface);
                            layer.fresh.insert(tile.clone(), arrived);
                        }
                        None => {
                            layer.pictures.remove(&tile);
                            layer.fresh.remove(&tile);
                            if layer.told.remove(&tile) {
                                let _ = layer.news.send(VideoLayerNews { tile: tile.clone(), showing: false });
                            }
                        }
                    }
                    for placement in layer.placements.iter().filter(|p| p.tile == tile) {
                        let (x, y, w, h) = bounds(placement);
                        layer.webview.queue_draw_area(x, y, w, h);
                    }
                }
            });
        });
    }

    /// A Cairo surface over the bitmap's pixels (no copy).
    fn surface(bitmap: Bitmap) -> Option<cairo::ImageSurface> {
        let stride = bitmap.width as i32 * 4;
        cairo::ImageSurface::create_for_data(bitmap.pixels, cairo::Format::Rgb24, bitmap.width as i32, bitmap.height as i32, stride).ok()
    }

    /// Draws each box's picture, in order, around the holes.
    fn draw(cr: &cairo::Context) {
        LAYER.with(|layer| {
            let mut layer = layer.borrow_mut();
            let Some(layer) = layer.as_mut() else { return };
            let mut drawn = Vec::new();
            for placement in layer.placements.iter().filter(|p| p.width > 0.0 && p.height > 0.0) {
                let Some(picture) = layer.pictures.get(&placement.tile) else { continue };
                let _ = cr.save();
                // Clipped at whole device pixels: Cairo then clips without a mask.
                let device = device_scale(placement);
                let snap = |v: f64| (v * device).round() / device;
                for (x, y, w, h) in uncovered((placement.x, placement.y, placement.width, placement.height), &placement.holes) {
                    let (x0, y0, x1, y1) = (snap(x), snap(y), snap(x + w), snap(y + h));
                    if x1 > x0 && y1 > y0 {
                        cr.rectangle(x0, y0, x1 - x0, y1 - y0);
                    }
                }
                cr.clip();
                let (x, y, scale) = fitted(placement, picture.width() as u32, picture.height() as u32);
                cr.translate(x, y);
                cr.scale(scale, scale);
                if cr.set_source_surface(picture, 0.0, 0.0).is_ok() && cr.paint().is_ok() {
                    drawn.push(placement.tile.clone());
                }
                let _ = cr.restore();
            }
            let waited: Vec<f64> = drawn.iter().filter_map(|tile| layer.fresh.remove(tile)).map(|arrived| arrived.elapsed().as_secs_f64() * 1000.0).collect();
            if !waited.is_empty() {
                let mut handover = lock(&layer.handover);
                handover.drawn += waited.len() as u64;
                // Bounded: a bench's boxes go after seconds; a call's may stay for hours.
                if handover.latencies.len() < 100_000 {
                    handover.latencies.extend(waited);
                }
            }
            for tile in drawn {
                if layer.told.insert(tile.clone()) {
                    let _ = layer.news.send(VideoLayerNews { tile, showing: true });
                }
            }
        });
    }
}

#[cfg(not(target_os = "linux"))]
mod gtk_side {
    //! No layer outside Linux: the page draws its pictures.
    use std::sync::{Arc, Mutex};

    use tauri::ipc::Channel;

    use super::Handover;
    use crate::api::{VideoLayerNews, VideoPlacement};

    pub(super) async fn attach(_window: &tauri::WebviewWindow, _news: Channel<VideoLayerNews>, _handover: Arc<Mutex<Handover>>) -> bool {
        false
    }

    pub(super) fn place(_placements: Vec<VideoPlacement>) {}

    pub(super) fn detach() {}

    pub(super) fn redraw_soon(_handover: Arc<Mutex<Handover>>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::VideoHole;

    fn placement(width: f64, height: f64, scale: f64, fit: VideoFit) -> VideoPlacement {
        VideoPlacement { tile: "bob".into(), x: 100.0, y: 50.0, width, height, scale, fit, mirror: false, holes: Vec::new() }
    }

    #[test]
    fn a_box_is_asked_for_in_device_pixels_and_an_absurd_one_as_nothing() {
        let contain = VideoFit::Contain;
        assert_eq!(device_size(&placement(718.0, 404.0, 1.0, contain)), (718, 404));
        assert_eq!(device_size(&placement(359.0, 202.0, 2.0, contain)), (718, 404));
        assert_eq!(device_size(&placement(100.4, 50.6, 1.0, contain)), (100, 51));
        assert_eq!(device_size(&placement(0.0, 404.0, 1.0, contain)), (0, 0));
        assert_eq!(device_size(&placement(-5.0, 404.0, 1.0, contain)), (0, 0));
        assert_eq!(device_size(&placement(1e12, 1e12, 1.0, contain)), (8192, 8192));
        assert_eq!(device_size(&placement(100.0, 100.0, f64::NAN, contain)), (100, 100), "a broken scale counts as 1");
    }

    /// Whether `point` lies in any of `rects`, and in how many.
    fn covering(rects: &[Rect], (px, py): (f64, f64)) -> usize {
        rects.iter().filter(|&&(x, y, w, h)| px >= x && px < x + w && py >= y && py < y + h).count()
    }

    #[test]
    fn holes_are_cut_out_of_a_box_once_however_they_overlap() {
        let hole = |x, y, width, height| VideoHole { x, y, width, height };
        // A small view in the corner, its name inside it, a button half outside the box.
        let holes = [hole(60.0, 60.0, 30.0, 30.0), hole(62.0, 80.0, 10.0, 5.0), hole(-5.0, 10.0, 10.0, 10.0)];
        let pieces = uncovered((0.0, 0.0, 100.0, 100.0), &holes);
        for py in 0..100 {
            for px in 0..100 {
                let point = (f64::from(px) + 0.5, f64::from(py) + 0.5);
                let in_hole = holes.iter().any(|h| point.0 >= h.x && point.0 < h.x + h.width && point.1 >= h.y && point.1 < h.y + h.height);
                assert_eq!(covering(&pieces, point), usize::from(!in_hole), "at {point:?}: {pieces:?}");
            }
        }
        assert_eq!(uncovered((0.0, 0.0, 10.0, 10.0), &[]), vec![(0.0, 0.0, 10.0, 10.0)]);
        assert!(uncovered((0.0, 0.0, 10.0, 10.0), &[hole(-1.0, -1.0, 20.0, 20.0)]).is_empty(), "a hole over all of it leaves nothing");
    }

    #[test]
    fn a_picture_is_centred_in_its_box_and_copied_as_it_is_when_it_fits() {
        // The engine's 718x402 for a 718x404 box: as it is, one pixel down, at whole pixels.
        assert_eq!(fitted(&placement(718.0, 404.0, 1.0, VideoFit::Contain), 718, 402), (100.0, 51.0, 1.0));
        // A 1280x720 picture (another page asked for more) in the same box: scaled down.
        let (x, y, scale) = fitted(&placement(718.0, 404.0, 1.0, VideoFit::Contain), 1280, 720);
        assert!((scale - 718.0 / 1280.0).abs() < 1e-9 && x == 100.0 && (y - (50.0 + (404.0 - 403.875) / 2.0)).abs() < 1e-9);
        // Cover: the picture overflows the box, centred (the clip cuts it).
        let (x, y, scale) = fitted(&placement(172.0, 172.0, 1.0, VideoFit::Cover), 320, 180);
        assert!((scale - 172.0 / 180.0).abs() < 1e-9 && x < 100.0 && y == 50.0, "{x} {y} {scale}");
        // Twice as many device pixels: drawn at half a CSS pixel each.
        assert_eq!(fitted(&placement(359.0, 202.0, 2.0, VideoFit::Contain), 718, 404), (100.0, 50.0, 0.5));
        assert_eq!(bounds(&placement(100.5, 20.2, 1.0, VideoFit::Contain)), (100, 50, 101, 21));
    }
}
