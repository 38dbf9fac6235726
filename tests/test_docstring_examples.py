"""The ``>>>`` examples in the package's docstrings run as written."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import prefect_modify_video

MODULES = sorted(
    module.name
    for module in pkgutil.walk_packages(prefect_modify_video.__path__, "prefect_modify_video.")
    if ">>> " in Path(importlib.util.find_spec(module.name).origin).read_text()
)


def test_some_modules_have_examples():
    assert len(MODULES) >= 5


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
