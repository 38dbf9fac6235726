"""The whole media path of a run, against one plain transcode: a service run and a local-backend run.

On a 60 s 1280x720 30 fps source (shots of 12, 8, 28 and 12 s: three cuts, and the 28 s shot longer
than the 20 s cap, so split in its middle with an overlap), it times, in one process and one run:

- one plain ``ffmpeg -i src -c:v libx264`` transcode at the settings of the pipeline's output
  (``CONFORM_ENCODE``), audio copied: the yardstick;
- a default service run's media work: probe, plan (cut detection), extract, the answer's check,
  conform, finish (colour anchoring and the overlap blend), join, the seam report (metrics and
  contact sheet). The service itself is a stand-in costing no CPU: each extracted clip is its own
  answer. The tasks' own functions (``.fn``) and the segment task's steps (``extract_clip``,
  ``conform_answer``) run, without a Prefect server;
- the local backend's whole run the same way, its restyle included (prompt "warm vintage film"): it reads
  each segment from the source (``ModifyBackend.reads_source``), so no upload clip is extracted for it.

It prints each stage's wall and CPU seconds (CPU: this process and the programs it ran, which on a
shared machine varies far less than wall time), then on its last two lines each path against the
plain transcode. Probes kept by ``probe_video`` are forgotten before each path. With ``--commands``,
each stage's ffmpeg commands are listed before those lines, by CPU seconds (each runs under a small
Python wrapper that logs it; the wrappers' own start-up adds about 0.03 s of CPU a command to the totals),
then each path's CPU by kind: its final encodes (the floor: what the plain transcode does), its upload
encodes, other ffmpeg commands and the rest (this process, ffprobe, the wrappers).

    python bench/overhead.py [--seconds 60] [--segment-seconds 20] [--commands]
"""

from __future__ import annotations

import argparse
import atexit
import os
import resource
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

COMMAND_WRAPPER = """\
import os, resource, subprocess, sys
code = subprocess.call([os.environ["OVERHEAD_FFMPEG"], *sys.argv[1:]])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(os.environ["OVERHEAD_COMMAND_LOG"], "a") as log:
    log.write(f"{usage.ru_utime + usage.ru_stime:.3f}\\t{' '.join(sys.argv[1:])}\\n")
sys.exit(code)
"""


def log_ffmpeg_commands() -> Path:
    """Makes the media code run ffmpeg through a wrapper that logs each command's CPU seconds; returns the log.

    Set before ``media.ffmpeg`` is imported (it reads ``PREFECT_MODIFY_VIDEO_FFMPEG`` once).
    """
    folder = Path(tempfile.mkdtemp(prefix="overhead-commands-"))
    atexit.register(shutil.rmtree, folder, True)
    wrapper = folder / "ffmpeg"
    wrapper.write_text(f"#!{sys.executable}\n{COMMAND_WRAPPER}")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    os.environ["OVERHEAD_FFMPEG"] = shutil.which(os.environ.get("PREFECT_MODIFY_VIDEO_FFMPEG", "ffmpeg")) or "ffmpeg"
    os.environ["OVERHEAD_COMMAND_LOG"] = str(folder / "commands.log")
    os.environ["PREFECT_MODIFY_VIDEO_FFMPEG"] = str(wrapper)
    return folder / "commands.log"


COMMAND_LOG = log_ffmpeg_commands() if "--commands" in sys.argv else None

from prefect_modify_video.media.answers import covered_frames  # noqa: E402
from prefect_modify_video.media.conform import CONFORM_ENCODE  # noqa: E402
from prefect_modify_video.media.extract import EXTRACT_ENCODE, SourceSegment  # noqa: E402
from prefect_modify_video.media.ffmpeg import run_ffmpeg, write_with_ffmpeg  # noqa: E402
from prefect_modify_video.media.plan import DEFAULT_OVERLAP_FRAMES  # noqa: E402
from prefect_modify_video.media.probe import forget_probes, probe_video  # noqa: E402
from prefect_modify_video.media.sample import sample_scene_sources  # noqa: E402
from prefect_modify_video.media.seams import measure_seams_and_sheet  # noqa: E402
from prefect_modify_video.parameters import SeamOptions  # noqa: E402
from prefect_modify_video.providers.base import ModifyRequest  # noqa: E402
from prefect_modify_video.providers.local import LocalBackend  # noqa: E402
from prefect_modify_video.tasks import media as media_tasks  # noqa: E402
from prefect_modify_video.tasks.seams import finish_segment_clips, finished_in_conform  # noqa: E402

SHOTS_S = (12.0, 8.0, 28.0, 12.0)
WIDTH, HEIGHT, FPS = 1280, 720, 30


