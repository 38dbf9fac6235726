"""Options declared once: the groups of the parameters, and the preset, batch settings and CLI flags derived from them."""

from __future__ import annotations

import re
import uuid

import pytest

from prefect_modify_video.providers.registry import backend_class
from pydantic import ValidationError

from prefect_modify_video.blocks.presets import ModifyVideoPreset, RetrySettings, SeamSettings
from prefect_modify_video.cli import _parameters, _parser, parameter_options
from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.flows.batch import BatchSettings
from prefect_modify_video.parameters import (
    ModifyVideoParameters,
    RetryOptions,
    SeamOptions,
    flow_arguments,
    option_groups,
    parameters_from_flow,
)
from prefect_modify_video.tasks.report import RunSummary


def test_flat_names_go_to_their_group_and_are_reported_flat():
    flat = ModifyVideoParameters(source="a.mp4", anchor_strength=0.5, sequential=True, retry_delay_seconds=0)
    nested = ModifyVideoParameters(
        source="a.mp4", seams={"anchor_strength": 0.5, "sequential": True}, retries=RetryOptions(retry_delay_seconds=0)
    )
    assert flat == nested
    assert flat.seams == SeamOptions(anchor_strength=0.5, sequential=True) and flat.anchor_strength == 0.5
    assert flat.model_fields_set == nested.model_fields_set == {
        "source", "anchor_strength", "sequential", "retry_delay_seconds"
    }
    assert flat.model_dump(exclude_unset=True) == {
        "source": "a.mp4", "seams": {"anchor_strength": 0.5, "sequential": True}, "retries": {"retry_delay_seconds": 0}
    }
    assert ModifyVideoParameters.model_validate(flat.model_dump(exclude_unset=True)) == flat


def test_an_option_given_flat_and_nested_is_refused():
    with pytest.raises(ValidationError, match="anchor_strength is given twice"):
        ModifyVideoParameters(source="a.mp4", anchor_strength=0.5, seams={"anchor_strength": 0.2})
    with pytest.raises(ValidationError, match="anchor_strength"):
        ModifyVideoParameters(source="a.mp4", anchor_strength=2)


def test_seam_options_resolve_for_the_backend():
    local, fal = backend_class("local"), backend_class("fal")
    assert SeamOptions().resolved_for(local).model_dump() == {
        "anchor_colours": False, "anchor_strength": 1.0, "overlap_frames": 0, "sequential": False, "seam_threshold": 1.5
    }
    assert (SeamOptions().resolved_for(fal).anchor_colours, SeamOptions().resolved_for(fal).overlap_frames) == (
        True, 12
    )


@pytest.mark.parametrize(
    "optional, model",
    [(SeamSettings, SeamOptions), (RetrySettings, RetryOptions), (ModifyVideoPreset, ModifyVideoParameters)],
)
def test_the_preset_fields_are_the_parameters_each_optional(optional, model):
    for name, field in optional.model_fields.items():
        if name not in model.model_fields:
            continue
        original = model.model_fields[name]
        assert field.default is None and field.title == original.title and field.description == original.description
        assert field.metadata == original.metadata, f"{name}: the same bounds"
    if optional is ModifyVideoPreset:
        assert {"seam_settings", "retry_settings", "notes"} <= set(optional.model_fields)
        assert not {"source", "output", "preset", "refresh", "seams", "retries"} & set(optional.model_fields)
    else:
        assert list(optional.model_fields) == list(model.model_fields)


def test_a_preset_fills_retries_and_batch_settings_take_flat_names():
    preset = ModifyVideoPreset(retry_settings=RetrySettings(segment_retries=0))
    applied = preset.apply(ModifyVideoParameters(source="a.mp4", retry_delay_seconds=1))
    assert applied.retries == RetryOptions(segment_retries=0, retry_delay_seconds=1)
    settings = BatchSettings(anchor_strength=0.3, mode="adhere_1")
    assert settings.seams.anchor_strength == 0.3 and settings.model_fields_set == {"anchor_strength", "mode"}
    assert set(option_groups(BatchSettings)) == {"seams", "retries"}


