"""``wsistore bench``: score every input with every method, write results.json and reports."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsistore._version import software_versions
from wsistore.archive.partial import write_complete
from wsistore.errors import InputError
from wsistore.geometry import Region
from wsistore.models import adaptation
from wsistore.models.device import resolve_device
from wsistore.models.weights import LoadedGenerator, default_model, load_generator
from wsistore.outputs import OutputKind, read_json_file
from wsistore.progress import Progress
from wsistore.psnr import IDENTICAL_PSNR
from wsistore.reports.inputs import BenchInput, load_inputs
from wsistore.reports.methods import (
    ARCHIVE_SWEEP,
    HR_SWEEP,
    HYBRID_HR_SWEEP,
    HYBRID_LAMBDAS,
    QUICK_ARCHIVE_SWEEP,
    QUICK_HR_SWEEP,
    QUICK_HYBRID_LAMBDAS,
    CodedLR,
    HrChunks,
    choose_hybrid,
    code_archive_lr,
    code_full_resolution,
)
from wsistore.reports.metrics import Lpips, evaluate
from wsistore.reports.panels import choose_crop, cut, display_stretch, save_panel
from wsistore.reports.report import aggregate, plot_curves, write_html, write_markdown
from wsistore.restoration.engine import runner_for, upscale_image
from wsistore.restoration.int8 import DEFAULT_PRECISION
from wsistore.restoration.runner import GeneratorRunner
from wsistore.training.adapt import AdaptationSource, AdaptOptions, default_adaptation, tune

#: The report label of the archive default codec (wsistore.codecs.DEFAULT_CODEC; a test keeps them equal).
DEFAULT_SETTING = "avif:level=75,speed=8"
#: ``results.json``'s schema: what marks a report bench wrote.
SCHEMA = "wsistore-bench/1"


@dataclass
class BenchOptions:
    """What to compare and where to write it."""

    inputs: list[Path]
    out: Path
    #: SR models scored besides nearest and bicubic; None: the default generator (what
    #: restore uses), so a first report shows the archive as users get it
    models: list[str] | None = None
    archive_codecs: list[str] | None = None
    hr_codecs: list[str] | None = None
    device: str = "auto"
    quick: bool = False
    chunk: int = 256
    crop: int = 2048
    region: Region | None = None
    lpips_weights: Path | None = None
    progress: bool = True
    overwrite: bool = False  # replace a report bench wrote before (never anything else)
    #: the per-slide adaptation, tuned per input at the default setting as ingest tunes it and
    #: scored as ``MODEL+adapted`` with its bytes counted; None: not scored
    adapt: AdaptOptions | None = field(default_factory=default_adaptation)
    #: lambdas of the hybrid archive (format 1.6), scored for the first SR model at every archive
    #: setting (and for ``MODEL+adapted``); None: the default sweep; empty: not scored
    hybrid_lambdas: list[float] | None = None
    #: the hybrid archive's HR codec settings; None: ingest's default
    hybrid_codecs: list[str] | None = None


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Run the benchmark; returns the results written to ``out/results.json``. The report is
    written in a work folder and lands complete (:class:`PartialOutput`)."""
    settings = {"inputs": [str(p) for p in options.inputs]}
    return write_complete(
        options.out, BENCH_OUTPUT, options.overwrite, options.inputs, settings, lambda out: _run_bench(options, out)
    )


def is_bench_report(path: Path) -> bool:
    """Whether ``path`` is a report folder that bench wrote (its ``results.json`` schema)."""
    results = read_json_file(path / "results.json")
    return isinstance(results, dict) and str(results.get("schema", "")).startswith(SCHEMA.split("/")[0] + "/")


#: What bench writes, and so all that ``--overwrite`` lets it replace.
BENCH_OUTPUT = OutputKind("bench", "a wsistore bench report", is_bench_report)


