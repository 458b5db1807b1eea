//! `linkstream capture`: the capture process. It produces raw I420 frames
//! (the test pattern, or a Y4M file) straight into `link-shm` slots:
//! reserve a permit, allocate a slot of the frame's length, render the
//! picture into the slot (no intermediate buffer), commit. Frames are paced
//! at the source's frame rate; a frame whose slot is not free by the next
//! tick (the encoder is behind) is dropped and counted.
//!
//! # Slot layout
//! Each slot holds a 32-byte little-endian header, then the I420 picture
//! (Y plane `width * height` bytes, then U and V, `width/2 * height/2`
//! each, rows packed):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `LSCF` |
//! | 4 | 2 | width |
//! | 6 | 2 | height |
//! | 8 | 8 | capture index (the index burned into a test-pattern picture; the frame number of a file) |
//! | 16 | 8 | capture time, microseconds since the UNIX epoch |
//! | 24 | 4 | frames dropped by the capture process so far (no free slot in time) |
//! | 28 | 4 | frame rate, frames per 1000 s |

use std::path::PathBuf;
use std::time::Duration;

use link_shm::{ShmConfig, ShmLink};
use link_types::{Link, LinkTx, LinkTxPermit, WriteSlot};

use crate::util::now_us;
#[cfg(test)]
use crate::video::TestSrc;
use crate::video::{self, Source, SourceSpec};

/// Length of the header in front of each captured picture.
pub const HEADER_LEN: usize = 32;
/// First four bytes of a capture slot.
pub const MAGIC: [u8; 4] = *b"LSCF";

/// The header of one captured frame in a shared-memory slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Picture width.
    pub width: u16,
    /// Picture height.
    pub height: u16,
    /// Capture index.
    pub index: u64,
    /// Capture time, microseconds since the UNIX epoch.
    pub capture_us: u64,
    /// Frames the capture process dropped so far.
    pub dropped: u32,
    /// Frames per 1000 seconds.
    pub fps_milli: u32,
}

impl FrameHeader {
    /// Write the header into `out[..HEADER_LEN]`.
    pub fn write(&self, out: &mut [u8]) {
        let h = &mut out[..HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC);
        h[4..6].copy_from_slice(&self.width.to_le_bytes());
        h[6..8].copy_from_slice(&self.height.to_le_bytes());
        h[8..16].copy_from_slice(&self.index.to_le_bytes());
        h[16..24].copy_from_slice(&self.capture_us.to_le_bytes());
        h[24..28].copy_from_slice(&self.dropped.to_le_bytes());
        h[28..32].copy_from_slice(&self.fps_milli.to_le_bytes());
    }

