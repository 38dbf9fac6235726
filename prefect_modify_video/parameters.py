"""Parameters of the flows, as pydantic models (the Prefect UI shows them as forms), each option declared once.

Options that belong together are grouped in models nested in ``ModifyVideoParameters``:
``backend`` (``BackendSpec``), ``seams`` (``SeamOptions``) and ``retries`` (``RetryOptions``).
The preset block, the batch's shared settings, the preview's parameters and the command-line
flags are derived from these models, so a new option is one field here plus the code that
reads it.

A group's options may also be given flat, as before the groups existed (and as saved
deployments and callers still do): ``ModifyVideoParameters(source="a.mp4", anchor_strength=0.5)``
is ``ModifyVideoParameters(source="a.mp4", seams={"anchor_strength": 0.5})``. They read flat
too (``params.anchor_strength``), and ``model_fields_set`` names them flat, so that a preset
fills each option the run did not set itself.

This module imports no flow, task or block at module level: tasks, blocks, flows and the CLI
all import it.
"""

from __future__ import annotations

import functools
import inspect
import re
import types
import urllib.parse
from typing import Annotated, Any, Iterable, Literal, Optional, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, WithJsonSchema, create_model, model_validator
from pydantic.fields import FieldInfo

from prefect_modify_video.providers.base import Mode, ModifyBackend
from prefect_modify_video.providers.registry import BACKEND_NAMES

__all__ = [
    "BackendName",
    "BackendSpec",
    "FLOW_GROUPS",
    "GroupedOptions",
    "LimitOptions",
    "Location",
    "ModifyVideoParameters",
    "OptionGroup",
    "RetryOptions",
    "SeamOptions",
    "StoreOptions",
    "field_definitions",
    "flow_arguments",
    "flow_signature",
    "group_flat_options",
    "option_groups",
    "parameters_from_flow",
    "plain_optional_properties",
    "refuse_credentials",
]

BackendName = Literal[BACKEND_NAMES]  # type: ignore[valid-type]
"""The backend names, derived from the backend classes (``providers.registry``)."""


# Query parameters that carry a password or key, never a signature meant to be shared.
_SECRET_QUERY_KEYS = frozenset({
    "password", "passwd", "pwd", "pass", "secret", "client_secret", "api_key", "apikey", "api-key", "key",
    "access_token", "auth_token", "private_token", "x-api-key",
})
# The scheme and the authority (``user:password@host:port``) of an address.
_AUTHORITY = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://([^/?#]*)")


def refuse_credentials(value: str | None) -> str | None:
    """Refuses a location that carries a password or key: parameters are saved with the flow run.

    A flow run's parameters are stored in Prefect's database and shown in its UI, so a user and
    password in an address (``https://user:pw@host/...``), or a key in its query
    (``?api_key=...``), would be kept there in clear. The message says what to use
    instead, never the secret itself. Presigned links (``X-Amz-Signature``...) are not refused:
    they are made to be handed over. Pydantic names the field (the error's ``loc``).

    Args:
        value: A local path, URL or ``block://`` reference (``None``: nothing to check).

    Returns:
        ``value`` unchanged.

    Raises:
        ValueError: the location carries credentials.

    Example:
        >>> refuse_credentials("https://example.com/film.mp4?X-Amz-Signature=abc")
        'https://example.com/film.mp4?X-Amz-Signature=abc'
        >>> refuse_credentials("https://me:hunter2@example.com/film.mp4")
        Traceback (most recent call last):
        ...
        ValueError: the address carries a user name or password (user:password@host); a run's parameters are saved with the flow run and shown in the Prefect UI, so remove them from the address and keep the key in a credentials block or a Secret block
    """
    authority = _AUTHORITY.match(value.strip()) if value is not None else None
    if authority is None:
        return value
    advice = (
        "a run's parameters are saved with the flow run and shown in the Prefect UI, so remove them from the "
        "address and keep the key in a credentials block or a Secret block"
    )
    if "@" in authority.group(1):
        raise ValueError(f"the address carries a user name or password (user:password@host); {advice}")
    secret_keys = sorted({
        name for name, _ in urllib.parse.parse_qsl(value.partition("?")[2].partition("#")[0], keep_blank_values=True)
        if name.lower() in _SECRET_QUERY_KEYS
    })
    if secret_keys:
        raise ValueError(f"the address carries a key or password in its query ({', '.join(secret_keys)}); {advice}")
    return value


