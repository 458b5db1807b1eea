//! H.264 through OpenH264 (the `openh264` crate, built from its vendored
//! C++ sources): [`OpenH264Encoder`], a low-latency [`Encoder`], and
//! [`OpenH264Decoder`], a [`Decoder`].
//!
//! Encoder settings (see [`EncoderSettings`]): constrained baseline profile
//! (no B-frames: every access unit is one picture, decodable as soon as it
//! arrives), one slice per picture, rate control on the bitrate with frame
//! skipping off (every input frame gives a picture), scene-change detection
//! off (keyframes come only on request or at the IDR interval, default 10 s),
//! SPS and PPS in front of every IDR, one encoder thread. The bitrate
//! changes at run time without a keyframe ([`Encoder::set_bitrate`]).
//!
//! OpenH264 built without `nasm` encodes about three times slower:
//! [`crate::build::OPENH264_ASM`] says which build this is.

use openh264::OpenH264API;
use openh264::decoder::Decoder as H264Decoder;
use openh264::encoder::{
    BitRate, Complexity, Encoder as H264Encoder, EncoderConfig, FrameRate, FrameType,
    IntraFramePeriod, Profile, RateControlMode, SpsPpsStrategy, UsageType,
};
use openh264::formats::{YUVSlices, YUVSource};

use crate::codec::{DecodedFrame, Decoder, Encoder, EncoderSettings, check_bitrate, check_fps};
use crate::{Codec, CodecError, VideoError, check_frame_len, check_geometry};

/// OpenH264's own error as the source of a [`VideoError`].
fn codec_err(e: openh264::Error) -> CodecError {
    Box::new(e)
}

/// A message as the source of a [`VideoError`].
fn msg(m: String) -> CodecError {
    m.into()
}

/// The OpenH264 configuration for our settings.
// r[impl video.codec.settings]
fn config(s: &EncoderSettings, bps: u64) -> EncoderConfig {
    EncoderConfig::new()
        .usage_type(UsageType::CameraVideoRealTime)
        .profile(Profile::Baseline)
        .rate_control_mode(RateControlMode::Bitrate)
        .bitrate(BitRate::from_bps(bps as u32))
        .max_frame_rate(FrameRate::from_hz(s.fps as f32))
        .skip_frames(false)
        .scene_change_detect(false)
        .intra_frame_period(IntraFramePeriod::from_num_frames(s.idr_interval_frames))
        .sps_pps_strategy(SpsPpsStrategy::ConstantId)
        .complexity(if s.low_complexity {
            Complexity::Low
        } else {
            Complexity::Medium
        })
        .num_threads(1)
}

/// An OpenH264 encoder for our settings, with OpenH264's own console log
/// (warnings on stderr) switched off: errors reach the caller as values.
fn new_inner(s: &EncoderSettings, bps: u64) -> Result<H264Encoder, VideoError> {
    let mut inner = H264Encoder::with_api_config(OpenH264API::from_source(), config(s, bps))
        .map_err(|e| VideoError::Encode(codec_err(e)))?;
    let mut level: std::ffi::c_int = openh264_sys2::WELS_LOG_QUIET as std::ffi::c_int;
    // SAFETY: FFI into OpenH264: the trace level is the one option it takes
    // before initialisation (the crate sets it only after, too late for the
    // warnings initialisation prints). The option reads one int through the
    // pointer during the call; `level` outlives the call.
    let rc = unsafe {
        inner.raw_api().set_option(
            openh264_sys2::ENCODER_OPTION_TRACE_LEVEL,
            (&raw mut level).cast(),
        )
    };
    if rc != 0 {
        return Err(VideoError::Encode(msg(format!(
            "setting the trace level failed (OpenH264 code {rc})"
        ))));
    }
    Ok(inner)
}

