//! H.264 with temporal layers and long-term-reference (LTR) loss recovery,
//! OpenH264's `ISVCEncoder` / `ISVCDecoder` driven directly through
//! `openh264-sys2` (the safe `openh264` crate hard-codes one temporal layer
//! and initialises the encoder itself, so it cannot be configured for this).
//!
//! [`LayeredEncoder`]: I420 in, one Annex B access unit out per picture,
//! each described by a [`FrameInfo`]: keyframe, temporal id, LTR mark,
//! recovery frame. With `N` temporal layers the structure is dyadic: frame
//! `t` (counted from the last IDR) has temporal id 0 when `t % 2^(N-1) ==
//! 0`; TL0 predicts only from TL0, so the TL0 access units alone (and
//! TL0+TL1 alone) decode whole at a fraction of the frame rate. The output
//! is plain AVC (NAL types 1, 5, 7, 8; constrained baseline), so any H.264
//! decoder takes any such sub-stream.
//!
//! Loss recovery without an IDR, the host's side of OpenH264's LTR
//! protocol (camera mode only; OpenH264 disables it in screen mode):
//! 1. Every IDR, and every `ltr_mark_period` TL0 frames one P picture,
//!    *marks* a long-term reference: its [`FrameInfo::ltr_mark`] is an
//!    [`LtrId`]. After a P mark OpenH264 marks nothing more until that mark
//!    is confirmed or rejected.
//! 2. The host calls [`LayeredEncoder::confirm_ltr`] once every viewer that
//!    needs the stream has decoded that access unit (and every TL0 one
//!    before it) whole. The confirmation takes effect in OpenH264 after the
//!    next TL0 picture is encoded.
//! 3. When a viewer loses a TL0 picture, the host calls
//!    [`LayeredEncoder::request_recovery`]: the next TL0 picture is a P
//!    predicting only from the newest *effective* confirmed LTR (no NAL type
//!    5; [`FrameInfo::recovery`] set), or an IDR when there is none
//!    (reported as [`Recovery::Idr`]). Loss of a TL1/TL2 picture needs no
//!    request: the next TL0 picture does not depend on it.
//!
//! A viewer using OpenH264 must decode with error concealment on, or it
//! refuses every picture after a loss until an IDR: [`LayeredDecoder`] does
//! that and reports every concealed picture as an error.

use std::fmt;
use std::os::raw::{c_int, c_long, c_uchar, c_void};
use std::ptr::null_mut;

use openh264_sys2 as sys;

use crate::codec::{DecodedFrame, Decoder, Encoder, EncoderSettings, check_bitrate, check_fps};
use crate::h264::{bitrate_option_order, check_openh264_geometry};
use crate::h264_bits::{BitsError, SliceTracker};
use crate::{Codec, VideoError, check_frame_len};

/// Most temporal layers supported.
pub const MAX_TEMPORAL_LAYERS: u8 = 3;

/// What went wrong inside OpenH264 or the LTR protocol: the
/// [`source`](std::error::Error::source) of a [`VideoError::Encode`] (or,
/// for [`LayeredError::NotAnnexB`] and [`LayeredError::Decode`], of a
/// [`VideoError::Decode`]). Reach it with
/// `err.source().and_then(|s| s.downcast_ref::<LayeredError>())`.
#[derive(Debug)]
#[non_exhaustive]
pub enum LayeredError {
    /// An OpenH264 call failed.
    Codec {
        /// Which call.
        call: &'static str,
        /// OpenH264's return code.
        code: i64,
    },
    /// The encoder produced no picture for an input (frame type reported).
    NoPicture {
        /// OpenH264's `EVideoFrameType`.
        frame_type: i64,
    },
    /// The encoder's own output could not be read (a bug, or an OpenH264
    /// that writes syntax this reader does not handle).
    Bitstream(BitsError),
    /// [`LayeredEncoder::confirm_ltr`] with an id from before the last IDR
    /// or size change: it names a reference that no longer exists.
    StaleLtr(LtrId),
    /// [`LayeredEncoder::confirm_ltr`] with an id that is not a mark this
    /// encoder emitted and still waits for.
    UnknownLtr(LtrId),
    /// The access unit given to the decoder is empty or has no start code.
    NotAnnexB,
    /// The access unit could not be decoded whole: a missing reference (a
    /// lost picture), damaged data. OpenH264's `DECODING_STATE` bits; a
    /// concealed picture is not returned. The decoder stays usable and is
    /// whole again at the next IDR or LTR recovery frame.
    Decode {
        /// OpenH264's `DECODING_STATE` bits.
        state: u32,
    },
}

impl fmt::Display for LayeredError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayeredError::Codec { call, code } => {
                write!(f, "OpenH264 {call} failed (code {code})")
            }
            LayeredError::NoPicture { frame_type } => {
                write!(
                    f,
                    "the encoder produced no picture (frame type {frame_type})"
                )
            }
            LayeredError::Bitstream(_) => write!(f, "the encoder's output could not be read"),
            LayeredError::StaleLtr(id) => {
                write!(f, "{id} is from before the last IDR: it no longer exists")
            }
            LayeredError::UnknownLtr(id) => {
                write!(f, "{id} is not an LTR mark awaiting confirmation")
            }
            LayeredError::NotAnnexB => {
                write!(f, "access unit is empty or has no Annex B start code")
            }
            LayeredError::Decode { state } => {
                write!(
                    f,
                    "access unit not decoded whole (OpenH264 state {state:#x})"
                )
            }
        }
    }
}

impl std::error::Error for LayeredError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LayeredError::Bitstream(e) => Some(e),
            _ => None,
        }
    }
}

impl From<LayeredError> for VideoError {
    /// Decoder errors become [`VideoError::Decode`], every other one
    /// [`VideoError::Encode`], with the [`LayeredError`] as source.
    fn from(e: LayeredError) -> Self {
        match e {
            LayeredError::NotAnnexB | LayeredError::Decode { .. } => {
                VideoError::Decode(Box::new(e))
            }
            _ => VideoError::Encode(Box::new(e)),
        }
    }
}

/// Turns an OpenH264 return code into a result.
#[allow(clippy::useless_conversion)] // c_long is i32 on Windows
fn check(call: &'static str, code: c_long) -> Result<(), LayeredError> {
    if code == 0 {
        Ok(())
    } else {
        Err(LayeredError::Codec {
            call,
            code: i64::from(code),
        })
    }
}

fn bad(setting: &'static str, value: u64, range: &'static str) -> VideoError {
    VideoError::BadSetting {
        setting,
        value,
        range,
    }
}

/// How a [`LayeredEncoder`] is set up. [`LayeredConfig::new`] gives the
/// defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayeredConfig {
    /// Geometry, frame rate, bitrate (of the whole stack of layers),
    /// complexity and IDR interval, as for any [`Encoder`]. The IDR
    /// interval is rounded up to a multiple of `2^(temporal_layers-1)`
    /// (OpenH264 refuses any other with temporal layers); the encoder's
    /// [`Encoder::settings`] report the rounded value.
    pub settings: EncoderSettings,
    /// Temporal layers, 1..=3. With 3, TL0 alone is a quarter of the frame
    /// rate and roughly 40 % of the bitrate, TL0+TL1 half and ~70 %.
    pub temporal_layers: u8,
    /// `Some(n)`: long-term references on, a candidate marked every `n` TL0
    /// frames (1..=1000) once the previous one is confirmed. `None`: off
    /// ([`LayeredEncoder::request_recovery`] then always gives an IDR).
    pub ltr_mark_period: Option<u32>,
    /// Target size of an IDR in percent of the average frame
    /// (OpenH264's `iIdrBitrateRatio`), 100..=1000. OpenH264's default is
    /// 400; 200 keeps IDRs near 4.3x the average at 720p/2.5 Mbit/s.
    pub idr_bitrate_ratio: u32,
}

impl LayeredConfig {
    /// The defaults for a geometry, frame rate and bitrate: 3 temporal
    /// layers, LTR on with a mark every 2 TL0 frames (8 frames with 3
    /// layers), IDR ratio 200 %, medium complexity, and IDRs only on
    /// request (`idr_interval_frames` 0: losses are repaired by LTR
    /// recovery frames, new viewers by a requested keyframe).
    pub fn new(width: usize, height: usize, fps: u32, bitrate_bps: u64) -> Self {
        LayeredConfig {
            settings: EncoderSettings {
                idr_interval_frames: 0,
                ..EncoderSettings::new(width, height, fps, bitrate_bps)
            },
            temporal_layers: 3,
            ltr_mark_period: Some(2),
            idr_bitrate_ratio: 200,
        }
    }

