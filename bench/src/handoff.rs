//! `handoff`: the capture → encoder hand-off of one raw I420 picture
//! between two processes, the way `linkstream capture` and `linkstream
//! host` do it, against the same frames copied through a Unix socket.
//!
//! - **Ours:** the writer (a second process, as the capture process is)
//!   reserves a `link-shm` slot, writes a 32-byte header and fills the
//!   picture straight into the slot, and commits; the reader (this process,
//!   as the host is) gets the slot as a leased `Backing` (zero copy, checked),
//!   checks the header and reads every byte of the picture in place, then
//!   drops it (the slot goes back). The segment is the capture's: three
//!   large slots of the frame's size, the default spin.
//! - **Baseline:** the writer fills the same header and picture into its
//!   own buffer (allocated once, reused) and hands it to the kernel with one
//!   `write` per frame on a Unix stream socket; the reader `read`s it into
//!   its own reused buffer, checks the header and reads every byte. Socket
//!   buffers are set to three frames (`SO_SNDBUFFORCE`/`SO_RCVBUFFORCE`, as
//!   root; `SO_SNDBUF` otherwise), the same depth as the three slots.
//!
//! Each sample spawns a fresh writer (this binary again, `link-bench
//! __handoff-child`), writer on CPU 1, reader on CPU 0. The first
//! [`WARMUP`] frames are not counted; over the rest each side measures its
//! own CPU time (`CLOCK_PROCESS_CPUTIME_ID`, every thread of the process)
//! and the reader the wall time. Two modes: **unpaced** (the writer writes
//! as fast as the reader takes frames: frames/s and CPU per frame) and
//! **paced** at 60 frames/s as a capture is (CPU per frame, the writer
//! sleeping until each tick: what the pipeline costs at a real frame rate).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use link_shm::{ShmConfig, ShmLink};
use link_types::{Link, LinkRx, LinkTx, LinkTxPermit, WriteSlot};
use link_video::i420_len;
use link_video::slot::FrameHeader;

use crate::harness::{Better, Outcome, Runner, median, pin};
use crate::shm::{finish, inherited, pass_fd, read_all, runtime};

/// Bytes of the capture header in front of each picture (link-video's
/// `LSCF` slot header, as `linkstream capture` writes it).
const HEADER: usize = link_video::slot::HEADER_LEN;
/// Frames at the start of a sample that are not counted.
const WARMUP: usize = 5;
/// Frames per second of the paced mode.
const PACED_FPS: u32 = 60;
/// Slots in the segment, and frames of socket buffer: the capture's three.
const DEPTH: usize = 3;

/// The picture sizes measured.
const SIZES: [(usize, usize); 2] = [(1280, 720), (1920, 1080)];

/// The capture's segment for frames of `frame_len` bytes
/// (`linkstream capture`'s `shm_config`).
fn link_config(frame_len: usize) -> ShmConfig {
    ShmConfig {
        large_size: (HEADER + frame_len).next_multiple_of(64),
        large_count: DEPTH,
        ..ShmConfig::default()
    }
}

/// CPU time of this whole process (every thread), nanoseconds.
fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a live local.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn write_header(buf: &mut [u8], index: u64, w: usize, h: usize) {
    let capture_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    FrameHeader {
        width: w as u16,
        height: h as u16,
        index,
        capture_us,
        dropped: 0,
        fps_milli: 0,
        format: link_video::PixelFormat::I420,
        stride: 0,
        flags: 0,
    }
    .write(buf)
    .expect("the slot holds the header");
}

/// The reader's check: the frame is the one expected, of the right size.
fn check_frame(buf: &[u8], index: u64, w: usize, h: usize) {
    let (hdr, picture) = FrameHeader::parse(buf).unwrap_or_else(|e| panic!("frame {index}: {e}"));
    assert_eq!(
        (hdr.width as usize, hdr.height as usize),
        (w, h),
        "frame {index}: size"
    );
    assert_eq!(hdr.index, index, "frames arrive in order, none lost");
    assert_eq!(picture[0], index as u8, "frame {index}: picture");
}

/// The writer's frame rate: `fps == 0` writes as fast as it can.
struct Pace {
    period: Option<Duration>,
    start: Instant,
}

impl Pace {
    fn new(fps: u32) -> Pace {
        Pace {
            period: (fps > 0).then(|| Duration::from_secs_f64(1.0 / fps as f64)),
            start: Instant::now(),
        }
    }

    /// Sleep until frame `i`'s tick.
    fn wait(&self, i: usize) {
        if let Some(p) = self.period {
            let tick = self.start + p * i as u32;
            let now = Instant::now();
            if tick > now {
                std::thread::sleep(tick - now);
            }
        }
    }
}

/// Ours and the baseline's samples of one mode.
type Samples = (Vec<Sample>, Vec<Sample>);

/// One reported case: name, metric, unit, direction, the samples it is
/// taken from, and the figure of one sample.
type CaseRow<'a> = (
    &'static str,
    &'static str,
    &'static str,
    Better,
    &'a Samples,
    fn(&Sample) -> f64,
);

