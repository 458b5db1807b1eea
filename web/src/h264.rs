//! What the viewer needs from an H.264 Annex B access unit: its NAL units,
//! and the WebCodecs codec string (`avc1.PPCCLL`) from its SPS.

/// NAL unit type of an IDR slice.
pub const NAL_IDR: u8 = 5;
/// NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 7;

/// The NAL units of an Annex B byte stream (start codes removed).
pub fn nal_units(au: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= au.len() {
        if au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = Vec::with_capacity(starts.len());
    for (n, &s) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(au.len(), |&next| next - 3);
        // A four-byte start code leaves a zero behind the previous unit;
        // trailing zeros are not part of a NAL unit.
        while end > s && au[end - 1] == 0 {
            end -= 1;
        }
        units.push(&au[s..end]);
    }
    units.into_iter().filter(|u| !u.is_empty())
}

/// The NAL unit type of a unit (its first byte's low five bits).
pub fn nal_type(unit: &[u8]) -> u8 {
    unit.first().map_or(0, |b| b & 0x1f)
}

/// Whether the access unit contains an IDR slice.
pub fn has_idr(au: &[u8]) -> bool {
    nal_units(au).any(|u| nal_type(u) == NAL_IDR)
}

// r[impl web.codec-string]
/// The WebCodecs codec string of the access unit's first SPS:
/// `avc1.` + profile_idc, the constraint flags byte and level_idc as
/// upper-case hex (`avc1.42E01F` for Constrained Baseline 3.1). `None`
/// when the unit has no (long enough) SPS.
pub fn codec_string(au: &[u8]) -> Option<String> {
    let sps = nal_units(au).find(|u| nal_type(u) == NAL_SPS)?;
    // profile_idc, constraint flags and level_idc follow the NAL header.
    // Emulation prevention (00 00 03) cannot occur there: profile_idc and
    // level_idc are never zero.
    let b = sps.get(1..4)?;
    Some(format!("avc1.{:02X}{:02X}{:02X}", b[0], b[1], b[2]))
}

// r[impl web.recovery]
/// Whether a frame ends a viewer's wait after a loss: a keyframe always
/// does; an LTR recovery frame (the envelope's recovery flag, not an IDR)
/// does when a decoder is configured (it is given as a delta chunk).
pub fn resumes_after_loss(keyframe: bool, recovery: bool, decoder_configured: bool) -> bool {
    keyframe || (recovery && decoder_configured)
}

#[cfg(test)]
mod tests {
    use super::*;

    // r[verify web.recovery]
    #[test]
    fn a_recovery_frame_ends_the_wait_only_with_a_configured_decoder() {
        assert!(resumes_after_loss(true, true, false), "a keyframe always");
        assert!(resumes_after_loss(true, false, true));
        assert!(resumes_after_loss(false, true, true), "a recovery frame");
        assert!(
            !resumes_after_loss(false, true, false),
            "nothing to predict from without a decoder"
        );
        assert!(!resumes_after_loss(false, false, true), "a plain delta");
    }

    // r[verify web.codec-string]
    #[test]
    fn codec_string_from_sps_after_any_start_code() {
        // AUD, SPS (Constrained Baseline, level 3.1), PPS, IDR slice.
        let au = [
            0, 0, 0, 1, 0x09, 0xf0, //
            0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0xac, 0x00, //
            0, 0, 1, 0x68, 0xce, 0x38, 0x80, //
            0, 0, 1, 0x65, 0x88, 0x84,
        ];
        assert_eq!(codec_string(&au).as_deref(), Some("avc1.42E01F"));
        assert!(has_idr(&au));
        let types: Vec<u8> = nal_units(&au).map(nal_type).collect();
        assert_eq!(types, [9, 7, 8, 5]);
        // Zero bytes before a start code are not part of the unit before.
        assert_eq!(
            nal_units(&au).nth(1).unwrap(),
            &[0x67, 0x42, 0xe0, 0x1f, 0xac]
        );
    }

    #[test]
    fn high_profile_and_missing_sps() {
        let au = [0, 0, 0, 1, 0x67, 0x64, 0x00, 0x28, 0xac];
        assert_eq!(codec_string(&au).as_deref(), Some("avc1.640028"));
        let delta = [0, 0, 0, 1, 0x41, 0x9a];
        assert_eq!(codec_string(&delta), None);
        assert!(!has_idr(&delta));
        // A truncated SPS gives no codec string rather than a panic.
        assert_eq!(codec_string(&[0, 0, 1, 0x67, 0x42]), None);
        assert_eq!(nal_units(&[]).count(), 0);
    }
}
