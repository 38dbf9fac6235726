"""The backend registry, the credentials blocks and ``build_backend`` name each service once."""

from __future__ import annotations

import uuid

import pytest

import prefect_modify_video.blocks as blocks
from prefect_modify_video.blocks import (
    LumaCredentials,
    SegmindCredentials,
    ServiceCredentials,
    build_backend,
    credentials_block_for,
)
from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.parameters import BackendSpec, BackendName, flow_arguments
from prefect_modify_video.providers.base import ModifyBackend
from prefect_modify_video.providers.luma import LumaBackend
from prefect_modify_video.providers.registry import BACKEND_NAMES, BACKENDS, backend_class
from prefect_modify_video.providers.segmind import SegmindAsyncBackend, SegmindBackend
from prefect_modify_video.providers.uploaders import HttpPutUploader

PAID = [cls for cls in BACKENDS.values() if not cls.is_free]


def test_the_registry_is_derived_from_the_classes():
    assert BACKEND_NAMES == (
        "local", "segmind", "segmind-async", "luma", "fal", "replicate", "runway", "luma-agents", "lucy"
    )
    assert set(BackendName.__args__) == set(BACKEND_NAMES)
    for name, cls in BACKENDS.items():
        assert cls.name == name and issubclass(cls, ModifyBackend)
        assert backend_class(name.upper().replace("-", "_")) is cls
    assert [cls.name for cls in BACKENDS.values() if cls.is_free] == ["local"]


@pytest.mark.parametrize("cls", PAID, ids=lambda cls: cls.name)
def test_each_paid_backend_names_an_existing_block_that_builds_it(cls):
    block_class = getattr(blocks, cls.credentials_block)
    assert issubclass(block_class, ServiceCredentials) and credentials_block_for(cls.name) is block_class
    assert cls.credentials_block in blocks.__all__
    backend = block_class(api_key="sk-k").for_backend(cls.name).get_client(uploader=HttpPutUploader("http://s.test"))
    assert backend.name == cls.name and type(backend) is cls
    assert backend.base_url == cls.default_base_url
    assert cls.api_key_env and cls.api_key_env in cls.missing_key_message()
    assert cls.credentials_block in cls.credentials_hint()


def test_one_key_variable_per_service():
    env_by_service: dict[str, set[str]] = {}
    for cls in PAID:
        env_by_service.setdefault(cls.service, set()).add(cls.api_key_env)
    assert env_by_service["segmind"] == {"SEGMIND_API_KEY"}
    assert all(len(names) == 1 for names in env_by_service.values())
    all_names = [next(iter(names)) for names in env_by_service.values()]
    assert len(all_names) == len(set(all_names)) == 6
    assert env_by_service["fal"] == {"FAL_KEY"}  # Lucy Restyle bills the fal account
    blocks_by_service = {cls.service: cls.credentials_block for cls in PAID}
    assert all(blocks_by_service[cls.service] == cls.credentials_block for cls in PAID)


def test_capabilities():
    assert [cls.name for cls in BACKENDS.values() if cls.requires_uploader] == ["luma"]
    assert [cls.name for cls in BACKENDS.values() if cls.uses_reference_frame] == ["local"]
    assert [cls.name for cls in BACKENDS.values() if not cls.takes_modes] == ["runway", "lucy"]
    assert [cls.name for cls in BACKENDS.values() if cls.guide_keyframes] == ["runway", "luma-agents"]
    assert [cls.name for cls in BACKENDS.values() if not cls.takes_first_frame] == ["lucy"]
    assert BACKENDS["local"].default_overlap_frames == 0
    assert all(cls.default_overlap_frames > 0 for cls in PAID)


def test_local_needs_no_block():
    with pytest.raises(InvalidInputError, match="no credentials block"):
        credentials_block_for("local")
    backend = build_backend(BackendSpec(name="local", credentials_block="ignored"))
    assert backend.name == "local" and backend.estimate_cost_usd(10, 1280, 720) == 0


def _saved(block: ServiceCredentials) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    block.save(name)
    return name


def test_a_saved_segmind_block_with_the_async_api_gives_the_v2_backend(monkeypatch):
    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
    name = _saved(SegmindCredentials(api_key="sk-saved", base_url="http://127.0.0.1:9", use_async_api=True))
    backend = build_backend(BackendSpec(name="segmind", credentials_block=name, poll_interval_seconds=0.5))
    assert type(backend) is SegmindAsyncBackend
    assert backend.base_url == "http://127.0.0.1:9" and backend.poll_interval_seconds == 0.5
    assert "sk-saved" in "".join(backend._auth_headers().values())

    plain = _saved(SegmindCredentials(api_key="sk-saved"))
    assert type(build_backend(BackendSpec(name="segmind", credentials_block=plain))) is SegmindBackend
    # Naming the v2 backend asks for the v2 API whatever the saved block says.
    assert type(build_backend(BackendSpec(name="segmind-async", credentials_block=plain))) is SegmindAsyncBackend


