"""How much of a service run comes after the last answer: the final encodes left once the service is done.

One run of ``modify-video`` on a 40 s 960x540 30 fps single shot (9 segments under 5 s, overlaps and
colour anchoring on, as a service run has them) against the fake Segmind answering each create after
L s, C at a time. Each segment's final encode runs as soon as it and the next segment are conformed
(``tasks.seams.SegmentFinisher``), so little should be left after the last answer: only the last
segments' finish, the join and the seam report. Printed: the run's wall time, when the last answer
came, and the seconds after it, with their share of the run.

Measured once (2-core box, L = 6, C = 2): before the change, 69.9 s with 26.5 s after the last
answer; after it, 53.8 s with 9.9 s.

    python bench/finishing.py [--latency 6] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from prefect_modify_video.flows.modify_video import modify_video  # noqa: E402
from prefect_modify_video.media.sample import make_sample_video  # noqa: E402
from prefect_modify_video.testing import FakeModifyServer, Fault  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=6.0, help="L: seconds the service takes per create")
    parser.add_argument("--concurrency", type=int, default=2, help="C: generations at once")
    args = parser.parse_args()
    os.environ["SEGMIND_API_KEY"] = "bench-key"
    with tempfile.TemporaryDirectory() as folder, prefect_test_harness(server_startup_timeout=120):
        work = Path(folder)
        source = make_sample_video(work / "shot.mp4", seconds=40, width=960, height=540, fps=30, scenes=1)
        with FakeModifyServer() as server:
            server.script("segmind", [Fault.latency(args.latency)] * 40)
            started = time.monotonic()
            result = modify_video(
                source=str(source), prompt="bench", output=str(work / "out.mp4"),
                backend={"name": "segmind", "base_url": server.base_url},
                limits={"max_segment_seconds": 5, "concurrency": args.concurrency},
                store={"store_dir": str(work / "store")},
            )
            ended = time.monotonic()
            last_answer = max(end for _, end in server.create_spans("segmind"))
    run = ended - started
    print(f"{result.segments} segments, L = {args.latency:g} s, C = {args.concurrency}: run {run:.1f} s, "
          f"last answer at {last_answer - started:.1f} s")
    print(f"after the last answer: {ended - last_answer:.1f} s ({(ended - last_answer) / run:.2f} of the run)")


if __name__ == "__main__":
    main()