def _run_bench(options: BenchOptions, out: Path) -> dict[str, Any]:
    device = resolve_device(options.device)
    archive_sweep = options.archive_codecs or list(QUICK_ARCHIVE_SWEEP if options.quick else ARCHIVE_SWEEP)
    hr_sweep = options.hr_codecs or list(QUICK_HR_SWEEP if options.quick else HR_SWEEP)
    if DEFAULT_SETTING not in archive_sweep:
        archive_sweep.append(DEFAULT_SETTING)
    models = [default_model()] if options.models is None else options.models
    names = list(dict.fromkeys(["nearest", "bicubic", *models]))
    runners = [runner_for(name, str(device)) for name in names]
    lambdas = options.hybrid_lambdas
    lambdas = list(QUICK_HYBRID_LAMBDAS if options.quick else HYBRID_LAMBDAS) if lambdas is None else lambdas
    hybrid_codecs = list(options.hybrid_codecs or HYBRID_HR_SWEEP) if lambdas else []
    # the hybrid's SR path: the first SR model (by default the default generator, as ingest measures it)
    hybrid_model = next((n for n in names if n not in ("nearest", "bicubic")), None) if hybrid_codecs else None
    hybrids = len(lambdas) if hybrid_model else 0
    lpips, lpips_reason = _lpips(options.lpips_weights)
    crop = 1024 if options.quick and options.region is None else options.crop
    inputs = list(load_inputs(options.inputs, crop, options.region))
    if not inputs:
        raise InputError("no inputs to benchmark")
    records: list[dict[str, Any]] = []
    panels: dict[str, Path] = {}
    per_setting = len(runners) + hybrids
    total = len(inputs) * (
        len(archive_sweep) * per_setting + len(hr_sweep) + 1 + (options.adapt is not None) * (1 + hybrids)
    )
    with Progress(total, "bench", "run", options.progress) as bar:
        for item in inputs:
            crops: dict[str, np.ndarray] = {}
            corner = choose_crop(item.hr)
            crops["original"] = cut(item.hr, corner)
            records.append(
                _record(
                    item, "source", "source as stored", None, item.hr, _source_bytes(item), 0.0, None, lpips, device
                )
            )
            bar.update(1)
            side, origin = 4 * options.chunk, (4 * item.lr_origin[0], 4 * item.lr_origin[1])  # bench's scale is 4
            hr_chunks = HrChunks(item.hr, side, origin)  # coded when a hybrid decision asks
            for setting in archive_sweep:
                coded = code_archive_lr(item.hr, setting, options.chunk, item.fill, item.lr_origin)
                bicubic: np.ndarray | None = None  # this setting's bicubic image (runners: bicubic first)
                for runner in runners:
                    start = time.perf_counter()
                    hr = upscale_image(coded.lr, runner, item.hr.shape[:2])
                    seconds = time.perf_counter() - start
                    up = runner.generator
                    rec = _record(
                        item, "archive", setting, up, hr, coded.nbytes, coded.encode_seconds, seconds, lpips, device
                    )
                    records.append(rec | {"precision": runner.precision})
                    if setting == DEFAULT_SETTING:
                        crops[up.name] = cut(hr, corner)
                    bar.update(1)
                    if up.name == "bicubic":
                        bicubic = hr
                    if up.name == hybrid_model:
                        records += _hybrid_records(
                            item, records[-1], hr, bicubic, coded, hr_chunks, hybrid_codecs, lambdas, lpips, device
                        )
                        bar.update(hybrids)
                if setting == DEFAULT_SETTING and options.adapt is not None:
                    adapted, image = _adapted_record(item, coded, options.chunk, options.adapt, device, lpips)
                    records.append(adapted)
                    bar.update(1)
                    if hybrid_model:
                        records += _hybrid_records(
                            item, adapted, image, bicubic, coded, hr_chunks, hybrid_codecs, lambdas, lpips, device
                        )
                        bar.update(hybrids)
            default_bpp = next(r["bpp"] for r in records if r["input"] == item.name and r["setting"] == DEFAULT_SETTING)
            # the panel's codec: the best PSNR within 25 % of the archive's bytes, else the nearest in bytes
            best: tuple[bool, float, str, np.ndarray] | None = None
            for setting in hr_sweep:
                coded_hr = code_full_resolution(item.hr, setting, origin)
                rec = _record(
                    item,
                    "hr_codec",
                    setting,
                    None,
                    coded_hr.image,
                    coded_hr.nbytes,
                    coded_hr.encode_seconds,
                    coded_hr.decode_seconds,
                    lpips,
                    device,
                )
                records.append(rec)
                near = abs(math.log(rec["bpp"] / default_bpp)) <= math.log(1.25)
                score = rec["metrics"]["psnr"] if near else -abs(math.log(rec["bpp"] / default_bpp))
                if best is None or (near, score) > best[:2]:
                    best = (near, score, f"{setting} ({rec['bpp']:.2f} bpp)", cut(coded_hr.image, corner))
                bar.update(1)
            if best is not None:
                crops[best[2]] = best[3]
            panels[item.name] = save_panel(
                crops,
                out / "crops" / f"{_slug(item.name)}-panel.png",
                f"{item.name}: archive {DEFAULT_SETTING} ({default_bpp:.2f} bpp) "
                "vs the best codec at about the same bytes",
                display_stretch(item.hr, crops["original"]),
            )

    results = {
        "schema": SCHEMA,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
        "device": _device_name(device),
        "software": software_versions("torch", "imagecodecs", "piq", "torchmetrics", "scikit-image"),
        "default_setting": DEFAULT_SETTING,
        "definitions": DEFINITIONS,
        "lpips": {"available": lpips is not None, "reason": lpips_reason},
        "models": [r.generator.describe() | {"precision": r.precision} for r in runners],
        "inputs": [
            {
                "name": i.name,
                "kind": i.kind,
                "width": i.hr.shape[1],
                "height": i.hr.shape[0],
                "mpp": i.mpp,
                "tissue_fraction": float(i.mask.mean()),
                "source_bpp": i.source_bpp,
                "archive_bpp": i.archive_bpp,
            }
            for i in inputs
        ],
        "records": records,
    }
    results["costs"] = _costs(records, device)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    source_bpp = next((i.source_bpp for i in inputs if i.source_bpp), None)
    plots = plot_curves(aggregate(records), source_bpp, out / "plots")
    markdown = write_markdown(results, out, plots, panels)
    write_html(markdown, out)
    return results