    /// Frames from one TL0 picture to the next: `2^(temporal_layers-1)`.
    pub fn gop(&self) -> u32 {
        1 << self
            .temporal_layers
            .saturating_sub(1)
            .min(MAX_TEMPORAL_LAYERS)
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`VideoError::BadGeometry`] (as for [`crate::OpenH264Encoder`]: at
    /// least 16, even, at most 3840x2160 or 2160x3840),
    /// [`VideoError::BadSource`] for a frame rate outside 1..=240,
    /// [`VideoError::BadBitrate`] or [`VideoError::BadSetting`] for the
    /// first field out of range.
    // r[impl video.layered.geometry]
    pub fn validate(&self) -> Result<(), VideoError> {
        let s = &self.settings;
        check_openh264_geometry(s.width, s.height)?;
        check_fps(s.fps)?;
        check_bitrate(s.bitrate_bps)?;
        if !(1..=MAX_TEMPORAL_LAYERS).contains(&self.temporal_layers) {
            return Err(bad(
                "temporal layer count",
                u64::from(self.temporal_layers),
                "1..=3",
            ));
        }
        if let Some(p) = self.ltr_mark_period
            && !(1..=1000).contains(&p)
        {
            return Err(bad("LTR mark period", u64::from(p), "1..=1000"));
        }
        if !(100..=1000).contains(&self.idr_bitrate_ratio) {
            return Err(bad(
                "IDR bitrate ratio",
                u64::from(self.idr_bitrate_ratio),
                "100..=1000 (percent)",
            ));
        }
        Ok(())
    }
}

/// A long-term reference marked by the encoder, as the host confirms it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LtrId {
    /// Counts the encoder's IDRs (and restarts), so ids from before an IDR
    /// never match later ones even when OpenH264 reuses `idr_pic_id`.
    epoch: u64,
    /// `idr_pic_id` of the IDR the reference belongs to.
    idr_pic_id: u32,
    /// `frame_num` of the marked picture.
    frame_num: u32,
}

impl LtrId {
    /// `frame_num` of the marked picture.
    pub fn frame_num(&self) -> u32 {
        self.frame_num
    }

    /// `idr_pic_id` of the IDR period the reference belongs to.
    pub fn idr_pic_id(&self) -> u32 {
        self.idr_pic_id
    }
}

impl fmt::Display for LtrId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LTR (frame_num {}, idr_pic_id {}, epoch {})",
            self.frame_num, self.idr_pic_id, self.epoch
        )
    }
}

/// What [`LayeredEncoder::request_recovery`] will send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// The next TL0 picture is a P predicting only from this confirmed LTR.
    Ltr(LtrId),
    /// The next picture is an IDR (LTR off, or no confirmed LTR yet).
    Idr,
}

/// What one encoded access unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// An IDR (with SPS and PPS in front): a new decoder can start here.
    pub keyframe: bool,
    /// Temporal layer, `0..temporal_layers`. A viewer receiving layers
    /// `0..=k` decodes whole.
    pub temporal_id: u8,
    /// This access unit marks a long-term reference; confirm it with
    /// [`LayeredEncoder::confirm_ltr`] once every viewer has it.
    pub ltr_mark: Option<LtrId>,
    /// This access unit answers [`LayeredEncoder::request_recovery`]: an
    /// LTR recovery P (no NAL type 5) or, with `keyframe`, an IDR. A viewer
    /// that lost TL0 data is whole again from here.
    pub recovery: bool,
    /// `frame_num` of the picture.
    pub frame_num: u32,
    /// Bytes of the access unit.
    pub len: usize,
}

/// Counters of a [`LayeredEncoder`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncoderStats {
    /// Access units produced.
    pub frames: u64,
    /// IDRs produced (the first one and every forced one included).
    pub idrs: u64,
    /// LTR marks emitted.
    pub ltr_marks: u64,
    /// LTR marks confirmed by the host.
    pub ltr_confirmed: u64,
    /// Recoveries answered by an LTR P frame.
    pub ltr_recoveries: u64,
    /// Recoveries answered by an IDR.
    pub idr_recoveries: u64,
    /// LTR recovery requests OpenH264 did not honour (the next TL0 picture
    /// did not predict from an LTR); each was answered by an IDR instead.
    pub ltr_recoveries_failed: u64,
}

/// The OpenH264 encoder functions used, checked present at creation.
#[derive(Clone, Copy)]
struct EncFns {
    initialize_ext: unsafe extern "C" fn(*mut sys::ISVCEncoder, *const sys::SEncParamExt) -> c_int,
    get_default_params:
        unsafe extern "C" fn(*mut sys::ISVCEncoder, *mut sys::SEncParamExt) -> c_int,
    uninitialize: unsafe extern "C" fn(*mut sys::ISVCEncoder) -> c_int,
    encode_frame: unsafe extern "C" fn(
        *mut sys::ISVCEncoder,
        *const sys::SSourcePicture,
        *mut sys::SFrameBSInfo,
    ) -> c_int,
    force_intra_frame: unsafe extern "C" fn(*mut sys::ISVCEncoder, bool) -> c_int,
    set_option:
        unsafe extern "C" fn(*mut sys::ISVCEncoder, sys::ENCODER_OPTION, *mut c_void) -> c_int,
}

/// One OpenH264 encoder instance, created, initialised and destroyed here.
struct RawEncoder {
    ptr: *mut sys::ISVCEncoder,
    f: EncFns,
    /// OpenH264 fills this with pointers into its own output buffer on
    /// every `EncodeFrame`; boxed (it is ~7 KB).
    bs: Box<sys::SFrameBSInfo>,
    /// Whether `InitializeExt` succeeded (then `Uninitialize` is due).
    initialized: bool,
}

// SAFETY: an OpenH264 encoder has no thread affinity (no thread-local
// state; with iMultipleThreadIdc = 1 it starts no threads of its own); it
// must only never be used from two threads at once. Every use goes through
// `&mut self` (or `Drop`), so moving the owner to another thread and using
// it there is sound. The raw pointers in `bs` point into the encoder's own
// buffers, which move with it. Not `Sync`: `&RawEncoder` gives no access.
unsafe impl Send for RawEncoder {}

impl RawEncoder {
    /// Creates and initialises an encoder for `cfg` (already validated).
    fn new(cfg: &LayeredConfig) -> Result<Self, VideoError> {
        let mut ptr: *mut sys::ISVCEncoder = null_mut();
        // SAFETY: FFI: WelsCreateSVCEncoder writes one encoder pointer
        // through the pointer it is given (a live local) and returns 0 on
        // success; nothing else is touched.
        let rc = unsafe { sys::source::APILoader::WelsCreateSVCEncoder(&mut ptr) };
        if rc != 0 || ptr.is_null() {
            return Err(LayeredError::Codec {
                call: "WelsCreateSVCEncoder",
                code: i64::from(rc),
            }
            .into());
        }
        // SAFETY: a created encoder (non-null, checked) is a pointer to its
        // vtable pointer (the C++ object's first word), and the vtable is a
        // static table that outlives the encoder; we copy the function
        // pointers out (`ISVCEncoderVtbl` is `Copy`).
        let vt: sys::ISVCEncoderVtbl = unsafe { **ptr };
        let f = match (
            vt.InitializeExt,
            vt.GetDefaultParams,
            vt.Uninitialize,
            vt.EncodeFrame,
            vt.ForceIntraFrame,
            vt.SetOption,
        ) {
            (Some(a), Some(b), Some(c), Some(d), Some(e), Some(g)) => EncFns {
                initialize_ext: a,
                get_default_params: b,
                uninitialize: c,
                encode_frame: d,
                force_intra_frame: e,
                set_option: g,
            },
            _ => {
                // SAFETY: created above, not initialised, never used again.
                unsafe { sys::source::APILoader::WelsDestroySVCEncoder(ptr) };
                return Err(LayeredError::Codec {
                    call: "encoder vtable (missing function)",
                    code: -1,
                }
                .into());
            }
        };
        let mut enc = RawEncoder {
            ptr,
            f,
            bs: Box::default(),
            initialized: false,
        };
        enc.init(cfg)?;
        Ok(enc)
    }

