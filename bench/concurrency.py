"""Concurrency against a slow service, and the cost of a second run.

40 segments against the fake server answering after 2 s, 8 at a time: the wall time of the
run against the ideal ceil(40/8) x 2 s plus the media work (measured as the second run of the
same video, which finds every segment stored and so does only the media work), printed as a
ratio (target <= 1.25); then the second run's billed calls (0) and time.

    python bench/concurrency.py [--segments 40] [--concurrency 8] [--latency 2]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from prefect_modify_video.flows import BackendSpec, ModifyVideoParameters, modify_video  # noqa: E402
from prefect_modify_video.media.sample import make_sample_video  # noqa: E402
from prefect_modify_video.testing import FakeModifyServer, Fault  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency", type=float, default=2.0)
    args = parser.parse_args()
    os.environ["SEGMIND_API_KEY"] = "bench-key"
    segment_seconds = 2.0
    with tempfile.TemporaryDirectory() as folder, prefect_test_harness(server_startup_timeout=120):
        work = Path(folder)
        source = make_sample_video(
            work / "source.mp4", seconds=args.segments * segment_seconds, width=320, height=180, fps=24, scenes=4
        )
        with FakeModifyServer() as server:
            server.script("segmind", [Fault.latency(args.latency)] * args.segments)

            def run(output: str):
                params = ModifyVideoParameters(
                    source=str(source),
                    prompt="bench",
                    output=str(work / output),
                    backend=BackendSpec(name="segmind", base_url=server.base_url),
                    max_segment_seconds=segment_seconds + 0.05,
                    concurrency=args.concurrency,
                    store_dir=str(work / "store"),
                )
                started = time.perf_counter()
                result = modify_video(params)
                return result, time.perf_counter() - started

            first, first_seconds = run("first.mp4")
            second, second_seconds = run("second.mp4")
        ideal_calls = math.ceil(first.segments / args.concurrency) * args.latency
        ideal = ideal_calls + second_seconds
        print(f"segments: {first.segments}, concurrency {args.concurrency}, service latency {args.latency:g} s")
        print(f"first run: {first_seconds:.1f} s, {first.billed_calls} billed calls")
        print(f"second run (media work only): {second_seconds:.1f} s, {second.billed_calls} billed calls")
        print(f"ideal: {ideal_calls:.1f} s of calls + {second_seconds:.1f} s of media work = {ideal:.1f} s")
        print(f"second run billed calls: {second.billed_calls}, time {second_seconds:.1f} s")
        print(f"concurrency ratio (first run / ideal): {first_seconds / ideal:.2f}")


if __name__ == "__main__":
    main()