/// Checks a geometry against [`check_geometry`] and what OpenH264 encodes:
/// sides of at least 16 (one macroblock), at most 3840x2160 (or 2160x3840).
///
/// # Errors
/// [`VideoError::BadGeometry`] saying which condition fails.
pub(crate) fn check_openh264_geometry(width: usize, height: usize) -> Result<(), VideoError> {
    check_geometry(width, height)?;
    let small = width < 16 || height < 16;
    if !small && width.max(height) <= 3840 && width.min(height) <= 2160 {
        return Ok(());
    }
    Err(VideoError::BadGeometry {
        width,
        height,
        reason: match small {
            true => "width and height must be at least 16 (one macroblock)",
            false => "OpenH264 encodes at most 3840x2160 (or 2160x3840)",
        },
    })
}

/// The order in which to set OpenH264's target and maximum bitrate when
/// going from `from` to `to` bits per second: the maximum must never be
/// below the target (OpenH264 refuses that), so the maximum is raised first
/// when going up and lowered last when going down.
pub(crate) fn bitrate_option_order(from: u64, to: u64) -> [openh264_sys2::ENCODER_OPTION; 2] {
    if to > from {
        [
            openh264_sys2::ENCODER_OPTION_MAX_BITRATE,
            openh264_sys2::ENCODER_OPTION_BITRATE,
        ]
    } else {
        [
            openh264_sys2::ENCODER_OPTION_BITRATE,
            openh264_sys2::ENCODER_OPTION_MAX_BITRATE,
        ]
    }
}

/// A low-latency H.264 encoder for one picture geometry (OpenH264).
pub struct OpenH264Encoder {
    settings: EncoderSettings,
    inner: H264Encoder,
    bitrate_bps: u64,
    frames: u64,
}

impl std::fmt::Debug for OpenH264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenH264Encoder")
            .field("settings", &self.settings)
            .field("bitrate_bps", &self.bitrate_bps)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl OpenH264Encoder {
    /// An encoder with the default settings ([`EncoderSettings::new`]).
    ///
    /// # Errors
    /// As [`OpenH264Encoder::with_settings`].
    pub fn new(
        width: usize,
        height: usize,
        fps: u32,
        bitrate_bps: u64,
    ) -> Result<Self, VideoError> {
        OpenH264Encoder::with_settings(EncoderSettings::new(width, height, fps, bitrate_bps))
    }

    /// An encoder with the given settings.
    ///
    /// # Errors
    /// [`VideoError::BadGeometry`] for odd, too small (below 16) or too large
    /// sizes (OpenH264 stops at 3840x2160), [`VideoError::BadSource`] for fps 0 or above 240,
    /// [`VideoError::BadBitrate`], or [`VideoError::Encode`] if OpenH264
    /// refuses to start.
    pub fn with_settings(settings: EncoderSettings) -> Result<Self, VideoError> {
        check_openh264_geometry(settings.width, settings.height)?;
        check_fps(settings.fps)?;
        check_bitrate(settings.bitrate_bps)?;
        let inner = new_inner(&settings, settings.bitrate_bps)?;
        Ok(OpenH264Encoder {
            settings,
            inner,
            bitrate_bps: settings.bitrate_bps,
            frames: 0,
        })
    }
}

impl Encoder for OpenH264Encoder {
    fn codec(&self) -> Codec {
        Codec::H264AnnexB
    }

    fn settings(&self) -> &EncoderSettings {
        &self.settings
    }

    fn bitrate(&self) -> u64 {
        self.bitrate_bps
    }