    // r[impl video.layered.recovery-size]
    fn init(&mut self, cfg: &LayeredConfig) -> Result<(), LayeredError> {
        let c = &cfg.settings;
        let mut p = sys::SEncParamExt::default();
        // SAFETY: GetDefaultParams fills the struct it is pointed at (a live
        // local of exactly that type) and keeps no pointer to it.
        let rc = unsafe { (self.f.get_default_params)(self.ptr, &mut p) };
        check("GetDefaultParams", rc.into())?;
        // Geometry and rates fit the C types: validate() bounds them
        // (sides <= 3840, bitrate <= 200_000_000 < i32::MAX).
        let (w, h) = (c.width as c_int, c.height as c_int);
        let bps = c.bitrate_bps as c_int;
        p.iUsageType = sys::CAMERA_VIDEO_REAL_TIME;
        p.iPicWidth = w;
        p.iPicHeight = h;
        p.iRCMode = sys::RC_BITRATE_MODE;
        p.fMaxFrameRate = c.fps as f32;
        p.iTemporalLayerNum = c_int::from(cfg.temporal_layers);
        p.iSpatialLayerNum = 1;
        // A multiple of the GOP (LayeredEncoder::new rounds it), <= u32.
        p.uiIntraPeriod = c.idr_interval_frames;
        p.iNumRefFrame = sys::AUTO_REF_PIC_COUNT as c_int;
        p.eSpsPpsIdStrategy = sys::CONSTANT_ID;
        p.bEnableFrameSkip = false;
        p.bEnableLongTermReference = cfg.ltr_mark_period.is_some();
        p.iLtrMarkPeriod = cfg.ltr_mark_period.unwrap_or(30);
        p.iMultipleThreadIdc = 1;
        p.bEnableDenoise = false;
        p.bEnableBackgroundDetection = true;
        p.bEnableAdaptiveQuant = true;
        p.bEnableSceneChangeDetect = false;
        p.iLoopFilterDisableIdc = 0;
        p.iIdrBitrateRatio = cfg.idr_bitrate_ratio as c_int;
        p.iComplexityMode = if c.low_complexity {
            sys::LOW_COMPLEXITY
        } else {
            sys::MEDIUM_COMPLEXITY
        };
        p.iTargetBitrate = bps;
        p.iMaxBitrate = bps;
        let l = &mut p.sSpatialLayers[0];
        l.iVideoWidth = w;
        l.iVideoHeight = h;
        l.fFrameRate = c.fps as f32;
        l.iSpatialBitrate = bps;
        l.iMaxSpatialBitrate = bps;
        l.uiProfileIdc = sys::PRO_BASELINE;
        l.sSliceArgument.uiSliceMode = sys::SM_SINGLE_SLICE;
        l.sSliceArgument.uiSliceNum = 1;
        let mut level = sys::WELS_LOG_QUIET as c_int;
        // SAFETY: ENCODER_OPTION_TRACE_LEVEL reads one c_int through the
        // pointer during the call. It is the one option taken before
        // InitializeExt (to silence its warnings).
        unsafe {
            self.set_option_ptr(
                "SetOption(TRACE_LEVEL)",
                sys::ENCODER_OPTION_TRACE_LEVEL,
                &mut level,
            )?;
        }
        // SAFETY: InitializeExt reads the parameter struct (a live local,
        // fully initialised by GetDefaultParams and the fields above) and
        // copies what it keeps; no pointer into it is retained.
        let rc = unsafe { (self.f.initialize_ext)(self.ptr, &p) };
        check("InitializeExt", rc.into())?;
        self.initialized = true;
        Ok(())
    }

    fn force_intra(&mut self) -> Result<(), LayeredError> {
        // SAFETY: the encoder is initialised (RawEncoder exists only
        // initialised); ForceIntraFrame sets a flag for the next frame.
        let rc = unsafe { (self.f.force_intra_frame)(self.ptr, true) };
        check("ForceIntraFrame", rc.into())
    }

    fn set_bitrate_option(
        &mut self,
        option: sys::ENCODER_OPTION,
        bps: u64,
    ) -> Result<(), LayeredError> {
        let mut info = sys::SBitrateInfo {
            iLayer: sys::SPATIAL_LAYER_0,
            iBitrate: bps as c_int, // <= MAX_BITRATE_BPS < i32::MAX, checked by the caller
        };
        // SAFETY: ENCODER_OPTION_BITRATE and ENCODER_OPTION_MAX_BITRATE (the
        // only options passed here) take a pointer to an SBitrateInfo.
        unsafe { self.set_option_ptr("SetOption(BITRATE)", option, &mut info) }
    }

    /// OpenH264's `SetOption` with a pointer to `value`.
    ///
    /// # Safety
    /// `option` must be one that takes a pointer to a `T`, which OpenH264
    /// only reads (or copies) during the call and does not keep.
    unsafe fn set_option_ptr<T>(
        &mut self,
        call: &'static str,
        option: sys::ENCODER_OPTION,
        value: &mut T,
    ) -> Result<(), LayeredError> {
        // SAFETY: `self.ptr` is a live encoder (created in `new`, destroyed
        // only in Drop); `value` is an exclusive borrow that outlives the
        // call, of the type the option expects (the caller's contract).
        let rc = unsafe { (self.f.set_option)(self.ptr, option, (value as *mut T).cast()) };
        check(call, rc.into())
    }

    /// LTR marking feedback: `success` confirms the mark, else rejects it.
    fn ltr_marking_feedback(&mut self, id: LtrId, success: bool) -> Result<(), LayeredError> {
        let kind = if success {
            sys::LTR_MARKING_SUCCESS
        } else {
            sys::LTR_MARKING_FAILED
        };
        let mut fb = sys::SLTRMarkingFeedback {
            uiFeedbackType: kind as _,
            uiIDRPicId: id.idr_pic_id as _,
            iLTRFrameNum: id.frame_num as c_int, // < 2^16 (log2_max_frame_num <= 16)
            iLayerId: 0,
        };
        // SAFETY: ENCODER_LTR_MARKING_FEEDBACK takes a pointer to an
        // SLTRMarkingFeedback, whose fields OpenH264 copies during the call
        // (FilterLTRMarkingFeedback).
        unsafe {
            self.set_option_ptr(
                "SetOption(LTR_MARKING_FEEDBACK)",
                sys::ENCODER_LTR_MARKING_FEEDBACK,
                &mut fb,
            )
        }
    }

    fn ltr_recovery_request(&mut self, from: LtrId) -> Result<(), LayeredError> {
        let mut req = sys::SLTRRecoverRequest {
            uiFeedbackType: sys::LTR_RECOVERY_REQUEST as _,
            uiIDRPicId: from.idr_pic_id as _,
            // Not -1 (that asks for an IDR); with iCurrentFrameNum -1 the
            // request is unconditional and this value is not used further.
            iLastCorrectFrameNum: from.frame_num as c_int,
            iCurrentFrameNum: -1,
            iLayerId: 0,
        };
        // SAFETY: ENCODER_LTR_RECOVERY_REQUEST takes a pointer to an
        // SLTRRecoverRequest, whose fields OpenH264 copies during the call
        // (FilterLTRRecoveryRequest).
        unsafe {
            self.set_option_ptr(
                "SetOption(LTR_RECOVERY_REQUEST)",
                sys::ENCODER_LTR_RECOVERY_REQUEST,
                &mut req,
            )
        }
    }

    /// Encodes one I420 picture (length checked by the caller) and appends
    /// its NAL units to `out`; returns the frame type and the VCL layer's
    /// temporal id.
    fn encode(
        &mut self,
        i420: &[u8],
        width: usize,
        height: usize,
        ts_ms: i64,
        out: &mut Vec<u8>,
    ) -> Result<(sys::EVideoFrameType, u8), VideoError> {
        check_frame_len(width, height, i420.len())?;
        let ylen = width * height;
        let clen = (width / 2) * (height / 2);
        let (y, uv) = i420.split_at(ylen);
        let (u, v) = uv.split_at(clen);
        let src = sys::SSourcePicture {
            iColorFormat: sys::videoFormatI420 as c_int,
            iStride: [
                width as c_int,
                (width / 2) as c_int,
                (width / 2) as c_int,
                0,
            ],
            pData: [
                y.as_ptr().cast_mut(),
                u.as_ptr().cast_mut(),
                v.as_ptr().cast_mut(),
                null_mut(),
            ],
            iPicWidth: width as c_int,
            iPicHeight: height as c_int,
            uiTimeStamp: ts_ms,
            bPsnrY: false,
            bPsnrU: false,
            bPsnrV: false,
        };
        // SAFETY: the three planes are exactly stride*rows bytes each (the
        // length is checked above and they are split from one live slice
        // that outlives the call); EncodeFrame only reads them (the `*mut`
        // is the C API's type). `self.bs` is a live, exclusively borrowed
        // SFrameBSInfo that OpenH264 overwrites with pointers into its own
        // output buffer; those stay valid until the next EncodeFrame or
        // Uninitialize, both of which need `&mut self` again, and the bytes
        // are copied out below before this function returns.
        let rc = unsafe { (self.f.encode_frame)(self.ptr, &src, &mut *self.bs) };
        check("EncodeFrame", rc.into())?;
        let bs = &*self.bs;
        let frame_type = bs.eFrameType;
        let mut tid = 0u8;
        let start = out.len();
        let layers = usize::try_from(bs.iLayerNum)
            .unwrap_or(0)
            .min(bs.sLayerInfo.len());
        for li in &bs.sLayerInfo[..layers] {
            if li.uiLayerType == sys::VIDEO_CODING_LAYER as c_uchar {
                tid = li.uiTemporalId;
            }
            let count = usize::try_from(li.iNalCount).unwrap_or(0);
            if count == 0 || li.pNalLengthInByte.is_null() || li.pBsBuf.is_null() {
                continue;
            }
            // SAFETY: OpenH264's SLayerBSInfo contract: pNalLengthInByte
            // points at iNalCount lengths (non-null, checked) in the
            // encoder's buffers, valid until the next EncodeFrame (we hold
            // `&mut self`, so none can happen before we are done).
            let lens = unsafe { std::slice::from_raw_parts(li.pNalLengthInByte, count) };
            let total: usize = lens.iter().map(|&l| usize::try_from(l).unwrap_or(0)).sum();
            // SAFETY: same contract: pBsBuf holds the concatenation of those
            // NAL units, `total` bytes, valid until the next EncodeFrame; we
            // copy them into `out` right away.
            let bytes = unsafe { std::slice::from_raw_parts(li.pBsBuf, total) };
            out.extend_from_slice(bytes);
        }
        if out.len() == start {
            return Err(LayeredError::NoPicture {
                frame_type: i64::from(frame_type),
            }
            .into());
        }
        Ok((frame_type, tid))
    }
}

