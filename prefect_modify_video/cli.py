"""The ``prefect-modify-video`` command: run the flow, make a sample, probe, plan, serve the fake API."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Iterator, Literal, Union, get_args, get_origin

# Before Prefect is imported: no telemetry from a command-line tool, and the ephemeral server
# (used when no PREFECT_API_URL is set) may take its time to start on a small machine.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

from pydantic import BaseModel, ValidationError  # noqa: E402
from pydantic.fields import FieldInfo  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

from prefect_modify_video.errors import InvalidInputError, ModifyVideoError  # noqa: E402
from prefect_modify_video.progress import INPUTS_CHECKED_RECORD_KEY, PROGRESS_RECORD_KEY  # noqa: E402

DEFAULT_SAMPLE = Path("samples/sample.mp4")
EXIT_BAD_INPUT = 2

# Older, shorter spellings of some generated flags, kept working (the README uses them).
FLAG_ALIASES = {("store_dir",): ["--store"], ("backend", "credentials_block"): ["--credentials"]}
# What `plan` reads: the backend and its model (prices), the segment length and the overlap.
PLAN_OPTIONS = {("backend", "name"), ("backend", "model"), ("max_segment_seconds",), ("seams", "overlap_frames")}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit 2), as the command's other input errors."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


@dataclass(frozen=True)
class ParameterOption:
    """One command-line flag made from a field of ``ModifyVideoParameters`` (or of a model nested in it)."""

    path: tuple[str, ...]
    field: FieldInfo
    flags: tuple[str, ...]

    @property
    def dest(self) -> str:
        return "__".join(self.path)


def parameter_options(model: type[BaseModel] | None = None, prefix: tuple[str, ...] = ()) -> list[ParameterOption]:
    """The flags of the run parameters: one per field, the fields of nested models (backend, seams, retries) flat.

    A field ``max_segment_seconds`` is ``--max-segment-seconds``; the backend's ``name`` is ``--backend``;
    ``FLAG_ALIASES`` adds older spellings. ``source`` is the command's positional argument.

    Example:
        >>> flags = {o.path: o.flags for o in parameter_options()}
        >>> flags[("backend", "name")], flags[("seams", "anchor_strength")], flags[("store_dir",)]
        (('--backend',), ('--anchor-strength',), ('--store-dir', '--store'))
    """
    from prefect_modify_video.parameters import ModifyVideoParameters

    model = model or ModifyVideoParameters
    options: list[ParameterOption] = []
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        if path == ("source",):
            continue
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            options += parameter_options(field.annotation, path)
            continue
        flag = f"--{prefix[-1]}" if prefix and name == "name" else "--" + name.replace("_", "-")
        options.append(ParameterOption(path, field, (flag, *FLAG_ALIASES.get(path, []))))
    return options


def _add_parameter_options(command: argparse.ArgumentParser, only: set[tuple[str, ...]] | None = None) -> None:
    """Adds the flags of ``parameter_options`` to a command, each nested model's in its own group of the help."""
    from prefect_modify_video.parameters import ModifyVideoParameters

    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in parameter_options():
        if only is not None and option.path not in only:
            continue
        target = command
        if len(option.path) > 1:
            group = option.path[0]
            if group not in groups:
                groups[group] = command.add_argument_group(
                    f"{group} options", ModifyVideoParameters.model_fields[group].description
                )
            target = groups[group]
        target.add_argument(*option.flags, dest=option.dest, default=None, **_argument_kind(option))


def _argument_kind(option: ParameterOption) -> dict:
    """``add_argument`` keywords for a field: its type, choices or on/off flag, and its description as help."""
    field = option.field
    annotation = field.annotation
    if get_origin(annotation) in (Union, UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    help_text = (field.description or field.title or "").replace("%", "%%")
    if field.default not in (None, "", PydanticUndefined) and annotation is not bool:
        help_text += f" (default: {field.default})"
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction, "help": help_text}
    if get_origin(annotation) is Literal:
        return {"choices": get_args(annotation), "help": help_text}
    return {"type": annotation if annotation in (int, float) else str, "metavar": option.path[-1].upper(),
            "help": help_text}


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="prefect-modify-video",
        description="Restyle videos of any length through modify-video services, as a Prefect flow.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def add_run_options(command: argparse.ArgumentParser) -> None:
        _add_parameter_options(command)
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
    _add_parameter_options(plan, only=PLAN_OPTIONS)
    plan.add_argument("--json", action="store_true")

    fake = commands.add_parser("fake-server", help="serve the fake provider APIs on 127.0.0.1 (for tests and demos)")
    fake.add_argument("--port", type=int, default=8765)
    return parser