Location = Annotated[str, AfterValidator(refuse_credentials)]
"""A location (path, URL or ``block://`` reference) that may not carry credentials (``refuse_credentials``)."""


def plain_optional_properties(schema: dict[str, Any]) -> None:
    """A model's JSON schema with each optional property shown as its value's schema: no ``null`` branch.

    Prefect's run form shows a property that is ``anyOf`` a type and ``null`` with a type switch
    (``str / None``); a plain property without a default is shown as one input, and Prefect's
    validation still takes ``null`` for it (it makes such a property nullable). Empty stays "not set".
    A property whose default is not ``None`` keeps its choice (``null`` then means something of its
    own, e.g. the preview's ``end_s``). Used as the ``json_schema_extra`` of the parameter models.

    Example:
        >>> schema = {"properties": {"model": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None, "title": "Model"}}}
        >>> plain_optional_properties(schema); schema
        {'properties': {'model': {'type': 'string', 'title': 'Model'}}}
    """
    for name, prop in schema.get("properties", {}).items():
        branches = prop.get("anyOf")
        if not isinstance(branches, list) or {"type": "null"} not in branches or len(branches) != 2:
            continue
        if prop.get("default") is not None:  # null means something else than the default here: keep the choice
            continue
        value = next(branch for branch in branches if branch != {"type": "null"})
        if value == {"type": "boolean"}:  # a toggle would send false for "not set": a choice of the two instead
            value = {"enum": [True, False]}
        plain = {**value, **{key: v for key, v in prop.items() if key != "anyOf"}}
        if plain.get("default", "") is None:
            del plain["default"]
        schema["properties"][name] = plain


class OptionGroup(BaseModel):
    """A group of options nested in the parameters under one name, whose options may also be given flat."""

    model_config = ConfigDict(json_schema_extra=plain_optional_properties)


class SeamOptions(OptionGroup):
    """How the seams between segments are hidden and judged."""

    anchor_colours: bool | None = Field(
        default=None,
        title="Anchor colours across segments",
        description="Correct each answer's colour drift toward its neighbours; on for services, off for the local "
        "backend when empty.",
    )
    anchor_strength: float = Field(
        default=1.0,
        ge=0,
        le=1,
        title="Anchoring strength",
        description="Weight of a segment's colour correction away from its in-shot seams (1 everywhere at the seams, "
        "ramped over a second): 1 holds the whole shot to one colour, less keeps more of each answer's own.",
    )
    overlap_frames: int | None = Field(
        default=None,
        ge=0,
        le=60,
        title="Overlap at in-shot seams (frames)",
        description="Frames sent with both segments of a seam inside a shot and cross-blended there (billed twice); "
        "12 for services, 0 for the local backend when empty.",
    )
    sequential: bool = Field(
        default=False,
        title="Sequential (continuity over speed)",
        description="Send segments one after another, each starting inside a shot getting the previous answer's "
        "frame as its first frame; no concurrency.",
    )
    seam_threshold: float = Field(
        default=1.5,
        gt=0,
        title="Seam threshold",
        description="A seam whose jump is above this many times the source's own is flagged.",
    )

    def resolved_overlap_frames(self, backend: type[ModifyBackend] | ModifyBackend) -> int:
        """The overlap to plan with: as given, else the backend's ``default_overlap_frames``
        (``DEFAULT_OVERLAP_FRAMES`` for a service; 0 for the local backend, whose answers are the
        same on both sides of a seam: nothing to blend).

        Example:
            >>> from prefect_modify_video.providers.registry import backend_class
            >>> local, fal = backend_class("local"), backend_class("fal")
            >>> SeamOptions().resolved_overlap_frames(local), SeamOptions(overlap_frames=4).resolved_overlap_frames(fal)
            (0, 4)
        """
        return backend.default_overlap_frames if self.overlap_frames is None else self.overlap_frames

    def resolved_anchor_colours(self, backend: type[ModifyBackend] | ModifyBackend) -> bool:
        """Whether to anchor colours: as given, else when the backend's answers drift between segments.

        Example:
            >>> from prefect_modify_video.providers.registry import backend_class
            >>> SeamOptions().resolved_anchor_colours(backend_class("local")), SeamOptions().resolved_anchor_colours(backend_class("luma"))
            (False, True)
        """
        return backend.answers_drift if self.anchor_colours is None else self.anchor_colours

    def resolved_for(self, backend: type[ModifyBackend] | ModifyBackend) -> SeamOptions:
        """These options with what was left empty decided for the backend (nothing ``None`` any more).

        Example:
            >>> from prefect_modify_video.providers.registry import backend_class
            >>> SeamOptions(anchor_strength=0.5).resolved_for(backend_class("fal"))
            SeamOptions(anchor_colours=True, anchor_strength=0.5, overlap_frames=12, sequential=False, seam_threshold=1.5)
        """
        return self.model_copy(
            update={
                "anchor_colours": self.resolved_anchor_colours(backend),
                "overlap_frames": self.resolved_overlap_frames(backend),
            }
        )


