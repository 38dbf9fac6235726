"""What a create call carries and what the fake remembers of a queued job."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from prefect_modify_video.testing.fake.faults import Fault


@dataclass
class CreateInput:
    """A parsed create call.

    Attributes:
        video: The clip to restyle.
        first_frame: The first-frame image, if one was sent.
        model: The model the job reports (``ray-2``, ``ray-2-flash``, ``luma/modify-video``...).
        echo: The request body to echo back, data URIs shortened.
        params: The non-media fields and how each medium came (``ReceivedCall.params``).
        keyframes: Timed guide images: ``(image bytes, where)``, ``where`` in the service's own unit
            (Runway: seconds of the input; Luma: frame index).
        output_fps: The frame rate the service answers at.
        refusal: Why the input is refused when the job reads it (Runway: over 30 fps), if it is.
    """

    video: bytes
    first_frame: bytes | None
    model: str
    echo: dict
    params: dict
    keyframes: list[tuple[bytes, float]] = field(default_factory=list)
    output_fps: float = 24.0
    refusal: str | None = None
    """Why the service refuses the input once it reads it (the job fails as bad input, unbilled)."""


@dataclass
class Job:
    """A queued job: its fault, progress, outcome and its own scripted poll/download faults.

    ``outcome`` is ``running`` until the background work ends ``completed`` or ``failed``;
    what a poll shows also depends on ``polls``, ``released`` and ``canceled``
    (``FakeModifyServer._job_state``).
    """

    id: str
    service: str
    route: str
    model: str
    echo: dict
    fault: Fault | None
    created_wall: datetime
    epoch: int = 0
    created: float = field(default_factory=time.monotonic)
    polls: int = 0
    released: bool = False
    canceled: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    outcome: str = "running"
    failure_kind: str | None = None
    failure_reason: str | None = None
    result_name: str | None = None
    completed_wall: datetime | None = None
    ended_seen: bool = False
    """Whether a poll has shown its end (from then on it no longer counts as in flight)."""
    faults: dict[str, collections.deque] = field(default_factory=dict)
    """This job's own fault queues, ``on`` (``poll``/``download``) to faults."""
    output_fps: float = 24.0
    """The frame rate the job answers at."""
    refusal: str | None = None
    """Why its input is refused when the work reads it: it fails as bad input and is not billed."""
