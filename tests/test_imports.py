"""Every module imports on its own in a fresh interpreter (no import cycle hidden by import order), and the
public names of the packages are pinned (as httpx's tests/test_exported_members.py does)."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import prefect_modify_video

ROOT = Path(__file__).resolve().parents[1]


def all_modules() -> list[str]:
    """Every module and package of prefect_modify_video, by dotted name."""
    names = ["prefect_modify_video"]
    for module in pkgutil.walk_packages(prefect_modify_video.__path__, prefix="prefect_modify_video."):
        names.append(module.name)
    return sorted(names)


def test_the_walk_finds_the_layers():
    names = all_modules()
    assert {"prefect_modify_video.parameters", "prefect_modify_video.tasks.modify", "prefect_modify_video.cli"} <= set(
        names
    )
    assert len(names) > 30


@pytest.mark.parametrize("module", all_modules())
def test_module_imports_in_a_fresh_interpreter(module):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_parameters_import_no_flow_task_or_block():
    code = (
        "import sys, prefect_modify_video.parameters\n"
        "loaded = [m for m in sys.modules if m.startswith(('prefect_modify_video.flows', 'prefect_modify_video.tasks',"
        " 'prefect_modify_video.blocks')) or m == 'prefect']\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_documented_task_import_works_first():
    code = "from prefect_modify_video.tasks import probe_source_video; print(probe_source_video.name)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


EXPORTS = {
    "prefect_modify_video": [
        "BackendSpec",
        "BudgetExceededError",
        "FalCredentials",
        "FatalProviderError",
        "InvalidInputError",
        "LumaCredentials",
        "ModifyVideoError",
        "ModifyVideoParameters",
        "ModifyVideoPreset",
        "ModifyVideoResult",
        "ProviderError",
        "ReplicateCredentials",
        "RetryOptions",
        "RetryableProviderError",
        "SeamOptions",
        "SegmentsFailedError",
        "SegmindCredentials",
        "modify_video",
        "modify_video_batch",
        "preview_modes",
    ],
    "prefect_modify_video.flows": [
        "BackendSpec",
        "ModifyVideoParameters",
        "ModifyVideoResult",
        "RetryOptions",
        "SeamOptions",
        "SegmentsFailedError",
        "modify_video",
    ],
    "prefect_modify_video.tasks": [
        "RunSummary",
        "conform_modified_segment",
        "extract_video_segment",
        "finish_segment_clips",
        "join_video_segments",
        "modify_video_segment",
        "neighbour_first_frame",
        "plan_video_segments",
        "probe_source_video",
        "report_modify_video_run",
        "report_video_seams",
    ],
    "prefect_modify_video.blocks": [
        "FalCredentials",
        "LumaCredentials",
        "ModifyVideoPreset",
        "ReplicateCredentials",
        "SegmindCredentials",
        "credentials_block_for",
    ],
    "prefect_modify_video.testing": [
        "FakeModifyServer",
        "Fault",
        "FaultKind",
        "ProviderStats",
        "ReceivedCall",
        "render_modified_clip",
        "run_fake_server",
    ],
}

# Names a package's own code needs that are not part of its interface.
NOT_EXPORTED = {"annotations", "TYPE_CHECKING", "Any"}


def public_members(module: ModuleType) -> list[str]:
    """The names a package offers: what ``dir`` lists (lazy names included), but private names, submodules and
    the helpers of ``NOT_EXPORTED``."""
    names = []
    for name in dir(module):
        if name.startswith("_") or name in NOT_EXPORTED:
            continue
        if isinstance(module.__dict__.get(name), ModuleType):
            continue
        names.append(name)
    return sorted(names)


@pytest.mark.parametrize("package", sorted(EXPORTS))
def test_all_is_pinned_sorted_and_complete(package):
    module = importlib.import_module(package)
    assert module.__all__ == EXPORTS[package], "a change of the public names is a change of the interface"
    assert module.__all__ == sorted(module.__all__)
    assert module.__all__ == public_members(module), "every public name is in __all__ and nothing else"
    for name in module.__all__:
        assert getattr(module, name) is not None
