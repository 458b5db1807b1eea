//! The video layer of linkstream: everything about pictures that more than
//! one program needs. The session and the links below it carry each access
//! unit as an opaque frame; the command line (`linkstream`) and the browser
//! viewer (`linkstream-web`) above it only wire this crate to arguments and
//! to a page. The rules are in `spec/video.md`.
//!
//! # The core (every target, no dependency; builds for wasm32)
//! - [`envelope`]: the 48-byte header in front of each access unit, written
//!   by the host and read by the native client and the browser.
//! - [`index`]: the frame index burned into the test pattern as a row of
//!   blocks: its layout, and one reader over a luma accessor (I420 luma
//!   planes, RGBA canvas pixels).
//! - [`scale`]: halving an I420 picture, the renditions of simulcast.
//! - [`slot`]: the header of a captured picture in a shared-memory slot
//!   (capture process → encoder process).
//! - [`stream`]: the WebSocket path of the stream and the `#psk=` fragment
//!   of the page's URL (built by the host, parsed by the page).
//! - [`h264_bits`]: Annex B splitting and a reader of the H.264 parameter
//!   sets and slice headers (IDR id, long-term reference marks and uses).
//! - [`VideoError`], and the I420 geometry helpers ([`i420_len`]).
//!
//! # Native features
//! - `native`: the sources ([`TestSrc`], [`Y4mSource`], an X11 screen
//!   through [`x11`], [`Source`]), BGRX to I420 conversion ([`convert`]),
//!   the [`Encoder`]/[`Decoder`] traits, PSNR ([`quality`]).
//! - `openh264`: [`OpenH264Encoder`] and [`OpenH264Decoder`] (OpenH264
//!   built from its vendored sources), and [`build`]: whether it was built
//!   with its assembly (the encoder is about three times slower without);
//!   [`layered`]: [`LayeredEncoder`] (1–3 temporal layers, long-term
//!   reference loss recovery instead of IDRs, the [`FrameInfo`] of each
//!   access unit) and [`LayeredDecoder`] (error concealment on).
//! - `hub`: the fan-out [`hub::Hub`]: one encoder, a link-session `Host` per
//!   viewer, keyframe grants, skip to keyframe, the encoder's bitrate from
//!   the viewers' targets.
//!
//! `examples/minimal_host.rs` and `examples/minimal_viewer.rs` show a host
//! and a viewer on top of it in a page each.
//!
//! Frames are I420 throughout: the Y plane (`width * height` bytes), then U
//! and V (`width/2 * height/2` bytes each), rows packed without padding;
//! width and height are even.
#![deny(missing_docs)]

pub mod envelope;
mod error;
pub mod h264_bits;
pub mod index;
pub mod scale;
pub mod slot;
pub mod stream;

#[cfg(feature = "native")]
pub mod codec;
#[cfg(feature = "native")]
pub mod quality;
#[cfg(feature = "native")]
pub mod source;
#[cfg(feature = "native")]
pub mod testsrc;
#[cfg(feature = "native")]
pub mod y4m;

#[cfg(feature = "native")]
pub mod convert;
#[cfg(feature = "native")]
pub mod x11;

#[cfg(feature = "openh264")]
pub mod build;
#[cfg(feature = "openh264")]
pub mod h264;
#[cfg(feature = "openh264")]
pub mod layered;

#[cfg(feature = "hub")]
pub mod hub;

pub use envelope::{Codec, HEADER_LEN, VideoHeader};
pub use error::{CodecError, VideoError};
pub use slot::{FrameHeader, PixelFormat};

#[cfg(feature = "native")]
pub use codec::{DecodedFrame, Decoder, Encoder, EncoderSettings};
#[cfg(feature = "native")]
pub use quality::{psnr_y, psnr_yuv};
#[cfg(feature = "native")]
pub use source::{Source, SourceSpec};
#[cfg(feature = "native")]
pub use testsrc::TestSrc;
#[cfg(feature = "native")]
pub use y4m::Y4mSource;

#[cfg(feature = "openh264")]
pub use h264::{OpenH264Decoder, OpenH264Encoder};
#[cfg(feature = "openh264")]
pub use layered::{FrameInfo, LayeredConfig, LayeredDecoder, LayeredEncoder};

#[cfg(all(test, feature = "openh264"))]
mod testscene;

/// Largest width or height accepted anywhere in this crate (pictures must
/// fit the envelope's u16 fields; OpenH264 stops at 3840x2160 anyway).
pub const MAX_DIMENSION: usize = 4096;

/// Length in bytes of one I420 frame of `width` x `height` (both even).
pub fn i420_len(width: usize, height: usize) -> usize {
    width * height + 2 * ((width / 2) * (height / 2))
}

/// Now in microseconds since the UNIX epoch: the clock of the envelope's
/// three timestamps and of the capture slot (0 if the system clock is
/// before 1970). Native only: the browser has no such clock in `std`.
#[cfg(feature = "native")]
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Checks that `width` x `height` is a usable I420 geometry: both even,
/// non-zero, at most [`MAX_DIMENSION`].
///
/// # Errors
/// [`VideoError::BadGeometry`] saying which condition fails.
pub fn check_geometry(width: usize, height: usize) -> Result<(), VideoError> {
    let reason = if width == 0 || height == 0 {
        "width and height must be non-zero"
    } else if !width.is_multiple_of(2) || !height.is_multiple_of(2) {
        "width and height must be even (I420)"
    } else if width > MAX_DIMENSION || height > MAX_DIMENSION {
        "width and height must be at most 4096"
    } else {
        return Ok(());
    };
    Err(VideoError::BadGeometry {
        width,
        height,
        reason,
    })
}

/// Checks that a frame buffer has exactly the I420 length of the geometry.
///
/// # Errors
/// [`VideoError::FrameSize`] with both lengths.
pub fn check_frame_len(width: usize, height: usize, got: usize) -> Result<(), VideoError> {
    let expected = i420_len(width, height);
    if got != expected {
        return Err(VideoError::FrameSize { expected, got });
    }
    Ok(())
}