def _parameters(args: argparse.Namespace):
    """The run's parameters from the options the user gave (so a preset fills only the others).

    Raises:
        InvalidInputError: a backend setting is given without ``--backend``.
    """
    from prefect_modify_video.parameters import ModifyVideoParameters

    given: dict = {}
    for option in parameter_options():
        value = getattr(args, option.dest, None)
        if value is not None:
            *parents, name = option.path
            target = given
            for parent in parents:
                target = target.setdefault(parent, {})
            target[name] = value
    backend = given.get("backend")
    if backend and "name" not in backend:
        flags = ", ".join(o.flags[0] for o in parameter_options() if o.path[0] == "backend" and o.path[1] in backend)
        raise InvalidInputError(f"{flags}: settings of a backend; name the backend too (--backend)")
    return ModifyVideoParameters(source=args.input, **given)


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


class _ConsoleGate(logging.Filter):
    """Holds Prefect's console lines of a run until its inputs are checked (the plan is logged).

    An input error found inside the flow (a URL that cannot be fetched, a missing block, an
    undecodable file...) then ends as the command's one ``error:`` line, without the run's
    start lines and tracebacks; any other outcome shows every held line, in order.
    """

    def __init__(self):
        super().__init__()
        self.holding = True
        self.held: list[tuple[logging.Handler, logging.LogRecord]] = []
        self.handlers = [
            handler
            for logger in [logging.getLogger(), *(
                logging.getLogger(name) for name in list(logging.Logger.manager.loggerDict) if name.startswith("prefect")
            )]
            for handler in logger.handlers
            if isinstance(handler, logging.StreamHandler)
        ]
        self.filters = {handler: _HeldBy(self, handler) for handler in self.handlers}
        for handler, gate in self.filters.items():
            handler.addFilter(gate)

    def hold(self, handler: logging.Handler, record: logging.LogRecord) -> bool:
        """Whether ``handler`` shows ``record`` now; held records are shown when the gate opens."""
        if not self.holding:
            return True
        if getattr(record, INPUTS_CHECKED_RECORD_KEY, False) or getattr(record, PROGRESS_RECORD_KEY, None):
            self.open()
            return True
        self.held.append((handler, record))
        return False

    def open(self) -> None:
        """Shows the held lines and lets every further one through."""
        self.holding = False
        held, self.held = self.held, []
        for handler, record in held:
            handler.handle(record)

    def close(self, *, drop: bool) -> None:
        """Takes the gate off the handlers, dropping (an input error) or showing what it held."""
        if drop:
            self.held = []
        self.open()
        for handler, gate in self.filters.items():
            handler.removeFilter(gate)


class _HeldBy(logging.Filter):
    def __init__(self, gate: _ConsoleGate, handler: logging.Handler):
        super().__init__()
        self.gate, self.handler = gate, handler

    def filter(self, record: logging.LogRecord) -> bool:
        return self.gate.hold(self.handler, record)