def make_source(destination: Path, seconds: float) -> Path:
    """Shots of ``SHOTS_S`` (scaled to ``seconds``) with hard cuts between them, and a tone."""
    scale = seconds / sum(SHOTS_S)
    sources = sample_scene_sources(WIDTH, HEIGHT, FPS)
    args: list[str] = []
    for k, shot in enumerate(SHOTS_S):
        frames = round(shot * scale * FPS)
        args += ["-f", "lavfi", "-i", f"{sources[k % len(sources)]},trim=end_frame={frames},setpts=PTS-STARTPTS"]
    args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    labels = "".join(f"[{k}:v]" for k in range(len(SHOTS_S)))
    args += [
        "-filter_complex", f"{labels}concat=n={len(SHOTS_S)}:v=1:a=0,format=yuv420p[v]",
        "-map", "[v]", "-map", f"{len(SHOTS_S)}:a", "-c:a", "aac", "-b:a", "128k",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-r", str(FPS), "-movflags", "+faststart",
    ]  # fmt: skip
    return write_with_ffmpeg(args, destination)


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and the programs it ran (ffmpeg, ffprobe)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _logged_commands() -> list[tuple[float, str]]:
    """The ffmpeg commands logged so far (``--commands``), as (CPU seconds, arguments)."""
    if COMMAND_LOG is None or not COMMAND_LOG.exists():
        return []
    lines = [line.split("\t", 1) for line in COMMAND_LOG.read_text().splitlines() if "\t" in line]
    return [(float(cpu), arguments) for cpu, arguments in lines]


def cpu_by_kind(clock: Clock) -> dict[str, float]:
    """A path's CPU seconds (``--commands``): its final encodes (``CONFORM_ENCODE``: the floor, as the plain
    transcode, each decoding its input), its upload encodes (``EXTRACT_ENCODE``), other ffmpeg commands
    (decodes for cut detection, statistics, seams; stream copies) and the rest (this process's own work,
    ffprobe, the wrappers' start-up).

    Example:
        >>> clock = Clock(); clock.cpu = 10.0
        >>> clock.commands = {"finish": [(6.0, "-i a.mp4 -vcodec libx264 -preset medium -crf 18 b.mp4")],
        ...                   "extract": [(2.5, "-i s.mp4 -crf 16 -preset ultrafast -vcodec libx264 c.mp4")]}
        >>> cpu_by_kind(clock)
        {'final encodes': 6.0, 'upload encodes': 2.5, 'other ffmpeg': 0.0, 'the rest': 1.5}
    """
    def kind(arguments: str) -> str:
        words = arguments.split()
        options = dict(zip(words, words[1:]))
        if (options.get("-preset"), options.get("-crf")) == (CONFORM_ENCODE["preset"], str(CONFORM_ENCODE["crf"])):
            return "final encodes"
        return "upload encodes" if options.get("-preset") == EXTRACT_ENCODE["preset"] and "-crf" in options else "other ffmpeg"

    kinds = dict.fromkeys(("final encodes", "upload encodes", "other ffmpeg"), 0.0)
    for commands in clock.commands.values():
        for cpu, arguments in commands:
            kinds[kind(arguments)] += cpu
    return {**kinds, "the rest": clock.cpu - sum(kinds.values())}


