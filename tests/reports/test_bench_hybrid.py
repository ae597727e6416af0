"""The hybrid archive in ``wsistore bench``: HR chunks coded as ingest codes them, chosen by the
archive's rule per lambda over the SR path's own pixels, their bytes added to the archive path's
(and the adaptation's); lambda = inf is the SR path exactly; reported next to SR and the codecs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from benchmarks.ood_report import summarise
from tests.archive.test_adaptation import QUICK_ADAPT
from tests.archive.test_hybrid import HYBRID_OPTIONS, LAMBDA
from tests.data import SLIDE
from wsistore.archive.reader import Archive
from wsistore.archive.writer import DEFAULT_HR_LAMBDA, ingest
from wsistore.codecs import parse_codec
from wsistore.models.weights import default_model
from wsistore.readers import open_slide
from wsistore.reports.methods import (
    HYBRID_LAMBDAS,
    HrChunks,
    HybridImage,
    choose_hybrid,
    code_archive_lr,
    code_full_resolution,
)
from wsistore.reports.report import aggregate, curve_name
from wsistore.reports.run import DEFAULT_SETTING, BenchOptions, run_bench
from wsistore.restoration.engine import runner_for, upscale_image

#: LR chunks of 64 pixels, so HR chunks of 256: a 1000-pixel tile holds 16 of them.
CHUNK = 64
LAMBDAS = [0.0, DEFAULT_HR_LAMBDA, math.inf]
#: The one HR setting of tests/archive/test_hybrid.py's archives.
HR_SETTING = "avif:level=40,speed=6"
SETTINGS = [DEFAULT_SETTING, "avif:level=60,speed=8"]


def _sse(a: np.ndarray, b: np.ndarray) -> int:
    return int(((a.astype(np.int64) - b) ** 2).sum())


def test_chunks_are_coded_as_ingest_codes_them(tile: np.ndarray) -> None:
    """On the archive's grid (here offset by the crop): each chunk's pixels inside the region,
    coded at their extent as ingest codes an edge chunk (format 1.8); bytes as stored (crc32c
    added), each chunk coded once however often it is asked for. The full-resolution codecs are
    tiled on the same grid."""
    hr, side, origin = tile[:300, :420], 128, (40, 100)
    chunks = HrChunks(hr, side, origin)
    assert [b[:2] for b in chunks.boxes] == [(y, x) for y in (0, 88, 216) for x in (0, 28, 156, 284, 412)]
    covered = np.zeros(hr.shape[:2], dtype=int)
    codec = parse_codec(HR_SETTING)
    for i, (y0, x0, y1, x1) in enumerate(chunks.boxes):
        covered[y0:y1, x0:x1] += 1
        data = codec.encode_image(np.ascontiguousarray(hr[y0:y1, x0:x1]))
        decoded = codec.decode_image(data)
        chunk = chunks.coded(i, HR_SETTING)
        assert chunk.nbytes == len(data) + 4 and np.array_equal(chunk.decoded, decoded)
        assert chunk.sse == _sse(decoded, hr[y0:y1, x0:x1])
        assert chunks.coded(i, HR_SETTING) is chunk
    assert (covered == 1).all()
    tiled = code_full_resolution(tile[:600, :900], HR_SETTING, (1000, 24))  # HR_TILE 1024
    assert tiled.nbytes == sum(
        len(codec.encode_image(np.ascontiguousarray(tile[ys, :900]))) for ys in (slice(0, 24), slice(24, 600))
    )


def test_the_rule_per_chunk(tile: np.ndarray) -> None:
    """lambda = 0: HR exactly where it lowers the SSE; inf: the SR path untouched; the bytes are
    the chosen chunks' bytes; a larger lambda keeps fewer chunks."""
    hr = tile[:512, :768]
    sr = np.repeat(np.repeat(hr[::4, ::4], 4, 0), 4, 1)  # a stand-in SR path, poor in places
    sr[:256, :256] = hr[:256, :256]  # and perfect in one chunk: SR must win there
    chunks = HrChunks(hr, 256)
    coded = [chunks.coded(i, HR_SETTING) for i in range(len(chunks.boxes))]
    boxes = chunks.boxes

    def hybrid(lr_bytes: dict[tuple[int, int], int], lam: float) -> HybridImage:
        return choose_hybrid(hr, sr, chunks, [HR_SETTING], lr_bytes, lam)

    free = hybrid({}, 0.0)
    wins = [
        (b, c)
        for b, c in zip(boxes, coded, strict=True)
        if c.sse < _sse(sr[b[0] : b[2], b[1] : b[3]], hr[b[0] : b[2], b[1] : b[3]])
    ]
    assert 0 < len(wins) < len(boxes) and free.hr_chunks == len(wins)
    assert free.hr_bytes == sum(c.nbytes for _, c in wins)
    expected = sr.copy()
    for b, c in wins:
        expected[b[0] : b[2], b[1] : b[3]] = c.decoded
    assert np.array_equal(free.image, expected)
    never = hybrid({}, math.inf)
    assert np.array_equal(never.image, sr) and never.hr_bytes == never.hr_chunks == 0
    counts = [hybrid({}, lam).hr_chunks for lam in (0.0, 300.0, 3000.0, 1e9)]
    assert counts == sorted(counts, reverse=True) and counts[-1] == 0
    # the LR chunks an HR chunk replaces are not stored: their bytes come off, and count for HR
    lr_bytes = {(b[0] // 4, b[1] // 4): c.nbytes // 4 for b, c in zip(boxes, coded, strict=True)}
    saved = hybrid(lr_bytes, 0.0)
    assert saved.hr_chunks == free.hr_chunks and saved.hr_bytes == sum(c.nbytes - c.nbytes // 4 for _, c in wins)
    lam = 3000.0
    assert hybrid(lr_bytes, lam).hr_chunks >= hybrid({}, lam).hr_chunks


def test_the_chunks_and_bytes_hybrid_ingest_stores(tmp_path: Path) -> None:
    """Over the whole sample slide (the archive's grid), bench's hybrid keeps the chunks hybrid
    ingest keeps at the same lambda, and counts the bytes it stores for them."""
    ingest(SLIDE, tmp_path / "hybrid.zarr", HYBRID_OPTIONS)
    archive = Archive.open(tmp_path / "hybrid.zarr")
    md = archive.metadata
    assert md.hybrid is not None and HYBRID_OPTIONS.hr_codecs == (parse_codec(HR_SETTING),)
    with open_slide(SLIDE) as slide:
        hr = slide.read_region((0, 0), 0, (md.width, md.height))
    coded = code_archive_lr(hr, DEFAULT_SETTING, HYBRID_OPTIONS.chunk, md.fill_value)
    sr = upscale_image(coded.lr, runner_for(default_model(coded.codec), "cpu"), hr.shape[:2])
    chunks = HrChunks(hr, 4 * HYBRID_OPTIONS.chunk)
    hybrid = choose_hybrid(hr, sr, chunks, [HR_SETTING], coded.chunk_bytes, LAMBDA)
    kept = [
        b[:2]
        for i, b in enumerate(chunks.boxes)
        if np.array_equal(hybrid.image[b[0] : b[2], b[1] : b[3]], chunks.coded(i, HR_SETTING).decoded)
    ]
    assert kept == [b[:2] for b in chunks.boxes if archive.is_hr(b[0] // 1024, b[1] // 1024)]
    assert hybrid.hr_chunks == len(kept) == md.hybrid["modes"]["hr"]["chunks"] == 7
    lr_bytes = sum(coded.chunk_bytes[y // 4, x // 4] for y, x in kept)  # not stored (format 1.6)
    assert md.hybrid["modes"]["hr"]["lr_bytes"] == 0
    assert hybrid.hr_bytes == md.hybrid["modes"]["hr"]["bytes"] - lr_bytes


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory, tile: np.ndarray) -> tuple[Path, dict[str, Any]]:
    """A report of one tile: two LR settings, the adaptation, three lambdas."""
    folder = tmp_path_factory.mktemp("bench-hybrid")
    Image.fromarray(tile).save(folder / "tile.png")
    options = BenchOptions(
        inputs=[folder / "tile.png"],
        out=folder / "report",
        archive_codecs=list(SETTINGS),
        hr_codecs=["avif:level=20,speed=8", "avif:level=45,speed=8"],
        hybrid_codecs=[HR_SETTING],
        progress=False,
        chunk=CHUNK,
        adapt=QUICK_ADAPT,
        hybrid_lambdas=LAMBDAS,
    )
    return options.out, run_bench(options)


def test_hybrid_records_over_the_sr_path(bench: tuple[Path, dict[str, Any]]) -> None:
    """One record per LR setting and lambda for the default generator (and its adaptation), its
    bytes the SR path's plus the HR chunks' (less the adaptation's where no chunk restores by the
    generator); lambda = inf is the SR path itself."""
    records = bench[1]["records"]
    hybrid = [r for r in records if r["family"] == "hybrid"]
    model = default_model()
    assert sorted((r["upscaler"], r["setting"], r["hybrid"]["lambda"]) for r in hybrid) == sorted(
        [(model, s, lam) for s in SETTINGS for lam in LAMBDAS]
        + [(model + "+adapted", DEFAULT_SETTING, lam) for lam in LAMBDAS]
    )
    for r in hybrid:
        sr = next(
            a
            for a in records
            if a["family"] == "archive" and (a["upscaler"], a["setting"]) == (r["upscaler"], r["setting"])
        )
        info = r["hybrid"]
        assert info["hr_codec"] == HR_SETTING and info["chunks"] == 16 and info["sr_bytes"] == sr["bytes"]
        dropped = info["adaptation_bytes_dropped"]  # an adaptation no chunk uses is not stored
        assert dropped == (0 if info["generator_chunks"] else sr.get("adaptation", {}).get("bytes_added", 0))
        assert r["bytes"] == sr["bytes"] + info["hr_bytes"] - dropped
        assert (info["hr_bytes"] > 0) == (info["hr_chunks"] > 0)
        if info["lambda"] == math.inf:
            assert info["hr_chunks"] == 0 and r["metrics"] == sr["metrics"]
        if info["lambda"] == 0:  # the HR codec at level 40 beats a 4x SR path somewhere on a real tile
            assert info["hr_chunks"] > 0 and r["metrics"]["psnr"] > sr["metrics"]["psnr"]
    adapted = next(r for r in records if r["upscaler"] == model + "+adapted" and r["family"] == "archive")
    assert adapted["bytes"] == adapted["adaptation"]["bytes_added"] + next(
        r["bytes"] for r in records if (r["upscaler"], r["setting"], r["family"]) == (model, DEFAULT_SETTING, "archive")
    )


def test_reported_next_to_sr_and_the_codecs(bench: tuple[Path, dict[str, Any]]) -> None:
    out, results = bench
    written = json.loads((out / "results.json").read_text())["records"]
    assert sum(r["family"] == "hybrid" for r in written) == sum(r["family"] == "hybrid" for r in results["records"])
    curves = {r["curve"] for r in aggregate(results["records"])}
    hybrid = {c for c in curves if c.startswith("hybrid ")}
    assert len(hybrid) == 2 * len(LAMBDAS)  # per lambda: the base generator's curve and the adapted one's
    md = (out / "report.md").read_text()
    assert all(c in md for c in hybrid) and "the hybrid archive (" in md and "the best SR archive path" in md
    assert "**hybrid**" in md  # defined


def test_ood_summary_rows(bench: tuple[Path, dict[str, Any]]) -> None:
    """The hybrid rows: vs AVIF at equal bytes as the SR rows, vs SR at the same LR and bytes."""
    rows = summarise(bench[1])
    hybrid = [r for r in rows if r["family"] == "hybrid"]
    assert len(hybrid) == len(SETTINGS) * len(LAMBDAS) + len(LAMBDAS)
    for row in hybrid:
        assert row["gain_over_bicubic_db"] is None and row["vs_avif_hr_psnr_db"] is not None
        if row["lambda"] == math.inf:
            assert row["vs_sr_same_lr_psnr_db"] == 0 and row["hr_chunk_share"] == 0
        if row["lambda"] == 0:
            assert row["vs_sr_same_lr_psnr_db"] > 0 and row["hr_chunk_share"] > 0
    # the SR curve of the base generator spans both settings: at lambda = inf the hybrid is on it
    base = [r for r in hybrid if r["upscaler"] == default_model() and r["lambda"] == math.inf]
    assert all(r["vs_sr_psnr_db"] == 0 for r in base)


def test_default_lambdas_hold_ingests() -> None:
    assert DEFAULT_HR_LAMBDA in HYBRID_LAMBDAS
    assert curve_name(
        {"family": "hybrid", "codec": "avif", "upscaler": "m", "hybrid": {"hr_codec": "x", "lambda": 900.0}}
    ).endswith("lambda 900")
