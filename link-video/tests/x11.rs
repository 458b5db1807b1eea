//! The X11 source against a real X server (Xvfb, installed by the test
//! command; a missing Xvfb fails these tests, it does not skip them).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use link_video::x11::{X11Area, X11Capture};
use link_video::{Source, SourceSpec, VideoError};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    ChangeGCAux, ConnectionExt as _, CreateGCAux, CreateWindowAux, Rectangle, WindowClass,
};
use x11rb::rust_connection::RustConnection;

/// An Xvfb server on a display number it picked itself (`-displayfd`).
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    fn start(screen: &str) -> Xvfb {
        Xvfb::start_with(screen, &[])
    }

    fn start_with(screen: &str, extra: &[&str]) -> Xvfb {
        let mut child = Command::new("Xvfb")
            .args(extra)
            .args([
                "-displayfd",
                "1",
                "-nolisten",
                "tcp",
                "-screen",
                "0",
                screen,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb is missing: install the xvfb package (scripts/test.sh does)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let n: u32 = line
            .trim()
            .parse()
            .expect("Xvfb printed its display number");
        Xvfb {
            child,
            display: format!(":{n}"),
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn x11_err(r: Result<X11Capture, VideoError>) -> String {
    match r {
        Err(e @ VideoError::X11 { .. }) => {
            let s = e.to_string();
            assert!(!s.contains('\n'), "one line: {s}");
            s
        }
        Err(e) => panic!("another error: {e}"),
        Ok(c) => panic!("opened: {c:?}"),
    }
}

/// A client of `display` with a window over the whole 640x360 screen
/// (no window manager: override-redirect) in `background`, these
/// rectangles filled in their colours, everything drawn when it returns.
fn fill(display: &str, background: u32, rects: &[(u32, Rectangle)]) -> RustConnection {
    let (conn, screen_no) = x11rb::connect(Some(display)).unwrap();
    let screen = &conn.setup().roots[screen_no];
    let win = conn.generate_id().unwrap();
    conn.create_window(
        screen.root_depth,
        win,
        screen.root,
        0,
        0,
        640,
        360,
        0,
        WindowClass::INPUT_OUTPUT,
        screen.root_visual,
        &CreateWindowAux::new()
            .override_redirect(1)
            .background_pixel(background),
    )
    .unwrap();
    conn.map_window(win).unwrap();
    let gc = conn.generate_id().unwrap();
    conn.create_gc(gc, win, &CreateGCAux::new()).unwrap();
    for &(pixel, rect) in rects {
        conn.change_gc(gc, &ChangeGCAux::new().foreground(pixel))
            .unwrap();
        conn.poly_fill_rectangle(win, gc, &[rect]).unwrap();
    }
    conn.get_input_focus().unwrap().reply().unwrap();
    conn
}

fn rect(x: i16, y: i16, width: u16, height: u16) -> Rectangle {
    Rectangle {
        x,
        y,
        width,
        height,
    }
}

// r[verify video.x11.open]
#[test]
fn opening_names_what_is_wrong_and_rounds_the_screen_to_even_sizes() {
    let x = Xvfb::start("641x361x24");
    let whole = X11Capture::open(Some(&x.display), &X11Area::Screen).unwrap();
    assert_eq!((whole.width(), whole.height()), (640, 360));
    assert_eq!(whole.frame_len(), 640 * 360 * 4);
    let r = X11Capture::open(
        Some(&x.display),
        &X11Area::Region {
            x: 100,
            y: 0,
            width: 542,
            height: 360,
        },
    );
    assert!(x11_err(r).contains("outside the 641x361 screen"));
    let r = X11Capture::open(
        Some(&x.display),
        &X11Area::Region {
            x: 2,
            y: 2,
            width: 640,
            height: 360,
        },
    );
    assert!(x11_err(r).contains("outside"));
    let inside = X11Capture::open(
        Some(&x.display),
        &X11Area::Region {
            x: 1,
            y: 1,
            width: 400,
            height: 200,
        },
    )
    .unwrap();
    assert_eq!((inside.width(), inside.height()), (400, 200));
    let e = x11_err(X11Capture::open(
        Some(&x.display),
        &X11Area::Output("HDMI-9".into()),
    ));
    assert!(e.contains("no output named \"HDMI-9\""), "{e}");
    assert!(e.contains("the display has:"), "{e}");
    // No server on this display.
    let e = x11_err(X11Capture::open(Some(":4321"), &X11Area::Screen));
    assert!(e.contains(":4321") && e.contains("cannot connect"), "{e}");
    // A 16-bit screen.
    let x16 = Xvfb::start("640x360x16");
    let e = x11_err(X11Capture::open(Some(&x16.display), &X11Area::Screen));
    assert!(e.contains("pixel format"), "{e}");
    // Through the source spec, with the display named by number.
    let n = x.display.trim_start_matches(':');
    let spec = SourceSpec::parse(&format!("x11:{n}")).unwrap();
    let s = Source::open(&spec, false).unwrap();
    assert_eq!((s.width(), s.height(), s.fps()), (640, 360, 60));
    assert_eq!(s.frame_len(), 640 * 360 * 4);
    assert!(s.is_live());
}

// r[verify video.x11.capture]
/// Rectangles of known colours drawn by another client come back as BGRX
/// at the right places, region offsets included; a server that is killed
/// makes the next capture a named error.
#[test]
fn captured_pixels_are_what_the_server_shows_and_a_dead_server_is_an_error() {
    let x = Xvfb::start("640x360x24");
    // Left half red, right half blue, a green square at (100, 50).
    let conn = fill(
        &x.display,
        0,
        &[
            (0xff0000, rect(0, 0, 320, 360)),
            (0x0000ff, rect(320, 0, 320, 360)),
            (0x00ff00, rect(100, 50, 20, 20)),
        ],
    );

    let mut cap = X11Capture::open(Some(&x.display), &X11Area::Screen).unwrap();
    let mut pic = vec![0u8; cap.frame_len()];
    cap.capture(&mut pic).unwrap();
    let px = |p: &[u8], w: usize, x: usize, y: usize| {
        let o = (y * w + x) * 4;
        [p[o], p[o + 1], p[o + 2]]
    };
    assert_eq!(px(&pic, 640, 10, 10), [0, 0, 255], "red is the third byte");
    assert_eq!(px(&pic, 640, 630, 350), [255, 0, 0], "blue is the first");
    assert_eq!(px(&pic, 640, 110, 60), [0, 255, 0]);
    let mut region = X11Capture::open(
        Some(&x.display),
        &X11Area::Region {
            x: 100,
            y: 50,
            width: 240,
            height: 20,
        },
    )
    .unwrap();
    let mut part = vec![0u8; region.frame_len()];
    region.capture(&mut part).unwrap();
    assert_eq!(px(&part, 240, 0, 0), [0, 255, 0]);
    assert_eq!(px(&part, 240, 100, 10), [0, 0, 255]);
    assert_eq!(px(&part, 240, 239, 19), [255, 0, 0]);
    assert!(matches!(
        cap.capture(&mut pic[4..]),
        Err(VideoError::ShortBuffer { .. })
    ));

    drop(conn);
    drop(x);
    let e = cap.capture(&mut pic).unwrap_err();
    assert!(matches!(e, VideoError::X11 { .. }), "{e}");
}

// r[verify video.x11.cursor]
/// The pointer is in the picture where the server has it, and moves with
/// it; the rest of the picture is what the window shows.
#[test]
fn the_pointer_is_drawn_where_it_is() {
    let x = Xvfb::start("640x360x24");
    let conn = fill(&x.display, 0x00ff00, &[]);
    let root = conn.setup().roots[0].root;
    let warp = |x: i16, y: i16| {
        conn.warp_pointer(x11rb::NONE, root, 0, 0, 0, 0, x, y)
            .unwrap();
        conn.get_input_focus().unwrap().reply().unwrap();
    };
    let mut cap = X11Capture::open(Some(&x.display), &X11Area::Screen).unwrap();
    assert!(cap.path().contains("cursor drawn in"), "{}", cap.path());
    let mut pic = vec![0u8; cap.frame_len()];
    // Pixels within 12 of (x, y) that are not the window's green.
    let changed_near = |p: &[u8], cx: usize, cy: usize| {
        let mut n = 0;
        for y in cy.saturating_sub(12)..(cy + 12).min(360) {
            for x in cx.saturating_sub(12)..(cx + 12).min(640) {
                let o = (y * 640 + x) * 4;
                if p[o..o + 3] != [0, 255, 0] {
                    n += 1;
                }
            }
        }
        n
    };
    let green_elsewhere = |p: &[u8], cx: usize, cy: usize| {
        p.chunks_exact(4).enumerate().all(|(i, px)| {
            let (x, y) = (i % 640, i / 640);
            x.abs_diff(cx) < 40 && y.abs_diff(cy) < 40 || px[..3] == [0, 255, 0]
        })
    };
    warp(200, 100);
    cap.capture(&mut pic).unwrap();
    assert!(
        changed_near(&pic, 200, 100) > 10,
        "no pointer at (200, 100)"
    );
    assert!(green_elsewhere(&pic, 200, 100));
    warp(500, 300);
    cap.capture(&mut pic).unwrap();
    assert!(
        changed_near(&pic, 500, 300) > 10,
        "no pointer at (500, 300)"
    );
    assert_eq!(changed_near(&pic, 200, 100), 0, "the old place is clean");
    assert!(green_elsewhere(&pic, 500, 300));
}

/// A window of four coloured quarters over the whole screen.
fn draw_quarters(display: &str) -> RustConnection {
    let quarters: Vec<(u32, Rectangle)> = [0xff0000u32, 0x00ff00, 0x0000ff, 0xffffff]
        .into_iter()
        .enumerate()
        .map(|(i, pixel)| {
            (
                pixel,
                rect((i % 2) as i16 * 320, (i / 2) as i16 * 180, 320, 180),
            )
        })
        .collect();
    fill(display, 0, &quarters)
}

// r[verify video.x11.shm]
/// With MIT-SHM the X server writes the picture into a lent `link-shm`
/// slot and the reader receives exactly what `GetImage` reads; without
/// MIT-SHM nothing is lent, nothing is written, and the path says why.
#[tokio::test]
async fn the_x_server_writes_into_a_lent_shm_slot() {
    use link_shm::{ShmConfig, ShmLink};
    use link_types::{Link, LinkRx, LinkTx, LinkTxPermit, WriteSlot};
    let x = Xvfb::start("640x360x24");
    let _conn = draw_quarters(&x.display);
    let mut cap = X11Capture::open(Some(&x.display), &X11Area::Screen).unwrap();
    assert!(
        cap.can_lend() && cap.path().starts_with("MIT-SHM"),
        "{}",
        cap.path()
    );
    // What GetImage reads, pointer drawn in as the lent path does too.
    let mut want = vec![0u8; cap.frame_len()];
    cap.capture(&mut want).unwrap();
    let cfg = ShmConfig {
        large_size: (cap.frame_len() + 64).next_multiple_of(64),
        large_count: 2,
        ..ShmConfig::default()
    };
    let (a, b) = ShmLink::pair(&cfg).unwrap();
    let (mut tx, _) = a.split();
    let (_, mut rx) = b.split();
    for round in 0..3 {
        let permit = tx.reserve().await.unwrap();
        let mut slot = permit.alloc(cap.frame_len() + 16).unwrap();
        slot.as_mut_slice().fill(0xEE);
        let lent = slot.lend().unwrap();
        assert!(
            cap.capture_lent(lent.fd, lent.offset + 16, lent.segment_len)
                .unwrap()
        );
        cap.draw_pointer(&mut slot.as_mut_slice()[16..]).unwrap();
        slot.commit().unwrap();
        let got = rx.recv().await.unwrap().unwrap();
        assert_eq!(
            &got.as_slice()[..16],
            &[0xEE; 16],
            "round {round}: before the offset"
        );
        assert!(
            got.as_slice()[16..] == want[..],
            "round {round}: the picture"
        );
    }
    // A picture that would not fit the file is refused.
    let permit = tx.reserve().await.unwrap();
    let slot = permit.alloc(4096).unwrap();
    let lent = slot.lend().unwrap();
    assert!(matches!(
        cap.capture_lent(lent.fd, lent.segment_len as u64 - 8, lent.segment_len),
        Err(VideoError::X11 { .. })
    ));
    drop(slot);

    let plain = Xvfb::start_with("640x360x24", &["-extension", "MIT-SHM"]);
    let _conn = draw_quarters(&plain.display);
    let mut cap = X11Capture::open(Some(&plain.display), &X11Area::Screen).unwrap();
    assert!(!cap.can_lend());
    assert!(
        cap.path().starts_with("GetImage") && cap.path().contains("no MIT-SHM"),
        "{}",
        cap.path()
    );
    let permit = tx.reserve().await.unwrap();
    let mut slot = permit.alloc(cap.frame_len()).unwrap();
    slot.as_mut_slice().fill(0xEE);
    let lent = slot.lend().unwrap();
    assert!(
        !cap.capture_lent(lent.fd, lent.offset, lent.segment_len)
            .unwrap()
    );
    assert!(
        slot.as_mut_slice().iter().all(|&b| b == 0xEE),
        "nothing written"
    );
    cap.capture(slot.as_mut_slice()).unwrap();
    assert!(
        slot.as_mut_slice()[..] == want[..],
        "GetImage reads the same picture"
    );
}

// r[verify video.x11.damage]
/// A screen nobody draws on reads as unchanged after a capture; drawing
/// on it, or moving the pointer, makes it changed until the next capture.
#[test]
fn damage_and_pointer_moves_mark_the_screen_changed() {
    let x = Xvfb::start("640x360x24");
    let conn = draw_quarters(&x.display);
    let mut cap = X11Capture::open(Some(&x.display), &X11Area::Screen).unwrap();
    assert!(cap.path().contains("XDamage"), "{}", cap.path());
    let mut pic = vec![0u8; cap.frame_len()];
    assert!(cap.changed().unwrap(), "nothing captured yet");
    cap.capture(&mut pic).unwrap();
    let settle = || std::thread::sleep(std::time::Duration::from_millis(100));
    settle();
    assert!(!cap.changed().unwrap(), "a still screen");
    assert!(!cap.changed().unwrap(), "asking again changes nothing");
    // Another client draws.
    let screen = &conn.setup().roots[0];
    let gc = conn.generate_id().unwrap();
    conn.create_gc(
        gc,
        screen.root,
        &CreateGCAux::new()
            .subwindow_mode(x11rb::protocol::xproto::SubwindowMode::INCLUDE_INFERIORS)
            .foreground(0x123456),
    )
    .unwrap();
    conn.poly_fill_rectangle(
        screen.root,
        gc,
        &[Rectangle {
            x: 10,
            y: 10,
            width: 4,
            height: 4,
        }],
    )
    .unwrap();
    conn.get_input_focus().unwrap().reply().unwrap();
    settle();
    assert!(cap.changed().unwrap(), "a drawn rectangle");
    cap.capture(&mut pic).unwrap();
    settle();
    assert!(!cap.changed().unwrap(), "taken by the capture");
    conn.warp_pointer(x11rb::NONE, screen.root, 0, 0, 0, 0, 50, 60)
        .unwrap();
    conn.get_input_focus().unwrap().reply().unwrap();
    settle();
    assert!(cap.changed().unwrap(), "the pointer moved");
    cap.capture(&mut pic).unwrap();
    settle();
    assert!(!cap.changed().unwrap());
}
