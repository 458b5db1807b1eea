//! The X11 screen source (`--source x11[:DISPLAY][@OUTPUT|+X,Y,WxH]`):
//! the root window of an X display, or one RandR monitor of it, or a
//! region, read as packed BGRX through `x11rb` (pure Rust, no C library).
//!
//! Two paths. With MIT-SHM 1.2 (a local server), [`X11Capture::capture_lent`]
//! attaches the caller's memory file once (`ShmAttachFd`) and has the
//! server write each picture straight into it with `ShmGetImage`: into a
//! `link-shm` slot, no copy in the capture process. Otherwise
//! [`X11Capture::capture`] uses `GetImage`: the server sends the picture
//! over the connection and it is copied into the caller's buffer. The
//! encoder process converts it to I420 ([`crate::convert`]).

use std::os::fd::{AsRawFd, BorrowedFd};
use x11rb::connection::Connection;

use x11rb::protocol::Event;
use x11rb::protocol::damage::{ConnectionExt as _, ReportLevel};
use x11rb::protocol::randr::ConnectionExt as _;
use x11rb::protocol::shm::ConnectionExt as _;
use x11rb::protocol::xfixes::ConnectionExt as _;
use x11rb::protocol::xproto::{ConnectionExt as _, ImageFormat, ImageOrder, VisualClass, Window};
use x11rb::rust_connection::RustConnection;

use crate::{MAX_DIMENSION, VideoError};

/// Which part of the screen to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum X11Area {
    /// The whole screen (rounded down to even sizes).
    Screen,
    /// One RandR monitor, by name (`@HDMI-1`).
    Output(String),
    /// A rectangle in root-window coordinates (`+X,Y,WxH`).
    Region {
        /// Left edge.
        x: u32,
        /// Top edge.
        y: u32,
        /// Width (even).
        width: u32,
        /// Height (even).
        height: u32,
    },
}

/// An open connection to an X display and the rectangle read from it.
pub struct X11Capture {
    conn: RustConnection,
    display: String,
    root: Window,
    x: i16,
    y: i16,
    width: usize,
    height: usize,
    /// The pointer is drawn into each picture (the server has XFixes).
    cursor: bool,
    /// The MIT-SHM path's state.
    shm: Shm,
    /// The XDamage object watching the screen (`None`: no XDamage, every
    /// frame counts as changed).
    damage: Option<u32>,
    /// Damage reported since the last capture.
    dirty: bool,
    /// Where the pointer was drawn last (root coordinates).
    pointer: Option<(i16, i16)>,
}

/// Whether pictures can go straight into the caller's memory file.
#[derive(Debug)]
enum Shm {
    /// No MIT-SHM 1.2 here, or attaching failed: why.
    Unavailable(String),
    /// Available, nothing attached yet.
    Ready,
    /// The memory file with this descriptor number and length is attached
    /// as segment `seg`.
    Attached { seg: u32, fd: i32, len: usize },
}

impl std::fmt::Debug for X11Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X11Capture")
            .field("display", &self.display)
            .field("x", &self.x)
            .field("y", &self.y)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

/// The X11 error for `display`.
fn x11_error(display: &str, reason: String) -> VideoError {
    VideoError::X11 {
        display: display.to_string(),
        reason,
    }
}

/// The X11 error of a connection that failed (the server is gone).
fn gone(display: &str, e: impl std::fmt::Display) -> VideoError {
    x11_error(display, format!("the X server connection failed: {e}"))
}

