"""Presets: Prefect's block standards, override semantics, and the four service-guide presets saved as blocks."""

from __future__ import annotations

import time
import uuid

import pytest
from prefect.testing.standard_test_suites import BlockStandardTestSuite

from prefect_modify_video.blocks.presets import (
    COLOUR_GRADING,
    CREATIVE_RESTYLING,
    DEFAULT_PRESETS,
    SCENE_REPLACEMENT,
    SUBTLE_ENHANCEMENT,
    ModifyVideoPreset,
    SeamSettings,
    load_preset,
    register_default_presets,
)
from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.parameters import BackendSpec, ModifyVideoParameters
from prefect_modify_video.flows.preview import PreviewParameters


class TestModifyVideoPresetStandards(BlockStandardTestSuite):
    @pytest.fixture
    def block(self):
        return ModifyVideoPreset

    @pytest.mark.skip(reason="downloads the logo: needs the internet")
    def test_has_a_valid_image(self, block):
        """Skipped offline; ``test_has_a_logo_url`` checks what can be checked."""

    def test_has_a_logo_url(self, block):
        assert str(block._logo_url).startswith("https://")


PRESET = ModifyVideoPreset(
    mode="reimagine_2",
    prompt="oil painting",
    first_frame="block://local-file-system/frames/painted.png",
    backend=BackendSpec(name="segmind", credentials_block="segmind"),
    max_segment_seconds=8,
    seam_settings=SeamSettings(overlap_frames=8, anchor_strength=0.5),
)


def test_preset_fills_only_what_the_run_did_not_set():
    params = ModifyVideoParameters(source="film.mp4", prompt="my own prompt", max_segment_seconds=5)
    applied = PRESET.apply(params)
    assert applied.source == "film.mp4"
    assert applied.prompt == "my own prompt" and applied.max_segment_seconds == 5  # explicit wins
    assert applied.mode == "reimagine_2"  # the default flex_1 was not set explicitly
    assert applied.first_frame == "block://local-file-system/frames/painted.png"
    assert applied.backend == BackendSpec(name="segmind", credentials_block="segmind")
    assert applied.backend is not PRESET.backend, "the preset's backend is copied, not shared"
    assert (applied.overlap_frames, applied.anchor_strength) == (8, 0.5), "seam settings fill their parameters"
    assert applied.anchor_colours is None and applied.seam_threshold == 1.5, "unset seam settings are left alone"
    assert applied.model_fields_set == {
        "source", "prompt", "max_segment_seconds", "mode", "first_frame", "backend", "overlap_frames", "anchor_strength"
    }
    assert params.mode == "flex_1", "the given parameters are not changed"


def test_explicit_default_values_still_win():
    # Setting a field to its default value is still setting it.
    params = ModifyVideoParameters(source="film.mp4", mode="flex_1", prompt="")
    applied = PRESET.apply(params)
    assert applied.mode == "flex_1" and applied.prompt == ""
    assert applied.backend.name == "segmind"


def test_explicitly_set_argument_overrides_model_fields_set():
    params = ModifyVideoParameters(source="film.mp4", mode="adhere_1")
    applied = PRESET.apply(params, explicitly_set={"source"})
    assert applied.mode == "reimagine_2"
    assert PRESET.applied_fields(params) == [
        "prompt", "first_frame", "backend", "max_segment_seconds", "anchor_strength", "overlap_frames"
    ]


def test_parameters_from_a_flow_run_dict_keep_what_was_given():
    # What a deployment run hands the flow: a dict validated into the model.
    params = ModifyVideoParameters.model_validate({"source": "film.mp4", "mode": "adhere_3"})
    applied = COLOUR_GRADING.apply(params)
    assert applied.mode == "adhere_3" and applied.prompt == COLOUR_GRADING.prompt


def test_empty_preset_changes_nothing_and_other_models_work():
    params = ModifyVideoParameters(source="film.mp4")
    assert ModifyVideoPreset().apply(params) is params
    preview = PRESET.apply(PreviewParameters(source="film.mp4", end_s=None))
    assert preview.prompt == "oil painting" and preview.backend.name == "segmind"
    assert preview.end_s is None and preview.modes == ["adhere_3", "flex_1", "flex_3", "reimagine_1"]


def test_invalid_preset_value_is_refused():
    with pytest.raises(ValueError):
        ModifyVideoPreset(mode="adhere_9")
    with pytest.raises(ValueError):
        ModifyVideoPreset(max_segment_seconds=1)


