"""Seams against a drifting service: the worst seam with and without colour anchoring.

A 20 s single-shot 640x360 video (every seam inside the shot, the hard case) goes through the
fake service with drift (each answer its own colour cast, as real answers have), segments under
5 s, three ways: plain joins (no anchoring, no overlap), anchoring alone, and the default
(anchoring plus 12-frame overlaps cross-blended). It prints, for each, the worst seam's jump as
a multiple of the source's own jump (``seams.measure_seams``), and on its last line the worst
seam without and with anchoring and the billed seconds the overlaps add.

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
from prefect_modify_video.parameters import flow_arguments  # noqa: E402
from prefect_modify_video.media.probe import probe_video  # noqa: E402
from prefect_modify_video.media.sample import make_sample_video  # noqa: E402
from prefect_modify_video.media.plan import plan_video  # noqa: E402
from prefect_modify_video.media.seams import measure_seams  # noqa: E402
from prefect_modify_video.providers.registry import backend_class  # noqa: E402
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
        info = probe_video(source)
        overlap = ModifyVideoParameters(source=str(source)).resolved_overlap_frames(backend_class("fal"))
        plan = plan_video(info, 5.0, overlap)
        ways = {"plain": (False, 0), "anchored": (True, 0), "anchored+overlap": (True, None)}
        results = {}
        with FakeModifyServer(polls_to_complete=1, drift=1.0, drift_seed=args.seed) as server:
            for name, (anchor, overlap) in ways.items():
                results[name] = modify_video(
                    **flow_arguments(ModifyVideoParameters(
                        source=str(source),
                        prompt="bench",
                        output=str(work / f"{name}.mp4"),
                        backend=BackendSpec(name="fal", base_url=server.base_url, poll_interval_seconds=0.05),
                        max_segment_seconds=5.0,
                        store_dir=str(work / "store"),
                        anchor_colours=anchor,
                        overlap_frames=overlap,
                    ))
                )
        for name, result in results.items():
            print(f"{name:17s} {result.segments} segments, worst seam {result.worst_seam_ratio:6.2f}x the source's "
                  f"jump, {len(result.seams_flagged)} flagged, {result.seconds:.1f} s")
        # A blended seam is judged over its whole blend; on the seam frame alone, as unblended ones are:
        at_seam = measure_seams(source, results["anchored+overlap"].output, [s.first_frame for s in plan.segments[1:]])
        print(f"anchored+overlap on the seam frames alone: worst {max(m.ratio for m in at_seam):.2f}x")
        print(
            f"worst seam / source jump: without anchoring {results['plain'].worst_seam_ratio:.2f}, "
            f"with anchoring {results['anchored'].worst_seam_ratio:.2f}, "
            f"with anchoring and overlaps {results['anchored+overlap'].worst_seam_ratio:.2f}; "
            f"overlap billed-seconds overhead {plan.overlap_s:.2f} s of {plan.duration_s:.2f} s "
            f"({100 * plan.overlap_s / plan.duration_s:.1f} %)"
        )


if __name__ == "__main__":
    main()
