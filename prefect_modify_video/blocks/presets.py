"""Presets: named sets of modify-video parameters, saved as Prefect blocks.

A run names a preset; the preset fills every parameter the run did not set itself. "Set
itself" means present in what the run was given (pydantic's ``model_fields_set``) with a value:
a field given empty (``None``, as Prefect's run form sends every field it shows) is not set, and
nor is a field still at the value the run's form prefilled (``fields_set_by_run``: a
deployment's own parameters, shown in its Custom run form, are not the user's choice).
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel, Field, create_model

from prefect.blocks.core import Block
from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.parameters import (
    ModifyVideoParameters,
    field_definitions,
    option_groups,
)

P = TypeVar("P", bound=BaseModel)

# Parameters that name one run (its video, its output, the preset itself, paying again): a preset never holds them.
RUN_ONLY_PARAMETERS = frozenset({"source", "output", "preset", "refresh"})


def _settings_model(group_model: type[BaseModel]) -> type[BaseModel]:
    """``SeamOptions`` -> ``SeamSettings``: the same fields, each optional (empty: left to the run)."""
    return create_model(
        group_model.__name__.replace("Options", "Settings"),
        __doc__=f"{group_model.__doc__.rstrip('.')} (``{group_model.__name__}``); each empty field is left to the run.",
        **field_definitions(group_model, optional=True),
    )


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# Each option group of the parameters as a model of optional fields, and the preset's field holding it:
# SeamOptions -> seam_settings: SeamSettings, RetryOptions -> retry_settings: RetrySettings.
GROUP_SETTINGS: dict[str, type[BaseModel]] = {
    group: _settings_model(model) for group, model in option_groups(ModifyVideoParameters).items()
}
PRESET_GROUP_FIELDS: dict[str, str] = {group: _snake_case(model.__name__) for group, model in GROUP_SETTINGS.items()}
SeamSettings = GROUP_SETTINGS["seams"]
RetrySettings = GROUP_SETTINGS["retries"]

# Every parameter of a run but the run-only ones and the groups, each optional: the preset's own fields.
PresetParameters = create_model(
    "PresetParameters",
    __doc__="The run parameters a preset may set, each optional (empty: not set).",
    **field_definitions(
        ModifyVideoParameters,
        [
            name for name in ModifyVideoParameters.model_fields
            if name not in RUN_ONLY_PARAMETERS and name not in PRESET_GROUP_FIELDS
        ],
        optional=True,
    ),
    **{
        PRESET_GROUP_FIELDS[group]: (
            settings,
            Field(
                default_factory=settings,
                title=ModifyVideoParameters.model_fields[group].title,
                description=ModifyVideoParameters.model_fields[group].description.rstrip(".")
                + "; each one set fills the run parameter of the same name.",
            ),
        )
        for group, settings in GROUP_SETTINGS.items()
    },
)


class ModifyVideoPreset(Block, PresetParameters):
    """A named set of modify-video parameters: mode, prompt, first frame, backend, segment length, seams...

    A run that names the preset takes every value the preset sets and the run does not set
    explicitly; what the run sets wins. The preset's fields are those of
    ``ModifyVideoParameters`` (but source, output, preset and refresh), each optional; the
    seam and retry options are in ``seam_settings`` and ``retry_settings``. Four presets follow
    the service guide's use cases (``register_default_presets`` saves them):
    ``scene-replacement`` (adhere_2), ``creative-restyling`` (reimagine_1), ``colour-grading``
    (flex_2) and ``subtle-enhancement`` (adhere_1).

    Attributes:
        prompt: The look to give the video.
        mode: How far from the source the result may go.
        first_frame: A restyled first frame (path, URL or block:// reference).
        backend: The service to use.
        max_segment_seconds: Upper bound on a segment's length.
        concurrency: Segments in flight at once.
        store_dir: Where paid results are kept.
        max_cost_usd: The budget of a run.
        seam_settings: Seam options (anchoring, overlap, sequential mode, threshold).
        retry_settings: Retries of failed segments.
        notes: When to use the preset.

    Examples:
        Load a saved preset and apply it to a run's parameters:
        ```python
        from prefect_modify_video.blocks.presets import ModifyVideoPreset
        from prefect_modify_video.parameters import ModifyVideoParameters

        modify_video_preset = ModifyVideoPreset.load("BLOCK_NAME")
        params = modify_video_preset.apply(ModifyVideoParameters(source="film.mp4"))
        ```
    """

    _block_type_name = "Modify Video Preset"
    _logo_url = "https://github.com/lumalabs.png?size=200"
    _documentation_url = "https://docs.lumalabs.ai/docs/modify-video"

    notes: str | None = Field(
        default=None,
        title="Notes",
        description="When to use this preset, for people choosing one.",
    )

    def preset_values(self) -> dict[str, Any]:
        """The run parameters this preset sets, by their (flat) names, in the parameters' order.

        Example:
            >>> ModifyVideoPreset(mode="flex_2", seam_settings={"overlap_frames": 8}).preset_values()
            {'mode': 'flex_2', 'overlap_frames': 8}
        """
        values: dict[str, Any] = {}
        for name in PresetParameters.model_fields:
            value = getattr(self, name)
            if name in PRESET_GROUP_FIELDS.values():
                values.update(value.model_dump(exclude_none=True))
            elif value is not None:
                values[name] = value.model_copy(deep=True) if isinstance(value, BaseModel) else value
        return values

    def apply(self, params: P, explicitly_set: set[str] | None = None) -> P:
        """Fills the parameters the run did not set with this preset's values.

        Args:
            params: The run's parameters (``ModifyVideoParameters`` or any model with fields of
                the same names; fields it lacks are skipped).
            explicitly_set: Names of the parameters the run set itself, which the preset never
                overrides; ``fields_set_by_run(params)`` when not given (what was given with a value).

        Returns:
            A new parameters object of the same type, validated; what it sets itself is the
            union of what the run set and what the preset filled.

        Example:
            >>> params = ModifyVideoParameters(source="film.mp4", mode="adhere_1")
            >>> applied = ModifyVideoPreset(mode="flex_2", seam_settings={"overlap_frames": 8}).apply(params)
            >>> applied.mode, applied.seams.overlap_frames
            ('adhere_1', 8)
        """
        preset_values = self.preset_values()
        updates = {name: preset_values[name] for name in self.applied_fields(params, explicitly_set)}
        if not updates:
            return params
        values = {name: getattr(params, name) for name in params.model_fields_set}
        values.update(updates)
        return type(params).model_validate(values)

    def applied_fields(self, params: BaseModel, explicitly_set: set[str] | None = None) -> list[str]:
        """Names of the parameters ``apply`` would fill from this preset (for logs and reports)."""
        explicit = set(fields_set_by_run(params) if explicitly_set is None else explicitly_set)
        model = type(params)
        accepted = set(model.option_names()) if hasattr(model, "option_names") else set(model.model_fields)
        return [name for name in self.preset_values() if name in accepted and name not in explicit]


def fields_set_by_run(params: BaseModel, prefilled: BaseModel | None = None) -> set[str]:
    """Names of the parameters the run set itself, which a preset never overrides.

    A field counts when it was given (``model_fields_set``, a group's options by their own
    names) with a value: one given empty (``None``) does not, since Prefect's run form sends
    ``null`` for every empty field. With ``prefilled``, the parameters the run's form showed
    before the user changed anything (a deployment's parameters, the model's defaults for the
    rest), a field still at that value does not count either.

    Example:
        >>> form = ModifyVideoParameters(source="a.mp4", prompt="vintage", mode="flex_2", output=None)
        >>> sorted(fields_set_by_run(form))
        ['mode', 'prompt', 'source']
        >>> sorted(fields_set_by_run(form, prefilled=ModifyVideoParameters(source="b.mp4", mode="flex_2")))
        ['prompt', 'source']
    """
    missing = object()
    names = set()
    for name in params.model_fields_set:
        value = getattr(params, name)
        if value is None or (prefilled is not None and value == getattr(prefilled, name, missing)):
            continue
        names.add(name)
    return names


def load_preset(name: str) -> ModifyVideoPreset:
    """Loads a saved preset by block name, from sync or async code.

    Raises:
        InvalidInputError: no preset of that name; the message lists how to save the defaults.
    """
    try:
        return ModifyVideoPreset.load(name, _sync=True)
    except ValueError as error:
        raise InvalidInputError(
            f"preset {name!r}: no Modify Video Preset block of that name ({error}); save one, or run "
            "prefect_modify_video.blocks.presets.register_default_presets() for "
            + ", ".join(DEFAULT_PRESETS)
        ) from error


SCENE_REPLACEMENT = ModifyVideoPreset(
    mode="adhere_2",
    prompt="the same people, framing and movement, now in a sunlit harbour town with white stone houses and boats",
    notes="Replace the setting and keep the action: adhere_2 keeps composition and motion close to the source.",
)
CREATIVE_RESTYLING = ModifyVideoPreset(
    mode="reimagine_1",
    prompt="hand-painted watercolour animation, soft pastel colours, visible paper texture, loose brush strokes",
    notes="A new art style: reimagine_1 lets shapes and textures change while the scene stays recognisable.",
)
COLOUR_GRADING = ModifyVideoPreset(
    mode="flex_2",
    prompt="cinematic teal and orange colour grade, warm skin tones, deep contrasty shadows, subtle film grain",
    notes="A new grade on the same shot: flex_2 keeps every shape and changes colour, light and texture.",
)
SUBTLE_ENHANCEMENT = ModifyVideoPreset(
    mode="adhere_1",
    prompt="the same footage, crisper detail, balanced exposure, natural colour, gentle contrast",
    notes="Clean up without changing the content: adhere_1 stays closest to the source.",
)

DEFAULT_PRESETS: dict[str, ModifyVideoPreset] = {
    "scene-replacement": SCENE_REPLACEMENT,
    "creative-restyling": CREATIVE_RESTYLING,
    "colour-grading": COLOUR_GRADING,
    "subtle-enhancement": SUBTLE_ENHANCEMENT,
}


def register_default_presets(overwrite: bool = False) -> list[str]:
    """Saves the four service-guide presets as blocks on the Prefect server.

    Args:
        overwrite: Replace presets of the same names; when false, existing ones are kept.

    Returns:
        The names saved (existing presets kept are not listed).
    """
    saved = []
    for name, preset in DEFAULT_PRESETS.items():
        if not overwrite:
            try:
                ModifyVideoPreset.load(name, _sync=True)
                continue
            except ValueError:
                pass
        preset.model_copy(deep=True).save(name, overwrite=True, _sync=True)
        saved.append(name)
    return saved
