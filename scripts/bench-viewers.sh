#!/usr/bin/env bash
# Host CPU per viewer: the real `linkstream host` (it spawns `linkstream
# capture`, encodes H.264 once with OpenH264, and serves each viewer its own
# session: AES-GCM, FEC, pacing) with 0, 1, 4 and 16 `linkstream client`
# processes on loopback, each decoding and checking every picture.
#
# For each viewer count: start the host (release build, --bitrate and
# --min-bitrate both at BITRATE so the stream's rate is fixed, one
# rendition: this measures one encoding's fan-out; with the default two a
# new viewer starts on the half-size rendition and the full one is not
# encoded meanwhile, so the rate is not fixed), start the
# viewers, wait until every viewer has decoded frames, let it settle for
# WARM seconds, then read utime+stime from /proc/<pid>/stat of the host, of
# its capture child and of every client at the start and at the end of a
# WINDOW-second window. CPU is given in CPU-seconds per second (1.0 = one
# core busy). The 0-viewer run is the host with no one to send to: the
# capture hand-off and the encoder, which run whatever the viewer count.
# The host binds port 0; its port is read from its "join with" line.
# Results are recorded in BENCHMARKS.md ("Video: host CPU per viewer").
#
# Every viewer must have decoded its frames: a viewer with a decode error,
# an index mismatch, a lost or skipped frame, or fewer than MIN_SHARE of
# the frames of its run (less 5) fails the whole script, and so does a host that
# skipped a viewer to a keyframe or counted fewer viewers than started; a
# broken run is never reported as cheap.
#
# Usage: scripts/bench-viewers.sh [--viewers "0 1 4 16"] [--transport udp|ws|"udp ws"]
#          [--source testsrc:1280x720@30] [--window 12] [--warm 3] [--runs 1] [--json]
# Environment: BITRATE (default 4000000), MIN_SHARE (default 0.98),
#   PSNR_EVERY (default 30: PSNR on every 30th picture; the index is checked
#   on all), CLIENT_NICE (default 0: the viewers' nice value), HOST_NICE
#   (default -10 as root, else 0), RETRIES (default 1: a failed viewer
#   count is run once more, loudly, before the script fails), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

VIEWERS="0 1 4 16"
TRANSPORTS="udp"
SOURCE="testsrc:1280x720@30"
WINDOW=12
WARM=3
RUNS=1
JSON=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --viewers) VIEWERS=$2; shift 2 ;;
        --transport) TRANSPORTS=$2; shift 2 ;;
        --source) SOURCE=$2; shift 2 ;;
        --window) WINDOW=$2; shift 2 ;;
        --warm) WARM=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --json) JSON=1; shift ;;
        -h | --help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-viewers: unknown argument $1" >&2; exit 2 ;;
    esac
done

command -v python3 >/dev/null || { echo "bench-viewers: python3 is missing" >&2; exit 1; }

# As root the host runs at nice -10: 16 decoding viewers and other work on
# the machine (builds beside this benchmark) must not starve the encoder
# into dropping captured frames, which would make a run look cheaper. CPU
# time is counted the same at any priority.
DEFAULT_HOST_NICE=0
[[ $(id -u) == 0 ]] && DEFAULT_HOST_NICE=-10

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cargo build --release -q -p linkstream
# A private copy: another build in the same target directory cannot swap it.
cp "${CARGO_TARGET_DIR:-target}/release/linkstream" "$WORK/linkstream"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/key"

BIN="$WORK/linkstream" KEY="$WORK/key" WORK="$WORK" VIEWERS="$VIEWERS" TRANSPORTS="$TRANSPORTS" \
    SOURCE="$SOURCE" WINDOW="$WINDOW" WARM="$WARM" RUNS="$RUNS" JSON="$JSON" \
    BITRATE="${BITRATE:-4000000}" MIN_SHARE="${MIN_SHARE:-0.98}" PSNR_EVERY="${PSNR_EVERY:-30}" \
    CLIENT_NICE="${CLIENT_NICE:-0}" RETRIES="${RETRIES:-1}" HOST_NICE="${HOST_NICE:-$DEFAULT_HOST_NICE}" \
    python3 - <<'EOF'
import json, os, re, signal, subprocess, sys, time

