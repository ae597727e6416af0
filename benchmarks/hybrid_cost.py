"""Hybrid ingest's cost against ``sr`` ingest (issue 37): each mode ingested in a fresh process
(``--no-adapt``, as the 20k figures of BENCHMARKS.md), its wall and CPU seconds and peak RSS;
then one hybrid ingest in this process with a CPU clock around each hybrid pass and a
thread-time clock around each HR coding (probes and chosen settings apart), summed over
ingest's worker threads.

    python -m benchmarks.hybrid_cost SLIDE [--hr-codec SETTING ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.measure import PEAK_RSS_SNIPPET

_RUN = (
    PEAK_RSS_SNIPPET
    + """
import json, sys, time
from wsistore.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
print(json.dumps({"code": code, "wall_s": time.perf_counter() - start, "cpu_s": cpu_seconds(), "peak_mb": peak_mb()}))
"""
)


def run_cli(*args: str) -> dict[str, Any]:
    """``wsistore ARGS`` in a fresh process: its exit code, wall and CPU seconds, peak RSS."""
    env = {**os.environ, "WSISTORE_ADAPT": "0"}
    done = subprocess.run([sys.executable, "-c", _RUN, *args], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def stage_times(slide: Path, out: Path, codecs: list[str]) -> dict[str, float]:
    """CPU seconds of one hybrid ingest in this process: of the whole process per pass of
    :mod:`wsistore.archive.hybrid_ingest` (measuring, coding the chosen settings, writing), and
    the thread-seconds of the HR codings within them, probes and chosen settings apart."""
    from wsistore.archive import hybrid_choice, hybrid_ingest, writer
    from wsistore.codecs import parse_codec
    from wsistore.restoration.hybrid import SrPath

    spent: dict[str, float] = defaultdict(float)
    lock = threading.Lock()
    code, stage = hybrid_choice.code_hr_chunk, hybrid_ingest.HybridPasses._stage

    def timed_code(source: Any, codec: Any) -> Any:
        start = time.thread_time()
        try:
            return code(source, codec)
        finally:
            name = "HR probes" if codec.speed >= hybrid_choice.PROBE_SPEED else "HR codings at the chosen settings"
            with lock:
                spent[f"{name} (thread-s)"] += time.thread_time() - start

    def timed_stage(self: Any, name: str, *args: Any) -> None:
        start = time.process_time()
        try:
            stage(self, name, *args)
        finally:
            spent[f"pass '{name}' (process CPU-s)"] += time.process_time() - start

    hybrid_choice.code_hr_chunk = hybrid_ingest.code_hr_chunk = timed_code
    hybrid_ingest.HybridPasses._stage = timed_stage  # type: ignore[method-assign]
    try:
        options = writer.IngestOptions(
            mode="hybrid",
            upscaler=SrPath(),
            hr_codecs=tuple(parse_codec(c) for c in codecs),
            progress=False,
            overwrite=True,
        )
        start, cpu = time.perf_counter(), time.process_time()
        writer.ingest(slide, out, options)
        spent["wall (this process)"] = time.perf_counter() - start
        spent["CPU (this process)"] = time.process_time() - cpu
    finally:
        hybrid_choice.code_hr_chunk = hybrid_ingest.code_hr_chunk = code
        hybrid_ingest.HybridPasses._stage = stage  # type: ignore[method-assign]
    return {k: round(v, 1) for k, v in sorted(spent.items())}


def main() -> None:
    from wsistore.archive.writer import DEFAULT_HR_CODECS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("slide", type=Path)
    parser.add_argument("--hr-codec", nargs="+", default=list(DEFAULT_HR_CODECS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {"slide": args.slide.name, "hr_codecs": args.hr_codec}
    with tempfile.TemporaryDirectory() as tmp:
        common = ("--no-adapt", "--quiet", "--overwrite")
        results["sr"] = run_cli("ingest", str(args.slide), f"{tmp}/sr.zarr", *common)
        results["hybrid"] = run_cli(
            "ingest", str(args.slide), f"{tmp}/h.zarr", *common, "--mode", "hybrid", "--hr-codec", *args.hr_codec
        )
        results["ratio_wall"] = round(results["hybrid"]["wall_s"] / results["sr"]["wall_s"], 2)
        results["stages_thread_s"] = stage_times(args.slide, Path(tmp) / "s.zarr", args.hr_codec)
    results["machine"] = {"machine": platform.machine(), "cpus": os.cpu_count(), "load": os.getloadavg()}
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
