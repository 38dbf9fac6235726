"""A conformed clip whose encode is left to the finish step: the answer as it came, with how to conform it.

Where the finish step changes a segment's frames anyway (colour anchoring, overlaps), the conform
step writes no frames: it stream-copies the service's answer and writes in its comment tag the
filters that bring it to the source's rate, size and frame count (``PendingConform``). The finish
step runs those filters, the colour transfer and the overlap's trim in the one ffmpeg command that
encodes the segment for the join, so no lossless intermediate is written and decoded again.
The tag travels with the file (a shared work folder keeps it); every reader of a conformed clip
(statistics, heads for the blend, a neighbour's first frame) goes through ``conformed_reading``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

from prefect_modify_video.media.probe import probe_video

PENDING_TAG = "pending conform "
"""How the comment tag of a pending clip starts; the recipe (JSON) follows."""


@dataclass(frozen=True)
class PendingConform:
    """How to conform a stream-copied answer: what ``conform.conform_clip`` would do, as filters.

    Attributes:
        stretch: Factor on the answer's timestamps (text of a float; ``"1"``: none).
        frame_rate: The source's rate (``num/den``).
        width: Output width.
        height: Output height.
        sample_aspect_ratio: Output SAR (``num:den``).
        frames: The segment's sent frames (the conformed clip's frame count).
    """

    stretch: str
    frame_rate: str
    width: int
    height: int
    sample_aspect_ratio: str
    frames: int

    def filters(self, *, full_size: bool = True) -> list[str]:
        """The filters giving the conformed frames (yuv420p); without ``full_size``, at the answer's size."""
        chain = [] if float(self.stretch) == 1 else [f"setpts=(PTS-STARTPTS)*{self.stretch}"]
        chain.append(f"fps=fps={self.frame_rate}")
        if full_size:
            chain += [f"scale={self.width}:{self.height}:flags=bicubic",
                      f"setsar={self.sample_aspect_ratio.replace(':', '/')}"]  # fmt: skip
        return [*chain, f"tpad=stop_mode=clone:stop={self.frames}", f"trim=end_frame={self.frames}", "format=yuv420p"]

    def tag(self) -> str:
        """The comment tag that carries this recipe."""
        return PENDING_TAG + json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_tag(cls, comment: str) -> PendingConform | None:
        """The recipe in a comment tag, or ``None`` when it holds none."""
        if not comment.startswith(PENDING_TAG):
            return None
        try:
            return cls(**json.loads(comment[len(PENDING_TAG) :]))
        except (ValueError, TypeError):
            return None


def pending_conform(stretch: Fraction, frame_rate: str, width: int, height: int, sar: str, frames: int) -> PendingConform:
    """The recipe for ``conform_clip``'s settings (``stretch`` as the float text it writes in ``setpts``)."""
    return PendingConform("1" if stretch == 1 else f"{float(stretch):.9f}", frame_rate, width, height, sar, frames)


@dataclass(frozen=True)
class ConformedReading:
    """How to read a conformed clip's frames: filters after its decode, and what comes out.

    Attributes:
        filters: Filters (empty for a clip already conformed).
        width: Frame width.
        height: Frame height.
        frames: Frame count.
        pending: The recipe, for a pending clip.
    """

    filters: list[str]
    width: int
    height: int
    frames: int
    pending: PendingConform | None


def conformed_reading(clip: str | Path) -> ConformedReading:
    """How to read ``clip``'s conformed frames: through its recipe if it is pending, else as it is."""
    info = probe_video(clip)
    recipe = PendingConform.from_tag(info.comment)
    if recipe is None:
        return ConformedReading([], info.display_width, info.display_height, info.frames, None)
    return ConformedReading(recipe.filters(), recipe.width, recipe.height, recipe.frames, recipe)