BIN, KEY, WORK = os.environ["BIN"], os.environ["KEY"], os.environ["WORK"]
VIEWERS = [int(v) for v in os.environ["VIEWERS"].split()]
TRANSPORTS = os.environ["TRANSPORTS"].split()
SOURCE = os.environ["SOURCE"]
WINDOW, WARM = float(os.environ["WINDOW"]), float(os.environ["WARM"])
RUNS, AS_JSON = int(os.environ["RUNS"]), os.environ["JSON"] == "1"
BITRATE, MIN_SHARE = int(os.environ["BITRATE"]), float(os.environ["MIN_SHARE"])
PSNR_EVERY = os.environ["PSNR_EVERY"]
CLIENT_NICE = os.environ["CLIENT_NICE"]
RETRIES = int(os.environ["RETRIES"])
HOST_NICE = os.environ["HOST_NICE"]
TCK = os.sysconf("SC_CLK_TCK")
FPS = float(re.search(r"@(\d+)", SOURCE).group(1)) if "@" in SOURCE else 30.0
procs = []


class RunFailed(Exception):
    pass


def die(msg):
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    procs.clear()
    raise RunFailed(msg)


def cpu_s(pid):
    """utime + stime of a process (all its threads, live and ended), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TCK


def children(pid):
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            pass
    return out


def wait_for(pred, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    die(f"timed out waiting for {what}")


def read(path):
    with open(path) as f:
        return f.read()


def one(run, transport, n):
    tag = f"r{run}-{transport}-{n}"
    herr = f"{WORK}/{tag}-host.err"
    client_secs = WARM + WINDOW + 3
    cmd = ["nice", "-n", HOST_NICE, BIN, "host", f"--{transport}", "127.0.0.1:0", "--psk-file", KEY,
           "--source", SOURCE, "--bitrate", str(BITRATE), "--min-bitrate", str(BITRATE),
           "--renditions", "1", "--seconds", str(client_secs + 60), "--json"]
    host = subprocess.Popen(cmd, stdout=open(f"{WORK}/{tag}-host.json", "w"),
                            stderr=open(herr, "w"), stdin=subprocess.DEVNULL)
    procs.append(host)
    url = []

    def joined():
        m = re.search(rf"join with: linkstream client ({transport}://\S+)", read(herr))
        if m:
            url.append(m.group(1))
        if host.poll() is not None:
            die(f"{tag}: host exited: {read(herr)[-400:]}")
        return bool(m)

    wait_for(joined, 10, f"{tag}: the host's join line")
    wait_for(lambda: len(children(host.pid)) == 1, 10, f"{tag}: the capture child")
    capture = children(host.pid)[0]
    clients = []
    for i in range(n):
        c = subprocess.Popen(["nice", "-n", CLIENT_NICE, BIN, "client", url[0], "--psk-file", KEY, "--json",
                              "--seconds", str(client_secs), "--psnr-every", PSNR_EVERY,
                              "--timeout", "10"],
                             stdout=open(f"{WORK}/{tag}-c{i}.json", "w"),
                             stderr=open(f"{WORK}/{tag}-c{i}.err", "w"),
                             stdin=subprocess.DEVNULL)
        procs.append(c)
        clients.append(c)

    def all_decoding():
        for i, c in enumerate(clients):
            if c.poll() is not None:
                die(f"{tag}: viewer {i} exited early: {read(f'{WORK}/{tag}-c{i}.err')[-400:]}")
            if not re.search(r"decoded [1-9]", read(f"{WORK}/{tag}-c{i}.err")):
                return False
        return True

    wait_for(all_decoding, 20, f"{tag}: every viewer decoding")
    time.sleep(WARM)
    t0 = time.monotonic()
    h0, k0 = cpu_s(host.pid), cpu_s(capture)
    c0 = [cpu_s(c.pid) for c in clients]
    load0 = os.getloadavg()[0]
    time.sleep(WINDOW)
    h1, k1 = cpu_s(host.pid), cpu_s(capture)
    c1 = [cpu_s(c.pid) for c in clients]
    secs = time.monotonic() - t0
    for i, c in enumerate(clients):
        if c.wait(timeout=client_secs + 30) != 0:
            die(f"{tag}: viewer {i} failed: {read(f'{WORK}/{tag}-c{i}.err')[-400:]}")
    # Ctrl-C ends the host and prints its summary. The host listens for it
    # only between frames (a signal that comes while it encodes is not
    # seen), so it is sent again until the host goes.
    deadline = time.monotonic() + 30
    while host.poll() is None and time.monotonic() < deadline:
        host.send_signal(signal.SIGINT)
        try:
            host.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
    if host.poll() is None:
        die(f"{tag}: host still running 30 s after Ctrl-C")
    if host.returncode != 0:
        die(f"{tag}: host failed: {read(herr)[-400:]}")
    hrep = json.loads(read(f"{WORK}/{tag}-host.json"))
    if len(hrep["viewers"]) != n:
        die(f"{tag}: host served {len(hrep['viewers'])} viewers, {n} started")
    if hrep["encoded_mbps"] < 0.9 * BITRATE / 1e6:
        die(f"{tag}: the encoder made {hrep['encoded_mbps']:.2f} Mbit/s, not {BITRATE / 1e6:g} "
            "(a source too simple for the bitrate?)")
    if hrep["encode_errors"] or hrep["capture_dropped"]:
        die(f"{tag}: host: {hrep['encode_errors']} encode errors, {hrep['capture_dropped']} captured frames dropped")
    for v in hrep["viewers"]:
        if v["frames_sent"] < MIN_SHARE * FPS * client_secs - 5:
            die(f"{tag}: host sent viewer {v['peer']} {v['frames_sent']} frames in {client_secs:g} s")
        if v["skip_events"]:
            die(f"{tag}: host skipped viewer {v['peer']} to a keyframe {v['skip_events']} times")
    decoded = []
    for i in range(n):
        r = json.loads(read(f"{WORK}/{tag}-c{i}.json"))
        # Up to 5 frames go to joining (the first keyframe) and to the
        # last frame in flight at the end; the viewer's own `seconds` also
        # counts its ending, so the nominal length is the measure.
        want = MIN_SHARE * FPS * client_secs - 5
        bad = [k for k in ("decode_errors", "index_mismatches", "index_unreadable",
                           "envelope_errors", "frames_lost", "frames_skipped") if r[k]]
        if r["frames_decoded"] != r["frames_received"]:
            bad.append("frames_received")
        if bad or r["frames_decoded"] < want:
            die(f"{tag}: viewer {i}: decoded {r['frames_decoded']} (want >= {want:.0f}), "
                + ", ".join(f"{k} {r[k]}" for k in bad))
        decoded.append(r["frames_decoded"])
    out = {
        "run": run, "transport": transport, "viewers": n, "source": SOURCE,
        "bitrate_bps": BITRATE, "window_s": round(secs, 3),
        "host_cpu": (h1 - h0) / secs, "capture_cpu": (k1 - k0) / secs,
        "clients_cpu": (sum(c1) - sum(c0)) / secs,
        "encoded_mbps": hrep["encoded_mbps"], "encode_ms_p50": hrep["encode_ms"]["p50"],
        "frames_decoded_min": min(decoded) if decoded else None,
        "frames_decoded_total": sum(decoded), "load1_at_start": load0,
    }
    return out


def main():
    print(f"bench-viewers: {SOURCE}, {BITRATE / 1e6:g} Mbit/s, window {WINDOW:g} s after "
          f"{WARM:g} s warm-up; load average {os.getloadavg()}", file=sys.stderr)
    rows = []
    for run in range(1, RUNS + 1):
        for transport in TRANSPORTS:
            for n in VIEWERS:
                try:
                    r = one(run, transport, n)
                except RunFailed as e:
                    if RETRIES < 1:
                        raise
                    # Other work on this machine can starve the host or a
                    # viewer for a moment; one retry, loudly.
                    print(f"bench-viewers: FAILED once: {e}; running it again", file=sys.stderr)
                    r = one(run, transport, n)
                rows.append(r)
                if AS_JSON:
                    print(json.dumps(r), flush=True)
                else:
                    print(f"run {run} {transport:3} {n:2} viewers: host {r['host_cpu']:.3f} cpu-s/s, "
                          f"capture {r['capture_cpu']:.3f}, clients {r['clients_cpu']:.3f} "
                          f"({r['clients_cpu'] / max(n, 1):.3f} each), encoded {r['encoded_mbps']:.2f} Mbit/s, "
                          f"encode p50 {r['encode_ms_p50']:.2f} ms, load {r['load1_at_start']:.1f}", flush=True)
            # Per run and transport: the marginal cost of a viewer.
            by = {r["viewers"]: r["host_cpu"] for r in rows if r["run"] == run and r["transport"] == transport}
            summary = {"run": run, "transport": transport, "summary": True}
            if 1 in by and 16 in by:
                summary["per_viewer_1_to_16"] = (by[16] - by[1]) / 15
            if 1 in by and 4 in by:
                summary["per_viewer_1_to_4"] = (by[4] - by[1]) / 3
            if 0 in by:
                summary["no_viewer"] = by[0]
                for k in by:
                    if k:
                        summary[f"encoder_share_{k}"] = by[0] / by[k]
            if AS_JSON:
                print(json.dumps(summary), flush=True)
            elif len(summary) > 3:
                print("  " + ", ".join(f"{k} {v:.4f}" for k, v in summary.items()
                                       if isinstance(v, float)), flush=True)


try:
    main()
except RunFailed as e:
    print(f"bench-viewers: FAIL: {e}", file=sys.stderr)
    sys.exit(1)
except BaseException:
    for p in procs:
        if p.poll() is None:
            p.kill()
    raise
EOF