def test_the_four_service_guide_presets():
    assert {name: preset.mode for name, preset in DEFAULT_PRESETS.items()} == {
        "scene-replacement": "adhere_2",
        "creative-restyling": "reimagine_1",
        "colour-grading": "flex_2",
        "subtle-enhancement": "adhere_1",
    }
    for preset in (SCENE_REPLACEMENT, CREATIVE_RESTYLING, COLOUR_GRADING, SUBTLE_ENHANCEMENT):
        assert len(preset.prompt) > 20 and preset.notes


@pytest.mark.slow  # saves and loads every preset block, about 12 s
def test_register_default_presets_saves_loadable_blocks():
    register_default_presets(overwrite=True)
    loaded = load_preset("colour-grading")
    assert loaded.mode == "flex_2" and loaded.prompt == COLOUR_GRADING.prompt
    assert ModifyVideoPreset.load("scene-replacement").mode == "adhere_2"
    # Not overwriting keeps a preset the user changed.
    changed = ModifyVideoPreset.load("subtle-enhancement")
    changed.prompt = "my own subtle look"
    changed.save("subtle-enhancement", overwrite=True)
    assert register_default_presets() == []
    assert load_preset("subtle-enhancement").prompt == "my own subtle look"
    assert "subtle-enhancement" in register_default_presets(overwrite=True)
    assert load_preset("subtle-enhancement").prompt == SUBTLE_ENHANCEMENT.prompt
    assert SUBTLE_ENHANCEMENT._block_document_id is None, "the constants are not bound to saved documents"


def test_a_saved_preset_keeps_its_backend_and_seam_settings():
    name = f"preset-{uuid.uuid4().hex[:8]}"
    PRESET.model_copy(deep=True).save(name)
    loaded = load_preset(name)
    assert loaded.backend == PRESET.backend and loaded.seam_settings == PRESET.seam_settings
    assert loaded.max_segment_seconds == 8


def test_unknown_preset_is_named():
    with pytest.raises(InvalidInputError, match="preset 'no-such-preset'.*register_default_presets"):
        load_preset("no-such-preset")


@pytest.mark.slow  # a whole run (or two) against the server: over ~20 s on a loaded machine
def test_a_preset_picked_in_the_custom_run_form_takes_effect(sample_video, tmp_path):
    """The form sends every field (the deployment's prefilled prompt and mode, empties for the rest): the preset fills them."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow
    from prefect.utilities.callables import parameter_schema

    from prefect_modify_video.flows.modify_video import modify_video

    name = f"form-{uuid.uuid4().hex[:8]}"
    ModifyVideoPreset(mode="adhere_3", prompt="black and white").save(name)
    deployed = {"source": "samples/sample.mp4", "prompt": "warm vintage film with grain", "mode": "flex_2",
                "backend": {"name": "local"}}
    deployment_id = modify_video.to_deployment(name=f"form-{name}", parameters=deployed).apply()
    # Exactly what Prefect's Custom run form sends (seen in tests/test_ui_browser.py): every parameter, the
    # deployment's values and the schema's defaults prefilled, "" for an empty text, a group's empty options left
    # out or null once cleared; here the user gave the source, a preset, the output and the store.
    form = {
        "source": str(sample_video), "prompt": "warm vintage film with grain", "mode": "flex_2", "first_frame": "",
        "output": str(tmp_path / "out.mp4"), "preset": name, "backend": {"name": "local", "account": "default"},
        "limits": {"max_cost_usd": None},
        "store": {"store_dir": str(tmp_path / "store"), "refresh": False, "resend_unknown": False},
        "seams": {"anchor_strength": 1, "sequential": False, "seam_threshold": 1.5},
        "retries": {"segment_retries": 3, "retry_delay_seconds": 10},
    }
    assert list(form) == list(parameter_schema(modify_video.fn).properties), "every parameter of the form, in order"
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run_from_deployment(deployment_id, parameters=form)
        result = run_flow(modify_video, flow_run=flow_run)
        # This run's logs (the server holds every run's of the session), once they are shipped (in batches).
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        for _ in range(50):
            logs = [log.message for log in client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])), limit=200)]
            if any("applied: it set" in line for line in logs):
                break
            time.sleep(0.2)
        run_name = client.read_flow_run(flow_run.id).name
    assert (result.mode, result.prompt) == ("adhere_3", "black and white")
    assert any(f"preset {name!r} applied: it set prompt, mode" in line for line in logs), logs
    assert run_name == "sample-adhere_3", "the run is named after its video and the mode the preset chose"