class RetryOptions(OptionGroup):
    """How a segment that failed with a retryable error is tried again."""

    segment_retries: int = Field(
        default=3,
        ge=0,
        le=10,
        title="Segment retries",
        description="Tries after the first for a segment that failed with a retryable error.",
    )
    retry_delay_seconds: float = Field(
        default=10.0,
        ge=0,
        title="Retry delay (s)",
        description="Wait before a segment's first retry; doubled for each further one (with jitter).",
    )


def option_groups(model: type[BaseModel]) -> dict[str, type[OptionGroup]]:
    """The fields of ``model`` that hold an option group, by field name.

    Example:
        >>> option_groups(ModifyVideoParameters)
        {'seams': <class 'prefect_modify_video.parameters.SeamOptions'>, 'retries': <class 'prefect_modify_video.parameters.RetryOptions'>}
    """
    return {
        name: field.annotation
        for name, field in model.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, OptionGroup)
    }


def group_flat_options(model: type[BaseModel], data: Any) -> Any:
    """Moves the flat names of ``model``'s grouped options into their group, for validation.

    A flat name and the same name in the group given at once is refused: which one wins would
    be a guess.

    Example:
        >>> group_flat_options(ModifyVideoParameters, {"source": "a.mp4", "anchor_strength": 0.5, "segment_retries": 0})
        {'source': 'a.mp4', 'seams': {'anchor_strength': 0.5}, 'retries': {'segment_retries': 0}}
    """
    if not isinstance(data, dict):
        return data
    groups = option_groups(model)
    flat = {leaf: group for group, group_model in groups.items() for leaf in group_model.model_fields}
    if not flat.keys() & data.keys():
        return data
    data = dict(data)
    for leaf in [name for name in data if name in flat and name not in model.model_fields]:
        group = flat[leaf]
        current = data.get(group)
        if current is None:
            current = {}
        elif isinstance(current, BaseModel):
            current = {name: getattr(current, name) for name in current.model_fields_set}
        else:
            current = dict(current)
        if leaf in current:
            raise ValueError(f"{leaf} is given twice: flat and in {group}; give it once")
        current[leaf] = data.pop(leaf)
        data[group] = current
    return data