    // r[impl video.codec.bitrate]
    fn set_bitrate(&mut self, bps: u64) -> Result<(), VideoError> {
        let rate = check_bitrate(bps)? as i32;
        if bps == self.bitrate_bps {
            return Ok(());
        }
        if self.frames == 0 {
            // OpenH264 initialises on the first frame; before it, a fresh
            // encoder with the new configuration is the same thing.
            self.inner = new_inner(&self.settings, bps)?;
            self.bitrate_bps = bps;
            return Ok(());
        }
        for option in bitrate_option_order(self.bitrate_bps, bps) {
            let mut info = openh264_sys2::SBitrateInfo {
                iLayer: openh264_sys2::SPATIAL_LAYER_0,
                iBitrate: rate,
            };
            // SAFETY: FFI into OpenH264 (the crate has no safe setter for the
            // bitrate of a running encoder). The encoder is initialised (a
            // frame was encoded), both options take a pointer to an
            // SBitrateInfo, which lives on this stack frame for the whole
            // call and is not retained by the encoder.
            let rc = unsafe {
                self.inner
                    .raw_api()
                    .set_option(option, (&raw mut info).cast())
            };
            if rc != 0 {
                return Err(VideoError::Encode(msg(format!(
                    "setting the bitrate to {bps} bit/s failed (OpenH264 code {rc})"
                ))));
            }
        }
        self.bitrate_bps = bps;
        Ok(())
    }

    /// Makes the next encoded frame an IDR (a keyframe with SPS and PPS).
    // r[impl video.codec.keyframe]
    fn force_keyframe(&mut self) {
        // Before the first frame the request is moot: the first frame is an
        // IDR anyway (and OpenH264 ignores it while uninitialised).
        self.inner.force_intra_frame();
    }

    /// Encodes one I420 frame and appends its access unit (Annex B, start
    /// codes included) to `out`, so a caller can write the envelope header
    /// first. Returns whether the access unit is a keyframe (IDR).
    ///
    /// # Errors
    /// [`VideoError::FrameSize`] if `i420` is not one frame of this
    /// geometry; [`VideoError::Encode`] if OpenH264 fails or produced no
    /// picture (`out` is then unchanged).
    fn encode(&mut self, i420: &[u8], out: &mut Vec<u8>) -> Result<bool, VideoError> {
        let (w, h) = (self.settings.width, self.settings.height);
        check_frame_len(w, h, i420.len())?;
        let (y, uv) = i420.split_at(w * h);
        let (u, v) = uv.split_at((w / 2) * (h / 2));
        let src = YUVSlices::new((y, u, v), (w, h), (w, w / 2, w / 2));
        let bits = self
            .inner
            .encode(&src)
            .map_err(|e| VideoError::Encode(codec_err(e)))?;
        let kind = bits.frame_type();
        if matches!(kind, FrameType::Skip | FrameType::Invalid) {
            return Err(VideoError::Encode(msg(format!(
                "the encoder produced no picture ({kind:?})"
            ))));
        }
        bits.write_vec(out);
        self.frames += 1;
        Ok(kind == FrameType::IDR)
    }
}

/// An H.264 decoder (Annex B access units in, I420 pictures out; OpenH264).
pub struct OpenH264Decoder {
    inner: H264Decoder,
    frame: DecodedFrame,
}

impl std::fmt::Debug for OpenH264Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenH264Decoder").finish_non_exhaustive()
    }
}

/// Copies `rows` rows of `width` bytes from a strided plane into `out`.
fn copy_plane(
    src: &[u8],
    stride: usize,
    width: usize,
    rows: usize,
    out: &mut Vec<u8>,
) -> Option<()> {
    if stride < width {
        return None;
    }
    for r in 0..rows {
        out.extend_from_slice(src.get(r * stride..r * stride + width)?);
    }
    Some(())
}

impl OpenH264Decoder {
    /// A decoder.
    ///
    /// # Errors
    /// [`VideoError::Decode`] if OpenH264 refuses to start.
    pub fn new() -> Result<Self, VideoError> {
        Ok(OpenH264Decoder {
            inner: H264Decoder::new().map_err(|e| VideoError::Decode(codec_err(e)))?,
            frame: DecodedFrame::default(),
        })
    }
}