impl Drop for RawEncoder {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from WelsCreateSVCEncoder and is used by no one
        // after this (we own it exclusively); Uninitialize (only if
        // InitializeExt succeeded) then WelsDestroySVCEncoder is OpenH264's
        // teardown. The pointers in `bs` die with it and are not read again.
        unsafe {
            if self.initialized {
                (self.f.uninitialize)(self.ptr);
            }
            sys::source::APILoader::WelsDestroySVCEncoder(self.ptr);
        }
    }
}

/// Where a requested recovery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    Ltr(LtrId),
    Idr,
}

/// An H.264 encoder with temporal layers and LTR loss recovery (OpenH264,
/// camera mode, constrained baseline, one slice per picture, no frame
/// skipping, IDRs on request and at the configured interval). See the
/// [module docs](self).
// r[impl video.layered.temporal]
pub struct LayeredEncoder {
    raw: RawEncoder,
    cfg: LayeredConfig,
    tracker: SliceTracker,
    /// Counts IDRs and restarts (the epoch of [`LtrId`]).
    epoch: u64,
    /// `idr_pic_id` of the current IDR period.
    idr_pic_id: u32,
    /// The IDR's own mark (confirming it needs no OpenH264 call).
    idr_mark: Option<LtrId>,
    /// The newest P mark, awaiting confirmation.
    awaiting: Option<LtrId>,
    /// Confirmed by the host, sent to OpenH264, effective after the next
    /// TL0 picture.
    confirm_sent: Option<LtrId>,
    /// Confirmed and effective: what a recovery predicts from.
    confirmed: Option<LtrId>,
    pending: Pending,
    /// [`Encoder::force_keyframe`] was called: the next picture is an IDR.
    idr_requested: bool,
    /// Pictures since the encoder (re)started: the timestamp clock.
    pictures: u64,
    stats: EncoderStats,
}

impl fmt::Debug for LayeredEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayeredEncoder")
            .field("cfg", &self.cfg)
            .field("confirmed", &self.confirmed)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl LayeredEncoder {
    /// An encoder for `cfg`; its first access unit is an IDR.
    ///
    /// # Errors
    /// As [`LayeredConfig::validate`]; [`VideoError::Encode`] (a
    /// [`LayeredError::Codec`]) if OpenH264 refuses to start.
    // r[impl video.layered.idr-interval]
    pub fn new(cfg: LayeredConfig) -> Result<Self, VideoError> {
        cfg.validate()?;
        let mut cfg = cfg;
        let gop = cfg.gop();
        let interval = &mut cfg.settings.idr_interval_frames;
        *interval = interval
            .div_ceil(gop)
            .checked_mul(gop)
            .unwrap_or(u32::MAX / gop * gop);
        let raw = RawEncoder::new(&cfg)?;
        Ok(LayeredEncoder {
            raw,
            cfg,
            tracker: SliceTracker::new(),
            epoch: 0,
            idr_pic_id: 0,
            idr_mark: None,
            awaiting: None,
            confirm_sent: None,
            confirmed: None,
            pending: Pending::None,
            idr_requested: false,
            pictures: 0,
            stats: EncoderStats::default(),
        })
    }

    /// The current configuration (with the current size and bitrate, and
    /// the IDR interval as rounded).
    pub fn config(&self) -> &LayeredConfig {
        &self.cfg
    }

    /// The counters.
    pub fn stats(&self) -> EncoderStats {
        self.stats
    }

    /// The newest confirmed LTR in effect: what
    /// [`request_recovery`](Self::request_recovery) would predict from.
    pub fn confirmed_ltr(&self) -> Option<LtrId> {
        self.confirmed
    }

    /// Restarts the encoder at a new size (same other settings): the next
    /// access unit is an IDR of the new size, and every earlier [`LtrId`]
    /// becomes stale. Nothing changes on error.
    ///
    /// # Errors
    /// [`VideoError::BadGeometry`]; [`VideoError::Encode`] if OpenH264
    /// refuses to start.
    // r[impl video.layered.resize]
    pub fn set_size(&mut self, width: usize, height: usize) -> Result<(), VideoError> {
        check_openh264_geometry(width, height)?;
        let cfg = LayeredConfig {
            settings: EncoderSettings {
                width,
                height,
                ..self.cfg.settings
            },
            ..self.cfg
        };
        self.raw = RawEncoder::new(&cfg)?;
        self.cfg = cfg;
        self.tracker = SliceTracker::new();
        self.pictures = 0;
        self.reset_ltr();
        self.pending = Pending::None;
        self.idr_requested = false;
        Ok(())
    }

    fn reset_ltr(&mut self) {
        self.epoch += 1;
        self.idr_mark = None;
        self.awaiting = None;
        self.confirm_sent = None;
        self.confirmed = None;
    }

    /// Confirms an LTR mark: every viewer that needs the stream has decoded
    /// the access unit that carried it (and the TL0 ones before it). Takes
    /// effect in OpenH264 after the next TL0 picture; OpenH264 then drops
    /// older LTRs and marks a new candidate after the mark period.
    /// Confirming the mark already confirmed is a no-op.
    ///
    /// # Errors
    /// [`VideoError::Encode`] with a [`LayeredError::StaleLtr`] for an id
    /// from before the last IDR or size change, a
    /// [`LayeredError::UnknownLtr`] for an id that is not the mark awaiting
    /// confirmation, a [`LayeredError::Codec`] if OpenH264 refuses the
    /// feedback.
    // r[impl video.layered.ltr-confirm]
    pub fn confirm_ltr(&mut self, id: LtrId) -> Result<(), VideoError> {
        if id.epoch != self.epoch {
            return Err(LayeredError::StaleLtr(id).into());
        }
        if Some(id) == self.confirmed || Some(id) == self.confirm_sent {
            return Ok(());
        }
        if Some(id) == self.idr_mark {
            // OpenH264 counts its IDR as received; only our view changes.
            // (A P mark confirmed already supersedes it.)
            if self.confirmed.is_none() && self.confirm_sent.is_none() {
                self.confirmed = Some(id);
                self.stats.ltr_confirmed += 1;
            }
            return Ok(());
        }
        if Some(id) != self.awaiting {
            return Err(LayeredError::UnknownLtr(id).into());
        }
        self.raw.ltr_marking_feedback(id, true)?;
        self.awaiting = None;
        self.confirm_sent = Some(id);
        self.stats.ltr_confirmed += 1;
        Ok(())
    }

    /// Rejects an LTR mark: some viewer will never have it (it lost that
    /// access unit). OpenH264 drops the candidate and marks a new one
    /// after the mark period; until a mark is confirmed it marks no other.
    /// If no LTR has been confirmed in OpenH264 since the IDR, OpenH264
    /// answers with an IDR (reported as a keyframe).
    ///
    /// # Errors
    /// As for [`confirm_ltr`](Self::confirm_ltr).
    pub fn reject_ltr(&mut self, id: LtrId) -> Result<(), VideoError> {
        if id.epoch != self.epoch {
            return Err(LayeredError::StaleLtr(id).into());
        }
        if Some(id) != self.awaiting {
            return Err(LayeredError::UnknownLtr(id).into());
        }
        self.raw.ltr_marking_feedback(id, false)?;
        self.awaiting = None;
        Ok(())
    }

    /// A viewer lost a TL0 picture: makes the next TL0 picture a recovery
    /// frame, an LTR P predicting only from the newest confirmed LTR in
    /// effect, or an IDR when there is none (or LTR is off). Requests
    /// before the recovery frame is out are coalesced into one.
    ///
    /// With `N` temporal layers the recovery frame is the next TL0 one, up
    /// to `2^(N-1)` pictures later; an IDR comes at the next picture.
    ///
    /// # Errors
    /// [`VideoError::Encode`] if OpenH264 refuses the request.
    // r[impl video.layered.ltr-recovery]
    pub fn request_recovery(&mut self) -> Result<Recovery, VideoError> {
        match self.pending {
            Pending::Ltr(id) => return Ok(Recovery::Ltr(id)),
            Pending::Idr => return Ok(Recovery::Idr),
            Pending::None => {}
        }
        match self.confirmed {
            Some(id) if self.cfg.ltr_mark_period.is_some() => {
                self.raw.ltr_recovery_request(id)?;
                self.pending = Pending::Ltr(id);
                Ok(Recovery::Ltr(id))
            }
            _ => {
                self.raw.force_intra()?;
                self.pending = Pending::Idr;
                Ok(Recovery::Idr)
            }
        }
    }

    /// Encodes one I420 picture (`width * height` luma bytes, then the U
    /// and V planes of `width/2 * height/2`) and appends its access unit
    /// (Annex B, start codes included) to `out`, so a caller can write a
    /// header first.
    ///
    /// # Errors
    /// [`VideoError::FrameSize`] for a buffer that is not one picture of
    /// the current size; [`VideoError::Encode`] with a
    /// [`LayeredError::Codec`] or [`LayeredError::NoPicture`] if OpenH264
    /// fails, a [`LayeredError::Bitstream`] if its output cannot be read
    /// (the next access unit is then an IDR). `out` is unchanged on every
    /// error.
    pub fn encode(&mut self, i420: &[u8], out: &mut Vec<u8>) -> Result<FrameInfo, VideoError> {
        let start = out.len();
        let s = &self.cfg.settings;
        check_frame_len(s.width, s.height, i420.len())?;
        if self.idr_requested {
            self.raw.force_intra()?;
            self.idr_requested = false;
        }
        let ts_ms =
            i64::try_from(self.pictures.saturating_mul(1000) / u64::from(self.cfg.settings.fps))
                .unwrap_or(i64::MAX);
        let (frame_type, tid) = self.raw.encode(
            i420,
            self.cfg.settings.width,
            self.cfg.settings.height,
            ts_ms,
            out,
        )?;
        match self.describe(&out[start..], frame_type, tid) {
            Ok(info) => {
                self.pictures += 1;
                Ok(info)
            }
            Err(e) => {
                // The picture is lost to the viewers: make the next one an
                // IDR so that the stream heals (best effort: the error
                // reported is the first one).
                out.truncate(start);
                let _ = self.raw.force_intra();
                Err(e.into())
            }
        }
    }

    /// Reads the slice headers of an access unit just encoded and updates
    /// the LTR bookkeeping.
    fn describe(
        &mut self,
        au: &[u8],
        frame_type: sys::EVideoFrameType,
        temporal_id: u8,
    ) -> Result<FrameInfo, LayeredError> {
        let mut slice = None;
        for nal in crate::h264_bits::nal_units(au) {
            if let Some(s) = self.tracker.nal(nal).map_err(LayeredError::Bitstream)? {
                slice.get_or_insert(s);
            }
        }
        let Some(s) = slice else {
            return Err(LayeredError::NoPicture {
                frame_type: i64::from(frame_type),
            });
        };
        let keyframe = s.idr;
        let mut recovery = false;
        self.stats.frames += 1;
        if keyframe {
            self.stats.idrs += 1;
            self.reset_ltr();
            self.idr_pic_id = s.idr_pic_id.unwrap_or(0);
            if self.pending != Pending::None {
                recovery = true;
                self.stats.idr_recoveries += 1;
                self.pending = Pending::None;
            }
        } else if temporal_id == 0 {
            if let Pending::Ltr(_) = self.pending {
                if s.refs_ltr {
                    recovery = true;
                    self.stats.ltr_recoveries += 1;
                    self.pending = Pending::None;
                } else {
                    // OpenH264 did not honour the request: fall back to an
                    // IDR on the next picture.
                    self.stats.ltr_recoveries_failed += 1;
                    self.raw.force_intra()?;
                    self.pending = Pending::Idr;
                }
            }
            // OpenH264 applies a confirmation at the end of a TL0 P picture.
            if let Some(id) = self.confirm_sent.take() {
                self.confirmed = Some(id);
            }
        }
        // With LTR off OpenH264 marks nothing; a mark then is not reported.
        let marks = s.marks_ltr.filter(|_| self.cfg.ltr_mark_period.is_some());
        let ltr_mark = marks.map(|frame_num| LtrId {
            epoch: self.epoch,
            idr_pic_id: self.idr_pic_id,
            frame_num,
        });
        if let Some(id) = ltr_mark {
            self.stats.ltr_marks += 1;
            if keyframe {
                self.idr_mark = Some(id);
            } else {
                self.awaiting = Some(id);
            }
        }
        Ok(FrameInfo {
            keyframe,
            temporal_id,
            ltr_mark,
            recovery,
            frame_num: s.frame_num,
            len: au.len(),
        })
    }
}