class GroupedOptions(BaseModel):
    """A model with option groups: their options are accepted, read and reported flat as well as nested.

    ``model_fields_set`` names a group's options that were set (``anchor_strength``), not the
    group (``seams``): what a preset may fill is decided option by option.

    Validation errors do not repeat the value refused: it may be a secret (``refuse_credentials``).
    """

    model_config = ConfigDict(hide_input_in_errors=True, json_schema_extra=plain_optional_properties)

    @model_validator(mode="before")
    @classmethod
    def _group_flat_options(cls, data: Any) -> Any:
        return group_flat_options(cls, data)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for group, group_model in option_groups(cls).items():
            for leaf, field in group_model.model_fields.items():
                if leaf not in cls.model_fields and leaf not in cls.__dict__:
                    setattr(cls, leaf, _flat_reader(group, leaf, field.description))

    @property
    def model_fields_set(self) -> set[str]:
        """Names of the fields set explicitly, a group's options by their own names."""
        names = set(self.__pydantic_fields_set__)
        for group in option_groups(type(self)):
            if group in names:
                names.discard(group)
                names |= getattr(self, group).model_fields_set
        return names

    @classmethod
    def model_construct(cls, _fields_set: set[str] | None = None, **values: Any):
        """As pydantic's, taking the flat names of ``model_fields_set`` back to their groups."""
        if _fields_set is not None:
            flat = {leaf: group for group, model in option_groups(cls).items() for leaf in model.model_fields}
            _fields_set = {flat.get(name, name) for name in _fields_set}
        return super().model_construct(_fields_set, **values)

    @classmethod
    def option_names(cls) -> list[str]:
        """Every name the model accepts: its fields, then its groups' options (flat)."""
        groups = option_groups(cls)
        return [name for name in cls.model_fields if name not in groups] + [
            leaf for model in groups.values() for leaf in model.model_fields
        ]


