//! A host-side reader of the H.264 syntax the encoder writes: NAL unit
//! splitting (Annex B) and the slice header up to `dec_ref_pic_marking`.
//!
//! `LayeredEncoder` (`crate::layered`, feature `openh264`) feeds it its own output to learn what
//! OpenH264 does not report through its API: the `idr_pic_id` of the
//! current IDR, whether a picture marks a long-term reference (and which
//! `frame_num` it marks) and whether it predicts from one. It handles the
//! streams OpenH264 writes (constrained baseline: `frame_mbs_only`, one
//! slice group, no weighted prediction); anything else is a
//! [`BitsError`], never a panic.

use std::fmt;

/// At most this many bytes of a NAL unit body are un-escaped and read:
/// every field read here lies well inside it (a slice header with a full
/// reordering and marking list is a few dozen bytes).
const MAX_HEADER_BYTES: usize = 512;

/// Why a NAL unit could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BitsError {
    /// The NAL unit is empty (no header byte).
    EmptyNal,
    /// The syntax runs past the end of the NAL unit (or past the bytes
    /// this reader looks at).
    Truncated,
    /// An Exp-Golomb code longer than 32 bits.
    BadExpGolomb,
    /// A slice before the SPS or PPS it needs.
    MissingParameterSet,
    /// A syntax element with a value the standard forbids.
    Invalid(&'static str),
    /// Valid H.264 this reader does not handle (not what OpenH264 writes).
    Unsupported(&'static str),
}

impl fmt::Display for BitsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BitsError::EmptyNal => write!(f, "empty NAL unit"),
            BitsError::Truncated => write!(f, "NAL unit ends inside a syntax element"),
            BitsError::BadExpGolomb => write!(f, "Exp-Golomb code longer than 32 bits"),
            BitsError::MissingParameterSet => write!(f, "slice before its SPS/PPS"),
            BitsError::Invalid(what) => write!(f, "invalid H.264 syntax: {what}"),
            BitsError::Unsupported(what) => write!(f, "H.264 feature not handled: {what}"),
        }
    }
}

impl std::error::Error for BitsError {}