DEFINITIONS = {
    "bits per pixel": "8 x stored bytes / number of original pixels (HR pixels of the tile or slide region). "
    "Archive path: the encoded LR chunks on the archive's own 256-pixel grid; codecs: the encoded 1024-pixel tiles "
    "on the archive's level-0 grid (its HR chunks). "
    "Pyramid levels and container overhead are excluded for every method alike.",
    "tissue only": "every method is scored on the same tissue mask (wsistore's tissue rule on the original); "
    "PSNR/SSIM over tissue pixels, MS-SSIM/HaarPSI/GMSD/LPIPS over 256-pixel patches that are at least 90% tissue.",
    "i-HR": "the seeds' baseline: the archive's 4x LR scaled back up by pixel replication (nearest/area).",
    "bicubic": "bicubic upscaling (torch, a = -0.75) of the same LR.",
    "archive path": "the original downsampled 4x exactly as ingest does it, coded chunk by chunk with the LR codec, "
    "then upscaled by each method.",
    "hybrid": "a hybrid archive (format 1.8): the archive path restored by the first SR model (or MODEL+adapted), "
    "with each level-0 chunk (4x the LR chunk: 1024 pixels) coded at full resolution at each HR setting as ingest "
    "codes it; each chunk takes the option of least SSE + lambda x bits (the SR path: its LR chunk's bits; an HR "
    "setting: its HR chunk's bits, the LR chunk's saved), one lambda per curve; bytes: the archive "
    "path's (with the adaptation's when kept) plus the kept HR chunks' as stored (4-byte crc32c each), less their "
    "LR chunks' (not stored).",
    "nuclei": "haematoxylin from colour deconvolution, thresholded at the original's Otsu level, blobs of at least "
    "12 square micrometres; F1 of centroids matched within 3 micrometres, and the count ratio.",
    "identical": f"identical images score PSNR {IDENTICAL_PSNR:g} dB (the cap), SSIM 1.",
}


