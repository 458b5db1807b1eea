//! The codec seam: an [`Encoder`] turns I420 pictures into access units, a
//! [`Decoder`] turns access units back into pictures. The host, the native
//! client and the examples are written against these traits; OpenH264
//! ([`crate::h264`], feature `openh264`) is the implementation today.

use crate::{Codec, VideoError};

/// Lowest encoder bitrate accepted, bits per second.
pub const MIN_BITRATE_BPS: u64 = 50_000;
/// Highest encoder bitrate accepted, bits per second.
pub const MAX_BITRATE_BPS: u64 = 200_000_000;

/// Checks a bitrate against [`MIN_BITRATE_BPS`]..=[`MAX_BITRATE_BPS`].
///
/// # Errors
/// [`VideoError::BadBitrate`] outside that range.
pub fn check_bitrate(bps: u64) -> Result<u64, VideoError> {
    if !(MIN_BITRATE_BPS..=MAX_BITRATE_BPS).contains(&bps) {
        return Err(VideoError::BadBitrate {
            bps,
            min: MIN_BITRATE_BPS,
            max: MAX_BITRATE_BPS,
        });
    }
    Ok(bps)
}

/// Checks a frame rate: 1..=240 frames per second.
///
/// # Errors
/// [`VideoError::BadSource`] outside that range.
pub fn check_fps(fps: u32) -> Result<u32, VideoError> {
    if fps == 0 || fps > 240 {
        return Err(VideoError::BadSource {
            spec: format!("{fps} frames/s"),
            reason: "frame rate must be 1..=240".into(),
        });
    }
    Ok(fps)
}

/// How an encoder is set up. [`EncoderSettings::new`] gives the defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderSettings {
    /// Picture width (even).
    pub width: usize,
    /// Picture height (even).
    pub height: usize,
    /// Frames per second the pictures arrive at (the rate control's clock).
    pub fps: u32,
    /// Initial bitrate, bits per second.
    pub bitrate_bps: u64,
    /// An IDR every this many frames (0: only on request). Default: 10 s.
    pub idr_interval_frames: u32,
    /// Encoder speed/quality trade-off: `true` for a low complexity mode
    /// (faster, a little less quality). Default `false`.
    pub low_complexity: bool,
}

impl EncoderSettings {
    /// The defaults for a geometry, frame rate and bitrate: an IDR every 10
    /// seconds, medium complexity.
    pub fn new(width: usize, height: usize, fps: u32, bitrate_bps: u64) -> Self {
        EncoderSettings {
            width,
            height,
            fps,
            bitrate_bps,
            idr_interval_frames: fps.saturating_mul(10),
            low_complexity: false,
        }
    }
}

/// A low-latency video encoder for one picture geometry: every picture in
/// gives one access unit out, decodable as soon as it arrives.
pub trait Encoder: Send {
    /// The codec of the access units (the envelope's codec byte).
    fn codec(&self) -> Codec;

    /// The settings the encoder was made with.
    fn settings(&self) -> &EncoderSettings;

    /// Bytes of one input picture (I420).
    fn frame_len(&self) -> usize {
        crate::i420_len(self.settings().width, self.settings().height)
    }

    /// The current target bitrate, bits per second.
    fn bitrate(&self) -> u64;

    /// Changes the target bitrate from the next picture on, without a
    /// keyframe.
    ///
    /// # Errors
    /// [`VideoError::BadBitrate`] outside
    /// [`MIN_BITRATE_BPS`]..=[`MAX_BITRATE_BPS`] (the bitrate is unchanged);
    /// [`VideoError::Encode`] if the codec refuses it.
    fn set_bitrate(&mut self, bps: u64) -> Result<(), VideoError>;

    /// Makes the next access unit a keyframe a new decoder can start at.
    fn force_keyframe(&mut self);

    /// Encodes one I420 picture and appends its access unit to `out` (so a
    /// caller can write the envelope header first). Returns whether the
    /// access unit is a keyframe.
    ///
    /// # Errors
    /// [`VideoError::FrameSize`] if `i420` is not one picture of this
    /// geometry; [`VideoError::Encode`] if the codec fails (`out` is then
    /// unchanged).
    fn encode(&mut self, i420: &[u8], out: &mut Vec<u8>) -> Result<bool, VideoError>;
}

/// One decoded picture as packed I420: `width * height` luma bytes, then
/// the U and V planes of `ceil(width/2) * ceil(height/2)` bytes each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodedFrame {
    /// Picture width in pixels.
    pub width: usize,
    /// Picture height in pixels.
    pub height: usize,
    /// The I420 bytes.
    pub data: Vec<u8>,
}

impl DecodedFrame {
    fn chroma(&self) -> (usize, usize) {
        (self.width.div_ceil(2), self.height.div_ceil(2))
    }

    /// The luma plane (stride = width).
    pub fn y(&self) -> &[u8] {
        &self.data[..self.width * self.height]
    }

    /// The U plane (stride = ceil(width / 2)).
    pub fn u(&self) -> &[u8] {
        let (cw, ch) = self.chroma();
        let y = self.width * self.height;
        &self.data[y..y + cw * ch]
    }

    /// The V plane (stride = ceil(width / 2)).
    pub fn v(&self) -> &[u8] {
        let (cw, ch) = self.chroma();
        &self.data[self.width * self.height + cw * ch..]
    }
}

/// A video decoder: access units in, pictures out.
pub trait Decoder: Send {
    /// Decodes one access unit. Returns the picture it completes, or `None`
    /// if it completes none (parameter sets alone, say). The picture
    /// borrows a buffer the decoder reuses for the next call.
    ///
    /// # Errors
    /// [`VideoError::Decode`] for input the codec cannot decode (garbage, a
    /// missing reference); the decoder stays usable and recovers at the
    /// next keyframe.
    fn decode(&mut self, access_unit: &[u8]) -> Result<Option<&DecodedFrame>, VideoError>;
}
