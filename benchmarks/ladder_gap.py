"""What a hybrid's HR ladder costs against AVIF between its levels (issue 37).

Where every chunk of a slide goes to full resolution, the hybrid can only mix its ladder's levels
chunk by chunk, and a mix of two levels lies on a straight line in SSE against bytes, under
AVIF's own curve between them. This codes each chunk of a slide region on the archive's grid at
every AVIF level of ``--levels`` (speed 6, as hybrid ingest codes them, and probed as it probes
them), then at each lambda takes each chunk's least ``SSE + lambda x bits`` among the HR settings
of a ladder, with every setting coded (exact) and as ingest settles it (probes, the walk, one
coding per chunk), and compares the result with AVIF on the full image at equal bytes (its point
at every level, interpolated linearly in log bpp), in whole-image PSNR.

    python -m benchmarks.ladder_gap SLIDE [--region X,Y,W,H] [--lambdas 300 900 2700] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from wsistore.archive.hybrid_choice import Option, quality, settle, walk
from wsistore.archive.writer import DEFAULT_HR_CODECS
from wsistore.codecs import parse_codec
from wsistore.geometry import Region
from wsistore.psnr import psnr_from_mse
from wsistore.reports.inputs import load_inputs
from wsistore.reports.methods import HrChunks

#: The ladder before issue 37's last change (nine levels, 3-8 apart) and the default now.
LADDERS = {
    "nine levels": [f"avif:level={q},speed=6" for q in (5, 8, 12, 16, 20, 25, 30, 38, 45)],
    "default": list(DEFAULT_HR_CODECS),
}


def level(setting: str) -> int:
    """A setting's place on the ladder (:func:`~wsistore.archive.hybrid_choice.quality`)."""
    return int(quality(parse_codec(setting)))


def mix(chunks: HrChunks, ladder: Sequence[str], lam: float, probed: bool) -> tuple[int, int, list[int]]:
    """(bytes, SSE, setting per chunk) when each chunk takes its least-cost HR setting of ``ladder``."""
    rungs = [(s, level(s)) for s in ladder]
    options: dict[int, list[Option]] = {}
    for i in range(len(chunks.boxes)):
        if probed:
            options[i] = walk(rungs, partial(chunks.first, i), lam)
        else:
            options[i] = [Option(s, chunks.coded(i, s).sse, chunks.coded(i, s).nbytes) for s in ladder]

    def measure(pending: dict[int, Option]) -> dict[int, Option]:
        return {
            i: Option(o.path, chunks.coded(i, o.path).sse, chunks.coded(i, o.path).nbytes) for i, o in pending.items()
        }

    _, chosen = settle(options, lambda _: (lam,), measure)
    total_bytes = sum(o.nbytes for o in chosen.values())
    total_sse = sum(int(o.sse) for o in chosen.values())
    return total_bytes, total_sse, [level(o.path) for o in chosen.values()]


def avif_at(points: list[tuple[float, float]], bpp: float) -> float | None:
    """AVIF's PSNR at ``bpp``: its points interpolated linearly in log bpp; None outside them."""
    for (b0, p0), (b1, p1) in zip(points, points[1:]):
        if b0 <= bpp <= b1:
            return p0 if b1 == b0 else p0 + math.log(bpp / b0) / math.log(b1 / b0) * (p1 - p0)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("slide", type=Path)
    parser.add_argument("--region", help="X,Y,W,H (level-0 pixels; default: bench's densest 2048-px square)")
    parser.add_argument("--lambdas", nargs="+", type=float, default=[300.0, 900.0, 2700.0])
    parser.add_argument("--levels", nargs=2, type=int, default=[4, 48], help="AVIF levels coded, first and last")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    region: Region | None = None
    if args.region:
        x, y, w, h = (int(v) for v in args.region.split(","))
        region = (x, y, w, h)
    item = next(load_inputs([args.slide], 2048, region))
    hr = item.hr
    chunks = HrChunks(hr, 1024, (4 * item.lr_origin[0], 4 * item.lr_origin[1]))
    pixels, values = hr.shape[0] * hr.shape[1], hr.size

    def psnr(sse: int) -> float:
        return psnr_from_mse(sse / values)

    # AVIF on the full image, tiled on the archive's grid: the chunks' codings less their crc32c
    avif = []
    for q in range(args.levels[0], args.levels[1] + 1):
        setting = f"avif:level={q},speed=6"
        coded = [chunks.coded(i, setting) for i in range(len(chunks.boxes))]
        avif.append((8 * sum(c.nbytes - 4 for c in coded) / pixels, psnr(sum(c.sse for c in coded))))
    avif.sort()
    rows: list[dict[str, Any]] = []
    for lam in args.lambdas:
        for name, ladder in LADDERS.items():
            for probed in (False, True):
                nbytes, error, levels = mix(chunks, ladder, lam, probed)
                bpp, value = 8 * nbytes / pixels, psnr(error)
                rival = avif_at(avif, bpp)
                row = {"lambda": lam, "ladder": name, "decided": "probed" if probed else "every setting coded"}
                row |= {"bpp": round(bpp, 4), "psnr_image": round(value, 3), "levels": levels}
                row["vs_avif_db"] = None if rival is None else round(value - rival, 4)
                rows.append(row)
                print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps({"input": item.name, "avif": avif, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
