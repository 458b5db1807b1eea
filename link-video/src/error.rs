//! [`VideoError`]: every error of this crate.

use std::fmt;
use std::path::PathBuf;

/// An error reported by a codec library (OpenH264's own error, say), kept
/// as the [`source`](std::error::Error::source) of [`VideoError::Encode`] or
/// [`VideoError::Decode`].
pub type CodecError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Every error of the video crate.
#[derive(Debug)]
#[non_exhaustive]
pub enum VideoError {
    /// An envelope shorter than its 48-byte header.
    ShortEnvelope {
        /// Bytes received.
        len: usize,
    },
    /// An envelope that does not start with `LSV1`.
    BadMagic([u8; 4]),
    /// An envelope with an unknown codec byte.
    BadCodec(u8),
    /// A capture slot that is not one header and one picture of its size.
    BadSlot {
        /// What is wrong with it.
        reason: String,
    },
    /// A `#psk=` URL fragment whose key is not hex.
    BadPskFragment,
    /// An output buffer too small for what must be written into it.
    ShortBuffer {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// A frame buffer whose length is not the I420 length of the geometry.
    FrameSize {
        /// I420 length of the geometry.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// A picture geometry this crate cannot use.
    BadGeometry {
        /// Width asked for.
        width: usize,
        /// Height asked for.
        height: usize,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A source specification (`--source`) that does not parse.
    BadSource {
        /// The argument.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be opened or read.
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file that is not a Y4M file we can read.
    NotY4m {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A Y4M file in another colour space than 8-bit 4:2:0.
    Y4mColorspace {
        /// The file.
        path: PathBuf,
        /// The colour space it declares.
        colorspace: String,
    },
    /// A Y4M file that ends in the middle of a frame.
    Y4mTruncated {
        /// The file.
        path: PathBuf,
        /// Index of the incomplete frame (0-based).
        frame: u64,
    },
    /// A Y4M file without a single frame.
    Y4mEmpty {
        /// The file.
        path: PathBuf,
    },
    /// A bitrate the encoder cannot use.
    BadBitrate {
        /// The bitrate asked for, bits per second.
        bps: u64,
        /// The lowest bitrate accepted.
        min: u64,
        /// The highest bitrate accepted.
        max: u64,
    },
    /// An encoder setting (other than geometry, frame rate and bitrate)
    /// out of its range.
    BadSetting {
        /// Which setting.
        setting: &'static str,
        /// The value given.
        value: u64,
        /// The range accepted.
        range: &'static str,
    },
    /// The encoder refused to start or to encode.
    Encode(CodecError),
    /// The decoder could not start or decode the access unit.
    Decode(CodecError),
    /// A viewer's session handshake failed (the hub serves it no further).
    #[cfg(feature = "hub")]
    Handshake(link_session::SessionError),
    /// The hub was stopped before the viewer joined.
    #[cfg(feature = "hub")]
    HubStopped,
    /// A packed picture the colour conversion cannot take (a stride shorter
    /// than a row, or the converter's own refusal).
    Conversion {
        /// What is wrong.
        reason: String,
    },
    /// The X11 source: no X server, a refused connection, a region or
    /// output that does not exist, a screen format we cannot read, or the
    /// server gone mid-stream.
    X11 {
        /// The display (`$DISPLAY` when none was named).
        display: String,
        /// What went wrong, one line.
        reason: String,
    },
}

impl fmt::Display for VideoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VideoError::ShortEnvelope { len } => write!(
                f,
                "video envelope of {len} bytes is shorter than its 48-byte header"
            ),
            VideoError::BadMagic(m) => {
                write!(f, "video envelope has magic {m:02x?}, expected \"LSV1\"")
            }
            VideoError::BadCodec(c) => {
                write!(
                    f,
                    "video envelope has unknown codec {c} (only 1, H.264 Annex B)"
                )
            }
            VideoError::BadSlot { reason } => write!(f, "capture slot: {reason}"),
            VideoError::BadPskFragment => write!(f, "the #psk= in the URL is not hex"),
            VideoError::ShortBuffer { needed, got } => {
                write!(f, "buffer of {got} bytes is too small, {needed} needed")
            }
            VideoError::FrameSize { expected, got } => write!(
                f,
                "frame buffer of {got} bytes, an I420 frame of this size is {expected} bytes"
            ),
            VideoError::BadGeometry {
                width,
                height,
                reason,
            } => write!(f, "picture size {width}x{height} refused: {reason}"),
            VideoError::BadSource { spec, reason } => {
                write!(f, "video source {spec:?}: {reason}")
            }
            VideoError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            VideoError::NotY4m { path, reason } => {
                write!(
                    f,
                    "{}: not a Y4M file we can read: {reason}",
                    path.display()
                )
            }
            VideoError::Y4mColorspace { path, colorspace } => write!(
                f,
                "{}: Y4M colour space {colorspace} is not supported (only 8-bit 4:2:0)",
                path.display()
            ),
            VideoError::Y4mTruncated { path, frame } => write!(
                f,
                "{}: Y4M file is truncated (frame {frame} is incomplete)",
                path.display()
            ),
            VideoError::Y4mEmpty { path } => {
                write!(f, "{}: Y4M file has no frames", path.display())
            }
            VideoError::BadBitrate { bps, min, max } => write!(
                f,
                "encoder bitrate {bps} bit/s refused (must be between {min} and {max})"
            ),
            VideoError::BadSetting {
                setting,
                value,
                range,
            } => write!(f, "encoder {setting} {value} refused (must be {range})"),
            VideoError::Encode(e) => write!(f, "H.264 encoder error: {e}"),
            VideoError::Decode(e) => write!(f, "H.264 decoder error: {e}"),
            #[cfg(feature = "hub")]
            VideoError::Handshake(e) => write!(f, "viewer handshake failed: {e}"),
            #[cfg(feature = "hub")]
            VideoError::HubStopped => write!(f, "the hub stopped before the viewer joined"),
            VideoError::Conversion { reason } => write!(f, "colour conversion: {reason}"),
            VideoError::X11 { display, reason } => write!(f, "X11 display {display:?}: {reason}"),
        }
    }
}

impl std::error::Error for VideoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VideoError::Io { source, .. } => Some(source),
            VideoError::Encode(e) | VideoError::Decode(e) => Some(&**e),
            #[cfg(feature = "hub")]
            VideoError::Handshake(e) => Some(e),
            _ => None,
        }
    }
}