def _record(
    item: BenchInput,
    family: str,
    setting: str,
    up: LoadedGenerator | None,
    image: np.ndarray,
    nbytes: int,
    encode_s: float,
    restore_s: float | None,
    lpips: Any,
    device: torch.device,
) -> dict[str, Any]:
    metrics = evaluate(item.hr, image, item.mask, lpips=lpips, mpp=item.mpp)
    codec = setting.partition(":")[0] if family != "source" else "source"
    return {
        "input": item.name,
        "family": family,
        "codec": codec,
        "setting": setting,
        "upscaler": up.name if up else None,
        "weights_sha256": up.weights_sha256 if up else None,
        "bytes": int(nbytes),
        "pixels": item.pixels,
        "bpp": 8 * nbytes / item.pixels,
        "ratio_to_source": (item.source_bpp / (8 * nbytes / item.pixels)) if item.source_bpp and nbytes else None,
        "metrics": metrics,
        "encode_seconds": encode_s,
        "restore_seconds": restore_s,
        "device": _device_name(device) if up is not None else "cpu",
    }


def _hybrid_records(
    item: BenchInput,
    sr: dict[str, Any],
    image: np.ndarray,
    bicubic: np.ndarray | None,
    lr: CodedLR,
    chunks: HrChunks,
    settings: list[str],
    lambdas: list[float],
    lpips: Any,
    device: torch.device,
) -> list[dict[str, Any]]:
    """The ``hybrid`` records over an archive record ``sr`` and its restored ``image`` (of the
    coded ``lr``; ``bicubic`` where that restores a chunk better, as the archive's restorer
    choice does): per lambda, each chunk's least-cost option among the SR path and the HR chunk
    at every setting of ``settings`` (:mod:`wsistore.archive.hybrid_choice`, as ingest decides),
    the HR chunks' bytes added and their LR chunks' taken off; its encode time the LR's and the
    probes and codings the decision weighed."""
    records = []
    for lam in lambdas:
        hybrid = choose_hybrid(item.hr, image, chunks, settings, lr.chunk_bytes, lam, bicubic=bicubic)
        encode = sr["encode_seconds"] + hybrid.encode_seconds
        # no chunk restored by the generator: no adaptation stored (ingest drops it)
        unused = 0 if hybrid.generator_chunks else sr.get("adaptation", {}).get("bytes_added", 0)
        nbytes, restore = sr["bytes"] + hybrid.hr_bytes - unused, sr["restore_seconds"]
        rec = _record(item, "hybrid", sr["setting"], None, hybrid.image, nbytes, encode, restore, lpips, device)
        same = {k: sr[k] for k in ("upscaler", "weights_sha256", "device", "precision")}
        info = {
            "hr_codec": "+".join(settings),
            "lambda": lam,
            "hr_chunks": hybrid.hr_chunks,
            "chunks": len(chunks.boxes),
        }
        info |= {"generator_chunks": hybrid.generator_chunks, "adaptation_bytes_dropped": unused}
        records.append(rec | same | {"hybrid": info | {"hr_bytes": hybrid.hr_bytes, "sr_bytes": sr["bytes"]}})
    return records


