"""The ``prefect-modify-video`` command: run the flow, make a sample, probe, plan, serve the fake API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Before Prefect is imported: no telemetry from a command-line tool, and the ephemeral server
# (used when no PREFECT_API_URL is set) may take its time to start on a small machine.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

from pydantic import ValidationError  # noqa: E402

from prefect_modify_video.errors import InvalidInputError, ModifyVideoError  # noqa: E402

DEFAULT_SAMPLE = Path("samples/sample.mp4")
EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefect-modify-video",
        description="Restyle videos of any length through modify-video services, as a Prefect flow.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def add_run_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--prompt", help="the look to give the video")
        command.add_argument("--mode", help="adhere_1..3, flex_1..3 or reimagine_1..3 (default flex_1)")
        command.add_argument("--preset", help="name of a saved preset block; options given here override it")
        command.add_argument("--first-frame", help="image: a restyled version of the first frame")
        command.add_argument("--backend", help="local (default), segmind, segmind-async, luma, fal, replicate")
        command.add_argument("--credentials", help="name of a saved credentials block of the backend")
        command.add_argument("--base-url", help="another address for the service (a proxy or test server)")
        command.add_argument("--upload-url", help="HTTP PUT store for services that take media by URL (Luma)")
        command.add_argument(
            "--upload-block", help="or block://remote-file-system/<name>/<folder> on S3/GCS, read by presigned URL"
        )
        command.add_argument("--poll-interval-seconds", type=float, help="seconds between status checks of a queued job")
        command.add_argument("--output", help="output path (default: <source>.modified.<ext>)")
        command.add_argument("--max-segment-seconds", type=float, help="longest segment (default: the service's cap)")
        command.add_argument("--concurrency", type=int, help="segments in flight at once")
        command.add_argument(
            "--store", help="paid results: a folder or block://<type>/<name>/<folder> (default: under PREFECT_HOME)"
        )
        command.add_argument("--max-cost-usd", type=float, help="budget: refuse or stop before passing it")
        command.add_argument(
            "--anchor-colours", action=argparse.BooleanOptionalAction, default=None,
            help="correct colour drift between segments (default: on for services, off for local)",
        )
        command.add_argument(
            "--anchor-strength", type=float,
            help="0-1: weight of the colour correction away from in-shot seams (default 1)",
        )
        command.add_argument(
            "--overlap-frames", type=int,
            help="frames sent with both segments of an in-shot seam and cross-blended (default: 12, local 0)",
        )
        command.add_argument(
            "--sequential", action="store_true",
            help="continuity over speed: an in-shot segment waits for the previous one and starts from its answer",
        )
        command.add_argument("--refresh", action="store_true", help="pay again instead of reusing stored results")
        command.add_argument("--json", action="store_true", help="print the result as one JSON line at the end")

    run = commands.add_parser("run", help="restyle a video")
    run.add_argument("input", help="the source video")
    add_run_options(run)

    demo = commands.add_parser("demo", help="make the sample video if needed, then restyle it")
    demo.add_argument("input", nargs="?", help=f"the source video (default: {DEFAULT_SAMPLE}, made if missing)")
    add_run_options(demo)
    # No grain by default: encoding grain is most of the time (75 s sample: 5:54 with it, 1:00 without).
    demo.set_defaults(prompt="warm teal and orange film look", mode="flex_2")

    sample = commands.add_parser("sample", help="write the sample video (shots with hard cuts and a 440 Hz tone)")
    sample.add_argument("output")
    sample.add_argument("--seconds", type=float, default=75.0)
    sample.add_argument("--width", type=int, default=1280)
    sample.add_argument("--height", type=int, default=720)
    sample.add_argument("--fps", type=int, default=30)

    probe = commands.add_parser("probe", help="print what the pipeline knows about a video")
    probe.add_argument("input")
    probe.add_argument("--json", action="store_true")

    plan = commands.add_parser("plan", help="print the segments and estimated cost without running anything")
    plan.add_argument("input")
    plan.add_argument("--backend", default="local")
    plan.add_argument("--max-segment-seconds", type=float)
    plan.add_argument(
        "--overlap-frames", type=int, help="frames shared at each in-shot seam (default: 12, local 0)"
    )
    plan.add_argument("--json", action="store_true")

    fake = commands.add_parser("fake-server", help="serve the fake provider APIs on 127.0.0.1 (for tests and demos)")
    fake.add_argument("--port", type=int, default=8765)
    return parser


def _parameters(args: argparse.Namespace):
    """The run's parameters from the options the user gave (so a preset fills only the others)."""
    from prefect_modify_video.flows.parameters import BackendSpec, ModifyVideoParameters

    backend = {
        "name": args.backend,
        "credentials_block": args.credentials,
        "base_url": args.base_url,
        "upload_url": args.upload_url,
        "upload_block": args.upload_block,
        "poll_interval_seconds": args.poll_interval_seconds,
    }
    given = {
        "source": args.input,
        "prompt": args.prompt,
        "mode": args.mode,
        "preset": args.preset,
        "first_frame": args.first_frame,
        "output": args.output,
        "backend": BackendSpec(**{k: v for k, v in backend.items() if v is not None}) if args.backend else None,
        "max_segment_seconds": args.max_segment_seconds,
        "concurrency": args.concurrency,
        "store_dir": args.store,
        "refresh": args.refresh or None,
        "max_cost_usd": args.max_cost_usd,
        "anchor_colours": args.anchor_colours,
        "anchor_strength": args.anchor_strength,
        "overlap_frames": args.overlap_frames,
        "sequential": args.sequential or None,
    }
    return ModifyVideoParameters(**{k: v for k, v in given.items() if v is not None})


