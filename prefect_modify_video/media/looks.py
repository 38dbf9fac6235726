"""Colour and tone looks for the embedded ``local`` backend, as ffmpeg filter chains.

The ``local`` backend restyles for real without a paid service: it transfers the colour
statistics of a first-frame image (one transform for the whole video), applies the looks the
prompt names, and scales everything by a strength that rises from ``adhere_1`` to
``reimagine_3``. Building the filter is pure; measuring statistics reads pixels through a
rawvideo pipe into numpy.

Every look filters the decoded YUV in place (``eq``, ``hue``, ``colorcorrect``, ``noise``): a
filter that needs RGB, such as ``colorbalance`` or ``curves``, costs a conversion each way, and
``colorbalance`` itself ran at barely twice realtime on 720p.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prefect_modify_video.media.colour import ColourTransfer, yuv_statistics

MODE_STRENGTH = {
    "adhere_1": 0.25,
    "adhere_2": 0.35,
    "adhere_3": 0.45,
    "flex_1": 0.55,
    "flex_2": 0.65,
    "flex_3": 0.75,
    "reimagine_1": 0.85,
    "reimagine_2": 0.93,
    "reimagine_3": 1.0,
}
FULL_LOOK_STRENGTH = MODE_STRENGTH["flex_1"]
"""From this strength up (``flex_1``), a look that is all or nothing (black and white) is reached in full;
below it (the adhere modes) it stays subtle."""


def _split_tone(s: float, red: tuple[float, float], blue: tuple[float, float], saturation: float = 0.0) -> str:
    """A ``colorcorrect`` filter that tints shadows and highlights, at strength ``s``.

    Args:
        s: Strength, 0 (identity) to 1.
        red: The shift of V (towards red) at black and at white at full strength, as a fraction
            of the chroma range; it varies linearly with Y in between.
        blue: The same for U (towards blue).
        saturation: The chroma gain added at full strength (0: none).
    """
    return (
        f"colorcorrect=rl={red[0] * s:.3f}:rh={red[1] * s:.3f}:bl={blue[0] * s:.3f}:bh={blue[1] * s:.3f}"
        f":saturation={1 + saturation * s:.3f}"
    )


def _saturation_left(s: float) -> float:
    """The share of colour a black and white look keeps: none from ``FULL_LOOK_STRENGTH`` up, most below it."""
    return 0.0 if s >= FULL_LOOK_STRENGTH - 1e-9 else 1 - s


def _noir(s: float) -> list[str]:
    return [f"hue=s={_saturation_left(s):.3f}", f"eq=contrast={1 + 0.5 * s:.3f}"]


def _black_and_white(s: float) -> list[str]:
    return [f"hue=s={_saturation_left(s):.3f}"]


def _warm(s: float) -> list[str]:
    # Redder and less blue in the shadows and midtones, fading out towards white.
    return [_split_tone(s, red=(0.04, 0.0), blue=(-0.04, 0.0))]


def _cool(s: float) -> list[str]:
    return [_split_tone(s, red=(-0.04, 0.0), blue=(0.04, 0.0))]


def _teal_orange(s: float) -> list[str]:
    # Teal below Y of about 0.3 (of black to white), orange above, and a little more saturation.
    return [_split_tone(s, red=(-0.05, 0.13), blue=(0.08, -0.2), saturation=0.3)]


def _vintage(s: float) -> list[str]:
    return [
        f"eq=saturation={1 - 0.45 * s:.3f}:contrast={1 - 0.15 * s:.3f}:brightness={0.04 * s:.3f}",
        _split_tone(s, red=(0.015, 0.0), blue=(-0.02, 0.0)),
    ]


def _grain(s: float) -> list[str]:
    # Luma grain in a fixed pattern: grain that changes every frame is new detail in every frame, and cost
    # 8 to 35 times the bitrate of the same clip without it (x264, 320x180); this costs about 2 to 3 times
    # (3.06 at full strength at 3 + 9 s once the answer was encoded at the final settings, hence 8 s).
    return [f"noise=c0s={round(3 + 8 * s)}"]


def _high_contrast(s: float) -> list[str]:
    return [f"eq=contrast={1 + 0.6 * s:.3f}:saturation={1 + 0.2 * s:.3f}"]


def _pastel(s: float) -> list[str]:
    return [f"eq=saturation={1 - 0.6 * s:.3f}:contrast={1 - 0.25 * s:.3f}:brightness={0.06 * s:.3f}"]


# Phrases are matched longest first; each maps to the filters of one look.
LOOKS: dict[str, tuple[tuple[str, ...], object]] = {
    "film noir": (("film noir", "noir"), _noir),
    "black and white": (
        ("black and white", "black & white", "black-and-white", "b&w", "monochrome", "grayscale", "greyscale"),
        _black_and_white,
    ),
    "teal-orange": (("teal and orange", "teal-orange", "teal orange", "orange and teal", "blockbuster"), _teal_orange),
    "vintage": (("vintage", "retro", "old film", "sepia"), _vintage),
    "grain": (("film grain", "grain", "grainy"), _grain),
    "high contrast": (("high contrast", "high-contrast", "contrasty", "punchy", "dramatic"), _high_contrast),
    "pastel": (("pastel", "desaturated", "muted", "washed out", "faded", "soft"), _pastel),
    "warm": (("warm", "golden", "sunset", "golden hour"), _warm),
    "cool": (("cool", "cold", "icy", "blue"), _cool),
}
DEFAULT_LOOK = "teal-orange"

# Words that carry no look; they are not reported as unknown.
STOP_WORDS = set(
    "a an the and or with of in on to into it its this that make turn give look looks like style styled "
    "video film movie clip scene shot please very more less bit slightly strong subtle tone tones "
    "colour color colours colors grade graded grading feel mood as is be by for from at".split()
)


@dataclass(frozen=True)
class LookChoice:
    """The looks a prompt asked for, in the order applied, and the words no look matched."""

    looks: tuple[str, ...]
    unknown_words: tuple[str, ...]


def choose_looks(prompt: str) -> LookChoice:
    """Finds the looks a prompt names; falls back to the default look when it names none."""
    text = " " + re.sub(r"\s+", " ", prompt.lower()) + " "
    found: list[tuple[int, str]] = []
    phrases = sorted(
        ((phrase, look) for look, (names, _) in LOOKS.items() for phrase in names),
        key=lambda item: -len(item[0]),
    )
    for phrase, look in phrases:
        pattern = r"(?<![\w&])" + re.escape(phrase) + r"(?![\w&])"
        match = re.search(pattern, text)
        if match:
            text = text[: match.start()] + " " * len(phrase) + text[match.end() :]
            if look not in (name for _, name in found):
                found.append((match.start(), look))
    unknown = tuple(w for w in re.findall(r"[a-z][a-z'-]*", text) if w not in STOP_WORDS)
    looks = tuple(look for _, look in sorted(found)) or (DEFAULT_LOOK,)
    return LookChoice(looks=looks, unknown_words=unknown)


def fit_colour_transfer(reference: Path, target_image: Path) -> ColourTransfer:
    """Fits the transfer that gives ``reference`` (the source's first frame) the colours of ``target_image``."""
    ref_mean, ref_std = yuv_statistics(reference)
    tgt_mean, tgt_std = yuv_statistics(target_image)
    gain = np.clip(tgt_std / np.maximum(ref_std, 1.0), 0.25, 4.0)
    offset = tgt_mean - gain * ref_mean
    return ColourTransfer(gain=tuple(float(g) for g in gain), offset=tuple(float(o) for o in offset))


def build_look_filter(looks: tuple[str, ...], strength: float, transfer: ColourTransfer | None = None) -> str:
    """The ffmpeg filter chain of a colour transfer followed by the given looks at ``strength``."""
    filters = [transfer.filter(strength)] if transfer is not None else []
    for look in looks:
        filters += LOOKS[look][1](strength)
    return ",".join(filters)