def _run(args: argparse.Namespace) -> int:
    from prefect_modify_video.flows.modify_video import check_inputs, modify_video
    from prefect_modify_video.parameters import flow_arguments

    from prefect_modify_video.stopping import stop_on_signals

    params = _parameters(args)
    check_inputs(params)
    _show_progress()
    gate = _ConsoleGate()
    try:
        # The first SIGINT/SIGTERM stops the waiting (saved jobs kept), a second one exits at once (130/143).
        with stop_on_signals():
            result = modify_video(**flow_arguments(params))
    except (InvalidInputError, ValidationError):
        gate.close(drop=True)
        raise
    finally:
        gate.close(drop=False)
    print(f"output: {result.output}")
    print(
        f"{result.segments} segments, {result.frames} frames, {result.duration_s:.3f} s, "
        f"{result.billed_calls} {'restyled' if result.free else 'paid calls'}, {result.reused_segments} reused, "
        f"${result.cost_usd:.2f}"
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


@contextmanager
def _probed_input(reference: str) -> Iterator:
    """Probes a source as the run would get it: a local path or ``file://`` URL in place, a URL or
    ``block://`` reference fetched first (into a temporary folder, removed on leaving).

    Yields:
        The source's ``VideoInfo`` (its ``path`` the local file, there until the block ends).

    Raises:
        InvalidInputError: the source cannot be fetched or is no usable video, naming it as given.
    """
    from prefect_modify_video.media.probe import probe_video
    from prefect_modify_video.storage.download import fetch_source
    from prefect_modify_video.storage.locations import errors_named_as, is_remote, local_path

    if not is_remote(reference):
        yield probe_video(local_path(reference))
        return
    folder = tempfile.mkdtemp(prefix="modify-video-probe-")
    try:
        fetched = fetch_source(reference, Path(folder), kind="video")
        with errors_named_as(fetched, reference):
            info = probe_video(fetched)
        yield info
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _plan(args: argparse.Namespace) -> int:
    from prefect_modify_video.run_plan import plan_run

    params = _parameters(args)
    with _probed_input(args.input) as info:
        # Planning makes no request, so it needs no key.
        run = plan_run(params, info, estimate_only=True)
    backend, plan, (width, height), estimate = run.backend, run.plan, run.sent_size, run.estimate_usd
    overlap_cost = run.overlap_cost_usd
    overlap = run.seams.overlap_frames
    report = {
        "backend": backend.name,
        "segments": [{**s.model_dump(), "billed_s": run.billed_seconds[s.index]} for s in plan.segments],
        "segment_count": len(plan.segments),
        "billed_seconds": run.billed_s,
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
            billed = run.billed_seconds[s.index]
            if abs(billed - s.sent_duration_s) > 1e-6:
                overlap_note += f", {s.sent_duration_s:.2f} s billed as {billed:g} s"
            print(
                f"{s.name}  {s.start_s:9.3f}-{s.end_s:9.3f} s  frames {s.first_frame}-{s.end_frame - 1} "
                f"({s.frames}{overlap_note})  seam before: {seam}"
            )
        print(
            f"{len(plan.segments)} segments, {run.billed_s:.2f} billed seconds at {width}x{height} "
            f"({plan.overlap_s:.2f} s of them overlaps, ${overlap_cost:.2f}), "
            f"estimated ${estimate:.2f} on {backend.name}"
        )
    return 0


def _quiet_exit() -> None:
    """Keeps an input error's exit to its one line: Prefect's services say nothing more as they stop.

    Loading a block queues an event; at exit Prefect's events worker warns that it is
    "still processing items" (a second line, about Prefect, not about the input).
    """
    import logging

    for name in ("EventsWorker", "APILogWorker"):
        logging.getLogger(name).setLevel(logging.ERROR)


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
            from prefect_modify_video.parameters import refuse_credentials

            try:
                refuse_credentials(args.input)
            except ValueError as error:
                raise InvalidInputError(f"source: {error}") from None
            from prefect_modify_video.storage.locations import is_remote, shown_location

            with _probed_input(args.input) as info:
                if is_remote(args.input):
                    info = info.model_copy(update={"path": shown_location(args.input)})
                print(info.model_dump_json(indent=None if args.json else 2))
            return 0
        if args.command == "plan":
            return _plan(args)
        if args.command == "fake-server":
            from prefect_modify_video.testing import run_fake_server

            run_fake_server(args.port)
            return 0
    except InvalidInputError as error:
        _quiet_exit()
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValidationError as error:
        _quiet_exit()
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        print(f"error: {problems}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ModifyVideoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 1


if __name__ == "__main__":
    sys.exit(main())