def test_every_parameter_has_a_flag():
    paths = {option.path for option in parameter_options()}
    for name, field in ModifyVideoParameters.model_fields.items():
        nested = getattr(field.annotation, "model_fields", None)
        if name == "source":
            assert (name,) not in paths
        elif nested:
            assert {(name, leaf) for leaf in nested} <= paths
        else:
            assert (name,) in paths


def test_the_flags_make_the_parameters():
    args = _parser().parse_args([
        "run", "film.mp4", "--backend", "luma", "--credentials", "luma-key", "--model", "ray-flash-2",
        "--timeout-seconds", "30", "--store", "store", "--seam-threshold", "2", "--segment-retries", "1",
        "--retry-delay-seconds", "0.5", "--no-anchor-colours", "--sequential",
    ])
    params = _parameters(args)
    assert params.backend.model_dump(exclude_unset=True) == {
        "name": "luma", "credentials_block": "luma-key", "model": "ray-flash-2", "timeout_seconds": 30.0
    }
    assert params.store_dir == "store"
    assert params.seams.model_dump(exclude_unset=True) == {
        "anchor_colours": False, "sequential": True, "seam_threshold": 2.0
    }
    assert params.retries == RetryOptions(segment_retries=1, retry_delay_seconds=0.5)
    assert params.model_fields_set == {
        "source", "backend", "store_dir", "seam_threshold", "segment_retries", "retry_delay_seconds",
        "anchor_colours", "sequential",
    }, "what the user did not give is left to a preset"
    with pytest.raises(InvalidInputError, match="--model.*--backend"):
        _parameters(_parser().parse_args(["run", "film.mp4", "--model", "ray-2"]))


def test_run_summary_markdown():
    summary = RunSummary(
        source="film.mp4", backend="fal", mode="flex_1", segments=3, paid=2, reused=1, frames=90,
        frame_rate="30/1", duration_s=3.0, billed_s=3.4, overlap_s=0.4, cost_usd=1.5, seams=2, seams_flagged=[45],
        anchored=True, output="out.mp4",
    )
    text = summary.markdown(["segment 2: boom"])
    assert "`out.mp4`" in text and "3 (2 paid in this run, 1 reused)" in text and "at frames [45]" in text
    assert "## Segments that failed" in text
    free = summary.model_copy(update={"backend": "local", "free": True, "cost_usd": 0.0}).markdown()
    assert "3 (2 restyled in this run, 1 reused)" in free and "paid" not in free


def _run_form_schema() -> dict:
    """The deployment's parameter schema, made as ``prefect deploy`` makes it."""
    from prefect.utilities.callables import parameter_schema

    from prefect_modify_video.flows.modify_video import modify_video

    return parameter_schema(modify_video.fn).model_dump_for_openapi()


def test_the_run_form_is_flat_plain_and_titled_alike():
    schema = _run_form_schema()
    assert list(schema["properties"]) == [
        "source", "prompt", "mode", "first_frame", "output", "preset", "backend", "limits", "store", "seams", "retries"
    ]
    assert [schema["properties"][name]["title"] for name in ("limits", "store", "seams", "retries")] == [
        "Limits and budget", "Result store and paying again", "Seams", "Retries"
    ]
    fields = list(schema["properties"].items()) + [
        (f"{model}.{name}", prop) for model, definition in schema["definitions"].items()
        for name, prop in definition["properties"].items()
    ]
    assert len(fields) > 35
    for name, prop in fields:
        assert {"type": "null"} not in prop.get("anyOf", []), f"{name}: a str / None switch in the form"
        title = prop["title"]
        assert title[0].isupper() and all(
            not word[0].isupper() or word.strip("()").isupper() for word in title.split()[1:]
        ), f"{name}: {title!r} is not in sentence case"
    descriptions = [prop.get("description", "") for _, prop in fields] + [
        definition.get("description", "") for definition in schema["definitions"].values()
    ]
    for description in descriptions:
        # Prefect's UI drops <...> as markup: block://<type>/<name> would read block:////.
        assert re.sub(r"<[^>]*>", "", description) == description, description
    source = schema["properties"]["source"]["description"]
    assert "block://local-file-system/my-folder/film.mp4" in source and "required" in schema and schema["required"] == ["source"]


