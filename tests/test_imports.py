"""Every module imports on its own in a fresh interpreter (no import cycle hidden by import order), and the
public names of the packages are pinned (as httpx's tests/test_exported_members.py does)."""

from __future__ import annotations

import importlib
import json
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


# Runs in a fresh interpreter: imports the third-party libraries once (the slow part), then imports each module of
# the package in a forked child in which no module of the package is loaded yet; prints the modules that failed.
FORK_EACH = """
import json, os, sys, traceback
import numpy, pydantic, httpx, fsspec, prefect, prefect.flows, prefect.tasks, prefect.blocks.core  # noqa: E401
import prefect.artifacts, prefect.task_runners, prefect.futures, prefect.filesystems, prefect.cache_policies  # noqa: E401
import prefect.client.orchestration, prefect.events, prefect.results, prefect.logging  # noqa: E401
assert not [m for m in sys.modules if m.startswith("prefect_modify_video")], "loaded before the check"
failed = {}
for name in json.loads(sys.argv[1]):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            __import__(name)
            code = 0
        except BaseException:
            os.write(write, traceback.format_exc().encode())
            code = 1
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        error = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status:
        failed[name] = error[-2000:] or f"exit status {status}"
print(json.dumps(failed))
"""


@pytest.mark.slow  # a child per module, about 17 s: with the slow tests for the default run's 10 minutes
@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks a child per module")
def test_every_module_imports_in_a_fresh_interpreter():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-c", FORK_EACH, json.dumps(all_modules())],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    failed = json.loads(done.stdout.strip().splitlines()[-1])
    assert not failed, "\n\n".join(f"{name}:\n{error}" for name, error in failed.items())


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
        "LumaAgentsCredentials",
        "LumaCredentials",
        "ModifyVideoError",
        "ModifyVideoParameters",
        "ModifyVideoPreset",
        "ModifyVideoResult",
        "ProviderError",
        "ReplicateCredentials",
        "RetryOptions",
        "RetryableProviderError",
        "RunwayCredentials",
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
        "flow_arguments",
        "modify_video",
    ],
    "prefect_modify_video.tasks": [
        "RunSummary",
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
        "LumaAgentsCredentials",
        "LumaCredentials",
        "ModifyVideoPreset",
        "ReplicateCredentials",
        "RunwayCredentials",
        "SegmindCredentials",
        "ServiceCredentials",
        "build_backend",
        "credentials_block_for",
    ],
    "prefect_modify_video.testing": [
        "DIALECTS",
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


LAYERS = ["errors", "limits", "stopping", "media", "storage", "providers", "testing", "parameters", "blocks", "run_plan", "claims", "store",
          "progress", "tasks", "flows", "cli"]
"""The package's layers, lowest first: a module imports only from its own layer or lower ones."""


def test_layers_point_one_way():
    import ast

    package = Path(prefect_modify_video.__file__).parent
    upward = []
    for path in package.rglob("*.py"):
        relative = path.relative_to(package.parent).with_suffix("").parts
        if len(relative) < 2 or relative[1] == "__init__":
            continue  # the package's __init__ re-exports the public names of every layer
        source_layer = LAYERS.index(relative[1])
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("prefect_modify_video"):
                continue
            parts = node.module.split(".")
            targets = [parts[1]] if len(parts) > 1 else [alias.name for alias in node.names]
            for target in targets:
                if LAYERS.index(target) > source_layer:
                    upward.append(f"{'/'.join(relative)} imports {node.module}.{target}")
    assert not upward, "imports pointing up the layers:\n" + "\n".join(upward)
