"""Probe and plan of long sources: seconds per source minute and peak memory, by length.

For each size (default a 1920x1080 and a 64x64 source, 30 fps) and each length (default 1, 10
and 60 minutes), a source is made quickly (one minute of ``testsrc2`` with a cut every 20 s,
encoded at ``ultrafast``, then repeated by the concat demuxer with ``-c copy``), and a child
process probes and plans it (``probe_video``, ``plan_video``: the packet count and the one
small decode for cuts) as a run does. It prints the child's seconds per source minute and its
peak memory (its own, and the largest of the ffmpeg/ffprobe it ran): both should stay flat as
the source grows. CPU seconds (the child's and its programs') are printed too: on a shared
machine they say more than the wall time. The last line gives the largest slope growth (seconds per minute of the
longest source over the shortest's).

    python bench/scale.py [--minutes 1 10 60] [--sizes 1920x1080 64x64] [--segment-seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prefect_modify_video.media.ffmpeg import run_ffmpeg


def make_minute(destination: Path, width: int, height: int) -> Path:
    """One minute at 30 fps, three 20 s shots (hard cuts between them), ultrafast."""
    shots = [f"testsrc2=size={width}x{height}:rate=30", f"testsrc=size={width}x{height}:rate=30",
             f"smptebars=size={width}x{height}:rate=30"]  # fmt: skip
    args: list[str] = []
    for shot in shots:
        args += ["-f", "lavfi", "-i", f"{shot},trim=end_frame=600,setpts=PTS-STARTPTS"]
    args += ["-filter_complex", "[0:v][1:v][2:v]concat=n=3:v=1:a=0,format=yuv420p[v]", "-map", "[v]",
             "-c:v", "libx264", "-preset", "ultrafast", "-g", "60", "-y", str(destination)]  # fmt: skip
    run_ffmpeg(args)
    return destination


def make_long(minute: Path, minutes: int, destination: Path) -> Path:
    """``minutes`` copies of ``minute`` end to end, by stream copy."""
    listing = destination.with_suffix(".txt")
    listing.write_text(f"file '{minute}'\n" * minutes)
    run_ffmpeg(["-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", "-y", str(destination)])
    return destination


def child(source: str, segment_seconds: float) -> None:
    """Probes and plans ``source``; prints seconds, segments and peak memory as JSON."""
    from prefect_modify_video.media.plan import plan_video
    from prefect_modify_video.media.probe import probe_video

    started = time.perf_counter()
    info = probe_video(source)
    plan = plan_video(info, segment_seconds, 12)
    seconds = time.perf_counter() - started
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({
        "seconds": seconds,
        "cpu_seconds": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
        "frames": info.frames,
        "segments": len(plan.segments),
        "self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }))  # fmt: skip


def measure(source: Path, segment_seconds: float) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                                      os.environ.get("PYTHONPATH")]))}
    output = subprocess.run(
        [sys.executable, __file__, "--child", str(source), "--segment-seconds", str(segment_seconds)],
        capture_output=True, check=True, env=env,
    ).stdout  # fmt: skip
    return json.loads(output.decode().strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, nargs="+", default=[1, 10, 60])
    parser.add_argument("--sizes", nargs="+", default=["1920x1080", "64x64"])
    parser.add_argument("--segment-seconds", type=float, default=10.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.segment_seconds)
        return
    growth = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for size in args.sizes:
            width, height = (int(v) for v in size.split("x"))
            minute = make_minute(work / f"minute-{size}.mp4", width, height)
            slopes = []
            for minutes in sorted(args.minutes):
                source = make_long(minute, minutes, work / f"source-{size}-{minutes}.mp4")
                result = measure(source, args.segment_seconds)
                source.unlink()
                slope = result["seconds"] / minutes
                slopes.append(slope)
                print(
                    f"{size} {minutes:>4} min ({result['frames']} frames, {result['segments']} segments): "
                    f"{result['seconds']:.1f} s, {slope:.2f} s per source minute "
                    f"({result['cpu_seconds'] / minutes:.2f} s of CPU), peak memory "
                    f"{result['self_kb'] / 1024:.0f} MB (python), {result['children_kb'] / 1024:.0f} MB (ffmpeg)",
                    flush=True,
                )
            growth.append((size, slopes[-1] / slopes[0]))
    print("slope growth, longest over shortest: " + ", ".join(f"{size} {ratio:.2f}" for size, ratio in growth))


if __name__ == "__main__":
    main()
