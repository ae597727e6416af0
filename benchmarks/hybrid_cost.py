"""Hybrid ingest's cost against ``sr`` ingest (issue 37): each mode ingested in a fresh process
(``--no-adapt``, as the 20k figures of BENCHMARKS.md), its wall and CPU seconds and peak RSS;
then one hybrid ingest in this process with a thread-time clock around each step of the hybrid
passes (the generator, bicubic, the HR codings of the measurement, the winners' codings, the
source reads), summed over ingest's worker threads.

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
from collections.abc import Callable
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
    """Thread-seconds per step of one hybrid ingest in this process."""
    from wsistore.archive import writer
    from wsistore.codecs import parse_codec
    from wsistore.restoration.hybrid import RestoredLevel0, SrPath

    spent: dict[str, float] = defaultdict(float)
    lock = threading.Lock()
    stage = threading.local()

    def timed(name: Callable[[tuple[Any, ...]], str], function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                with lock:
                    spent[name(args)] += time.thread_time() - start

        return wrapper

    originals = (writer.code_hr_chunk, RestoredLevel0.read, writer._Ingest._read_level0)
    writer.code_hr_chunk = timed(lambda a: f"HR coding ({getattr(stage, 'name', '?')})", originals[0])
    RestoredLevel0.read = timed(  # type: ignore[method-assign]
        lambda a: "the generator" if len(a) < 3 or a[2] == "generator" else "bicubic", originals[1]
    )
    writer._Ingest._read_level0 = timed(lambda a: "reading the source", originals[2])  # type: ignore[method-assign]
    measure, write = writer._Ingest._measure_hr, writer._Ingest._hr_shard

    def in_stage(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            stage.name = name
            return function(*args, **kwargs)

        return wrapper

    writer._Ingest._measure_hr = in_stage("measuring every chunk", measure)  # type: ignore[method-assign]
    writer._Ingest._hr_shard = in_stage("the winners", write)  # type: ignore[method-assign]
    try:
        options = writer.IngestOptions(
            mode="hybrid",
            upscaler=SrPath(),
            hr_codecs=tuple(parse_codec(c) for c in codecs),
            progress=False,
            overwrite=True,
        )
        start = time.perf_counter()
        writer.ingest(slide, out, options)
        spent["wall (this process)"] = time.perf_counter() - start
    finally:
        writer.code_hr_chunk, RestoredLevel0.read, writer._Ingest._read_level0 = originals  # type: ignore[method-assign]
        writer._Ingest._measure_hr, writer._Ingest._hr_shard = measure, write  # type: ignore[method-assign]
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
