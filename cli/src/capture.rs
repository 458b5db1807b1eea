//! `linkstream capture`: the capture process. It produces raw frames (the
//! test pattern or a Y4M file in I420, an X11 screen in BGRX) straight
//! into `link-shm` slots:
//! reserve a permit, allocate a slot of the frame's length, render the
//! picture into the slot (no intermediate buffer), commit. Frames are paced
//! at the source's frame rate; a frame whose slot is not free by the next
//! tick (the encoder is behind) is dropped and counted.
//!
//! Each slot holds the header of [`link_video::slot`] (magic `LSCF`, size,
//! capture index and time, drops so far, frame rate, pixel format and
//! stride), then the picture.

use std::path::PathBuf;
use std::time::Duration;

use link_shm::{ShmConfig, ShmLink};
use link_types::{Link, LinkTx, LinkTxPermit, WriteSlot};

use link_video::slot::{FLAG_LENT, FrameHeader, HEADER_LEN};
use link_video::{Source, SourceSpec, now_us};

/// Options of `linkstream capture`.
#[derive(Debug, Clone, clap::Args)]
pub struct CaptureArgs {
    /// Where frames come from: testsrc, testsrc:WxH@FPS, y4m:FILE, or an
    /// X11 screen: x11 or x11:DISPLAY, then optionally @OUTPUT or +X,Y,WxH.
    #[arg(long, value_name = "SPEC", default_value = "testsrc")]
    pub source: String,
    /// Frames per second (default: 60 for x11, the source's rate otherwise).
    #[arg(long, value_name = "N")]
    pub fps: Option<u32>,
    /// Stop after N frames (default: until the source ends or the host goes).
    #[arg(long, value_name = "N")]
    pub frames: Option<u64>,
    /// Connect to a host listening for a capture process at this Unix socket
    /// path (`linkstream host --capture PATH`) instead of inheriting the link
    /// from the host that spawned this process.
    #[arg(long, value_name = "PATH")]
    pub connect: Option<PathBuf>,
}

/// Open the source named by a `--source` argument at `--fps` (a Y4M file
/// plays once).
pub fn open_source(spec: &str, fps: Option<u32>) -> Result<Source, String> {
    let mut spec = SourceSpec::parse(spec).map_err(|e| e.to_string())?;
    if let Some(rate) = fps {
        spec = spec.with_fps(rate).map_err(|e| e.to_string())?;
    }
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

/// A screen that did not change is still captured this often, so that a
/// viewer that joins or lost a frame gets a whole picture.
pub const REFRESH: Duration = Duration::from_secs(1);

/// What a capture run did.
#[derive(Debug, Clone, Copy, Default)]
pub struct CaptureSummary {
    /// Frames written into slots.
    pub frames: u64,
    /// Frames dropped because no slot was free by the next tick.
    pub dropped: u64,
    /// Ticks skipped because the screen had not changed.
    pub unchanged: u64,
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
    let format = source.pixel_format();
    let frame_len = source.frame_len();
    let period = Duration::from_secs_f64(1.0 / fps.max(1) as f64);
    let (mut tx, _rx) = link.split();
    let mut sum = CaptureSummary::default();
    let start = tokio::time::Instant::now();
    let mut tick_no = 0u64;
    let mut last_frame: Option<tokio::time::Instant> = None;
    while frames.is_none_or(|n| tick_no < n) {
        let tick = start + period.mul_f64(tick_no as f64);
        tokio::time::sleep_until(tick).await;
        let next_tick = tick + period;
        // r[impl cli.capture.damage]
        // A screen that has not changed is not captured again until the
        // refresh is due.
        let refresh_due = last_frame.is_none_or(|t| tick.duration_since(t) >= REFRESH);
        if !refresh_due && !source.changed().map_err(|e| e.to_string())? {
            sum.unchanged += 1;
            tick_no += 1;
            continue;
        }
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
        let capture_us = now_us();
        // r[impl cli.capture.lent]
        // A screen: the X server writes the picture into the slot itself
        // (MIT-SHM) when it can; no slice of the slot exists meanwhile.
        let mut lent_index = None;
        if let Source::X11(x, _, next) = &mut source
            && x.can_lend()
            && let Some(lent) = slot.lend()
            && x.capture_lent(lent.fd, lent.offset + HEADER_LEN as u64, lent.segment_len)
                .map_err(|e| e.to_string())?
        {
            x.draw_pointer(&mut slot.as_mut_slice()[HEADER_LEN..])
                .map_err(|e| e.to_string())?;
            lent_index = Some(*next);
            *next += 1;
        }
        let flags = if lent_index.is_some() { FLAG_LENT } else { 0 };
        let buf = slot.as_mut_slice();
        let index = match lent_index {
            Some(i) => i,
            None => {
                let Some(index) = source
                    .next_frame(&mut buf[HEADER_LEN..])
                    .map_err(|e| e.to_string())?
                else {
                    break;
                };
                index
            }
        };
        FrameHeader {
            width: w as u16,
            height: h as u16,
            index,
            capture_us,
            dropped: sum.dropped.min(u32::MAX as u64) as u32,
            fps_milli: fps.saturating_mul(1000),
            format,
            stride: format.packed_stride(w) as u32,
            flags,
        }
        .write(buf)
        .map_err(|e| format!("capture: {e}"))?;
        if slot.commit().is_err() {
            break;
        }
        sum.frames += 1;
        last_frame = Some(tick);
        tick_no += 1;
    }
    let _ = tx.close().await;
    Ok(sum)
}

/// `linkstream capture`: join the host's link (inherited, or `--connect`)
/// and produce frames.
pub async fn run(args: CaptureArgs) -> Result<(), String> {
    let source = open_source(&args.source, args.fps)?;
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
    use link_video::TestSrc;

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
            assert_eq!(link_video::index::read_index(y, 640, 360), Some(h.index));
            assert!(h.capture_us > 0);
            n += 1;
        }
        let sum = producer.await.unwrap().unwrap();
        assert_eq!(sum.frames + sum.dropped, 12);
        assert_eq!(n, sum.frames);
        assert!(n > 0);
    }
}
