//! Platform tuning, chosen by measurement (docs/BENCHMARKS.md, `cargo xtask bench app`): WebKitGTK
//! and GTK settings, keeping EGL out of the app process, and glibc heap retention.

use tauri::Manager;

/// GTK and WebKitGTK settings that cut the app's memory, chosen by measurement
/// (docs/BENCHMARKS.md, `cargo xtask bench app`): the UI is a few flat panels, so GPU buffer
/// sharing (DMA-BUF), accelerated compositing and GTK's own GL context buy nothing here and cost
/// tens of MiB each. Must run before GTK starts; a variable the user set wins, and
/// `HARK_WEBKIT_TUNING=0` turns all of it off.
pub fn tune_webkit() {
    if std::env::var("HARK_WEBKIT_TUNING").as_deref() == Ok("0") {
        return;
    }
    for (variable, value) in [("WEBKIT_DISABLE_DMABUF_RENDERER", "1"), ("WEBKIT_DISABLE_COMPOSITING_MODE", "1"), ("GDK_GL", "disable")] {
        if std::env::var_os(variable).is_none() {
            // Still single-threaded: nothing else reads the environment yet.
            std::env::set_var(variable, value);
        }
    }
    // Only when nothing in this process draws with GL: not when the user turned any of these
    // back on.
    let no_gl_here = std::env::var("WEBKIT_DISABLE_DMABUF_RENDERER").is_ok_and(|value| value != "0")
        && std::env::var("WEBKIT_DISABLE_COMPOSITING_MODE").is_ok_and(|value| value != "0")
        && std::env::var("GDK_GL").is_ok_and(|value| value == "disable");
    if no_gl_here {
        keep_egl_out_of_this_process();
    }
}

/// With the DMA-BUF renderer off, this process shows the web process's frames from shared
/// memory and never draws with EGL, yet WebKit opens an EGL display here anyway. Under Mesa that
/// loads the driver and, for llvmpipe (and radeonsi), all of LLVM: about 20 MiB of PSS for
/// nothing (docs/BENCHMARKS.md). The web process does need EGL (it aborts without it), so only
/// this process is kept from it: libglvnd reads `__EGL_VENDOR_LIBRARY_FILENAMES` once, at its
/// first call, so the variable is set, libEGL asked one harmless question, and the variable
/// removed before any WebKit process is started with this environment. Without libglvnd or
/// libEGL nothing changes.
fn keep_egl_out_of_this_process() {
    #[cfg(target_os = "linux")]
    {
        const VENDORS: &str = "__EGL_VENDOR_LIBRARY_FILENAMES";
        const EGL_EXTENSIONS: i32 = 0x3055;
        if std::env::var_os(VENDORS).is_some() {
            return;
        }
        // Still single-threaded: nothing else reads the environment yet.
        std::env::set_var(VENDORS, "/dev/null");
        // SAFETY: dlopen/dlsym with NUL-terminated names; `eglQueryString` has this C signature
        // and accepts EGL_NO_DISPLAY (a null pointer) for the client extensions.
        unsafe {
            let egl = libc::dlopen(c"libEGL.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
            if !egl.is_null() {
                let query = libc::dlsym(egl, c"eglQueryString".as_ptr());
                if !query.is_null() {
                    let query: extern "C" fn(*mut std::ffi::c_void, i32) -> *const std::ffi::c_char = std::mem::transmute(query);
                    query(std::ptr::null_mut(), EGL_EXTENSIONS);
                }
            }
        }
        std::env::remove_var(VENDORS);
    }
}

/// Fixes glibc's thresholds instead of letting them follow the program. By default, freeing one
/// large block (a decoded ringtone, a buffer in WebKit) raises the mmap threshold to its size and
/// the trim threshold to twice that, up to 64 MiB; a thread's arena then keeps that much free
/// memory at its top, and `malloc_trim` does not shrink other threads' arena tops. Measured: a
/// one-time 20 MiB that stayed in the app process from launch or the first ring
/// (docs/BENCHMARKS.md). With fixed thresholds, blocks over 256 KiB are mapped and unmapped on
/// their own and an arena gives back what lies free above 1 MiB.
pub(crate) fn bound_heap_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
    }
}

/// Hands freed heap back to the system every ten seconds. glibc keeps what threads free in
/// their arenas for reuse; with a GTK main loop, tokio workers, WebRTC and the built-in server
/// all allocating, that retained memory was about 40 MiB of the app process's PSS at idle
/// (docs/BENCHMARKS.md). A trim takes well under a millisecond.
pub(crate) fn trim_heap_periodically() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tauri::async_runtime::spawn(async {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; start trimming once the launch has settled.
        every.tick().await;
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        loop {
            // SAFETY: malloc_trim only walks and shrinks the allocator's own free lists.
            unsafe { libc::malloc_trim(0) };
            every.tick().await;
        }
    });
}

/// Makes the main window's WebKit cache for a single local document (no browsing history, no
/// page cache): the UI is one page served from the app itself.
pub(crate) fn trim_webkit_caches(app: &tauri::App) {
    #[cfg(target_os = "linux")]
    if std::env::var("HARK_WEBKIT_TUNING").as_deref() != Ok("0") {
        if let Some(main) = app.get_webview_window("main") {
            let _ = main.with_webview(|webview| {
                use webkit2gtk::{WebContextExt, WebViewExt};
                if let Some(context) = webview.inner().context() {
                    context.set_cache_model(webkit2gtk::CacheModel::DocumentViewer);
                }
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = app;
}