class Clock:
    """Seconds spent per stage, and CPU seconds in all (on a shared machine they vary less)."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self.stage_cpu: dict[str, float] = {}
        self.commands: dict[str, list[tuple[float, str]]] = {}
        self._logged = _logged_commands()
        self._last = time.perf_counter()
        self._cpu_start = self._cpu_last = cpu_seconds()
        self.cpu = 0.0

    def lap(self, stage: str) -> None:
        now, cpu = time.perf_counter(), cpu_seconds()
        self.stages[stage] = self.stages.get(stage, 0.0) + now - self._last
        self.stage_cpu[stage] = self.stage_cpu.get(stage, 0.0) + cpu - self._cpu_last
        self._last, self._cpu_last = now, cpu
        self.cpu = cpu - self._cpu_start
        logged = _logged_commands()
        self.commands.setdefault(stage, []).extend(logged[len(self._logged) :])
        self._logged = logged

    @property
    def total(self) -> float:
        return sum(self.stages.values())


def plain_transcode(source: Path, work: Path) -> Clock:
    clock = Clock()
    settings = [item for key, value in CONFORM_ENCODE.items() for item in (f"-{key}", str(value))]
    run_ffmpeg(["-i", str(source), "-map", "0:v:0", "-map", "0:a?", *settings, "-c:a", "copy",
                "-y", str(work / "plain.mp4")])  # fmt: skip
    clock.lap("transcode")
    return clock


def media_path(source: Path, work: Path, segment_seconds: float, *, local: bool) -> Clock:
    """One run's media work, as the flow does it, the service a stand-in (or the local backend)."""
    work.mkdir(parents=True, exist_ok=True)
    forget_probes()  # each path probes what it needs, as a run of its own would
    clock = Clock()
    info = media_tasks.probe_source_video.fn(str(source))
    seams = SeamOptions().resolved_for(LocalBackend) if local else SeamOptions(anchor_colours=True,
                                                                                overlap_frames=DEFAULT_OVERLAP_FRAMES)
    clock.lap("probe")
    plan = media_tasks.plan_video_segments.fn(info, segment_seconds, seams.overlap_frames)
    clock.lap("plan")
    backend = LocalBackend()
    ready_to_join = finished_in_conform(plan, seams)
    extracted, conformed = {}, {}
    for segment in plan.segments:
        if local:
            # As the segment task does for a backend that reads the source (``reads_source``): no upload clip.
            sent = SourceSegment(info, segment, backend.max_dimension)
            request = ModifyRequest(clip=None, source=sent, prompt="warm vintage film", mode="flex_1")
            answer = backend.restyle(request, work / "answers" / f"{segment.name}.mp4")
            clock.lap("restyle (local)")
        else:
            sent = media_tasks.extract_clip(info, segment, str(work), 1280)
            extracted[segment.index] = str(sent)
            clock.lap("extract")
            answer = sent
        probe_video(answer)
        covered_frames(answer, sent)
        clock.lap("answer check")
        conformed[segment.index] = str(media_tasks.conform_answer(
            Path(answer), info, segment, str(work), final=segment.index in ready_to_join,
            pending=segment.index not in ready_to_join,
        ))
        clock.lap("conform")
    finished = finish_segment_clips.fn(plan, info, extracted, conformed, str(work), seams=seams,
                                       max_dimension=backend.max_dimension if local else 1280)
    clock.lap("finish")
    output = media_tasks.join_video_segments.fn(finished, info, str(work / "output.mp4"))
    clock.lap("join")
    later = plan.segments[1:]
    measure_seams_and_sheet(
        source, output, [s.first_frame for s in later], on_cut=[s.cut_before for s in later],
        overlaps=[s.overlap_frames for s in later], sheet_png=work / "seams.png",
    )
    clock.lap("seam report")
    result = probe_video(output)
    if result.frames != info.frames:
        raise SystemExit(f"bench: the output has {result.frames} frames, the source {info.frames}")
    return clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--segment-seconds", type=float, default=20.0)
    parser.add_argument("--commands", action="store_true", help="list each stage's ffmpeg commands by CPU seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        source = make_source(work / "source.mp4", args.seconds)
        plain = plain_transcode(source, work)
        service = media_path(source, work / "service", args.segment_seconds, local=False)
        local = media_path(source, work / "local", args.segment_seconds, local=True)
        print(f"source: {args.seconds:g} s {WIDTH}x{HEIGHT} {FPS} fps, shots {SHOTS_S}, cap {args.segment_seconds:g} s")
        print(f"plain libx264 transcode ({CONFORM_ENCODE['preset']}, crf {CONFORM_ENCODE['crf']}): "
              f"{plain.total:.2f} s, {plain.cpu:.2f} s of CPU")  # fmt: skip
        for name, clock in (("service run", service), ("local run", local)):
            stages = ", ".join(
                f"{stage} {seconds:.2f}/{clock.stage_cpu[stage]:.2f}" for stage, seconds in clock.stages.items()
            )
            print(f"{name} media work: {clock.total:.2f} s, {clock.cpu:.2f} s of CPU (stage wall/CPU s: {stages})")
        if args.commands:
            for name, clock in (("plain", plain), ("service run", service), ("local run", local)):
                for stage, commands in clock.commands.items():
                    for cpu, arguments in sorted(commands, reverse=True):
                        print(f"  {name} / {stage}: {cpu:6.2f} s CPU  ffmpeg {arguments.removeprefix('-hide_banner -nostdin -loglevel error ')[:150]}")
            for name, clock in (("service run", service), ("local run", local)):
                kinds = cpu_by_kind(clock)
                print(f"{name} CPU by kind (s): " + ", ".join(f"{kind} {cpu:.2f}" for kind, cpu in kinds.items())
                      + f"; final encodes / plain transcode: {kinds['final encodes'] / plain.cpu:.2f}")
        print(f"service path ratio (media work / plain transcode): {service.total / plain.total:.2f} "
              f"(CPU: {service.cpu / plain.cpu:.2f})")
        print(f"local backend ratio (whole run / plain transcode): {local.total / plain.total:.2f} "
              f"(CPU: {local.cpu / plain.cpu:.2f})")


if __name__ == "__main__":
    main()