impl X11Capture {
    // r[impl video.x11.open]
    /// Connects to `display` (`$DISPLAY` when `None`) and checks that the
    /// area exists on its first screen and that the screen is 24-bit
    /// TrueColor in 32-bit little-endian pixels (BGRX).
    ///
    /// # Errors
    /// [`VideoError::X11`] with one line saying what is wrong: no display
    /// named and no `$DISPLAY`, no X server or a refused connection, an
    /// output that does not exist, a region outside the screen or of odd
    /// size, a screen format we cannot read.
    pub fn open(display: Option<&str>, area: &X11Area) -> Result<Self, VideoError> {
        let shown = match display {
            Some(d) => d.to_string(),
            None => std::env::var("DISPLAY").unwrap_or_default(),
        };
        let err = |reason: String| x11_error(&shown, reason);
        if display.is_none() && shown.is_empty() {
            return Err(err(
                "no display named and $DISPLAY is not set (use --source x11:DISPLAY)".into(),
            ));
        }
        let (conn, screen_no) = RustConnection::connect(Some(&shown))
            .map_err(|e| err(format!("cannot connect: {e}")))?;
        let setup = conn.setup();
        let Some(screen) = setup.roots.get(screen_no) else {
            return Err(err(format!("the server has no screen {screen_no}")));
        };
        // The pixel layout: 24-bit TrueColor, 32 bits a pixel, least
        // significant byte first, masks red 0xff0000, blue 0xff.
        let format = setup
            .pixmap_formats
            .iter()
            .find(|f| f.depth == screen.root_depth);
        let visual = screen
            .allowed_depths
            .iter()
            .flat_map(|d| d.visuals.iter())
            .find(|v| v.visual_id == screen.root_visual);
        let bgrx = matches!(screen.root_depth, 24 | 32)
            && setup.image_byte_order == ImageOrder::LSB_FIRST
            && format.is_some_and(|f| f.bits_per_pixel == 32 && f.scanline_pad == 32)
            && visual.is_some_and(|v| {
                v.class == VisualClass::TRUE_COLOR
                    && (v.red_mask, v.green_mask, v.blue_mask) == (0xff0000, 0xff00, 0xff)
            });
        if !bgrx {
            return Err(err(format!(
                "the screen's pixel format is not 24-bit TrueColor in 32-bit little-endian pixels (depth {}, {} bits a pixel)",
                screen.root_depth,
                format.map_or(0, |f| f.bits_per_pixel)
            )));
        }
        let (sw, sh) = (
            u32::from(screen.width_in_pixels),
            u32::from(screen.height_in_pixels),
        );
        let root = screen.root;
        let (x, y, w, h) = match area {
            X11Area::Screen => (0, 0, sw & !1, sh & !1),
            X11Area::Region {
                x,
                y,
                width,
                height,
            } => {
                if width % 2 == 1 || height % 2 == 1 || *width == 0 || *height == 0 {
                    return Err(err(format!(
                        "region {width}x{height}: width and height must be even and non-zero"
                    )));
                }
                if u64::from(*x) + u64::from(*width) > u64::from(sw)
                    || u64::from(*y) + u64::from(*height) > u64::from(sh)
                {
                    return Err(err(format!(
                        "region +{x},{y},{width}x{height} is outside the {sw}x{sh} screen"
                    )));
                }
                (*x, *y, *width, *height)
            }
            X11Area::Output(name) => {
                let mons = conn
                    .randr_get_monitors(root, true)
                    .map_err(|e| err(format!("RandR: {e}")))?
                    .reply()
                    .map_err(|e| err(format!("RandR monitors: {e}")))?;
                let mut names = Vec::new();
                let mut found = None;
                for m in &mons.monitors {
                    let n = conn
                        .get_atom_name(m.name)
                        .map_err(|e| err(format!("{e}")))?
                        .reply()
                        .map_err(|e| err(format!("{e}")))?;
                    let n = String::from_utf8_lossy(&n.name).into_owned();
                    if &n == name {
                        found = Some(m.clone());
                    }
                    names.push(n);
                }
                let Some(m) = found else {
                    return Err(err(format!(
                        "no output named {name:?} (the display has: {})",
                        names.join(", ")
                    )));
                };
                let (mx, my) = (m.x.max(0) as u32, m.y.max(0) as u32);
                let mw = u32::from(m.width).min(sw.saturating_sub(mx)) & !1;
                let mh = u32::from(m.height).min(sh.saturating_sub(my)) & !1;
                (mx, my, mw, mh)
            }
        };
        if w == 0 || h == 0 || w as usize > MAX_DIMENSION || h as usize > MAX_DIMENSION {
            return Err(err(format!(
                "a {w}x{h} picture cannot be encoded (sizes 2 to {MAX_DIMENSION})"
            )));
        }
        // XFixes 4 gives the cursor's image and position; without it the
        // pictures have no pointer (the summary says so).
        let cursor = conn
            .xfixes_query_version(4, 0)
            .ok()
            .and_then(|c| c.reply().ok())
            .is_some_and(|v| v.major_version >= 4);
        // MIT-SHM 1.2 passes a memory file's descriptor to the server: only
        // over a local (Unix socket) connection.
        let shm = match conn.shm_query_version().ok().and_then(|c| c.reply().ok()) {
            Some(v) if (v.major_version, v.minor_version) >= (1, 2) => Shm::Ready,
            Some(v) => Shm::Unavailable(format!(
                "the server has MIT-SHM {}.{}, 1.2 is needed",
                v.major_version, v.minor_version
            )),
            None => Shm::Unavailable("the server has no MIT-SHM".into()),
        };
        // XDamage: the server reports when anything on the screen changed
        // (one event until the damage is taken, `NonEmpty`).
        let damage = (|| {
            conn.damage_query_version(1, 1).ok()?.reply().ok()?;
            let id = conn.generate_id().ok()?;
            conn.damage_create(id, root, ReportLevel::NON_EMPTY)
                .ok()?
                .check()
                .ok()?;
            Some(id)
        })();
        Ok(X11Capture {
            damage,
            dirty: true,
            pointer: None,
            conn,
            display: shown,
            root,
            x: x as i16,
            y: y as i16,
            width: w as usize,
            height: h as usize,
            cursor,
            shm,
        })
    }