def _adapted_record(
    item: BenchInput, coded: CodedLR, chunk: int, options: AdaptOptions, device: torch.device, lpips: Any
) -> tuple[dict[str, Any], np.ndarray]:
    """The record of ``MODEL+adapted`` and its image: the base generator adapted to this input as
    ingest adapts a slide (tuned on the coded LR and the original), its bytes added when the rule
    keeps it; when it does not, the base's pixels at the archive's bytes (what restore gives)."""
    lr, hr, scale = coded.lr, item.hr, 4  # bench codes LR at the archive's default scale
    side = chunk * scale
    rows, cols = -(-lr.shape[0] // chunk), -(-lr.shape[1] // chunk)
    tissue = [
        (r, q)
        for r in range(rows)
        for q in range(cols)
        if item.mask[r * side : (r + 1) * side, q * side : (q + 1) * side].any()
    ]
    source = AdaptationSource(
        read_lr=lambda b: lr[b[1] : b[3], b[0] : b[2]],
        read_hr=lambda b: hr[b[1] : b[3], b[0] : b[2]],
        tissue_chunks=tissue,
        chunk=chunk,
        scale=scale,
        lr_size=(lr.shape[1], lr.shape[0]),
        source_size=(hr.shape[1], hr.shape[0]),
        codec=coded.codec,
    )
    start = time.perf_counter()
    result = tune(source, options)
    tuning = time.perf_counter() - start
    base = load_generator(options.model or default_model(coded.codec), device)
    if result.kept:
        generator = adaptation.apply(base, result.payload, base.weights_sha256 or "")
    else:
        generator = replace(base, name=f"{base.name}+adapted")
    runner = GeneratorRunner(generator, device, precision=DEFAULT_PRECISION)  # as restore computes it
    start = time.perf_counter()
    image = upscale_image(lr, runner, hr.shape[:2])
    seconds = time.perf_counter() - start
    added = len(result.payload) if result.kept else 0
    nbytes = coded.nbytes + added
    rec = _record(item, "archive", coded.setting, generator, image, nbytes, tuning, seconds, lpips, device)
    rec["precision"] = runner.precision
    return rec | {"adaptation": result.info | {"tuning_seconds": round(tuning, 2), "bytes_added": added}}, image


def _source_bytes(item: BenchInput) -> int:
    """Bytes the source file spends on this image: slides from their bits per pixel,
    tiles as lossless PNG files (their own size)."""
    if item.source_bpp is not None:
        return int(round(item.source_bpp * item.pixels / 8))
    from wsistore.codecs import make_codec

    return len(make_codec("png").encode_image(item.hr))


def _costs(records: list[dict[str, Any]], device: torch.device) -> list[str]:
    lines = []
    arch = [r for r in records if r["family"] == "archive"]
    if arch:
        pixels = sum(r["pixels"] for r in arch if r["upscaler"] == "bicubic")
        enc = sum(r["encode_seconds"] for r in arch if r["upscaler"] == "bicubic")
        lines.append(f"archive LR encode: {enc:.2f} s for {pixels / 1e6:.1f} source MP over all settings")
        for name in sorted({r["upscaler"] for r in arch}):
            mine = [r for r in arch if r["upscaler"] == name]
            secs = sum(r["restore_seconds"] for r in mine)
            gp = sum(r["pixels"] for r in mine) / 1e9
            per = f"{secs / gp:.0f} {'GPU' if device.type == 'cuda' else 'CPU'}-seconds per gigapixel"
            lines.append(f"restore with {name} on {_device_name(device)}: {secs:.2f} s for {gp * 1e3:.1f} MP ({per})")
    return lines


def _slug(name: str, limit: int = 80) -> str:
    """``name`` as a file name part: letters, digits, ``-`` and ``_``; a long one cut to
    ``limit`` characters with a hash of the whole (so two long names stay apart)."""
    slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    if len(slug) <= limit:
        return slug
    return f"{slug[: limit - 17]}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"


def _lpips(weights: Path | None) -> tuple[Any, str]:
    if weights is None:
        return None, "needs ImageNet AlexNet weights, which are never downloaded: pass --lpips-weights FILE"
    return Lpips(weights), "torchvision AlexNet weights from " + str(weights)


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
