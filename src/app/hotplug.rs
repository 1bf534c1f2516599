//! Monitors plugged in and out while the app runs, on X11.
//!
//! winit learns of a monitor plugged in or out from RandR's screen-change event, read
//! through Xlib; but Xlib passes on an extension's events only once that extension's
//! library has registered them on the connection, and nothing does (winit asks RandR
//! through x11rb), so the event is dropped and winit's list of monitors stays as it
//! was at start (winit#3405). Asking libXrandr about the extension on winit's own
//! display registers them: from then on a monitor plugged in or out reaches bevy's
//! `Monitor` entities as it happens, and the wall's screens follow. Wayland tells of
//! its outputs itself; nothing is done there.

use bevy::ecs::system::NonSendMarker;
use bevy::prelude::*;
use bevy::window::RawHandleWrapper;

pub fn plugin(app: &mut App) {
    app.add_systems(PreUpdate, hear_randr_events);
}

/// Once, when the first window is made: RandR's events registered on its display.
fn hear_randr_events(
    windows: Query<&RawHandleWrapper>,
    mut done: Local<bool>,
    _main_thread: NonSendMarker,
) {
    if *done {
        return;
    }
    let Some(handle) = windows.iter().next() else {
        return;
    };
    *done = true;
    if let raw_window_handle::RawDisplayHandle::Xlib(xlib) = handle.get_display_handle()
        && let Some(display) = xlib.display
    {
        match register_randr(display.as_ptr()) {
            Ok(()) => debug!("RandR events heard: monitors plugged in or out are followed"),
            Err(e) => warn!(
                "monitors plugged in or out will not be followed ({e}): libXrandr.so.2 \
                 could not be loaded"
            ),
        }
    }
}

#[cfg(target_os = "linux")]
fn register_randr(display: *mut std::ffi::c_void) -> Result<(), String> {
    // The registered event converters live in libXrandr, which x11-dl keeps loaded
    // for the life of the process.
    let xrandr = x11_dl::xrandr::Xrandr::open().map_err(|e| e.to_string())?;
    let (mut event_base, mut error_base) = (0, 0);
    // SAFETY: `display` is winit's live Xlib display (the window holding it exists),
    // used here on the main thread, where winit uses it.
    let found =
        unsafe { (xrandr.XRRQueryExtension)(display.cast(), &mut event_base, &mut error_base) };
    if found == 0 {
        return Err("the X server has no RandR".into());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn register_randr(_display: *mut std::ffi::c_void) -> Result<(), String> {
    Ok(())
}