def test_a_saved_luma_block_gives_its_model_and_the_spec_overrides_it(monkeypatch):
    monkeypatch.delenv("LUMAAI_API_KEY", raising=False)
    name = _saved(LumaCredentials(api_key="sk-saved", model="ray-flash-2"))
    backend = build_backend(BackendSpec(name="luma", credentials_block=name, upload_url="http://store.test"))
    assert type(backend) is LumaBackend
    assert backend.model == "ray-flash-2" and backend.max_segment_seconds == 15.0
    assert isinstance(backend.uploader, HttpPutUploader) and backend.uploader.base_url == "http://store.test"
    assert backend.base_url == "https://api.lumalabs.ai"

    spec = BackendSpec(name="luma", credentials_block=name, model="ray-2", base_url="http://127.0.0.1:9")
    overridden = build_backend(spec)
    assert overridden.model == "ray-2" and overridden.base_url == "http://127.0.0.1:9"


def test_the_environment_key_goes_through_the_block(monkeypatch):
    monkeypatch.setenv("SEGMIND_API_KEY", " sk-env ")
    backend = build_backend(BackendSpec(name="segmind-async"))
    assert type(backend) is SegmindAsyncBackend
    assert backend._auth_headers() == {"x-api-key": "sk-env"}


def test_a_missing_saved_block_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("FAL_KEY", "sk-env")
    with pytest.raises(InvalidInputError, match="FalCredentials block 'no-such-block'"):
        build_backend(BackendSpec(name="fal", credentials_block="no-such-block"))


def test_the_readme_table_and_the_fake_dialects_follow_the_classes():
    from pathlib import Path

    from prefect_modify_video.providers.registry import backends_table
    from prefect_modify_video.testing import DIALECTS

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    start, end = readme.index("<!-- backends:start -->\n"), readme.index("<!-- backends:end -->")
    assert readme[start + len("<!-- backends:start -->\n"):end].strip() == backends_table()
    assert set(DIALECTS) == {cls.service for cls in PAID}


def test_a_saved_block_s_settings_take_effect_in_a_flow_run(tmp_path, monkeypatch):
    """A saved SegmindCredentials(use_async_api=True) makes the run use Segmind's v2 queue."""
    from prefect_modify_video.flows import ModifyVideoParameters, modify_video
    from prefect_modify_video.media.sample import make_sample_video
    from prefect_modify_video.testing import FakeModifyServer

    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
    source = make_sample_video(tmp_path / "in.mp4", seconds=2, width=320, height=180, fps=30, scenes=1)
    with FakeModifyServer(polls_to_complete=1) as server:
        name = f"segmind-{uuid.uuid4().hex[:8]}"
        SegmindCredentials(api_key="sk-saved-0123456789", base_url=server.base_url, use_async_api=True).save(name)
        result = modify_video(**flow_arguments(ModifyVideoParameters(
            source=str(source), prompt="warm", output=str(tmp_path / "out.mp4"), store_dir=str(tmp_path / "store"),
            backend=BackendSpec(name="segmind", credentials_block=name, poll_interval_seconds=0.05),
        )))
        assert [call.route for call in server.received("segmind")] == ["segmind.v2"]
        assert result.billed_calls == server.stats("segmind").billed == 1


def test_a_fal_block_builds_lucy_for_the_lucy_backend_and_its_app_setting_chooses(monkeypatch):
    from prefect_modify_video.blocks import FalCredentials
    from prefect_modify_video.providers.fal import FalBackend
    from prefect_modify_video.providers.lucy import LucyBackend

    monkeypatch.setenv("FAL_KEY", "sk-fal")
    assert type(build_backend(BackendSpec(name="lucy"))) is LucyBackend
    assert type(build_backend(BackendSpec(name="fal"))) is FalBackend
    name = _saved(FalCredentials(api_key="sk-saved", app="lucy-restyle"))
    assert type(build_backend(BackendSpec(name="lucy", credentials_block=name))) is LucyBackend
    # Naming the fal backend asks for fal's Luma app whatever the saved block says.
    assert type(build_backend(BackendSpec(name="fal", credentials_block=name))) is FalBackend


def test_prices_show_minimums_and_billing_blocks():
    from prefect_modify_video.providers.lucy import LucyBackend
    from prefect_modify_video.providers.luma_agents import LumaAgentsBackend
    from prefect_modify_video.providers.runway import RunwayBackend

    runway, luma, lucy = RunwayBackend("k"), LumaAgentsBackend("k"), LucyBackend("k")
    assert runway.billed_seconds(1.2) == 2.0 and runway.estimate_cost_usd(1.2, 1280, 720) == 0.56
    assert runway.estimate_cost_usd(10, 1920, 1080) == 2.8
    assert luma.billed_seconds(7.0) == 10.0 and luma.billed_seconds(5.0) == 5.0
    assert luma.estimate_cost_usd(7.0, 1280, 720) == 2.16  # two 5 s blocks at 720p
    assert luma.estimate_cost_usd(4.0, 960, 540) == 0.72 and luma.estimate_cost_usd(9.9, 1920, 1080) == 4.32
    assert lucy.billed_seconds(7.3) == 7.3 and lucy.estimate_cost_usd(60, 1280, 720) == 0.6
    assert lucy.max_segment_seconds == 600 and luma.max_segment_seconds == 18 and runway.max_segment_seconds == 30