impl Encoder for LayeredEncoder {
    fn codec(&self) -> Codec {
        Codec::H264AnnexB
    }

    fn settings(&self) -> &EncoderSettings {
        &self.cfg.settings
    }

    fn bitrate(&self) -> u64 {
        self.cfg.settings.bitrate_bps
    }

    /// Changes the target bitrate of the whole stack of layers from the
    /// next picture on, without a keyframe.
    ///
    /// # Errors
    /// [`VideoError::BadBitrate`] out of range (nothing changes);
    /// [`VideoError::Encode`] if OpenH264 refuses it.
    // r[impl video.layered.bitrate]
    fn set_bitrate(&mut self, bps: u64) -> Result<(), VideoError> {
        check_bitrate(bps)?;
        if bps == self.cfg.settings.bitrate_bps {
            return Ok(());
        }
        for option in bitrate_option_order(self.cfg.settings.bitrate_bps, bps) {
            self.raw.set_bitrate_option(option, bps)?;
        }
        self.cfg.settings.bitrate_bps = bps;
        Ok(())
    }

    /// Makes the next access unit an IDR (whatever its temporal position:
    /// the layer structure restarts there).
    fn force_keyframe(&mut self) {
        self.idr_requested = true;
    }

    /// [`LayeredEncoder::encode`] without the [`FrameInfo`]: whether the
    /// access unit is an IDR.
    fn encode(&mut self, i420: &[u8], out: &mut Vec<u8>) -> Result<bool, VideoError> {
        LayeredEncoder::encode(self, i420, out).map(|info| info.keyframe)
    }
}

/// The OpenH264 decoder functions used, checked present at creation.
#[derive(Clone, Copy)]
struct DecFns {
    initialize: unsafe extern "C" fn(*mut sys::ISVCDecoder, *const sys::SDecodingParam) -> c_long,
    uninitialize: unsafe extern "C" fn(*mut sys::ISVCDecoder) -> c_long,
    decode_frame_no_delay: unsafe extern "C" fn(
        *mut sys::ISVCDecoder,
        *const c_uchar,
        c_int,
        *mut *mut c_uchar,
        *mut sys::SBufferInfo,
    ) -> sys::DECODING_STATE,
    set_option:
        unsafe extern "C" fn(*mut sys::ISVCDecoder, sys::DECODER_OPTION, *mut c_void) -> c_long,
}

/// An H.264 decoder (OpenH264) with error concealment on, so that after a
/// lost picture it keeps decoding and is whole again at an LTR recovery
/// frame (OpenH264 with concealment off refuses everything until an IDR).
/// Concealed pictures are not returned: such an access unit is a
/// [`VideoError::Decode`] (with a [`LayeredError::Decode`] as source).
// r[impl video.layered.concealment]
pub struct LayeredDecoder {
    ptr: *mut sys::ISVCDecoder,
    f: DecFns,
    initialized: bool,
    pic: DecodedFrame,
}

// SAFETY: as for the encoder: an OpenH264 decoder has no thread affinity
// and is only used through `&mut self` (or `Drop`), so it may move between
// threads; it is not `Sync`.
unsafe impl Send for LayeredDecoder {}

impl fmt::Debug for LayeredDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayeredDecoder").finish_non_exhaustive()
    }
}

impl LayeredDecoder {
    /// A decoder with slice-copy error concealment.
    ///
    /// # Errors
    /// [`VideoError::Decode`] if OpenH264 refuses to start.
    pub fn new() -> Result<Self, VideoError> {
        let mut ptr: *mut sys::ISVCDecoder = null_mut();
        // SAFETY: WelsCreateDecoder writes one decoder pointer through the
        // pointer it is given (a live local).
        let rc = unsafe { sys::source::APILoader::WelsCreateDecoder(&mut ptr) };
        if rc != 0 || ptr.is_null() {
            return Err(VideoError::Decode(Box::new(LayeredError::Codec {
                call: "WelsCreateDecoder",
                code: rc as i64,
            })));
        }
        // SAFETY: as for the encoder: a created decoder (non-null) points at
        // its static vtable pointer; we copy the table.
        let vt: sys::ISVCDecoderVtbl = unsafe { **ptr };
        let f = match (
            vt.Initialize,
            vt.Uninitialize,
            vt.DecodeFrameNoDelay,
            vt.SetOption,
        ) {
            (Some(a), Some(b), Some(c), Some(d)) => DecFns {
                initialize: a,
                uninitialize: b,
                decode_frame_no_delay: c,
                set_option: d,
            },
            _ => {
                // SAFETY: created above, not initialised, never used again.
                unsafe { sys::source::APILoader::WelsDestroyDecoder(ptr) };
                return Err(VideoError::Decode(Box::new(LayeredError::Codec {
                    call: "decoder vtable (missing function)",
                    code: -1,
                })));
            }
        };
        let mut d = LayeredDecoder {
            ptr,
            f,
            initialized: false,
            pic: DecodedFrame::default(),
        };
        d.set_int(
            sys::DECODER_OPTION_TRACE_LEVEL,
            sys::WELS_LOG_QUIET as c_int,
        )?;
        let mut p = sys::SDecodingParam {
            eEcActiveIdc: sys::ERROR_CON_SLICE_COPY,
            ..Default::default()
        };
        p.sVideoProperty.eVideoBsType = sys::VIDEO_BITSTREAM_AVC;
        // SAFETY: Initialize reads the parameter struct (a live local) during
        // the call; its pFileNameRestructed is null (default), so no pointer
        // is followed or kept.
        let rc = unsafe { (d.f.initialize)(d.ptr, &p) };
        check("decoder Initialize", rc).map_err(|e| VideoError::Decode(Box::new(e)))?;
        d.initialized = true;
        d.set_int(
            sys::DECODER_OPTION_ERROR_CON_IDC,
            sys::ERROR_CON_SLICE_COPY as c_int,
        )?;
        Ok(d)
    }