def field_definitions(
    model: type[BaseModel],
    names: Iterable[str] | None = None,
    *,
    optional: bool = False,
    descriptions: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Definitions for ``pydantic.create_model`` copying fields of ``model``: a model derived from another.

    Args:
        model: The model the fields are declared in.
        names: The fields to copy, in this order; every field of ``model`` when not given.
        optional: Make every copy optional with default ``None`` (same title, description and
            bounds): "not set". A preset holds such copies.
        descriptions: Other descriptions for some of the copies, by name.

    Example:
        >>> from pydantic import create_model
        >>> Partial = create_model("Partial", **field_definitions(RetryOptions, optional=True))
        >>> Partial(), Partial(segment_retries=1).segment_retries
        (Partial(segment_retries=None, retry_delay_seconds=None), 1)
    """
    definitions: dict[str, Any] = {}
    for name in model.model_fields if names is None else names:
        field = model.model_fields[name]
        description = (descriptions or {}).get(name, field.description)
        if optional:
            annotation = Optional[field.annotation]  # noqa: UP007 - built at run time
            if field.metadata:  # the bounds (ge, le...), kept for the value when one is set
                annotation = Annotated[(annotation, *field.metadata)]
            definitions[name] = (annotation, Field(default=None, title=field.title, description=description))
        else:
            copied = FieldInfo.merge_field_infos(field, description=description)
            definitions[name] = (field.annotation, copied)
    return definitions


def _flat_reader(group: str, leaf: str, doc: str | None) -> property:
    return property(lambda self: getattr(getattr(self, group), leaf), doc=f"``{group}.{leaf}``: {doc or ''}")


class BackendSpec(BaseModel):
    """Which service to call and where its key is; holds no secret itself (addresses with credentials are refused)."""

    model_config = ConfigDict(hide_input_in_errors=True, json_schema_extra=plain_optional_properties)

    name: BackendName = Field(default="local", title="Backend", description="The modify-video service.")
    credentials_block: str | None = Field(
        default=None,
        title="Credentials block",
        description="Name of a saved credentials block of the service; without it the key is read from the environment.",
    )
    base_url: Location | None = Field(
        default=None, title="Base URL", description="Another address for the service (a proxy or a test server)."
    )
    model: str | None = Field(default=None, title="Model", description="The service's model, e.g. ray-2 or ray-flash-2 (Luma, fal).")
    poll_interval_seconds: float | None = Field(
        default=None,
        gt=0,
        title="Poll interval (s)",
        description="Seconds between status checks of a queued job; the service's default when empty.",
    )
    timeout_seconds: float | None = Field(
        default=None, gt=0, title="Answer timeout (s)", description="Seconds to wait for one answer of the service; its default when empty."
    )
    max_wait_seconds: float | None = Field(
        default=None,
        gt=0,
        title="Longest wait for a job (s)",
        description="Seconds a queued job may take before its try fails (the job is kept: the next try or a re-run "
        "polls it again, without paying again); the service's documented time when empty (900 for the queue services).",
    )
    upload_url: Location | None = Field(
        default=None,
        title="Upload URL",
        description="Where segments are uploaded for services that take media by URL (an HTTP PUT store).",
    )
    upload_block: Location | None = Field(
        default=None,
        title="Upload block folder",
        description="Or a storage block's folder for those uploads, read by the service through presigned URLs: "
        "block://remote-file-system/BLOCK-NAME/FOLDER on s3:// or gs://.",
    )
    account: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        title="Account label",
        description="Names the service account in the Prefect global concurrency limits every run and machine "
        "shares (modify-video:SERVICE:ACCOUNT:generations and :creates); give each paid account its own label.",
    )
    account_concurrency: int | None = Field(
        default=None,
        ge=1,
        title="Account concurrency",
        description="Generations in flight at once across all runs on the account; the service's documented "
        "limit when empty (Luma: 10); services with none documented are then limited per run only.",
    )


class ModifyVideoParameters(GroupedOptions):
    """What to restyle, how, with which service, and where the result goes.

    Example:
        >>> params = ModifyVideoParameters(source="film.mp4", anchor_strength=0.5, segment_retries=1)
        >>> params.seams.anchor_strength, params.anchor_strength, params.retries.segment_retries
        (0.5, 0.5, 1)
        >>> sorted(params.model_fields_set)
        ['anchor_strength', 'segment_retries', 'source']
    """

    source: Location = Field(
        title="Source video",
        description="The video to restyle: a local path, an http(s) URL or a storage block's file, e.g. "
        "block://local-file-system/my-folder/film.mp4 (block://BLOCK-TYPE/BLOCK-NAME/PATH).",
    )
    prompt: str = Field(
        default="",
        title="Prompt",
        description="The look to give the video, e.g. 'warm vintage film with grain'.",
    )
    mode: Mode = Field(
        default="flex_1",
        title="Mode",
        description="How far from the source: adhere (subtle), then flex (keeps shapes), then reimagine (loose).",
    )
    first_frame: Location | None = Field(
        default=None,
        title="First frame",
        description="An image (path, URL or block:// reference): a restyled version of the video's first frame (recommended).",
    )
    output: Location | None = Field(
        default=None,
        title="Output path",
        description="Where the restyled video is written (a local path or block:// reference); SOURCE.modified.EXT beside the source when empty.",
    )
    preset: str | None = Field(
        default=None,
        title="Preset",
        description="Name of a saved Modify Video Preset block; parameters given here override it.",
    )
    backend: BackendSpec = Field(default_factory=BackendSpec, title="Backend", description="The service to use.")
    max_segment_seconds: float | None = Field(
        default=None,
        title="Longest segment (s)",
        description="Upper bound on a segment's length; the service's own cap when empty.",
        ge=2,
    )
    concurrency: int | None = Field(
        default=None,
        title="Concurrency",
        description="Segments in flight at once; the service's documented limit when empty.",
        ge=1,
        le=64,
    )
    store_dir: Location | None = Field(
        default=None,
        title="Result store",
        description="Where paid results are kept and found again on a re-run: a local folder or a storage block's "
        "folder (block://BLOCK-TYPE/BLOCK-NAME/FOLDER, e.g. S3); under PREFECT_HOME when empty.",
    )
    max_source_bytes: int | None = Field(
        default=None,
        ge=1,
        title="Largest source download (bytes)",
        description="A source (or first frame) downloaded from a URL or a storage block over this size is refused; "
        "when empty, 10 GiB or half the free space of the download folder, whichever is less.",
    )
    max_cost_usd: float | None = Field(
        default=None,
        ge=0,
        title="Budget (USD)",
        description="Refuse to start when the estimate is above it, and send no call that would pass it.",
    )
    budget: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
        title="Shared budget name",
        description="Count spending in a budget of this name kept in the result store, shared by every run and "
        "machine naming it (a batch's videos share one); max_cost_usd is its cap. Empty: this run's own spending.",
    )
    seams: SeamOptions = Field(
        default_factory=SeamOptions,
        title="Seams",
        description="Colour anchoring, overlap, sequential mode and the threshold of the seam report.",
    )
    retries: RetryOptions = Field(
        default_factory=RetryOptions,
        title="Retries",
        description="How often and after how long a segment that failed with a retryable error is tried again.",
    )
    refresh: bool = Field(default=False, title="Pay again (refresh)", description="Pay for every segment again instead of reusing stored results.")
    resend_unknown: bool = Field(
        default=False,
        title="Send lost creates again",
        description="Send again the segments whose create got no answer (a dropped connection, a machine that died "
        "while sending) and that the service's list of jobs cannot settle: they may have been billed, so a run "
        "otherwise stops on them. Check the service's dashboard first.",
    )

    def resolved_overlap_frames(self, backend: type[ModifyBackend] | ModifyBackend) -> int:
        """``seams.resolved_overlap_frames``: the overlap to plan with."""
        return self.seams.resolved_overlap_frames(backend)

    def resolved_output(self) -> str:
        """The output location, defaulting to ``<stem>.modified<ext>`` beside the source.

        Raises:
            InvalidInputError: the source is a URL and no output is given.

        Example:
            >>> ModifyVideoParameters(source="/videos/film.mp4").resolved_output()
            '/videos/film.modified.mp4'
        """
        from pathlib import Path

        from prefect_modify_video.media.join import default_output_path
        from prefect_modify_video.storage.locations import location_name, sibling_location

        if self.output:
            return self.output
        return sibling_location(self.source, default_output_path(Path(location_name(self.source))).name)


# The flow's run form: the first fields of ModifyVideoParameters at the top, the rest in titled groups.
# Each group below copies its fields from ModifyVideoParameters (``field_definitions``): names only here.
LimitOptions = create_model(
    "LimitOptions",
    __base__=OptionGroup,
    __doc__="Segment length, concurrency, download size and spending caps of a run.",
    **field_definitions(
        ModifyVideoParameters, ["max_segment_seconds", "concurrency", "max_source_bytes", "max_cost_usd", "budget"]
    ),
)
StoreOptions = create_model(
    "StoreOptions",
    __base__=OptionGroup,
    __doc__="Where paid results are kept and found again, and when a segment is paid for again.",
    **field_definitions(ModifyVideoParameters, ["store_dir", "refresh", "resend_unknown"]),
)

FLOW_GROUPS: dict[str, tuple[str, type[OptionGroup]]] = {
    "limits": ("Limits and budget", LimitOptions),
    "store": ("Result store and paying again", StoreOptions),
    "seams": (ModifyVideoParameters.model_fields["seams"].title, SeamOptions),
    "retries": (ModifyVideoParameters.model_fields["retries"].title, RetryOptions),
}
"""The groups of the ``modify-video`` flow's parameters after the first ones: title and model, by parameter name."""


def _optional_value_type(annotation: Any) -> Any:
    """``X`` for ``X | None``, else ``None``."""
    if get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation):
        rest = tuple(arg for arg in get_args(annotation) if arg is not type(None))
        return rest[0] if len(rest) == 1 else Union[rest]  # noqa: UP007 - built at run time
    return None