    /// Width of the captured picture.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height of the captured picture.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Bytes of one BGRX picture (rows packed, four bytes a pixel).
    pub fn frame_len(&self) -> usize {
        self.width * self.height * 4
    }

    /// How pictures get from the X server into the caller's buffer.
    pub fn path(&self) -> String {
        let how = match &self.shm {
            Shm::Unavailable(why) => format!("GetImage (copied from the X connection; {why})"),
            _ => "MIT-SHM (the X server writes into the shared-memory slot, zero-copy)".into(),
        };
        let cursor = if self.cursor {
            "cursor drawn in"
        } else {
            "no cursor (the server lacks XFixes)"
        };
        let damage = if self.damage.is_some() {
            "captured when XDamage reports a change"
        } else {
            "every frame captured (the server lacks XDamage)"
        };
        format!("{how}, {cursor}, {damage}")
    }

    // r[impl video.x11.damage]
    /// Whether the screen may have changed since the last capture: damage
    /// the server reported, or the pointer moved (when it is drawn in).
    /// Always `true` without XDamage. Never blocks longer than one round
    /// trip.
    ///
    /// # Errors
    /// [`VideoError::X11`] when the server is gone.
    pub fn changed(&mut self) -> Result<bool, VideoError> {
        let Some(_) = self.damage else {
            return Ok(true);
        };
        while let Some(ev) = self
            .conn
            .poll_for_event()
            .map_err(|e| gone(&self.display, e))?
        {
            if matches!(ev, Event::DamageNotify(_)) {
                self.dirty = true;
            }
        }
        if !self.dirty && self.cursor {
            let p = self
                .conn
                .query_pointer(self.root)
                .map_err(|e| gone(&self.display, e))?
                .reply()
                .map_err(|e| gone(&self.display, e))?;
            if self.pointer != Some((p.root_x, p.root_y)) {
                return Ok(true);
            }
        }
        Ok(self.dirty)
    }

