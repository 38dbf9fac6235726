"""A key saved in a credentials block is used, and never shows in logs, artifacts, parameters,
errors or the result store."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prefect.client.orchestration import get_client

from prefect_modify_video.blocks import SegmindCredentials
from prefect_modify_video.flows import BackendSpec, ModifyVideoParameters, SegmentsFailedError, modify_video
from prefect_modify_video.parameters import flow_arguments
from prefect_modify_video.media.sample import make_sample_video
from prefect_modify_video.testing import FakeModifyServer

SECRET = "sk-live-SECRET-4f9a1c2e7b"


async def _everything_the_server_kept() -> str:
    async with get_client() as client:
        runs = await client.read_flow_runs()
        artifacts = await client.read_artifacts()
        logs = await client.read_logs()
    return "\n".join(
        [str(r.parameters) for r in runs]
        + [str(a.data) + str(a.description) for a in artifacts]
        + [log.message for log in logs]
    )


def test_a_saved_block_works_and_its_key_leaks_nowhere(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
    caplog.set_level(logging.DEBUG)
    source = make_sample_video(tmp_path / "s.mp4", seconds=2, width=160, height=90, fps=24, scenes=1)
    with FakeModifyServer(api_key=SECRET) as server:
        SegmindCredentials(api_key=SECRET, base_url=server.base_url).save("segmind-test", overwrite=True)
        loaded = SegmindCredentials.load("segmind-test")
        assert loaded.api_key.get_secret_value() == SECRET and loaded.base_url == server.base_url
        params = ModifyVideoParameters(
            source=str(source),
            prompt="oil painting",
            output=str(tmp_path / "out.mp4"),
            backend=BackendSpec(name="segmind", credentials_block="segmind-test"),
            store_dir=str(tmp_path / "store"),
        )
        result = modify_video(**flow_arguments(params))
        assert result.billed_calls == 1 and server.stats("segmind").billed == 1

        # A wrong key: the error names the block to fix, not the key.
        SegmindCredentials(api_key=SECRET + "-old", base_url=server.base_url).save("segmind-test", overwrite=True)
        with pytest.raises(SegmentsFailedError) as caught:
            modify_video(**flow_arguments(params.model_copy(update={"prompt": "another prompt", "output": str(tmp_path / "b.mp4")})))
    assert "AuthenticationError" in str(caught.value)
    kept = asyncio.run(_everything_the_server_kept())
    stored = "".join(p.read_text(errors="replace") for p in (tmp_path / "store").rglob("*") if p.suffix == ".json")
    store_names = " ".join(p.name for p in (tmp_path / "store").rglob("*"))
    for place, text in {
        "logs": caplog.text,
        "server": kept,
        "error": str(caught.value),
        "store records": stored,
        "store keys": store_names,
    }.items():
        assert SECRET not in text, f"the key leaked into {place}"
        assert SECRET[:-3] not in text, f"part of the key leaked into {place}"