@functools.cache
def flow_signature() -> inspect.Signature:
    """The ``modify-video`` flow's keyword parameters, derived from ``ModifyVideoParameters`` (Prefect's run form).

    Source, prompt, mode, first frame, output, preset and backend come first, then one parameter
    per group of ``FLOW_GROUPS``. Each keeps its field's type, bounds, title and description.
    An optional text at the top has the default ``""`` ("not set") and a plain string schema, so
    the form shows no type switch; a group's default is the group's defaults (without the empty ones).

    Example:
        >>> list(flow_signature().parameters)
        ['source', 'prompt', 'mode', 'first_frame', 'output', 'preset', 'backend', 'limits', 'store', 'seams', 'retries']
    """
    grouped = {leaf for _, model in FLOW_GROUPS.values() for leaf in model.model_fields}
    parameters = []
    for name, field in ModifyVideoParameters.model_fields.items():
        if name in grouped or name in FLOW_GROUPS:
            continue
        annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        default = field.get_default(call_default_factory=True)
        value_type = _optional_value_type(field.annotation)
        if value_type is not None:
            plain = TypeAdapter(Annotated[(value_type, *field.metadata)] if field.metadata else value_type).json_schema()
            annotation = Annotated[annotation, WithJsonSchema(plain)]
            default = "" if plain.get("type") == "string" else default
        parameters.append(_flow_parameter(name, annotation, default, field.title, field.description))
    for name, (title, model) in FLOW_GROUPS.items():
        default = model()
        parameters.append(_flow_parameter(name, model, default, title, model.__doc__))
    return inspect.Signature(parameters)


