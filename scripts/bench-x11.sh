#!/usr/bin/env bash
# The X11 source's cost against ffmpeg's x11grab on the same Xvfb display,
# side by side in one run (issue 22, BENCHMARKS.md "X11 capture"): CPU per
# captured 1080p frame, capture and conversion to I420 included, counting
# both the capturing process and the X server's own time (with MIT-SHM the
# server does the copy). Two scenes: the test pattern drawn at 30 frames/s
# by `linkstream __x11-pattern` (motion), and a still desktop.
#   ours:   link-video's x11_capture example (MIT-SHM into a link-shm slot,
#           the pointer drawn in, damage checked per tick, BGRX -> I420)
#   ffmpeg: ffmpeg -f x11grab -framerate FPS -i DISPLAY -pix_fmt yuv420p -f null -
# Usage: scripts/bench-x11.sh [SECONDS (10)] [WxH (1920x1080)] [FPS (30)]
# Installs what is missing: xvfb, ffmpeg, python3 (apt).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN=${1:-10}
SIZE=${2:-1920x1080}
FPS=${3:-30}

if ! command -v Xvfb >/dev/null || ! command -v ffmpeg >/dev/null || ! command -v python3 >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq xvfb ffmpeg python3 >/dev/null
fi
cargo build -q --release -p linkstream
cargo build -q --release -p link-video --example x11_capture
target_dir=${CARGO_TARGET_DIR:-target}

python3 - "$SECONDS_RUN" "$SIZE" "$FPS" "$target_dir" <<'PY'
import json, os, subprocess, sys, time

secs, size, fps, target = float(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
ticks = os.sysconf("SC_CLK_TCK")

def cpu_of(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / ticks

xvfb = subprocess.Popen(["Xvfb", "-displayfd", "1", "-nolisten", "tcp", "-screen", "0", f"{size}x24"],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
display = ":" + xvfb.stdout.readline().decode().strip()
rows = []
try:
    for scene in ["motion", "still"]:
        drawer = None
        if scene == "motion":
            drawer = subprocess.Popen([f"{target}/release/linkstream", "__x11-pattern", "--display", display,
                                       "--fps", str(fps), "--seconds", str(3 * secs + 10)])
            time.sleep(1)
        for who in ["ours", "ffmpeg"]:
            x0 = cpu_of(xvfb.pid)
            t0 = time.time()
            if who == "ours":
                p = subprocess.Popen([f"{target}/release/examples/x11_capture", display, str(fps), str(secs)],
                                     stdout=subprocess.PIPE)
                out = p.stdout.read().decode()
                _, status, ru = os.wait4(p.pid, 0)
                res = json.loads(out)
                frames, note = res["frames"], res["path"]
            else:
                p = subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "x11grab",
                                      "-framerate", str(fps), "-video_size", size, "-i", display,
                                      "-t", str(secs), "-pix_fmt", "yuv420p", "-f", "null", "-"])
                _, status, ru = os.wait4(p.pid, 0)
                frames, note = round(secs * fps), "x11grab (XShm), every frame"
            assert status == 0, f"{who} failed: {status}"
            wall = time.time() - t0
            own = ru.ru_utime + ru.ru_stime
            server = cpu_of(xvfb.pid) - x0
            rows.append(dict(scene=scene, who=who, frames=frames, wall=round(wall, 2),
                             cpu_s=round(own, 3), xvfb_cpu_s=round(server, 3),
                             ms_per_frame=round(1000 * (own + server) / max(frames, 1), 3),
                             cpu_per_s=round((own + server) / wall, 4), path=note))
        if drawer:
            drawer.kill()
            drawer.wait()
finally:
    xvfb.kill()
    xvfb.wait()

print(f"X11 capture {size} at {fps} frames/s, {secs:.0f} s a run (CPU: the process plus Xvfb)")
print(f"{'scene':7} {'who':7} {'frames':>7} {'cpu s':>7} {'xvfb s':>7} {'ms/frame':>9} {'cpu/s':>7}")
for r in rows:
    print(f"{r['scene']:7} {r['who']:7} {r['frames']:>7} {r['cpu_s']:>7} {r['xvfb_cpu_s']:>7} {r['ms_per_frame']:>9} {r['cpu_per_s']:>7}")
for scene in ["motion", "still"]:
    o = next(r for r in rows if r["scene"] == scene and r["who"] == "ours")
    f = next(r for r in rows if r["scene"] == scene and r["who"] == "ffmpeg")
    print(f"{scene}: ours / ffmpeg CPU per second of capture = {o['cpu_per_s'] / f['cpu_per_s']:.3f}x"
          f" (per captured frame {o['ms_per_frame'] / f['ms_per_frame']:.3f}x)")
print("ours: " + rows[0]["path"])
PY