    /// Takes the damage reported so far: the next capture shows it, and
    /// changes from here on are reported again.
    fn take_damage(&mut self) -> Result<(), VideoError> {
        if let Some(d) = self.damage {
            self.conn
                .damage_subtract(d, x11rb::NONE, x11rb::NONE)
                .map_err(|e| gone(&self.display, e))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Whether [`capture_lent`](Self::capture_lent) may work (MIT-SHM 1.2
    /// is there and attaching has not failed).
    pub fn can_lend(&self) -> bool {
        !matches!(self.shm, Shm::Unavailable(_))
    }

    // r[impl video.x11.shm]
    /// Has the X server write the area as it is now, as BGRX, straight into
    /// the memory file `fd` (of `file_len` bytes) at `offset`: a slot of a
    /// `link-shm` segment lent by its producer. The file is attached once
    /// (`ShmAttachFd`) and kept attached while the same file is lent.
    /// Returns `false`, having written nothing, when the server cannot
    /// (no MIT-SHM 1.2, or attaching failed: later calls return `false` at
    /// once and [`path`](Self::path) says why); the caller then uses
    /// [`capture`](Self::capture). The pointer is not drawn in: call
    /// [`draw_pointer`](Self::draw_pointer) on the slot afterwards.
    ///
    /// # Errors
    /// [`VideoError::X11`] when the server is gone or the picture does not
    /// fit the file at `offset`.
    pub fn capture_lent(
        &mut self,
        fd: BorrowedFd<'_>,
        offset: u64,
        file_len: usize,
    ) -> Result<bool, VideoError> {
        let end = offset.saturating_add(self.frame_len() as u64);
        if end > file_len as u64 || end > u64::from(u32::MAX) {
            return Err(x11_error(
                &self.display,
                format!(
                    "a picture at offset {offset} does not fit a memory file of {file_len} bytes"
                ),
            ));
        }
        if !self.can_lend() {
            return Ok(false);
        }
        self.take_damage()?;
        let attached = match self.shm {
            Shm::Attached { seg, fd: f, len } if f == fd.as_raw_fd() && len == file_len => seg,
            _ => {
                if let Shm::Attached { seg, .. } = self.shm {
                    let _ = self.conn.shm_detach(seg);
                }
                let attach = (|| {
                    let seg = self.conn.generate_id().map_err(|e| e.to_string())?;
                    let dup = fd.try_clone_to_owned().map_err(|e| e.to_string())?;
                    self.conn
                        .shm_attach_fd(seg, dup, false)
                        .map_err(|e| e.to_string())?
                        .check()
                        .map_err(|e| e.to_string())?;
                    Ok::<u32, String>(seg)
                })();
                match attach {
                    Ok(seg) => {
                        self.shm = Shm::Attached {
                            seg,
                            fd: fd.as_raw_fd(),
                            len: file_len,
                        };
                        seg
                    }
                    Err(why) => {
                        self.shm = Shm::Unavailable(format!("MIT-SHM attach failed: {why}"));
                        return Ok(false);
                    }
                }
            }
        };
        let reply = self
            .conn
            .shm_get_image(
                self.root,
                self.x,
                self.y,
                self.width as u16,
                self.height as u16,
                !0,
                u8::from(ImageFormat::Z_PIXMAP),
                attached,
                offset as u32,
            )
            .map_err(|e| gone(&self.display, e))?
            .reply()
            .map_err(|e| x11_error(&self.display, format!("ShmGetImage failed: {e}")))?;
        if reply.size as usize != self.frame_len() {
            return Err(x11_error(
                &self.display,
                format!(
                    "ShmGetImage wrote {} bytes for a {}x{} BGRX picture",
                    reply.size, self.width, self.height
                ),
            ));
        }
        Ok(true)
    }

    // r[impl video.x11.capture]
    /// Reads the area as it is now into `out` ([`frame_len`](Self::frame_len)
    /// bytes of BGRX).
    ///
    /// # Errors
    /// [`VideoError::ShortBuffer`] for a buffer of another length;
    /// [`VideoError::X11`] when the server is gone or refuses the request.
    pub fn capture(&mut self, out: &mut [u8]) -> Result<(), VideoError> {
        if out.len() != self.frame_len() {
            return Err(VideoError::ShortBuffer {
                needed: self.frame_len(),
                got: out.len(),
            });
        }
        self.take_damage()?;
        let err = |reason: String| x11_error(&self.display, reason);
        let reply = self
            .conn
            .get_image(
                ImageFormat::Z_PIXMAP,
                self.root,
                self.x,
                self.y,
                self.width as u16,
                self.height as u16,
                !0,
            )
            .map_err(|e| gone(&self.display, e))?
            .reply()
            .map_err(|e| err(format!("GetImage failed: {e}")))?;
        if reply.data.len() != out.len() {
            return Err(err(format!(
                "GetImage returned {} bytes for a {}x{} BGRX picture",
                reply.data.len(),
                self.width,
                self.height
            )));
        }
        out.copy_from_slice(&reply.data);
        self.draw_pointer(out)
    }

    /// Draws the pointer into a picture of this capture's area (BGRX, rows
    /// packed), where the server has it now; nothing without XFixes.
    ///
    /// # Errors
    /// [`VideoError::X11`] when the server is gone.
    pub fn draw_pointer(&mut self, out: &mut [u8]) -> Result<(), VideoError> {
        if self.cursor {
            let c = self
                .conn
                .xfixes_get_cursor_image()
                .map_err(|e| gone(&self.display, e))?
                .reply()
                .map_err(|e| {
                    x11_error(&self.display, format!("XFixes GetCursorImage failed: {e}"))
                })?;
            self.pointer = Some((c.x, c.y));
            let left = i64::from(c.x) - i64::from(c.xhot) - i64::from(self.x);
            let top = i64::from(c.y) - i64::from(c.yhot) - i64::from(self.y);
            draw_cursor(
                out,
                (self.width, self.height),
                &c.cursor_image,
                (usize::from(c.width), usize::from(c.height)),
                (left, top),
            );
        }
        Ok(())
    }
}

// r[impl video.x11.cursor]
/// Blends a cursor image (premultiplied ARGB, `size` pixels, rows packed)
/// into the BGRX picture `out` of `pic` pixels with its top-left corner at
/// `at` (which may lie outside the picture: only the overlap is drawn).
pub fn draw_cursor(
    out: &mut [u8],
    pic: (usize, usize),
    image: &[u32],
    size: (usize, usize),
    at: (i64, i64),
) {
    let (pw, ph) = (pic.0 as i64, pic.1 as i64);
    let (cw, ch) = (size.0 as i64, size.1 as i64);
    if image.len() < size.0 * size.1 || out.len() < pic.0 * pic.1 * 4 {
        return;
    }
    for cy in 0..ch {
        let y = at.1 + cy;
        if !(0..ph).contains(&y) {
            continue;
        }
        for cx in 0..cw {
            let x = at.0 + cx;
            if !(0..pw).contains(&x) {
                continue;
            }
            let argb = image[(cy * cw + cx) as usize];
            let a = argb >> 24;
            if a == 0 {
                continue;
            }
            let o = ((y * pw + x) * 4) as usize;
            // Premultiplied: out = cursor + picture * (255 - alpha) / 255.
            for (i, shift) in [(0, 0u32), (1, 8), (2, 16)] {
                let src = (argb >> shift) & 0xff;
                let dst = u32::from(out[o + i]);
                out[o + i] = (src + (dst * (255 - a) + 127) / 255).min(255) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // r[verify video.x11.cursor]
    /// Opaque cursor pixels replace the picture, transparent ones leave it,
    /// half-transparent ones blend (premultiplied), and a cursor hanging
    /// over an edge is clipped, never written out of bounds.
    #[test]
    fn the_cursor_blends_premultiplied_and_is_clipped_at_the_edges() {
        let mut pic = vec![100u8; 4 * 4 * 4];
        // 2x2: opaque red, transparent, half white (premultiplied), opaque blue.
        let image = [0xffff_0000u32, 0, 0x8080_8080, 0xff00_00ff];
        draw_cursor(&mut pic, (4, 4), &image, (2, 2), (1, 1));
        let px = |p: &[u8], x: usize, y: usize| p[(y * 4 + x) * 4..(y * 4 + x) * 4 + 3].to_vec();
        assert_eq!(px(&pic, 1, 1), [0, 0, 255], "opaque red: B G R");
        assert_eq!(px(&pic, 2, 1), [100, 100, 100], "transparent");
        // 128 + 100 * 127 / 255 = 128 + 50.
        assert_eq!(px(&pic, 1, 2), [178, 178, 178], "half white over grey");
        assert_eq!(px(&pic, 2, 2), [255, 0, 0], "opaque blue");
        assert_eq!(px(&pic, 0, 0), [100, 100, 100]);
        // Clipped at every edge: only the overlap changes.
        let mut pic = vec![100u8; 4 * 4 * 4];
        let opaque = [0xff00_ff00u32; 9];
        draw_cursor(&mut pic, (4, 4), &opaque, (3, 3), (-2, -2));
        assert_eq!(px(&pic, 0, 0), [0, 255, 0]);
        assert_eq!(px(&pic, 1, 0), [100, 100, 100]);
        draw_cursor(&mut pic, (4, 4), &opaque, (3, 3), (3, 3));
        assert_eq!(px(&pic, 3, 3), [0, 255, 0]);
        assert_eq!(px(&pic, 2, 3), [100, 100, 100]);
        let before = pic.clone();
        draw_cursor(&mut pic, (4, 4), &opaque, (3, 3), (9, -9));
        draw_cursor(&mut pic, (4, 4), &opaque[..4], (3, 3), (0, 0));
        assert_eq!(pic, before, "outside, or an image shorter than its size");
    }
}