    /// Parse a slot: the header and the picture behind it, checked to be
    /// exactly one I420 picture of the header's size.
    pub fn parse(buf: &[u8]) -> Result<(FrameHeader, &[u8]), String> {
        let Some((h, picture)) = buf.split_first_chunk::<HEADER_LEN>() else {
            return Err(format!("capture slot of {} bytes has no header", buf.len()));
        };
        if h[0..4] != MAGIC {
            return Err(format!("capture slot has magic {:02x?}", &h[0..4]));
        }
        let u16_at = |o: usize| u16::from_le_bytes([h[o], h[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let hdr = FrameHeader {
            width: u16_at(4),
            height: u16_at(6),
            index: u64_at(8),
            capture_us: u64_at(16),
            dropped: u32_at(24),
            fps_milli: u32_at(28),
        };
        let want = video::i420_len(hdr.width as usize, hdr.height as usize);
        if hdr.width == 0 || hdr.height == 0 || picture.len() != want {
            return Err(format!(
                "capture slot of {}x{} carries {} picture bytes, expected {want}",
                hdr.width,
                hdr.height,
                picture.len()
            ));
        }
        Ok((hdr, picture))
    }
}

/// Options of `linkstream capture`.
#[derive(Debug, Clone, clap::Args)]
pub struct CaptureArgs {
    /// Where frames come from: testsrc[:WxH@FPS] or y4m:FILE.
    #[arg(long, value_name = "SPEC", default_value = "testsrc")]
    pub source: String,
    /// Stop after N frames (default: until the source ends or the host goes).
    #[arg(long, value_name = "N")]
    pub frames: Option<u64>,
    /// Connect to a host listening for a capture process at this Unix socket
    /// path (`linkstream host --capture PATH`) instead of inheriting the link
    /// from the host that spawned this process.
    #[arg(long, value_name = "PATH")]
    pub connect: Option<PathBuf>,
}

/// Open the source named by a `--source` argument (a Y4M file plays once).
pub fn open_source(spec: &str) -> Result<Source, String> {
    let spec = SourceSpec::parse(spec).map_err(|e| e.to_string())?;
    Source::open(&spec, false).map_err(|e| e.to_string())
}

/// The shared-memory segment for frames of `frame_len` bytes: three large
/// slots (the encoder works on one while the capture fills the next).
pub fn shm_config(frame_len: usize) -> ShmConfig {
    ShmConfig {
        large_size: (HEADER_LEN + frame_len).next_multiple_of(64),
        large_count: 3,
        ..Default::default()
    }
}

/// What a capture run did.
#[derive(Debug, Clone, Copy, Default)]
pub struct CaptureSummary {
    /// Frames written into slots.
    pub frames: u64,
    /// Frames dropped because no slot was free by the next tick.
    pub dropped: u64,
}

// r[impl cli.capture.slot]
/// Capture from `source` into `link` until `frames`, the end of the source
/// or the peer's end.
pub async fn produce(
    link: ShmLink,
    mut source: Source,
    frames: Option<u64>,
) -> Result<CaptureSummary, String> {
    let (w, h, fps) = (source.width(), source.height(), source.fps());
    let frame_len = source.frame_len();
    let period = Duration::from_secs_f64(1.0 / fps.max(1) as f64);
    let (mut tx, _rx) = link.split();
    let mut sum = CaptureSummary::default();
    let start = tokio::time::Instant::now();
    let mut tick_no = 0u64;
    while frames.is_none_or(|n| tick_no < n) {
        let tick = start + period.mul_f64(tick_no as f64);
        tokio::time::sleep_until(tick).await;
        let next_tick = tick + period;
        // The slot must be free before the next tick; otherwise this
        // picture is dropped (counted) and capture goes on in time.
        let permit = tokio::select! {
            p = tx.reserve() => match p {
                Ok(p) => p,
                // The host went away: the normal end of a spawned capture.
                Err(_) => break,
            },
            _ = tokio::time::sleep_until(next_tick) => {
                sum.dropped += 1;
                tick_no += 1;
                continue;
            }
        };
        let mut slot = permit
            .alloc(HEADER_LEN + frame_len)
            .map_err(|e| format!("capture: slot of {} bytes: {e}", HEADER_LEN + frame_len))?;
        let buf = slot.as_mut_slice();
        let capture_us = now_us();
        let Some(index) = source
            .next_frame(&mut buf[HEADER_LEN..])
            .map_err(|e| e.to_string())?
        else {
            break;
        };
        FrameHeader {
            width: w as u16,
            height: h as u16,
            index,
            capture_us,
            dropped: sum.dropped.min(u32::MAX as u64) as u32,
            fps_milli: fps.saturating_mul(1000),
        }
        .write(buf);
        if slot.commit().is_err() {
            break;
        }
        sum.frames += 1;
        tick_no += 1;
    }
    let _ = tx.close().await;
    Ok(sum)
}

/// `linkstream capture`: join the host's link (inherited, or `--connect`)
/// and produce frames.
pub async fn run(args: CaptureArgs) -> Result<(), String> {
    let source = open_source(&args.source)?;
    let cfg = shm_config(source.frame_len());
    let link = match &args.connect {
        Some(path) => ShmLink::connect(path, &cfg)
            .await
            .map_err(|e| format!("capture: connect to {}: {e}", path.display()))?,
        None => ShmLink::from_parent(&cfg).await.map_err(|e| {
            format!("capture: no link from a parent host ({e}); run it from `linkstream host`, or give --connect PATH")
        })?,
    };
    let sum = produce(link, source, args.frames).await?;
    tracing::info!(frames = sum.frames, dropped = sum.dropped, "capture ended");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_bad_slots_are_refused() {
        let h = FrameHeader {
            width: 640,
            height: 360,
            index: 1 << 40,
            capture_us: 123_456_789,
            dropped: 3,
            fps_milli: 30_000,
        };
        let mut slot = vec![0u8; HEADER_LEN + video::i420_len(640, 360)];
        h.write(&mut slot);
        let (got, pic) = FrameHeader::parse(&slot).unwrap();
        assert_eq!(got, h);
        assert_eq!(pic.len(), video::i420_len(640, 360));
        assert!(FrameHeader::parse(&slot[..slot.len() - 1]).is_err());
        assert!(FrameHeader::parse(&slot[..10]).is_err());
        slot[0] = b'X';
        assert!(FrameHeader::parse(&slot).unwrap_err().contains("magic"));
    }

    // r[verify cli.capture.slot]
    /// Frames go from the capture side into shared-memory slots and arrive
    /// with their header, the test pattern's burned-in index and the exact
    /// picture `render` makes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn captured_frames_arrive_in_slots_with_their_index() {
        use link_types::LinkRx;
        let src = TestSrc::new(640, 360, 240).unwrap();
        let cfg = shm_config(src.frame_len());
        let (a, b) = ShmLink::pair(&cfg).unwrap();
        let producer = tokio::spawn(produce(a, Source::TestSrc(src.clone(), 0), Some(12)));
        let (_tx, mut rx) = b.split();
        let mut want = vec![0u8; src.frame_len()];
        let mut n = 0u64;
        while let Some(msg) = rx.recv().await.unwrap() {
            let (h, pic) = FrameHeader::parse(msg.as_slice()).unwrap();
            src.render(h.index, &mut want).unwrap();
            assert_eq!(pic, &want[..], "frame {}", h.index);
            let y = &pic[..640 * 360];
            assert_eq!(video::testsrc::read_index(y, 640, 360), Some(h.index));
            assert!(h.capture_us > 0);
            n += 1;
        }
        let sum = producer.await.unwrap().unwrap();
        assert_eq!(sum.frames + sum.dropped, 12);
        assert_eq!(n, sum.frames);
        assert!(n > 0);
    }
}