    /// SetOption for an option whose value is one c_int.
    fn set_int(&mut self, opt: sys::DECODER_OPTION, v: c_int) -> Result<(), VideoError> {
        let mut v = v;
        // SAFETY: the options passed here (TRACE_LEVEL, ERROR_CON_IDC) read
        // one c_int through the pointer during the call; `v` is a live
        // local.
        let rc = unsafe { (self.f.set_option)(self.ptr, opt, (&raw mut v).cast()) };
        check("decoder SetOption", rc).map_err(|e| VideoError::Decode(Box::new(e)))
    }
}

impl Decoder for LayeredDecoder {
    /// Decodes one access unit (Annex B). Returns the picture it completes,
    /// or `None` if it completes none (parameter sets alone). The picture
    /// borrows a buffer reused by the next call.
    ///
    /// # Errors
    /// [`VideoError::Decode`] with a [`LayeredError::NotAnnexB`] for input
    /// without a start code, a [`LayeredError::Decode`] when the picture is not whole (a missing
    /// reference after a loss, damaged data): it is concealed and not
    /// returned; the decoder stays usable. After damaged input the next
    /// access unit may report that damage too (OpenH264 completes the
    /// damaged picture in the same call), even an IDR that it then decodes
    /// whole: the pictures after it are whole.
    fn decode(&mut self, au: &[u8]) -> Result<Option<&DecodedFrame>, VideoError> {
        if !au.windows(3).any(|w| w == [0, 0, 1]) {
            return Err(LayeredError::NotAnnexB.into());
        }
        let len = c_int::try_from(au.len()).map_err(|_| LayeredError::NotAnnexB)?;
        let mut dst: [*mut c_uchar; 3] = [null_mut(); 3];
        let mut info = sys::SBufferInfo::default();
        // SAFETY: `au` is a live slice of `len` bytes, only read; `dst` and
        // `info` are live locals that the decoder fills with pointers into
        // its own picture buffers, valid until its next decode call (we need
        // `&mut self` for that, and copy the planes out below first).
        let state = unsafe {
            (self.f.decode_frame_no_delay)(self.ptr, au.as_ptr(), len, dst.as_mut_ptr(), &mut info)
        };
        if state != sys::dsErrorFree {
            return Err(LayeredError::Decode {
                state: state as u32,
            }
            .into());
        }
        if info.iBufferStatus != 1 || dst.iter().any(|p| p.is_null()) {
            return Ok(None);
        }
        // SAFETY: iBufferStatus == 1: sSystemBuffer is the member of the
        // union OpenH264 wrote, describing the picture `dst` points at.
        let sb = unsafe { info.UsrData.sSystemBuffer };
        let w = usize::try_from(sb.iWidth).unwrap_or(0);
        let h = usize::try_from(sb.iHeight).unwrap_or(0);
        let sy = usize::try_from(sb.iStride[0]).unwrap_or(0);
        let sc = usize::try_from(sb.iStride[1]).unwrap_or(0);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        if w == 0 || h == 0 || sy < w || sc < cw {
            return Err(LayeredError::Decode {
                state: sys::dsInvalidArgument as u32,
            }
            .into());
        }
        let pic = &mut self.pic;
        pic.width = w;
        pic.height = h;
        pic.data.clear();
        pic.data.reserve(w * h + 2 * cw * ch);
        for (plane, (rows, width, stride)) in [(h, w, sy), (ch, cw, sc), (ch, cw, sc)]
            .into_iter()
            .enumerate()
        {
            for r in 0..rows {
                // SAFETY: OpenH264's output contract for a picture with
                // iBufferStatus 1: plane 0 has `h` rows of stride iStride[0]
                // >= w bytes, planes 1 and 2 have ceil(h/2) rows of stride
                // iStride[1] >= ceil(w/2) bytes, all valid until the next
                // decode call; we copy each row out.
                let row = unsafe { std::slice::from_raw_parts(dst[plane].add(r * stride), width) };
                pic.data.extend_from_slice(row);
            }
        }
        Ok(Some(&self.pic))
    }
}