/// The NAL units of an Annex B byte stream, each without its start code
/// (`00 00 01` or `00 00 00 01`). Bytes before the first start code are
/// skipped; trailing zero bytes of a unit are dropped.
pub fn nal_units(annexb: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = match find_start(annexb) {
        Some((_, end)) => &annexb[end..],
        None => &annexb[annexb.len()..],
    };
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (unit, next) = match find_start(rest) {
            Some((begin, end)) => (&rest[..begin], &rest[end..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        let trimmed = unit.len() - unit.iter().rev().take_while(|&&b| b == 0).count();
        Some(&unit[..trimmed])
    })
    .filter(|u| !u.is_empty())
}

/// Position of the first `00 00 01`: (index of its first byte, index after
/// it).
fn find_start(data: &[u8]) -> Option<(usize, usize)> {
    data.windows(3)
        .position(|w| w == [0, 0, 1])
        .map(|i| (i, i + 3))
}

/// `nal_unit_type` of a NAL unit given without its start code.
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

/// `nal_unit_type`s of an Annex B access unit, in order.
pub fn nal_types(annexb: &[u8]) -> Vec<u8> {
    nal_units(annexb).filter_map(nal_type).collect()
}

/// A bit reader over the RBSP of a NAL unit body (emulation prevention
/// bytes removed), reading at most [`MAX_HEADER_BYTES`] of it.
struct Bits {
    d: Vec<u8>,
    pos: usize,
}

impl Bits {
    fn new(body: &[u8]) -> Self {
        let mut d = Vec::with_capacity(body.len().min(MAX_HEADER_BYTES));
        let mut zeros = 0;
        for &b in body {
            if d.len() == MAX_HEADER_BYTES {
                break;
            }
            if zeros >= 2 && b == 3 {
                zeros = 0;
                continue;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            d.push(b);
        }
        Bits { d, pos: 0 }
    }

    fn u1(&mut self) -> Result<u32, BitsError> {
        let byte = *self.d.get(self.pos / 8).ok_or(BitsError::Truncated)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(u32::from(b))
    }

    /// `n` bits, n <= 32.
    fn u(&mut self, n: u32) -> Result<u32, BitsError> {
        let mut v: u64 = 0;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.u1()?);
        }
        u32::try_from(v).map_err(|_| BitsError::BadExpGolomb)
    }

    fn ue(&mut self) -> Result<u32, BitsError> {
        let mut lz = 0;
        while self.u1()? == 0 {
            lz += 1;
            if lz > 31 {
                return Err(BitsError::BadExpGolomb);
            }
        }
        let v = (1u64 << lz) - 1 + u64::from(self.u(lz)?);
        u32::try_from(v).map_err(|_| BitsError::BadExpGolomb)
    }

    fn se(&mut self) -> Result<i64, BitsError> {
        let k = i64::from(self.ue()?);
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// The SPS fields the slice header needs.
#[derive(Debug, Clone, Copy)]
struct Sps {
    log2_max_frame_num: u32,
    poc_type: u32,
    log2_max_poc_lsb: u32,
}

/// The PPS fields the slice header needs.
#[derive(Debug, Clone, Copy)]
struct Pps {
    bottom_field_pic_order_present: bool,
    redundant_pic_cnt_present: bool,
}

/// What the slice header of a coded picture says about references.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceInfo {
    /// An IDR slice (NAL type 5).
    pub idr: bool,
    /// `nal_ref_idc`: 0 for a picture nothing predicts from.
    pub nal_ref_idc: u8,
    /// `frame_num`.
    pub frame_num: u32,
    /// `idr_pic_id` (IDR slices only).
    pub idr_pic_id: Option<u32>,
    /// The picture marks a long-term reference: the `frame_num` of the
    /// picture marked (itself for MMCO 6 or an IDR with
    /// `long_term_reference_flag`, an earlier one for MMCO 3).
    pub marks_ltr: Option<u32>,
    /// The picture predicts from a long-term reference (reference list
    /// reordering by `long_term_pic_num`).
    pub refs_ltr: bool,
}

/// Follows the parameter sets of one stream and reads its slice headers.
#[derive(Debug, Default, Clone)]
pub struct SliceTracker {
    sps: Option<Sps>,
    pps: Option<Pps>,
}

impl SliceTracker {
    /// A tracker that has seen no parameter set yet.
    pub fn new() -> Self {
        SliceTracker::default()
    }

    /// Reads one NAL unit (without start code): remembers an SPS or PPS,
    /// returns the slice information of a coded slice (types 1 and 5),
    /// `None` for any other type.
    ///
    /// # Errors
    /// A [`BitsError`] for a unit it cannot read; the tracker's state is
    /// unchanged then.
    // r[impl video.layered.slice-reader]
    pub fn nal(&mut self, nal: &[u8]) -> Result<Option<SliceInfo>, BitsError> {
        let (&h, rest) = nal.split_first().ok_or(BitsError::EmptyNal)?;
        let ty = h & 0x1f;
        let nal_ref_idc = (h >> 5) & 3;
        let mut b = Bits::new(rest);
        match ty {
            7 => {
                self.sps = Some(read_sps(&mut b)?);
                Ok(None)
            }
            8 => {
                self.pps = Some(read_pps(&mut b)?);
                Ok(None)
            }
            1 | 5 => {
                let sps = self.sps.ok_or(BitsError::MissingParameterSet)?;
                let pps = self.pps.ok_or(BitsError::MissingParameterSet)?;
                read_slice(&mut b, sps, pps, ty == 5, nal_ref_idc).map(Some)
            }
            _ => Ok(None),
        }
    }
}

fn read_sps(b: &mut Bits) -> Result<Sps, BitsError> {
    let profile = b.u(8)?;
    b.u(16)?; // constraint flags, level_idc
    b.ue()?; // seq_parameter_set_id
    if ![66, 77, 88].contains(&profile) {
        // High profiles carry chroma_format_idc etc. here.
        return Err(BitsError::Unsupported(
            "profile other than baseline/main/extended",
        ));
    }
    let log2_max_frame_num = b.ue()? + 4;
    if log2_max_frame_num > 16 {
        return Err(BitsError::Invalid("log2_max_frame_num above 16"));
    }
    let poc_type = b.ue()?;
    let log2_max_poc_lsb = match poc_type {
        0 => {
            let v = b.ue()? + 4;
            if v > 16 {
                return Err(BitsError::Invalid("log2_max_pic_order_cnt_lsb above 16"));
            }
            v
        }
        1 => return Err(BitsError::Unsupported("pic_order_cnt_type 1")),
        2 => 0,
        _ => return Err(BitsError::Invalid("pic_order_cnt_type above 2")),
    };
    Ok(Sps {
        log2_max_frame_num,
        poc_type,
        log2_max_poc_lsb,
    })
}

fn read_pps(b: &mut Bits) -> Result<Pps, BitsError> {
    b.ue()?; // pic_parameter_set_id
    b.ue()?; // seq_parameter_set_id
    b.u1()?; // entropy_coding_mode_flag
    let bottom_field_pic_order_present = b.u1()? == 1;
    if b.ue()? != 0 {
        return Err(BitsError::Unsupported("slice groups"));
    }
    b.ue()?; // num_ref_idx_l0_default_active_minus1
    b.ue()?; // num_ref_idx_l1_default_active_minus1
    let weighted_pred = b.u1()?;
    b.u(2)?; // weighted_bipred_idc
    if weighted_pred != 0 {
        return Err(BitsError::Unsupported("weighted prediction"));
    }
    b.se()?; // pic_init_qp_minus26
    b.se()?; // pic_init_qs_minus26
    b.se()?; // chroma_qp_index_offset
    b.u1()?; // deblocking_filter_control_present_flag
    b.u1()?; // constrained_intra_pred_flag
    let redundant_pic_cnt_present = b.u1()? == 1;
    Ok(Pps {
        bottom_field_pic_order_present,
        redundant_pic_cnt_present,
    })
}

fn read_slice(
    b: &mut Bits,
    sps: Sps,
    pps: Pps,
    idr: bool,
    nal_ref_idc: u8,
) -> Result<SliceInfo, BitsError> {
    b.ue()?; // first_mb_in_slice
    let slice_type = b.ue()?;
    if slice_type > 9 {
        return Err(BitsError::Invalid("slice_type above 9"));
    }
    let slice_type = slice_type % 5;
    if slice_type == 1 {
        return Err(BitsError::Unsupported("B slices"));
    }
    b.ue()?; // pic_parameter_set_id
    let frame_num = b.u(sps.log2_max_frame_num)?;
    let idr_pic_id = if idr { Some(b.ue()?) } else { None };
    if sps.poc_type == 0 {
        b.u(sps.log2_max_poc_lsb)?;
        if pps.bottom_field_pic_order_present {
            b.se()?;
        }
    }
    if pps.redundant_pic_cnt_present {
        b.ue()?;
    }
    let mut refs_ltr = false;
    if slice_type == 0 || slice_type == 3 {
        // P / SP: num_ref_idx_active_override, then reordering.
        if b.u1()? == 1 {
            b.ue()?;
        }
        if b.u1()? == 1 {
            // At most 32 reordering commands exist for one list.
            let mut ended = false;
            for _ in 0..=32 {
                match b.ue()? {
                    0 | 1 => {
                        b.ue()?;
                    }
                    2 => {
                        b.ue()?;
                        refs_ltr = true;
                    }
                    3 => {
                        ended = true;
                        break;
                    }
                    _ => return Err(BitsError::Invalid("modification_of_pic_nums_idc")),
                }
            }
            if !ended {
                return Err(BitsError::Invalid("reordering list without end"));
            }
        }
    }
    let mut marks_ltr = None;
    let max_fn = 1u32 << sps.log2_max_frame_num;
    if nal_ref_idc != 0 {
        if idr {
            b.u1()?; // no_output_of_prior_pics_flag
            if b.u1()? == 1 {
                marks_ltr = Some(frame_num);
            }
        } else if b.u1()? == 1 {
            // adaptive_ref_pic_marking_mode_flag: MMCO list (bounded, as
            // the reordering list).
            let mut ended = false;
            for _ in 0..=66 {
                match b.ue()? {
                    0 => {
                        ended = true;
                        break;
                    }
                    1 | 2 | 4 => {
                        b.ue()?;
                    }
                    3 => {
                        let diff = (b.ue()? % max_fn) + 1;
                        b.ue()?; // long_term_frame_idx
                        marks_ltr = Some((frame_num + max_fn - diff % max_fn) % max_fn);
                    }
                    5 => {}
                    6 => {
                        b.ue()?; // long_term_frame_idx
                        marks_ltr = Some(frame_num);
                    }
                    _ => return Err(BitsError::Invalid("memory_management_control_operation")),
                }
            }
            if !ended {
                return Err(BitsError::Invalid("marking list without end"));
            }
        }
    }
    Ok(SliceInfo {
        idr,
        nal_ref_idc,
        frame_num,
        idr_pic_id,
        marks_ltr,
        refs_ltr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // r[verify video.layered.slice-reader]
    #[test]
    fn nal_units_split_on_both_start_code_lengths() {
        let s = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 0,
        ];
        let units: Vec<&[u8]> = nal_units(&s).collect();
        assert_eq!(units, [&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4]]);
        assert_eq!(
            units.iter().map(|u| nal_type(u)).collect::<Vec<_>>(),
            [Some(7), Some(8), Some(5)]
        );
        assert_eq!(nal_units(&[1, 2, 3]).count(), 0);
        assert_eq!(nal_units(&[]).count(), 0);
    }

    // r[verify video.layered.slice-reader]
    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let mut t = SliceTracker::new();
        assert_eq!(t.nal(&[]), Err(BitsError::EmptyNal));
        assert_eq!(t.nal(&[0x65, 0x88]), Err(BitsError::MissingParameterSet));
        assert_eq!(t.nal(&[0x67]), Err(BitsError::Truncated));
        // All-zero bits: an Exp-Golomb code that never ends.
        assert!(t.nal(&[0x67, 66, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for len in 0..2000 {
            let body: Vec<u8> = (0..len % 97)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = t.nal(&body);
        }
    }
}
