"""How much media work the pipeline adds around the paid calls, against one plain transcode.

On a 60 s 1280x720 30 fps source (made if missing), times the pipeline's own media work
(probe, plan with its cut detection, extract, conform, join; the backend excluded: each extracted clip stands in
for the service's answer) and one plain ``ffmpeg -i src -c:v libx264`` transcode of the same
source, in one run, and prints the ratio on its last line.

    python bench/overhead.py [--seconds 60] [--segment-seconds 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from prefect_modify_video.media.conform import conform_clip
from prefect_modify_video.media.extract import extract_segment
from prefect_modify_video.media.join import join_segments
from prefect_modify_video.media.ffmpeg import run_ffmpeg
from prefect_modify_video.media.plan import plan_video
from prefect_modify_video.media.probe import probe_video
from prefect_modify_video.media.sample import make_sample_video


def pipeline_media_work(source: Path, work: Path, segment_seconds: float) -> float:
    started = time.perf_counter()
    info = probe_video(source)
    plan = plan_video(info, segment_seconds)
    conformed = []
    for segment in plan.segments:
        clip = extract_segment(info, segment, work / f"x{segment.name}.mp4")
        conformed.append(conform_clip(clip, info, segment, work / f"c{segment.name}.mp4"))
    join_segments(conformed, info, work / "joined.mp4")
    return time.perf_counter() - started


def plain_transcode(source: Path, work: Path) -> float:
    started = time.perf_counter()
    run_ffmpeg(["-i", str(source), "-c:v", "libx264", "-c:a", "copy", "-y", str(work / "plain.mp4")])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--segment-seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        source = make_sample_video(work / "source.mp4", seconds=args.seconds, width=1280, height=720, fps=30)
        plain = plain_transcode(source, work)
        pipeline = pipeline_media_work(source, work, args.segment_seconds)
        print(f"source: {args.seconds:g} s 1280x720 30 fps, segments under {args.segment_seconds:g} s")
        print(f"plain libx264 transcode: {plain:.2f} s")
        print(f"pipeline media work:     {pipeline:.2f} s")
        print(f"overhead ratio (pipeline / plain transcode): {pipeline / plain:.2f}")


if __name__ == "__main__":
    main()