def _show_progress() -> None:
    """Draws segment progress on stderr: a bar on a terminal (Prefect's own lines quieter), lines elsewhere."""
    import logging

    from prefect_modify_video.progress import ProgressHandler

    handler = ProgressHandler()
    logging.getLogger("prefect.flow_runs").addHandler(handler)
    if handler.is_terminal and "PREFECT_LOGGING_LEVEL" not in os.environ:
        for name in ("prefect.flow_runs", "prefect.task_runs"):
            for prefect_handler in logging.getLogger(name).handlers:
                if prefect_handler is not handler:
                    prefect_handler.setLevel(logging.WARNING)


def _run(args: argparse.Namespace) -> int:
    from prefect_modify_video.flows.modify_video import check_inputs, modify_video

    params = _parameters(args)
    check_inputs(params)
    _show_progress()
    result = modify_video(params)
    print(f"output: {result.output}")
    print(
        f"{result.segments} segments, {result.frames} frames, {result.duration_s:.3f} s, "
        f"{result.billed_calls} paid calls, {result.reused_segments} reused, ${result.cost_usd:.2f}"
    )
    if args.json:
        print(json.dumps(result.model_dump()))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from prefect_modify_video.media.sample import make_sample_video

    if args.input is None:
        args.input = str(DEFAULT_SAMPLE)
        if not DEFAULT_SAMPLE.exists():
            print(f"making the sample video {DEFAULT_SAMPLE} (75 s, 1280x720, 30 fps, 440 Hz tone)", file=sys.stderr)
            make_sample_video(DEFAULT_SAMPLE)
    return _run(args)


def _plan(args: argparse.Namespace) -> int:
    from prefect_modify_video.blocks.credentials import build_backend
    from prefect_modify_video.flows.modify_video import segment_cost_estimates
    from prefect_modify_video.flows.parameters import BackendSpec, ModifyVideoParameters
    from prefect_modify_video.media.extract import service_size
    from prefect_modify_video.media.probe import probe_video
    from prefect_modify_video.media.plan import plan_video

    info = probe_video(args.input)
    # Planning makes no request, so it needs no key.
    backend = build_backend(BackendSpec(name=args.backend), api_key="plan-makes-no-request")
    cap = min(args.max_segment_seconds or backend.max_segment_seconds, backend.max_segment_seconds)
    overlap = ModifyVideoParameters(source=args.input, overlap_frames=args.overlap_frames).resolved_overlap_frames(
        backend
    )
    plan = plan_video(info, cap, overlap)
    width, height = service_size(info, backend.max_dimension)
    estimates = segment_cost_estimates(backend, plan, width, height)
    estimate = sum(estimates.values())
    # What the overlaps add: each segment's price with them less its price without.
    overlap_cost = estimate - sum(backend.estimate_cost_usd(s.duration_s, width, height) for s in plan.segments)
    report = {
        "backend": backend.name,
        "segments": [s.model_dump() for s in plan.segments],
        "segment_count": len(plan.segments),
        "billed_seconds": plan.billed_s,
        "overlap_frames": overlap,
        "overlap_seconds": plan.overlap_s,
        "billed_pixels": width * height * sum(round(s.sent_duration_s * 24) for s in plan.segments),
        "size_sent": [width, height],
        "estimated_cost_usd": round(estimate, 4),
        "overlap_cost_usd": round(overlap_cost, 4),
    }
    if args.json:
        print(json.dumps(report))
    else:
        for s in plan.segments:
            seam = "cut" if s.cut_before else ("start" if s.index == 0 else "in-shot")
            overlap_note = f", +{s.overlap_frames} overlap" if s.overlap_frames else ""
            print(
                f"{s.name}  {s.start_s:9.3f}-{s.end_s:9.3f} s  frames {s.first_frame}-{s.end_frame - 1} "
                f"({s.frames}{overlap_note})  seam before: {seam}"
            )
        print(
            f"{len(plan.segments)} segments, {plan.billed_s:.2f} billed seconds at {width}x{height} "
            f"({plan.overlap_s:.2f} s of them overlaps, ${overlap_cost:.2f}), "
            f"estimated ${estimate:.2f} on {backend.name}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``prefect-modify-video`` command."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "demo":
            return _demo(args)
        if args.command == "sample":
            from prefect_modify_video.media.sample import make_sample_video

            path = make_sample_video(args.output, seconds=args.seconds, width=args.width, height=args.height, fps=args.fps)
            print(path)
            return 0
        if args.command == "probe":
            from prefect_modify_video.media.probe import probe_video

            info = probe_video(args.input)
            print(info.model_dump_json(indent=None if args.json else 2))
            return 0
        if args.command == "plan":
            return _plan(args)
        if args.command == "fake-server":
            from prefect_modify_video.testing import run_fake_server

            run_fake_server(args.port)
            return 0
    except InvalidInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        print(f"error: {problems}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ModifyVideoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 1


if __name__ == "__main__":
    sys.exit(main())