impl Decoder for OpenH264Decoder {
    /// Decodes one access unit (Annex B). Returns the picture it completes,
    /// or `None` if it completes none (parameter sets alone, or a picture
    /// that cannot be shown yet). The picture borrows a buffer the decoder
    /// reuses for the next call.
    ///
    /// # Errors
    /// [`VideoError::Decode`] for input without any NAL unit start code or
    /// that OpenH264 cannot decode (a corrupt or missing reference); the
    /// decoder stays usable and recovers at the next keyframe.
    // r[impl video.codec.decode]
    fn decode(&mut self, annexb: &[u8]) -> Result<Option<&DecodedFrame>, VideoError> {
        if !annexb.windows(3).any(|w| w == [0, 0, 1]) {
            return Err(VideoError::Decode(msg(
                "no H.264 NAL unit (Annex B start code) in the access unit".into(),
            )));
        }
        let Some(pic) = self
            .inner
            .decode(annexb)
            .map_err(|e| VideoError::Decode(codec_err(e)))?
        else {
            return Ok(None);
        };
        let (w, h) = pic.dimensions();
        let (sy, su, sv) = pic.strides();
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let f = &mut self.frame;
        f.width = w;
        f.height = h;
        f.data.clear();
        f.data.reserve(w * h + 2 * cw * ch);
        let copied = copy_plane(pic.y(), sy, w, h, &mut f.data)
            .and_then(|()| copy_plane(pic.u(), su, cw, ch, &mut f.data))
            .and_then(|()| copy_plane(pic.v(), sv, cw, ch, &mut f.data));
        if copied.is_none() {
            return Err(VideoError::Decode(msg(format!(
                "decoded picture {w}x{h} has inconsistent planes"
            ))));
        }
        Ok(Some(&self.frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{read_index, unwrap_index};
    use crate::quality::psnr_y;
    use crate::testsrc::TestSrc;

    /// Encodes `n` testsrc frames, returning the access units and keyframe flags.
    fn encode_run(
        enc: &mut OpenH264Encoder,
        src: &TestSrc,
        range: std::ops::Range<u64>,
        mut each: impl FnMut(&mut OpenH264Encoder, u64),
    ) -> Vec<(Vec<u8>, bool)> {
        let mut frame = vec![0u8; src.frame_len()];
        range
            .map(|i| {
                each(enc, i);
                src.render(i, &mut frame).unwrap();
                let mut au = Vec::new();
                let key = enc.encode(&frame, &mut au).unwrap();
                (au, key)
            })
            .collect()
    }

    // r[verify video.codec.settings]
    // r[verify video.codec.decode]
    #[test]
    fn testsrc_720p_at_4_mbit_decodes_with_every_index_and_35_db() {
        let src = TestSrc::new(1280, 720, 30).unwrap();
        let mut enc = OpenH264Encoder::new(1280, 720, 30, 4_000_000).unwrap();
        let aus = encode_run(&mut enc, &src, 0..60, |_, _| {});
        assert!(aus[0].1, "the first frame is an IDR");
        assert!(
            aus[1..].iter().all(|(_, key)| !key),
            "no other keyframes within the 10 s IDR interval"
        );
        let total: usize = aus.iter().map(|(au, _)| au.len()).sum();
        let kbps = total as f64 * 8.0 / 2.0 / 1000.0; // 60 frames = 2 s
        let mut dec = OpenH264Decoder::new().unwrap();
        let mut reference = vec![0u8; src.frame_len()];
        let mut psnrs = Vec::new();
        for (i, (au, _)) in aus.iter().enumerate() {
            assert!(au.starts_with(&[0, 0, 0, 1]) || au.starts_with(&[0, 0, 1]));
            // Every access unit gives its picture at once (no B-frames, no
            // reordering delay).
            let pic = dec
                .decode(au)
                .unwrap()
                .expect("one picture per access unit");
            assert_eq!((pic.width, pic.height), (1280, 720));
            let low = read_index(pic.y(), pic.width, pic.height).expect("index readable");
            assert_eq!(unwrap_index(low, i as u64), i as u64);
            src.render(i as u64, &mut reference).unwrap();
            psnrs.push(psnr_y(&pic.data, &reference, 1280, 720).unwrap());
        }
        let mean = psnrs.iter().sum::<f64>() / psnrs.len() as f64;
        let min = psnrs.iter().cloned().fold(f64::INFINITY, f64::min);
        let p_mean = aus[1..].iter().map(|(au, _)| au.len()).sum::<usize>() / (aus.len() - 1);
        println!(
            "720p30 testsrc at 4 Mbit/s: {kbps:.0} kbit/s out (IDR {} B, P-frames {p_mean} B mean), \
             PSNR mean {mean:.2} dB, min {min:.2} dB",
            aus[0].0.len()
        );
        assert!(mean >= 35.0, "mean PSNR {mean:.2} dB");
        // Rate control holds the bitrate within a factor (the first IDR
        // weighs heavily in two seconds).
        assert!(kbps < 4000.0 * 1.5, "{kbps} kbit/s");
    }

    // r[verify video.codec.keyframe]
    #[test]
    fn a_forced_keyframe_is_an_idr_with_parameter_sets() {
        let src = TestSrc::new(640, 360, 30).unwrap();
        let mut enc = OpenH264Encoder::new(640, 360, 30, 1_000_000).unwrap();
        let aus = encode_run(&mut enc, &src, 0..20, |e, i| {
            if i == 12 {
                e.force_keyframe();
            }
        });
        let keys: Vec<usize> = aus
            .iter()
            .enumerate()
            .filter(|(_, a)| a.1)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(keys, [0, 12]);
        // NAL types in frame 12: SPS (7), PPS (8), IDR slice (5).
        let types: Vec<u8> = openh264::nal_units(&aus[12].0)
            .map(|n| n[n.iter().position(|&b| b == 1).unwrap() + 1] & 0x1f)
            .collect();
        assert!(
            types.contains(&7) && types.contains(&8) && types.contains(&5),
            "{types:?}"
        );
        let p_types: Vec<u8> = openh264::nal_units(&aus[11].0)
            .map(|n| n[n.iter().position(|&b| b == 1).unwrap() + 1] & 0x1f)
            .collect();
        assert!(!p_types.contains(&5), "frame 11 is not an IDR: {p_types:?}");
        // A decoder that starts at the forced keyframe decodes from there.
        let mut dec = OpenH264Decoder::new().unwrap();
        for (i, (au, _)) in aus.iter().enumerate().skip(12) {
            let pic = dec.decode(au).unwrap().expect("picture");
            assert_eq!(read_index(pic.y(), 640, 360), Some(i as u64));
        }
    }

    // r[verify video.codec.bitrate]
    #[test]
    fn set_bitrate_changes_the_output_size_at_run_time() {
        let src = TestSrc::new(1280, 720, 30).unwrap();
        let mut enc = OpenH264Encoder::new(1280, 720, 30, 4_000_000).unwrap();
        // Frames 0..60 at 4 Mbit/s, then 60..120 at 1 Mbit/s, then 120..180
        // at 4 Mbit/s again; compare the steady parts (skip the IDR).
        let aus = encode_run(&mut enc, &src, 0..180, |e, i| match i {
            60 => e.set_bitrate(1_000_000).unwrap(),
            120 => e.set_bitrate(4_000_000).unwrap(),
            _ => {}
        });
        assert_eq!(enc.bitrate(), 4_000_000);
        let bytes =
            |r: std::ops::Range<usize>| -> usize { aus[r].iter().map(|(a, _)| a.len()).sum() };
        let (high, low, high2) = (bytes(30..60), bytes(90..120), bytes(150..180));
        println!("bytes per second: 4 Mbit/s {high}, 1 Mbit/s {low}, 4 Mbit/s again {high2}");
        assert!(
            aus[1..].iter().all(|(_, k)| !k),
            "no keyframe from a bitrate change"
        );
        assert!(
            low * 2 < high,
            "1 Mbit/s ({low} B) is well below 4 Mbit/s ({high} B)"
        );
        assert!(
            high2 > low * 2,
            "raising the bitrate again raises the size ({high2} B vs {low} B)"
        );
        // The 1 Mbit/s second is near its target: 125 000 bytes.
        assert!(
            (60_000..190_000).contains(&low),
            "{low} B in one second at 1 Mbit/s"
        );
        // Out-of-range bitrates are refused and change nothing.
        assert!(matches!(
            enc.set_bitrate(10),
            Err(VideoError::BadBitrate { bps: 10, .. })
        ));
        assert!(enc.set_bitrate(u64::MAX).is_err());
        assert_eq!(enc.bitrate(), 4_000_000);
        // Before the first frame the bitrate change takes effect too.
        let mut fresh = OpenH264Encoder::new(1280, 720, 30, 4_000_000).unwrap();
        fresh.set_bitrate(500_000).unwrap();
        assert_eq!(fresh.bitrate(), 500_000);
        let small = encode_run(&mut fresh, &src, 0..60, |_, _| {});
        let small_bytes: usize = small[30..60].iter().map(|(a, _)| a.len()).sum();
        assert!(
            small_bytes * 3 < high,
            "{small_bytes} B at 0.5 Mbit/s vs {high} B at 4"
        );
    }

    // r[verify video.codec.decode]
    #[test]
    fn garbage_is_an_error_not_a_panic_and_the_decoder_recovers() {
        let src = TestSrc::new(640, 360, 30).unwrap();
        let mut enc = OpenH264Encoder::new(640, 360, 30, 1_000_000).unwrap();
        let aus = encode_run(&mut enc, &src, 0..5, |_, _| {});
        let mut dec = OpenH264Decoder::new().unwrap();
        assert!(matches!(dec.decode(&[]), Err(VideoError::Decode(_))));
        assert!(matches!(
            dec.decode(b"not h264 at all"),
            Err(VideoError::Decode(_))
        ));
        // Seeded random bytes behind start codes, and damaged real access
        // units: errors or no picture, never a panic.
        let refs: Vec<&[u8]> = aus.iter().map(|a| a.0.as_slice()).collect();
        let errors = crate::testscene::garbage(&refs)
            .iter()
            .filter(|buf| dec.decode(buf).is_err())
            .count();
        assert!(errors > 0, "garbage produced some decode errors");
        // Still usable: a fresh IDR decodes.
        enc.force_keyframe();
        let mut frame = vec![0u8; src.frame_len()];
        src.render(5, &mut frame).unwrap();
        let mut au = Vec::new();
        assert!(enc.encode(&frame, &mut au).unwrap());
        let pic = dec
            .decode(&au)
            .unwrap()
            .expect("picture after the keyframe");
        assert_eq!(read_index(pic.y(), 640, 360), Some(5));
    }

    #[test]
    fn encoder_rejects_bad_settings_and_frames() {
        assert!(matches!(
            OpenH264Encoder::new(641, 360, 30, 1_000_000),
            Err(VideoError::BadGeometry { .. })
        ));
        assert!(matches!(
            OpenH264Encoder::new(4096, 2160, 30, 1_000_000),
            Err(VideoError::BadGeometry { .. })
        ));
        assert!(matches!(
            OpenH264Encoder::new(640, 360, 0, 1_000_000),
            Err(VideoError::BadSource { .. })
        ));
        assert!(matches!(
            OpenH264Encoder::new(640, 360, 30, 0),
            Err(VideoError::BadBitrate { .. })
        ));
        let mut enc = OpenH264Encoder::new(640, 360, 30, 1_000_000).unwrap();
        let mut out = Vec::new();
        assert!(matches!(
            enc.encode(&[0u8; 100], &mut out),
            Err(VideoError::FrameSize { .. })
        ));
        assert!(out.is_empty());
    }
}