def test_what_the_run_form_leaves_empty_is_not_set():
    form = {
        "source": "a.mp4", "prompt": "", "mode": "flex_1", "first_frame": "", "output": "", "preset": "",
        "backend": {"name": "local", "account": "default"}, "limits": {"concurrency": None},
        "store": {"refresh": False, "resend_unknown": False},
        "seams": {"anchor_colours": None, "anchor_strength": 1, "sequential": False, "seam_threshold": 1.5},
        "retries": {"segment_retries": 3, "retry_delay_seconds": 10},
    }
    params = parameters_from_flow(form)
    assert params == ModifyVideoParameters(source="a.mp4")
    assert params.model_fields_set == {"source"}, "a preset may fill every other field"
    given = parameters_from_flow({**form, "output": "b.mp4", "limits": {"max_cost_usd": 2}, "seams": {"sequential": True}})
    assert given.model_fields_set == {"source", "output", "max_cost_usd", "sequential"}
    assert flow_arguments(given) == {
        "source": "a.mp4", "output": "b.mp4", "limits": {"max_cost_usd": 2.0}, "seams": {"sequential": True}
    }


def test_a_run_given_only_a_source_keeps_the_deployments_other_parameters():
    """As ``prefect deployment run modify-video/NAME --param source=other.mp4``: the server merges top-level keys."""
    from prefect.deployments import run_deployment

    from prefect_modify_video.flows.modify_video import modify_video

    name = f"merge-{uuid.uuid4().hex[:8]}"
    modify_video.to_deployment(name=name, parameters={
        "source": "samples/sample.mp4", "prompt": "warm vintage film with grain", "mode": "flex_2",
        "backend": {"name": "local"}, "limits": {"max_segment_seconds": 2},
    }).apply()
    run = run_deployment(f"modify-video/{name}", parameters={"source": "other.mp4"}, timeout=0)
    params = parameters_from_flow(run.parameters)
    assert (params.source, params.prompt, params.mode, params.max_segment_seconds) == (
        "other.mp4", "warm vintage film with grain", "flex_2", 2
    )
    # A group given replaces the deployment's group (Prefect merges the top level only); empties are accepted.
    run = run_deployment(f"modify-video/{name}", timeout=0, parameters={
        "source": "other.mp4", "first_frame": "", "limits": {"concurrency": 2, "max_cost_usd": None},
        "seams": {"overlap_frames": None},
    })
    params = parameters_from_flow(run.parameters)
    assert (params.concurrency, params.max_segment_seconds, params.mode) == (2, None, "flex_2")
    with pytest.raises(Exception, match="concurrency.*minimum of 1"):
        run_deployment(f"modify-video/{name}", parameters={"source": "x.mp4", "limits": {"concurrency": 0}}, timeout=0)


def test_the_preview_form_has_a_choice_only_where_empty_means_something():
    from prefect.utilities.callables import parameter_schema

    from prefect_modify_video.flows.preview import preview_modes

    schema = parameter_schema(preview_modes.fn).model_dump_for_openapi()
    switches = [
        name for definition in schema["definitions"].values() for name, prop in definition["properties"].items()
        if {"type": "null"} in prop.get("anyOf", [])
    ]
    assert switches == ["end_s"], "only the excerpt's end, whose empty value means the full run's first segment"
