"""How well the fast probe predicts an HR setting, and what deciding on it costs (issue 37).

Per slide: an ``sr`` ingest (``--no-adapt``) gives each stored chunk's LR bytes and what restore
makes of it (the generator's and bicubic's SSE); a sample of its chunks is coded at every level
of ingest's default ladder at speed 6 (the setting) and at the probe's speed. Printed per slide
and level: the medians of speed 6 over the probe's bytes and SSE (what
``PROBE_BYTES_RATIO`` / ``PROBE_SSE_RATIO`` are taken from). Then, at lambda 300, 900 and 2700,
the total ``SSE + lambda x bits`` of the sample when every setting is coded (the exact choice)
against ingest's (the probes scaled, :func:`walk`, :func:`settle` once per chunk), in dB, with
the codings and probes each needs and their CPU seconds.

    python -m benchmarks.hr_probe SLIDE [SLIDE ...] [--chunks 20] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from wsistore.archive.hybrid_choice import (
    PROBE_SPEED,
    SR,
    Option,
    choose,
    code_hr_chunk,
    predicted,
    quality,
    settle,
    sse,
    walk,
)
from wsistore.archive.reader import Archive
from wsistore.archive.writer import DEFAULT_HR_CODECS
from wsistore.codecs import parse_codec
from wsistore.readers import open_slide
from wsistore.restoration.hybrid import SrPath

LAMBDAS = (300.0, 900.0, 2700.0)


def measure_slide(slide: Path, chunks: int, work: Path) -> list[dict[str, Any]]:
    """Every sampled chunk's SR path and its codings at each setting, at speed 6 and the probe's."""
    archive_path = work / f"{slide.stem}.zarr"
    cli = [sys.executable, "-m", "wsistore", "ingest", str(slide), str(archive_path), "--no-adapt", "--quiet"]
    subprocess.run(cli, check=True)
    archive = Archive.open(archive_path)
    md, record = archive.metadata, archive.manifest.arrays["0"]
    side = md.scale * md.chunk
    ids = sorted(record.chunks)
    if len(ids) > chunks:
        ids = [ids[i] for i in sorted(np.random.default_rng(0).choice(len(ids), chunks, replace=False))]
    sr = SrPath().open(archive.level(0), (md.width, md.height), archive.codec, None)
    rows = []
    try:
        with open_slide(slide) as source_slide:
            for cid in ids:
                _, r, q = (int(v) for v in cid.split("."))
                box = (q * side, r * side, min((q + 1) * side, md.width), min((r + 1) * side, md.height))
                source = source_slide.read_region(box[:2], 0, (box[2] - box[0], box[3] - box[1]))
                row: dict[str, Any] = {"chunk": cid, "lr_bytes": record.chunks[cid][0]}
                row["sse_sr"] = min(sse(sr.read(box), source), sse(sr.read(box, "bicubic"), source))
                for setting in DEFAULT_HR_CODECS:
                    codec = parse_codec(setting)
                    for speed in (codec.speed, PROBE_SPEED):  # type: ignore[attr-defined]
                        start = time.process_time()
                        decoded, coded = code_hr_chunk(source, replace(codec, speed=speed))
                        seconds = time.process_time() - start
                        row[f"{setting}@{speed}"] = [sse(decoded, source), len(coded), round(seconds, 3)]
                rows.append(row)
    finally:
        sr.close()
    return rows


def ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per setting, the medians of the setting's bytes and SSE over the probe's."""
    found = {}
    for setting in DEFAULT_HR_CODECS:
        speed = parse_codec(setting).speed  # type: ignore[attr-defined]
        real = np.array([r[f"{setting}@{speed}"][:2] for r in rows], dtype=float)
        probe = np.array([r[f"{setting}@{PROBE_SPEED}"][:2] for r in rows], dtype=float)
        found[setting] = {
            "bytes": round(float(np.median(real[:, 1] / probe[:, 1])), 3),
            "sse": round(float(np.median(real[:, 0] / np.maximum(probe[:, 0], 1))), 3),
        }
    return found


def decide(rows: list[dict[str, Any]], lam: float) -> dict[str, float]:
    """The sample's total cost, every setting coded against ingest's probes and settle."""
    exact_options, first_options, real = {}, {}, {}
    probe_seconds = coding_seconds = exact_seconds = 0.0
    for i, r in enumerate(rows):
        sr = Option(SR, r["sse_sr"], r["lr_bytes"])
        real[i] = {}
        for setting in DEFAULT_HR_CODECS:
            speed = parse_codec(setting).speed  # type: ignore[attr-defined]
            error, nbytes, seconds = r[f"{setting}@{speed}"]
            real[i][setting] = (Option(setting, error, nbytes), seconds)
            exact_seconds += seconds
        exact_options[i] = [sr, *(option for option, _ in real[i].values())]
        probed: list[str] = []

        def first(setting: str, row: dict[str, Any] = r, seen: list[str] = probed) -> Option:
            seen.append(setting)
            error, nbytes, _ = row[f"{setting}@{PROBE_SPEED}"]
            return predicted(setting, error, nbytes)

        ladder = [(setting, quality(parse_codec(setting))) for setting in DEFAULT_HR_CODECS]
        first_options[i] = [sr, *walk(ladder, first, lam)]
        probe_seconds += sum(r[f"{s}@{PROBE_SPEED}"][2] for s in probed)
    codings = 0

    def measure(pending: dict[int, Option]) -> dict[int, Option]:
        nonlocal codings, coding_seconds
        codings += len(pending)
        coding_seconds += sum(real[i][o.path][1] for i, o in pending.items())
        return {i: real[i][o.path][0] for i, o in pending.items()}

    _, chosen = settle(first_options, lambda _: (lam,), measure)
    exact = sum(o.cost(lam) for o in choose(exact_options, lam).values())
    ingest = sum(o.cost(lam) for o in chosen.values())
    return {
        "lambda": lam,
        "loss_db": round(10 * math.log10(ingest / exact), 4),
        "same_choice": sum(chosen[i] == choose(exact_options, lam)[i] for i in chosen),
        "codings": codings,
        "cpu_s_ingest": round(probe_seconds + coding_seconds, 1),
        "cpu_s_every_setting": round(exact_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("slides", type=Path, nargs="+")
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for slide in args.slides:
            rows = measure_slide(slide, args.chunks, Path(tmp))
            found = {"slide": slide.name, "chunks": len(rows), "ratios": ratios(rows)}
            found["decisions"] = [decide(rows, lam) for lam in LAMBDAS]
            print(json.dumps(found))
            results.append(found)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
