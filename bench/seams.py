"""Seams against a drifting service: the worst seam with and without colour anchoring.

A 20 s single-shot 640x360 video (every seam inside the shot, the hard case) goes through the
fake service with drift (each answer its own colour cast, as real answers have), segments under
5 s; it prints the worst seam's jump as a multiple of the source's own jump, without and with
anchoring, and the billed-seconds overhead of overlaps (0: segments do not overlap yet) on its
last line.

    python bench/seams.py [--seed 0] [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from prefect_modify_video.flows import BackendSpec, ModifyVideoParameters, modify_video  # noqa: E402
from prefect_modify_video.media.sample import make_sample_video  # noqa: E402
from prefect_modify_video.testing import FakeModifyServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    os.environ["FAL_KEY"] = "bench-key"
    with tempfile.TemporaryDirectory() as folder, prefect_test_harness(server_startup_timeout=120):
        work = Path(folder)
        source = make_sample_video(work / "shot.mp4", seconds=args.seconds, width=640, height=360, fps=30, scenes=1)
        with FakeModifyServer(polls_to_complete=1, drift=1.0, drift_seed=args.seed) as server:
            results = {}
            for anchor in (False, True):
                results[anchor] = modify_video(
                    ModifyVideoParameters(
                        source=str(source),
                        prompt="bench",
                        output=str(work / f"anchor-{anchor}.mp4"),
                        backend=BackendSpec(name="fal", base_url=server.base_url, poll_interval_seconds=0.05),
                        max_segment_seconds=5.0,
                        store_dir=str(work / "store"),
                        anchor_colours=anchor,
                    )
                )
        plain, anchored = results[False], results[True]
        print(f"{plain.segments} segments, {len(plain.seams_flagged)} seams flagged without anchoring, "
              f"{len(anchored.seams_flagged)} with")
        print(
            f"worst seam / source jump: without anchoring {plain.worst_seam_ratio:.2f}, "
            f"with anchoring {anchored.worst_seam_ratio:.2f}, overlap billed-seconds overhead 0.00 s"
        )


if __name__ == "__main__":
    main()