/// One sample of one contender.
#[derive(Debug, Clone, Copy)]
struct Sample {
    frames_per_s: f64,
    writer_us: f64,
    reader_us: f64,
}

impl Sample {
    fn cpu_us(&self) -> f64 {
        self.writer_us + self.reader_us
    }
}

fn child_command(kind: &str, w: usize, h: usize, frames: usize, fps: u32) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("own path"));
    c.arg("__handoff-child")
        .arg(kind)
        .arg(w.to_string())
        .arg(h.to_string())
        .arg(frames.to_string())
        .arg(fps.to_string())
        .stdin(Stdio::null());
    c
}

fn sample(frames: usize, wall: Duration, reader_ns: u64, writer_ns: u64) -> Sample {
    let n = (frames - WARMUP) as f64;
    Sample {
        frames_per_s: n / wall.as_secs_f64(),
        writer_us: writer_ns as f64 / n / 1e3,
        reader_us: reader_ns as f64 / n / 1e3,
    }
}

/// Ours: frames through `link-shm` slots, read in place.
fn link_run(w: usize, h: usize, frames: usize, fps: u32) -> Sample {
    pin(0);
    runtime().block_on(async {
        let cfg = link_config(i420_len(w, h));
        let (link, child) = ShmLink::spawn(&mut child_command("link", w, h, frames, fps), &cfg)
            .await
            .expect("spawn the writer");
        let (_tx, mut rx) = link.split();
        let mut sum = 0u64;
        let (mut t0, mut cpu0) = (Instant::now(), 0);
        for i in 0..frames {
            let m = rx.recv().await.expect("recv").expect("a frame");
            assert!(m.is_leased(), "the frame is the writer's slot, not a copy");
            let b = m.as_slice();
            check_frame(b, i as u64, w, h);
            sum = sum.wrapping_add(read_all(&b[HEADER..]));
            drop(m);
            if i + 1 == WARMUP {
                (t0, cpu0) = (Instant::now(), process_cpu_ns());
            }
        }
        let (wall, cpu) = (t0.elapsed(), process_cpu_ns() - cpu0);
        let m = rx.recv().await.expect("recv").expect("the writer's CPU");
        let writer_ns = u64::from_le_bytes(m.as_slice().try_into().expect("8 bytes"));
        drop(m);
        finish(child);
        std::hint::black_box(sum);
        sample(frames, wall, cpu, writer_ns)
    })
}

/// Give a socket buffers of `bytes` each way (forced past the system
/// maximum when running as root).
fn socket_buffers(s: &UnixStream, bytes: usize) {
    let v = bytes as libc::c_int;
    for (force, plain) in [
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
    ] {
        for opt in [force, plain] {
            // SAFETY: setsockopt reads one c_int from a live local.
            let rc = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&v as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                break;
            }
        }
    }
}

/// The baseline: frames written through a Unix stream socket.
fn uds_run(w: usize, h: usize, frames: usize, fps: u32) -> Sample {
    pin(0);
    let len = HEADER + i420_len(w, h);
    let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
    socket_buffers(&ours, DEPTH * len);
    socket_buffers(&theirs, DEPTH * len);
    let mut cmd = child_command("uds", w, h, frames, fps);
    pass_fd(&mut cmd, "BENCH_UDS", &theirs);
    let child = cmd.spawn().expect("spawn the writer");
    drop(theirs);
    let mut buf = vec![0u8; len];
    let mut sum = 0u64;
    let (mut t0, mut cpu0) = (Instant::now(), 0);
    for i in 0..frames {
        ours.read_exact(&mut buf).expect("read a frame");
        check_frame(&buf, i as u64, w, h);
        sum = sum.wrapping_add(read_all(&buf[HEADER..]));
        if i + 1 == WARMUP {
            (t0, cpu0) = (Instant::now(), process_cpu_ns());
        }
    }
    let (wall, cpu) = (t0.elapsed(), process_cpu_ns() - cpu0);
    let mut cpu_buf = [0u8; 8];
    ours.read_exact(&mut cpu_buf).expect("the writer's CPU");
    drop(ours);
    finish(child);
    std::hint::black_box(sum);
    sample(frames, wall, cpu, u64::from_le_bytes(cpu_buf))
}

/// The writer process: `link-bench __handoff-child <link|uds> W H FRAMES FPS`.
pub fn child(args: &[String]) {
    let parse = |i: usize| -> usize {
        args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
            eprintln!("link-bench: __handoff-child <link|uds> W H FRAMES FPS");
            std::process::exit(2)
        })
    };
    let (w, h, frames, fps) = (parse(1), parse(2), parse(3), parse(4) as u32);
    pin(1);
    match args.first().map(String::as_str) {
        Some("link") => link_writer(w, h, frames, fps),
        Some("uds") => uds_writer(w, h, frames, fps),
        other => {
            eprintln!("link-bench: unknown handoff writer {other:?}");
            std::process::exit(2);
        }
    }
}