def _flow_parameter(name: str, annotation: Any, default: Any, title: str | None, description: str | None) -> inspect.Parameter:
    # Prefect titles a parameter by its name and reads ``description`` and ``json_schema_extra`` of a Field default.
    extra: dict[str, Any] = {"title": title or name}
    if isinstance(default, BaseModel):  # the form's prefilled group: without its empty options
        extra["default"] = default.model_dump(mode="json", exclude_none=True)
    field = Field(default=default, description=description, json_schema_extra=extra)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=field, annotation=annotation)


def _empty(value: Any) -> bool:
    return value is None or value == ""


def _is_default(value: Any, default: Any) -> bool:
    if isinstance(default, BaseModel) and isinstance(value, dict):  # a model field given as JSON (the backend)
        try:
            return type(default).model_validate(value) == default
        except ValueError:
            return False
    return value == default


def parameters_from_flow(arguments: dict[str, Any]) -> ModifyVideoParameters:
    """The run's parameters from the ``modify-video`` flow's arguments (flat, with groups; see ``flow_signature``).

    Empty values (``None``, ``""``, as the run form sends them) and values equal to the field's
    default are left unset, so a preset fills them (Prefect hands the flow every default; a run
    form sends every field).

    Example:
        >>> params = parameters_from_flow({"source": "a.mp4", "mode": "flex_1", "output": "", "limits": {"concurrency": 2}})
        >>> params.concurrency, sorted(params.model_fields_set)
        (2, ['concurrency', 'source'])
    """
    defaults = ModifyVideoParameters.model_construct()
    data: dict[str, Any] = {}
    for name, value in arguments.items():
        if isinstance(value, FieldInfo):  # the function called without Prefect: its signature's default
            continue
        if name in FLOW_GROUPS:
            model = FLOW_GROUPS[name][1]
            given = (
                {leaf: getattr(value, leaf) for leaf in value.model_fields_set}
                if isinstance(value, BaseModel) else dict(value or {})
            )
            for leaf, leaf_value in given.items():
                if leaf in model.model_fields and not _empty(leaf_value) and leaf_value != getattr(defaults, leaf):
                    data[leaf] = leaf_value
        elif name == "source" or (not _empty(value) and not _is_default(value, getattr(defaults, name, None))):
            data[name] = value
    return ModifyVideoParameters.model_validate(data)


def flow_arguments(params: ModifyVideoParameters, **dump: Any) -> dict[str, Any]:
    """The ``modify-video`` flow's arguments for ``params``: what it sets, each group's options nested.

    Args:
        params: The run's parameters.
        dump: Options of ``model_dump`` (``mode="json"`` for a deployment's run); ``exclude_unset``
            and ``exclude_none`` (empty: not set) are true unless given.

    Example:
        >>> flow_arguments(ModifyVideoParameters(source="a.mp4", concurrency=2, anchor_strength=0.5))
        {'source': 'a.mp4', 'limits': {'concurrency': 2}, 'seams': {'anchor_strength': 0.5}}
    """
    data = params.model_dump(**{"exclude_unset": True, "exclude_none": True, **dump})
    for name, (_, model) in FLOW_GROUPS.items():
        if name in ModifyVideoParameters.model_fields:
            continue
        values = {leaf: data.pop(leaf) for leaf in model.model_fields if leaf in data}
        if values:
            data[name] = values
    return {name: data[name] for name in flow_signature().parameters if name in data}
