"""``ornav validate`` at scale: 1, 8 and 32 recordings on a local Dask cluster of 1 and 2
workers, side by side with the plain reference in the same run, a loop in one process.

    .venv/bin/python bench/validate.py [--counts 1,8,32] [--workers 1,2] [--trace]

Each recording is a synthetic 10 s session (``tests/fake/recordings.py``: the pointer
touches 6 fiducials at 60 Hz, about 600 tracker frames) or, with ``--trace``, a 30 s one
that also traces the organ (so the surface and deformable re-runs run too). Each is fully
reported: read, re-run offline, analysed, figures drawn, HTML and JSON written. Times are
wall clock for the whole batch; Dask's include starting the cluster (its workers import
numpy, open3d and matplotlib), which is what a user waits for. Ratios are reference / Dask:
above 1 means Dask is faster. Nothing asserts a timing.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.validate.study import Options, report_folders, run_study, validate_one  # noqa: E402
from tests.fake.recordings import write_touch_session  # noqa: E402


def sequential(paths: list[Path], out: Path) -> float:
    """The reference: the same work in a plain loop, in this process."""
    started = time.perf_counter()
    for path, folder in zip(paths, report_folders(paths, out), strict=True):
        row = validate_one(str(path), str(folder), Options())
        assert not row.error, row.error
    return time.perf_counter() - started


def on_dask(paths: list[Path], out: Path, workers: int) -> float:
    started = time.perf_counter()
    rows = run_study(paths, out, Options(), workers=workers)
    assert not any(r.error for r in rows), [r.error for r in rows if r.error]
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="1,8,32")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--trace", action="store_true", help="sessions that trace the organ")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    worker_counts = [int(w) for w in args.workers.split(",")]
    print(
        f"# ornav validate scaling ({platform.node()}, {os.cpu_count()} cores, "
        f"{'traced' if args.trace else 'touch-only'} sessions)"
    )
    root = Path(tempfile.mkdtemp(prefix="ornav-bench-validate-"))
    try:
        recordings = []
        for k in range(max(counts)):
            path = root / "recordings" / f"run{k:03d}" / "session.mcap"
            path.parent.mkdir(parents=True)
            recordings.append(write_touch_session(path, seed=k, trace=args.trace))
        sequential(recordings[:1], root / "warm")  # imports and first-call costs, not timed
        header = ["recordings", "loop, 1 process (s)"]
        header += [f"Dask {w} worker(s) (s)" for w in worker_counts]
        header += [f"loop / Dask {w}" for w in worker_counts]
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for n in counts:
            subset = recordings[:n]
            loop_s = sequential(subset, root / f"loop{n}")
            dask_s = [on_dask(subset, root / f"dask{n}-{w}", w) for w in worker_counts]
            cells = [str(n), f"{loop_s:.1f}"] + [f"{t:.1f}" for t in dask_s]
            cells += [f"{loop_s / t:.2f}" for t in dask_s]
            print("| " + " | ".join(cells) + " |", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