fn link_writer(w: usize, h: usize, frames: usize, fps: u32) {
    runtime().block_on(async {
        let len = i420_len(w, h);
        let link = ShmLink::from_parent(&link_config(len))
            .await
            .expect("join the reader's link");
        let (mut tx, mut rx) = link.split();
        let pace = Pace::new(fps);
        let mut cpu0 = 0;
        for i in 0..frames {
            pace.wait(i);
            let mut s = tx
                .reserve()
                .await
                .expect("reserve")
                .alloc(HEADER + len)
                .expect("alloc a frame slot");
            let buf = s.as_mut_slice();
            write_header(buf, i as u64, w, h);
            buf[HEADER..].fill(i as u8);
            s.commit().expect("commit");
            if i + 1 == WARMUP {
                cpu0 = process_cpu_ns();
            }
        }
        let cpu = process_cpu_ns() - cpu0;
        let mut s = tx
            .reserve()
            .await
            .expect("reserve")
            .alloc(8)
            .expect("alloc");
        s.as_mut_slice().copy_from_slice(&cpu.to_le_bytes());
        s.commit().expect("commit");
        // Until the reader goes.
        while let Ok(Some(_)) = rx.recv().await {}
    })
}

fn uds_writer(w: usize, h: usize, frames: usize, fps: u32) {
    let mut s = UnixStream::from(inherited("BENCH_UDS"));
    let mut buf = vec![0u8; HEADER + i420_len(w, h)];
    let pace = Pace::new(fps);
    let mut cpu0 = 0;
    for i in 0..frames {
        pace.wait(i);
        write_header(&mut buf, i as u64, w, h);
        buf[HEADER..].fill(i as u8);
        s.write_all(&buf).expect("write a frame");
        if i + 1 == WARMUP {
            cpu0 = process_cpu_ns();
        }
    }
    let cpu = process_cpu_ns() - cpu0;
    s.write_all(&cpu.to_le_bytes()).expect("write the CPU time");
    // Until the reader goes.
    let _ = s.read(&mut [0u8; 1]);
}

/// Run the `handoff` suite.
pub fn run(runner: &mut Runner, quick: bool) {
    let (unpaced_frames, paced_frames) = if quick { (30, 20) } else { (300, 90) };
    let base = "Unix stream socket: one write per frame, reused buffers, 3-frame socket buffers";
    for (w, h) in SIZES {
        let size = format!("{w}x{h}");
        if runner.only.as_deref().is_some_and(|o| !o.ends_with(&size)) {
            continue;
        }
        eprintln!("[handoff] {size} ...");
        let mut free: Samples = (Vec::new(), Vec::new());
        let mut paced: Samples = (Vec::new(), Vec::new());
        for round in 0..runner.rounds {
            let ours_first = round % 2 == 0;
            for first in [true, false] {
                if first == ours_first {
                    free.0.push(link_run(w, h, unpaced_frames, 0));
                    paced.0.push(link_run(w, h, paced_frames, PACED_FPS));
                } else {
                    free.1.push(uds_run(w, h, unpaced_frames, 0));
                    paced.1.push(uds_run(w, h, paced_frames, PACED_FPS));
                }
            }
            if std::env::var_os("LINK_BENCH_ROUNDS").is_some() {
                let (o, b) = (free.0[round], free.1[round]);
                let (po, pb) = (paced.0[round], paced.1[round]);
                eprintln!(
                    "  round {round}: unpaced ours {:.0} fps w {:.0} r {:.0} us, uds {:.0} fps w {:.0} r {:.0} us; \
                     paced ours w {:.0} r {:.0} us, uds w {:.0} r {:.0} us",
                    o.frames_per_s,
                    o.writer_us,
                    o.reader_us,
                    b.frames_per_s,
                    b.writer_us,
                    b.reader_us,
                    po.writer_us,
                    po.reader_us,
                    pb.writer_us,
                    pb.reader_us
                );
            }
        }
        let med = |v: &[Sample], f: fn(&Sample) -> f64| median(v.iter().map(f).collect());
        let cases: [CaseRow<'_>; 4] = [
            (
                "frames",
                "frames_per_s",
                "frames/s",
                Better::Higher,
                &free,
                |s| s.frames_per_s,
            ),
            (
                "cpu_per_frame",
                "writer_plus_reader_cpu",
                "us",
                Better::Lower,
                &free,
                Sample::cpu_us,
            ),
            (
                "paced60_cpu_per_frame",
                "writer_plus_reader_cpu",
                "us",
                Better::Lower,
                &paced,
                Sample::cpu_us,
            ),
            (
                "paced60_reader_cpu_per_frame",
                "reader_cpu",
                "us",
                Better::Lower,
                &paced,
                |s| s.reader_us,
            ),
        ];
        for (case, metric, unit, better, samples, f) in cases {
            let (o, b) = (med(&samples.0, f), med(&samples.1, f));
            runner.report(Outcome {
                suite: runner.suite.clone(),
                case: format!("{case}_{size}"),
                metric: metric.to_owned(),
                unit: unit.to_owned(),
                ours: o,
                baseline: b,
                baseline_name: base.to_owned(),
                ratio: o / b,
                better,
            });
        }
    }
}