impl Drop for LayeredDecoder {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from WelsCreateDecoder and is not used after
        // this; Uninitialize (if Initialize succeeded) then
        // WelsDestroyDecoder is OpenH264's teardown.
        unsafe {
            if self.initialized {
                (self.f.uninitialize)(self.ptr);
            }
            sys::source::APILoader::WelsDestroyDecoder(self.ptr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h264_bits::nal_types;
    use crate::psnr_y;
    use crate::testscene::{garbage, i420};

    /// Y PSNR of a decoded picture against frame `t` of the test scene.
    fn psnr(pic: &DecodedFrame, t: usize) -> f64 {
        let (w, h) = (pic.width, pic.height);
        psnr_y(&pic.data, &i420(w, h, t), w, h).unwrap()
    }

    /// The [`LayeredError`] inside an encode or decode error.
    fn cause<T>(r: &Result<T, VideoError>) -> Option<&LayeredError> {
        match r {
            Err(VideoError::Encode(e) | VideoError::Decode(e)) => e.downcast_ref(),
            _ => None,
        }
    }

    const W: usize = 640;
    const H: usize = 360;

    /// Encodes frames `0..n` of the test scene; `each(enc, t)` runs before
    /// frame `t` is encoded.
    fn run(
        enc: &mut LayeredEncoder,
        n: usize,
        mut each: impl FnMut(&mut LayeredEncoder, usize, &[(Vec<u8>, FrameInfo)]),
    ) -> Vec<(Vec<u8>, FrameInfo)> {
        let mut aus: Vec<(Vec<u8>, FrameInfo)> = Vec::new();
        for t in 0..n {
            each(enc, t, &aus);
            let (w, h) = (enc.settings().width, enc.settings().height);
            let mut au = Vec::new();
            let info = enc.encode(&i420(w, h, t), &mut au).unwrap();
            assert_eq!(info.len, au.len());
            aus.push((au, info));
        }
        aus
    }

    /// Decodes the access units with temporal id <= `max_tid`: every one
    /// must give a whole picture; returns (pictures, min PSNR, mean PSNR).
    fn decode_layers(aus: &[(Vec<u8>, FrameInfo)], max_tid: u8) -> (usize, f64, f64) {
        let mut dec = LayeredDecoder::new().unwrap();
        let mut psnrs = Vec::new();
        for (t, (au, info)) in aus.iter().enumerate() {
            if info.temporal_id > max_tid {
                continue;
            }
            let pic = dec
                .decode(au)
                .unwrap_or_else(|e| panic!("frame {t} (tid {}): {e}", info.temporal_id))
                .unwrap_or_else(|| panic!("frame {t} gave no picture"));
            assert_eq!((pic.width, pic.height), (W, H));
            psnrs.push(psnr(pic, t));
        }
        let min = psnrs.iter().copied().fold(f64::INFINITY, f64::min);
        let mean = psnrs.iter().sum::<f64>() / psnrs.len() as f64;
        (psnrs.len(), min, mean)
    }

    fn three_layers() -> Vec<(Vec<u8>, FrameInfo)> {
        let mut enc = LayeredEncoder::new(LayeredConfig::new(W, H, 30, 1_000_000)).unwrap();
        let aus = run(&mut enc, 120, |_, _, _| {});
        // The dyadic structure: tid 0 every 4th frame, 1 at 2 mod 4, 2 odd.
        for (t, (_, info)) in aus.iter().enumerate() {
            let want = [0, 2, 1, 2][t % 4];
            assert_eq!(info.temporal_id, want, "frame {t}");
            assert_eq!(info.keyframe, t == 0, "frame {t}");
        }
        aus
    }

    // r[verify video.layered.temporal]
    #[test]
    fn base_layer_alone_decodes_whole_at_35_db() {
        let aus = three_layers();
        let (n, min, mean) = decode_layers(&aus, 0);
        println!("TL0 only: {n} pictures, Y-PSNR min {min:.2} dB, mean {mean:.2} dB");
        assert_eq!(n, 30);
        assert!(min >= 35.0, "min PSNR {min:.2} dB");
        // The base layer is a real subset: the whole stream has 4x the
        // pictures and more bytes.
        let tl0: usize = aus
            .iter()
            .filter(|a| a.1.temporal_id == 0)
            .map(|a| a.0.len())
            .sum();
        let all: usize = aus.iter().map(|a| a.0.len()).sum();
        println!("TL0 bytes {tl0} of {all}");
        assert!(tl0 * 10 < all * 8, "TL0 {tl0} B of {all} B");
    }

    // r[verify video.layered.temporal]
    #[test]
    fn base_and_first_layer_decode_whole_at_35_db() {
        let aus = three_layers();
        let (n, min, mean) = decode_layers(&aus, 1);
        println!("TL0+TL1: {n} pictures, Y-PSNR min {min:.2} dB, mean {mean:.2} dB");
        assert_eq!(n, 60);
        assert!(min >= 35.0, "min PSNR {min:.2} dB");
        let (n, min, _) = decode_layers(&aus, 2);
        assert_eq!(n, 120);
        assert!(min >= 35.0, "all layers: min PSNR {min:.2} dB");
    }

    /// A host loop: confirms every mark `delay` frames after it was sent
    /// (when `ok(t)` says the viewer decoded it whole), rejects it else.
    fn confirm_after(
        enc: &mut LayeredEncoder,
        t: usize,
        aus: &[(Vec<u8>, FrameInfo)],
        delay: usize,
        ok: impl Fn(usize) -> bool,
    ) {
        if t >= delay
            && let Some(id) = aus[t - delay].1.ltr_mark
        {
            let r = if ok(t - delay) {
                enc.confirm_ltr(id)
            } else {
                enc.reject_ltr(id)
            };
            r.unwrap();
        }
    }

    /// Encodes 100 frames with `layers` temporal layers; frame `lost` never
    /// reaches one viewer, whose recovery request reaches the encoder
    /// before frame `request_at`. Checks that viewer against a loss-free
    /// one and returns the index of the recovery frame.
    fn lossy_run(layers: u8, lost: usize, request_at: usize) -> usize {
        let cfg = LayeredConfig {
            temporal_layers: layers,
            ..LayeredConfig::new(W, H, 30, 1_000_000)
        };
        let mut enc = LayeredEncoder::new(cfg).unwrap();
        let mut requested = None;
        let aus = run(&mut enc, 100, |e, t, aus| {
            confirm_after(e, t, aus, 2, |f| f < lost);
            if t == request_at {
                assert!(e.confirmed_ltr().is_some(), "an LTR is confirmed");
                requested = Some(e.request_recovery().unwrap());
            }
        });
        assert!(matches!(requested, Some(Recovery::Ltr(_))), "{requested:?}");
        assert_eq!(enc.stats().idrs, 1, "no IDR after the first");
        let rec = aus
            .iter()
            .position(|a| a.1.recovery)
            .expect("a recovery frame");
        let (au, info) = &aus[rec];
        println!(
            "{layers} layers: loss {lost}, request before {request_at}, recovery frame {rec} ({} B, tid {})",
            au.len(),
            info.temporal_id
        );
        assert!(rec >= request_at, "frame {rec}");
        assert!(!info.keyframe && info.temporal_id == 0);
        assert!(!nal_types(au).contains(&5), "{:?}", nal_types(au));
        assert_eq!(aus.iter().filter(|a| a.1.recovery).count(), 1);
        assert_eq!(enc.stats().ltr_recoveries, 1);

        // A viewer that got everything, and one that lost frame `lost`.
        let mut clean = LayeredDecoder::new().unwrap();
        let mut lossy = LayeredDecoder::new().unwrap();
        let mut broken = 0;
        for (t, (au, _)) in aus.iter().enumerate() {
            let want = clean.decode(au).unwrap().expect("picture").clone();
            if t == lost {
                continue;
            }
            let r = lossy.decode(au);
            if let Some(LayeredError::Decode { .. }) = cause(&r) {
                assert!(t > lost && t < rec, "frame {t} broken");
                broken += 1;
                continue;
            }
            match r {
                Ok(Some(pic)) => {
                    assert!(t < lost || t >= rec, "frame {t} whole before recovery");
                    assert_eq!(*pic, want, "frame {t} differs from the clean decoder");
                }
                Ok(None) => panic!("frame {t}: no picture"),
                Err(e) => panic!("frame {t}: {e}"),
            }
        }
        // The loss mattered: everything between it and the recovery was
        // reported broken; from the recovery on, every picture equals the
        // loss-free decoder's.
        assert_eq!(broken, rec - lost - 1);
        rec
    }

    // r[verify video.layered.ltr-recovery]
    #[test]
    fn lost_base_frame_is_recovered_by_an_ltr_p_frame_within_two_frames() {
        // Frame 60 (TL0 in both structures) is lost; the viewer sees the
        // gap when 61 arrives and its request reaches the encoder two
        // frames later, before 63.
        assert_eq!(lossy_run(1, 60, 63), 63);
        // With 3 layers 63 is a TL2 frame: the recovery is the next TL0
        // frame, 64, one frame after the request.
        assert_eq!(lossy_run(3, 60, 63), 64);
    }

    // r[verify video.layered.ltr-recovery]
    #[test]
    fn with_three_layers_the_recovery_frame_is_the_next_tl0_frame() {
        // A request right after a TL0 frame waits for the next one: frames
        // 61..=63 (TL2, TL1, TL2) stay broken, 64 recovers. The worst case
        // is 2^(layers-1) - 1 = 3 frames after the request.
        assert_eq!(lossy_run(3, 60, 61), 64);
    }

    // r[verify video.layered.recovery-size]
    #[test]
    fn ltr_recovery_frame_is_smaller_than_an_idr() {
        let cfg = LayeredConfig::new(W, H, 30, 1_000_000);
        let mut a = LayeredEncoder::new(cfg).unwrap();
        let mut b = LayeredEncoder::new(cfg).unwrap();
        let at = 64; // a TL0 frame
        let mut got = None;
        let ra = run(&mut a, at + 1, |e, t, aus| {
            confirm_after(e, t, aus, 2, |_| true);
            if t == at {
                got = Some(e.request_recovery().unwrap());
            }
        });
        let rb = run(&mut b, at + 1, |e, t, aus| {
            confirm_after(e, t, aus, 2, |_| true);
            if t == at {
                e.force_keyframe();
            }
        });
        assert!(matches!(got, Some(Recovery::Ltr(_))));
        let (ltr, idr) = (&ra[at], &rb[at]);
        assert!(ltr.1.recovery && !ltr.1.keyframe, "{:?}", ltr.1);
        assert!(idr.1.keyframe, "{:?}", idr.1);
        let tl0_p: Vec<usize> = ra[1..at]
            .iter()
            .filter(|x| x.1.temporal_id == 0)
            .map(|x| x.0.len())
            .collect();
        let p_mean = tl0_p.iter().sum::<usize>() / tl0_p.len();
        println!(
            "640x360 1 Mbit/s 3 layers: LTR recovery {} B, IDR {} B, mean TL0 P {p_mean} B",
            ltr.0.len(),
            idr.0.len()
        );
        assert!(
            ltr.0.len() < idr.0.len(),
            "{} vs {}",
            ltr.0.len(),
            idr.0.len()
        );
    }

    // r[verify video.layered.bitrate]
    #[test]
    fn set_bitrate_changes_the_output_rate() {
        let mut enc = LayeredEncoder::new(LayeredConfig::new(W, H, 30, 1_200_000)).unwrap();
        let aus = run(&mut enc, 360, |e, t, _| match t {
            120 => e.set_bitrate(400_000).unwrap(),
            240 => e.set_bitrate(1_200_000).unwrap(),
            _ => {}
        });
        assert!(aus[1..].iter().all(|a| !a.1.keyframe), "no keyframe");
        // Bytes of the last 2 s (60 frames) of each 4 s segment.
        let bytes = |r: std::ops::Range<usize>| -> f64 {
            aus[r].iter().map(|a| a.0.len()).sum::<usize>() as f64
        };
        let (hi, lo, hi2) = (bytes(60..120), bytes(180..240), bytes(300..360));
        let (want_hi, want_lo) = (1_200_000.0 * 2.0 / 8.0, 400_000.0 * 2.0 / 8.0);
        println!(
            "bytes in 2 s: {hi} at 1.2 Mbit/s (target {want_hi}), {lo} at 0.4 (target {want_lo}), {hi2} at 1.2 again"
        );
        for (got, want) in [(hi, want_hi), (lo, want_lo), (hi2, want_hi)] {
            assert!(
                (got / want - 1.0).abs() < 0.25,
                "{got} B against a target of {want} B"
            );
        }
        assert_eq!(enc.bitrate(), 1_200_000);
        assert!(matches!(
            enc.set_bitrate(10),
            Err(VideoError::BadBitrate { bps: 10, .. })
        ));
        assert_eq!(enc.bitrate(), 1_200_000);
    }

    // r[verify video.layered.geometry]
    #[test]
    fn bad_geometry_and_settings_are_refused_with_named_errors() {
        let ok = LayeredConfig::new(W, H, 30, 1_000_000);
        for (w, h) in [
            (641, 360),
            (640, 361),
            (0, 360),
            (8, 8),
            (4096, 2160),
            (3840, 2162),
        ] {
            let r = LayeredEncoder::new(LayeredConfig {
                settings: EncoderSettings {
                    width: w,
                    height: h,
                    ..ok.settings
                },
                ..ok
            });
            assert!(
                matches!(r, Err(VideoError::BadGeometry { width, height, .. }) if (width, height) == (w, h)),
                "{w}x{h}: {r:?}"
            );
        }
        // Portrait 2160x3840 is fine.
        assert!(
            LayeredConfig {
                settings: EncoderSettings {
                    width: 2160,
                    height: 3840,
                    ..ok.settings
                },
                ..ok
            }
            .validate()
            .is_ok()
        );
        assert!(matches!(
            LayeredConfig {
                settings: EncoderSettings {
                    fps: 0,
                    ..ok.settings
                },
                ..ok
            }
            .validate(),
            Err(VideoError::BadSource { .. })
        ));
        let bad = [
            LayeredConfig {
                temporal_layers: 0,
                ..ok
            },
            LayeredConfig {
                temporal_layers: 4,
                ..ok
            },
            LayeredConfig {
                ltr_mark_period: Some(0),
                ..ok
            },
            LayeredConfig {
                idr_bitrate_ratio: 50,
                ..ok
            },
        ];
        for c in bad {
            assert!(
                matches!(c.validate(), Err(VideoError::BadSetting { .. })),
                "{c:?}"
            );
        }
        assert!(matches!(
            LayeredConfig {
                settings: EncoderSettings {
                    bitrate_bps: 0,
                    ..ok.settings
                },
                ..ok
            }
            .validate(),
            Err(VideoError::BadBitrate { bps: 0, .. })
        ));
        let mut enc = LayeredEncoder::new(ok).unwrap();
        let mut out = vec![7u8];
        assert!(matches!(
            enc.encode(&[0u8; 100], &mut out),
            Err(VideoError::FrameSize { got: 100, .. })
        ));
        assert_eq!(out, [7]);
        assert!(matches!(
            enc.set_size(641, 360),
            Err(VideoError::BadGeometry { .. })
        ));
        assert_eq!((enc.settings().width, enc.settings().height), (W, H));
        let e = VideoError::from(LayeredError::StaleLtr(LtrId {
            epoch: 1,
            idr_pic_id: 2,
            frame_num: 3,
        }));
        assert_eq!(
            e.to_string(),
            "H.264 encoder error: LTR (frame_num 3, idr_pic_id 2, epoch 1) is from before \
             the last IDR: it no longer exists"
        );
    }

    // r[verify video.layered.resize]
    #[test]
    fn set_size_restarts_with_an_idr_at_the_new_size() {
        let mut enc = LayeredEncoder::new(LayeredConfig::new(W, H, 30, 1_000_000)).unwrap();
        let mut dec = LayeredDecoder::new().unwrap();
        let mut old_mark = None;
        for t in 0..20 {
            let mut au = Vec::new();
            let info = enc.encode(&i420(W, H, t), &mut au).unwrap();
            old_mark = old_mark.or(info.ltr_mark);
            assert!(dec.decode(&au).unwrap().is_some());
        }
        let old_mark = old_mark.expect("the IDR marks an LTR");
        enc.set_size(320, 180).unwrap();
        assert_eq!(enc.frame_len(), 320 * 180 * 3 / 2);
        for t in 0..8 {
            let mut au = Vec::new();
            let info = enc.encode(&i420(320, 180, t), &mut au).unwrap();
            assert_eq!(info.keyframe, t == 0);
            let pic = dec.decode(&au).unwrap().expect("picture");
            assert_eq!((pic.width, pic.height), (320, 180));
            assert!(psnr(pic, t) > 30.0);
        }
        assert!(matches!(
            cause(&enc.confirm_ltr(old_mark)),
            Some(LayeredError::StaleLtr(_))
        ));
    }

    // r[verify video.layered.ltr-recovery]
    #[test]
    fn recovery_without_a_confirmed_ltr_is_an_idr() {
        for ltr in [Some(2), None] {
            let cfg = LayeredConfig {
                ltr_mark_period: ltr,
                ..LayeredConfig::new(W, H, 30, 1_000_000)
            };
            let mut enc = LayeredEncoder::new(cfg).unwrap();
            let aus = run(&mut enc, 12, |e, t, _| {
                if t == 9 {
                    assert_eq!(e.request_recovery().unwrap(), Recovery::Idr);
                    // A second request before the answer is coalesced.
                    assert_eq!(e.request_recovery().unwrap(), Recovery::Idr);
                }
            });
            let (au, info) = &aus[9];
            assert!(info.keyframe && info.recovery, "{info:?}");
            assert!(nal_types(au).contains(&5));
            assert!(aus[10..].iter().all(|a| !a.1.keyframe && !a.1.recovery));
            assert_eq!(enc.stats().idr_recoveries, 1);
            if ltr.is_none() {
                assert!(aus.iter().all(|a| a.1.ltr_mark.is_none()));
            }
        }
    }

    // r[verify video.layered.ltr-confirm]
    #[test]
    fn confirm_refuses_unknown_and_stale_ids() {
        let mut enc = LayeredEncoder::new(LayeredConfig::new(W, H, 30, 1_000_000)).unwrap();
        let aus = run(&mut enc, 40, |e, t, aus| {
            confirm_after(e, t, aus, 1, |_| true)
        });
        let marks: Vec<(usize, LtrId)> = aus
            .iter()
            .enumerate()
            .filter_map(|(t, a)| a.1.ltr_mark.map(|m| (t, m)))
            .collect();
        println!("marks: {marks:?}");
        // The IDR and then a P mark every 2 TL0 frames once confirmed.
        assert!(marks.len() >= 3, "{marks:?}");
        assert_eq!(marks[0].0, 0);
        assert!(marks[1..].iter().all(|(t, _)| aus[*t].1.temporal_id == 0));
        let newest = marks.last().unwrap().1;
        assert!(
            enc.confirm_ltr(newest).is_ok(),
            "confirming twice is a no-op"
        );
        let forged = LtrId {
            frame_num: 9999,
            ..newest
        };
        assert!(matches!(
            cause(&enc.confirm_ltr(forged)),
            Some(LayeredError::UnknownLtr(_))
        ));
        assert!(matches!(
            cause(&enc.reject_ltr(forged)),
            Some(LayeredError::UnknownLtr(_))
        ));
        enc.force_keyframe();
        let mut au = Vec::new();
        assert!(enc.encode(&i420(W, H, 40), &mut au).unwrap().keyframe);
        assert!(matches!(
            cause(&enc.confirm_ltr(newest)),
            Some(LayeredError::StaleLtr(_))
        ));
    }

    // r[verify video.layered.idr-interval]
    #[test]
    fn idr_interval_is_rounded_up_to_a_multiple_of_the_gop() {
        let (w, h) = (160, 96);
        let cfg = LayeredConfig {
            settings: EncoderSettings {
                idr_interval_frames: 30,
                ..EncoderSettings::new(w, h, 30, 300_000)
            },
            ..LayeredConfig::new(w, h, 30, 300_000)
        };
        let mut enc = LayeredEncoder::new(cfg).unwrap();
        assert_eq!(enc.settings().idr_interval_frames, 32);
        // Through the Encoder trait, as the hub uses it.
        let enc: &mut dyn Encoder = &mut enc;
        let keys: Vec<usize> = (0..70)
            .filter(|&t| {
                let mut au = Vec::new();
                enc.encode(&i420(w, h, t), &mut au).unwrap()
            })
            .collect();
        assert_eq!(keys, [0, 32, 64]);
        // The default: IDRs only on request.
        let enc = LayeredEncoder::new(LayeredConfig::new(w, h, 30, 300_000)).unwrap();
        assert_eq!(enc.settings().idr_interval_frames, 0);
    }

    // r[verify video.layered.temporal]
    #[test]
    fn encoder_and_decoder_are_send() {
        fn send<T: Send>(_: &T) {}
        let enc = LayeredEncoder::new(LayeredConfig::new(W, H, 30, 1_000_000)).unwrap();
        let dec = LayeredDecoder::new().unwrap();
        send(&enc);
        send(&dec);
        // And they work on another thread.
        let handle = std::thread::spawn(move || {
            let (mut enc, mut dec) = (enc, dec);
            let mut au = Vec::new();
            enc.encode(&i420(W, H, 0), &mut au).unwrap();
            dec.decode(&au).unwrap().map(|p| (p.width, p.height))
        });
        assert_eq!(handle.join().unwrap(), Some((W, H)));
    }

    // r[verify video.layered.concealment]
    #[test]
    fn decoder_reports_garbage_as_errors_and_recovers_at_an_idr() {
        let mut enc = LayeredEncoder::new(LayeredConfig::new(W, H, 30, 1_000_000)).unwrap();
        let aus = run(&mut enc, 5, |_, _, _| {});
        let mut dec = LayeredDecoder::new().unwrap();
        let r = dec.decode(&[]);
        assert!(matches!(r, Err(VideoError::Decode(_))));
        assert!(matches!(cause(&r), Some(LayeredError::NotAnnexB)));
        let r = dec.decode(b"not h264");
        assert!(matches!(cause(&r), Some(LayeredError::NotAnnexB)));
        let refs: Vec<&[u8]> = aus.iter().map(|a| a.0.as_slice()).collect();
        let errors = garbage(&refs)
            .iter()
            .filter(|buf| dec.decode(buf).is_err())
            .count();
        assert!(errors > 0, "garbage gave decode errors");
        enc.force_keyframe();
        let mut au = Vec::new();
        assert!(enc.encode(&i420(W, H, 5), &mut au).unwrap().keyframe);
        // The first access unit after damaged input may still report the
        // concealment of that input (OpenH264 completes the damaged
        // picture in the same call); the IDR is decoded all the same, and
        // every picture after it is whole.
        let r = dec.decode(&au);
        assert!(
            matches!(r, Ok(Some(_))) || matches!(cause(&r), Some(LayeredError::Decode { .. })),
            "IDR after garbage: {r:?}"
        );
        for t in 6..10 {
            au.clear();
            enc.encode(&i420(W, H, t), &mut au).unwrap();
            let pic = dec.decode(&au).unwrap().expect("picture after the IDR");
            let p = psnr(pic, t);
            assert!(p > 35.0, "frame {t}: {p:.2} dB");
        }
    }
}
