"""Presets: named sets of modify-video parameters, saved as Prefect blocks.

A run names a preset; the preset fills every parameter the run did not set itself. "Set
itself" means present in what the run was given (pydantic's ``model_fields_set``): a
deployment's default parameters and a trigger's parameters count as given, a field left to
its default does not.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, Field

from prefect.blocks.core import Block
from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.flows.parameters import BackendSpec
from prefect_modify_video.providers.base import Mode

P = TypeVar("P", bound=BaseModel)

# The preset's fields that map one-to-one onto run parameters of the same name.
PRESET_PARAMETERS = ("mode", "prompt", "first_frame", "backend", "max_segment_seconds")


class SeamSettings(BaseModel):
    """How a preset's runs hide and judge seams; each empty field is left to the run."""

    anchor_colours: bool | None = Field(
        default=None, title="Anchor colours", description="Correct each answer's colour drift toward its neighbours."
    )
    anchor_strength: float | None = Field(
        default=None, ge=0, le=1, title="Anchoring strength",
        description="Weight of the colour correction away from in-shot seams (0-1).",
    )
    overlap_frames: int | None = Field(
        default=None, ge=0, le=60, title="Overlap (frames)",
        description="Frames sent with both segments of an in-shot seam and cross-blended (billed twice).",
    )
    sequential: bool | None = Field(
        default=None, title="Sequential", description="Start each in-shot segment from the previous answer's frame."
    )
    seam_threshold: float | None = Field(
        default=None, gt=0, title="Seam threshold", description="A seam above this many times the source's jump is flagged."
    )


class ModifyVideoPreset(Block):
    """A named set of modify-video parameters: mode, prompt, first frame, backend, segment length.

    A run that names the preset takes every value the preset sets and the run does not set
    explicitly; what the run sets wins. Four presets follow the service guide's use cases
    (``register_default_presets`` saves them): ``scene-replacement`` (adhere_2),
    ``creative-restyling`` (reimagine_1), ``colour-grading`` (flex_2) and
    ``subtle-enhancement`` (adhere_1).

    Attributes:
        mode: How far from the source the result may go.
        prompt: The look to give the video.
        first_frame: A restyled first frame (path, URL or block:// reference).
        backend: The service to use.
        max_segment_seconds: Upper bound on a segment's length.
        seam_settings: Seam options (anchoring, overlap, sequential mode, threshold).
        notes: When to use the preset.

    Examples:
        Load a saved preset and apply it to a run's parameters:
        ```python
        from prefect_modify_video.blocks.presets import ModifyVideoPreset
        from prefect_modify_video.flows import ModifyVideoParameters

        modify_video_preset = ModifyVideoPreset.load("BLOCK_NAME")
        params = modify_video_preset.apply(ModifyVideoParameters(source="film.mp4"))
        ```
    """

    _block_type_name = "Modify Video Preset"
    _logo_url = "https://github.com/lumalabs.png?size=200"
    _documentation_url = "https://docs.lumalabs.ai/docs/modify-video"

    mode: Mode | None = Field(
        default=None,
        title="Mode",
        description="How far from the source: adhere (subtle) < flex (keeps shapes) < reimagine (loose); empty: not set.",
    )
    prompt: str | None = Field(
        default=None,
        title="Prompt",
        description="The look to give the video, described as the result; empty: not set.",
    )
    first_frame: str | None = Field(
        default=None,
        title="First frame",
        description="A restyled first frame: a path, an http(s) URL or a block:// reference; empty: not set.",
    )
    backend: BackendSpec | None = Field(
        default=None,
        title="Backend",
        description="The service, its credentials block and model; empty: not set.",
    )
    max_segment_seconds: float | None = Field(
        default=None,
        ge=2,
        title="Longest segment (s)",
        description="Upper bound on a segment's length; empty: not set.",
    )
    seam_settings: SeamSettings = Field(
        default_factory=SeamSettings,
        title="Seam settings",
        description="Anchoring, overlap, sequential mode and threshold; each one set fills the run parameter of the same name.",
    )
    notes: str | None = Field(
        default=None,
        title="Notes",
        description="When to use this preset, for people choosing one.",
    )

    def apply(self, params: P, explicitly_set: set[str] | None = None) -> P:
        """Fills the parameters the run did not set with this preset's values.

        Args:
            params: The run's parameters (``ModifyVideoParameters`` or any model with fields of
                the same names; fields it lacks are skipped).
            explicitly_set: Names of the parameters the run set itself, which the preset never
                overrides; ``params.model_fields_set`` when not given.

        Returns:
            A new parameters object of the same type, validated; what it sets itself is the
            union of what the run set and what the preset filled.
        """
        explicit = set(params.model_fields_set if explicitly_set is None else explicitly_set)
        fields = type(params).model_fields
        updates: dict[str, Any] = {}
        for name in PRESET_PARAMETERS:
            value = getattr(self, name)
            if value is not None and name in fields and name not in explicit:
                updates[name] = value.model_copy(deep=True) if isinstance(value, BaseModel) else value
        for name, value in self.seam_settings.model_dump(exclude_none=True).items():
            if name in fields and name not in explicit:
                updates[name] = value
        if not updates:
            return params
        values = {name: getattr(params, name) for name in params.model_fields_set}
        values.update(updates)
        return type(params).model_validate(values)

    def applied_fields(self, params: BaseModel, explicitly_set: set[str] | None = None) -> list[str]:
        """Names of the parameters ``apply`` would fill from this preset (for logs and reports)."""
        explicit = set(params.model_fields_set if explicitly_set is None else explicitly_set)
        fields = type(params).model_fields
        named = [n for n in PRESET_PARAMETERS if getattr(self, n) is not None]
        named += list(self.seam_settings.model_dump(exclude_none=True))
        return [n for n in named if n in fields and n not in explicit]


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
