"""A synthetic sample video with known scene cuts and a tone, made with ffmpeg's lavfi sources."""

from __future__ import annotations

from pathlib import Path

from prefect_modify_video.errors import InvalidInputError
from prefect_modify_video.media.ffmpeg import require_ffmpeg, write_with_ffmpeg


def sample_scene_sources(width: int, height: int, fps: int) -> list[str]:
    """The lavfi sources of the sample's scenes, each visibly different from the others."""
    size = f"{width}x{height}"
    return [
        f"testsrc2=size={size}:rate={fps}",
        f"smptehdbars=size={size}:rate={fps},hue=h=t*24",
        f"gradients=size={size}:rate={fps}:speed=0.03:c0=0x2050d0:c1=0xd08020:c2=0x20a040:nb_colors=3:seed=1",
        f"testsrc=size={size}:rate={fps},hue=s=0.6",
    ]


def make_sample_video(
    destination: str | Path,
    *,
    seconds: float = 75.0,
    width: int = 1280,
    height: int = 720,
    fps: int = 30,
    scenes: int = 4,
    tone_hz: int = 440,
    audio: bool = True,
) -> Path:
    """Writes a sample video: ``scenes`` shots of equal length separated by hard cuts, plus a tone.

    Args:
        destination: Where the MP4 is written (atomically).
        seconds: Length of the video.
        width: Width in pixels.
        height: Height in pixels.
        fps: Frames per second.
        scenes: Number of shots; cuts fall at ``seconds * k / scenes``.
        tone_hz: Frequency of the sine tone on the audio track.
        audio: Whether to add the audio track.

    Returns:
        The path written.
    """
    require_ffmpeg()
    if seconds <= 0 or width < 16 or height < 16 or fps <= 0 or scenes < 1:
        raise InvalidInputError("sample: seconds, fps and scenes must be positive and the size at least 16x16")
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    total_frames = round(seconds * fps)
    scene_sources = sample_scene_sources(width, height, fps)
    bounds = [round(total_frames * k / scenes) for k in range(scenes + 1)]
    args: list[str] = []
    labels = []
    for k in range(scenes):
        frames = bounds[k + 1] - bounds[k]
        source = scene_sources[k % len(scene_sources)]
        args += ["-f", "lavfi", "-i", f"{source},trim=end_frame={frames},setpts=PTS-STARTPTS"]
        labels.append(f"[{k}:v]")
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency={tone_hz}:sample_rate=48000:duration={seconds}"]
    filter_graph = f"{''.join(labels)}concat=n={scenes}:v=1:a=0,format=yuv420p[v]"
    args += ["-filter_complex", filter_graph, "-map", "[v]"]
    if audio:
        args += ["-map", f"{scenes}:a", "-c:a", "aac", "-b:a", "128k"]
    args += [
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-r", str(fps),
        "-frames:v", str(total_frames), "-movflags", "+faststart",
    ]
    return write_with_ffmpeg(args, destination)
