"""Every block of prefect_modify_video passes Prefect's BlockStandardTestSuite."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from prefect.utilities.dispatch import get_registry_for_type
from prefect.utilities.importtools import to_qualified_name

import prefect_modify_video.blocks  # noqa: F401  (registers the blocks)
from prefect_modify_video.blocks import (
    FalCredentials,
    LumaAgentsCredentials,
    LumaCredentials,
    ModifyVideoPreset,
    ReplicateCredentials,
    RunwayCredentials,
    SegmindCredentials,
    credentials_block_for,
)
from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.providers.fal import FalBackend
from prefect_modify_video.providers.luma import LumaBackend
from prefect_modify_video.providers.replicate import ReplicateBackend
from prefect_modify_video.providers.segmind import SegmindAsyncBackend, SegmindBackend


def find_module_blocks() -> list[type[Block]]:
    """The registered blocks defined in this package."""
    return sorted(
        (
            block
            for block in get_registry_for_type(Block).values()
            if to_qualified_name(block).startswith("prefect_modify_video")
        ),
        key=lambda block: block.__name__,
    )


def test_the_credentials_and_preset_blocks_are_registered():
    assert find_module_blocks() == [
        FalCredentials, LumaAgentsCredentials, LumaCredentials, ModifyVideoPreset, ReplicateCredentials,
        RunwayCredentials, SegmindCredentials,
    ]


@pytest.mark.parametrize("block", find_module_blocks())
class TestAllBlocksAdhereToStandards(BlockStandardTestSuite):
    @pytest.fixture
    def block(self, block):
        return block

    @pytest.mark.skip(reason="downloads the logo: needs the internet")
    def test_has_a_valid_image(self, block):
        """Skipped offline; ``test_has_a_logo_url`` checks what can be checked."""

    def test_has_a_logo_url(self, block):
        assert str(block._logo_url).startswith("https://")


@pytest.mark.parametrize(
    ("block", "options", "backend_class"),
    [
        (SegmindCredentials, {}, SegmindBackend),
        (SegmindCredentials, {"use_async_api": True}, SegmindAsyncBackend),
        (LumaCredentials, {"model": "ray-flash-2"}, LumaBackend),
        (FalCredentials, {}, FalBackend),
        (ReplicateCredentials, {}, ReplicateBackend),
    ],
)
def test_get_client_builds_the_backend(block, options, backend_class):
    credentials = block(api_key="sk-block-secret", base_url="http://127.0.0.1:9", **options)
    backend = credentials.get_client(poll_interval_seconds=0.5)
    assert type(backend) is backend_class
    assert backend.base_url == "http://127.0.0.1:9"
    assert backend.poll_interval_seconds == 0.5
    assert "sk-block-secret" in "".join(backend._auth_headers().values())
    assert "sk-block-secret" not in repr(credentials) and "sk-block-secret" not in repr(backend)
    if block is LumaCredentials:
        assert backend.model == "ray-flash-2" and backend.max_segment_seconds == 15.0


def test_blocks_default_to_the_real_services():
    assert SegmindCredentials(api_key="k").base_url == "https://api.segmind.com"
    assert LumaCredentials(api_key="k").base_url == "https://api.lumalabs.ai"
    assert FalCredentials(api_key="k").base_url == "https://queue.fal.run"
    assert ReplicateCredentials(api_key="k").base_url == "https://api.replicate.com"


def test_credentials_block_for():
    assert credentials_block_for("segmind-async") is SegmindCredentials
    assert credentials_block_for("luma") is LumaCredentials
    with pytest.raises(InvalidInputError, match="no credentials block"):
        credentials_block_for("local")


def test_prefect_block_register_registers_every_block_of_the_plugin(tmp_path):
    """``prefect block register -m prefect_modify_video`` (the README's setup step) against the test server."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "prefect block register -m prefect_modify_video" in readme
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "prefect_modify_video"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    expected = {block.get_block_type_slug() for block in find_module_blocks()}
    assert f"Successfully registered {len(expected)} blocks" in done.stdout, done.stdout

    async def slugs() -> set[str]:
        async with get_client() as client:
            return {block_type.slug for block_type in await client.read_block_types()}

    assert expected <= asyncio.run(slugs())
