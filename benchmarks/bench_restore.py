"""Restore speed: end to end against the generator alone, and on-demand latency.

On an all-tissue archive (default: a mosaic of the real H&E tiles in ../shared/data,
ingested with the default codec) and for each model, in one process:

* end to end: ``restore`` of a region aligned to the compute grid to a JPEG BigTIFF
  (LR read and decode, generator, JPEG encode, TIFF write), in HR megapixels per second;
* generator alone on the same LR windows, already on the device, no I/O: useful HR MP/s
  (the tiles' cores, comparable with end to end) and raw HR MP/s (with the halo);
* decode alone (LR windows from the archive) and encode alone (JPEG tiles of the result):
  where end-to-end time goes besides the generator;
* on demand: ``wsistore.open`` then one 512 x 512 ``read_region`` inside one compute tile,
  cold and cached, and one across the corner of four tiles (cold);
* with ``--sweep``, the generator alone on random windows of each compute tile size: the
  measurement behind ``wsistore.restoration.grid.choose_tile``.

On CUDA the model runs in bf16 with channels_last (``--compile`` adds torch.compile) and
a warm-up restore of one tile goes first; the defaults restore the whole slide there.

    python -m benchmarks.bench_restore [--models bicubic edsr-32x64] [--device auto]
        [--cells N] [--region-tiles N] [--batch B] [--workers W] [--compile]
        [--sweep T ...] [--precision fp32 int8] [--json OUT]

``--precision`` runs every model at each precision (int8: the quantised CPU path of
:mod:`wsistore.restoration.int8`; the first restore builds or loads the quantised model,
outside the timed run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch

#: Built with seeded random weights: speed does not depend on what the weights learned.
BUILT_MODELS = {
    "edsr-32x64": ("edsr", {"blocks": 32, "features": 64}),
    "edsr-8x32": ("edsr", {"blocks": 8, "features": 32}),
    "edsr-tiny": ("edsr", {"blocks": 2, "features": 16}),
    "compact-48x12": ("compact", {"features": 48, "convs": 12}),
}
#: Compute tiles per side of the restored region on the CPU (EDSR-32x64: ~25 s per tile on 2 cores).
CPU_REGION_TILES = {"edsr-32x64": 1}
CPU_CELLS = 2
CUDA_CELLS = 24
LATENCY_SIDE = 512
SWEEP_CUDA = (128, 256, 512, 1024)
ENCODE_SAMPLE_MP = 64


def all_tissue_archive(workdir: Path, cells: int, workers: int) -> Path:
    """A ``cells x cells`` mosaic of the real tiles (1024 px cells, no glass cells), ingested."""
    from tests.data import tile_names
    from tests.slides import write_mosaic_slide
    from wsistore.archive.writer import IngestOptions, ingest

    names = [n for n in tile_names() if "monuseg" in n]
    layout = [[names[(i * cells + j) % len(names)] for j in range(cells)] for i in range(cells)]
    slide = write_mosaic_slide(workdir / "tissue.tif", layout)
    archive = workdir / "tissue.zarr"
    ingest(slide, archive, IngestOptions(workers=workers, progress=False))
    return archive


def model_spec(name: str, workdir: Path) -> str:
    """A ``--model`` value: built models are saved to a weights file first."""
    from wsistore.models.registry import build_generator
    from wsistore.models.weights import save_generator

    if name not in BUILT_MODELS:
        return name
    torch.manual_seed(0)
    architecture, config = BUILT_MODELS[name]
    path = workdir / f"{name}.safetensors"
    save_generator(
        path, build_generator(architecture, config), {"architecture": architecture, "config": config, "scale": 4}
    )
    return str(path)


def bench_model(
    archive: Path, name: str, args: argparse.Namespace, workdir: Path, precision: str = "fp32"
) -> dict[str, Any]:
    from wsistore.archive.reader import Archive
    from wsistore.degradation import read_window
    from wsistore.restoration.engine import RestoreSpec, TileRestorer, restorer_for
    from wsistore.restoration.pipeline import RestoreOptions, restore
    from wsistore.restoration.tiff_writer import TileCodec, cut_tiles

    spec = model_spec(name, workdir)
    opened = Archive.open(archive)
    restorer = restorer_for(
        RestoreSpec(
            str(archive),
            opened.metadata.manifest_sha256,
            spec,
            args.device,
            args.batch,
            args.compile,
            precision=precision,
        ),
        opened,
    )
    runner, g = restorer.runner, restorer.grid
    cuda = runner.device.type == "cuda"
    n = args.region_tiles or (max(g.rows, g.cols) if cuda else CPU_REGION_TILES.get(name, 2))
    rows, cols = min(n, g.rows), min(n, g.cols)
    region = (0, 0, min(cols * g.hr_tile, g.width), min(rows * g.hr_tile, g.height))
    megapixels = region[2] * region[3] / 1e6
    options = dict(
        model=spec,
        device=args.device,
        batch=args.batch,
        workers=args.workers,
        compile=args.compile,
        overwrite=True,
        progress=False,
        precision=precision,
    )
    if cuda:  # load, autotune and compile outside the timed run
        restore(archive, workdir / "warmup.tif", RestoreOptions(region=(0, 0, g.hr_tile, g.hr_tile), **options))  # type: ignore[arg-type]
        torch.cuda.reset_peak_memory_stats()

    start = time.perf_counter()
    result = restore(archive, workdir / "out.tif", RestoreOptions(region=region, **options))  # type: ignore[arg-type]
    end_to_end = time.perf_counter() - start

    fresh = TileRestorer(Archive.open(archive), runner)  # cold LR chunk cache
    tiles = [(r, c) for r in range(rows) for c in range(cols)]
    start = time.perf_counter()
    windows = [read_window(fresh.read_lr, g.window(r, c), g.lr_width, g.lr_height) for r, c in tiles]
    decode = time.perf_counter() - start

    alone, batch = generator_alone(runner, windows)
    useful = len(tiles) * g.hr_tile**2 / 1e6
    raw = len(tiles) * (g.window_side * g.scale) ** 2 / 1e6

    with tifffile.TiffFile(workdir / "out.tif") as tif:
        hr = tif.pages[0].asarray()
    hr = hr[: max(1, int(ENCODE_SAMPLE_MP * 1e6) // hr.shape[1])]
    jpeg_tiles = [t for y in range(0, hr.shape[0], 512) for t in cut_tiles(hr[y : y + 512], 512)]
    start = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(TileCodec().encode, jpeg_tiles))
    encode = time.perf_counter() - start
    encode_mp = len(jpeg_tiles) * 512 * 512 / 1e6

    latency = on_demand_latency(archive, spec, args.device, g.hr_tile, g.rows > 1 and g.cols > 1, precision)
    sweep = [tile_sweep(runner, tile, g.halo) for tile in args.sweep or (SWEEP_CUDA if cuda else ())]
    return {
        "model": name,
        "generator": result.generator,
        "device": str(runner.device),
        "precision": runner.precision,
        "compile": args.compile,
        "batch": batch,
        "compute_tile_lr": g.tile,
        "halo_lr": g.halo,
        "halo_overhead": round(((g.tile + 2 * g.halo) / g.tile) ** 2, 3),
        "region": list(region),
        "region_hr_megapixels": megapixels,
        "compute_tiles": len(tiles),
        "background_tiles": result.tiles_background,
        "end_to_end_seconds": end_to_end,
        "end_to_end_hr_mp_per_s": megapixels / end_to_end,
        "generator_alone_seconds": alone,
        "generator_alone_useful_hr_mp_per_s": useful / alone,
        "generator_alone_raw_hr_mp_per_s": raw / alone,
        "decode_lr_seconds": decode,
        "decode_hr_mp_per_s": useful / decode,
        "encode_jpeg_hr_mp_per_s": encode_mp / encode,
        "on_demand_512": latency,
        "tile_sweep": sweep,
        "peak_gpu_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None,
    }


@torch.inference_mode()
def generator_alone(runner: Any, windows: list[np.ndarray]) -> tuple[float, int]:
    """Seconds for the model on the windows (already on the device), and the batch used."""
    device, batch = runner.device, runner.batch
    if runner.int8 is not None:  # the quantised network and its fp32 finish (skip, rounding) in OpenVINO
        inputs = [np.ascontiguousarray(w[None].transpose(0, 3, 1, 2), dtype=np.float32) / 255 for w in windows]
        start = time.perf_counter()
        for x in inputs:
            runner.int8(x)
        return time.perf_counter() - start, batch
    x = torch.from_numpy(np.stack(windows)).to(device).permute(0, 3, 1, 2).float().div_(255)
    if runner.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def run(part: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=runner.bf16):
            runner.model(part)

    if device.type == "cuda":
        run(x[:batch])
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(0, len(windows), batch):
        run(x[i : i + batch])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, batch


@torch.inference_mode()
def tile_sweep(runner: Any, tile: int, halo: int) -> dict[str, Any]:
    """The generator alone on random windows of one compute tile size (halving the batch
    on out-of-memory): raw and useful (after halo) HR MP/s."""
    device, batch, scale = runner.device, runner.batch, runner.scale
    side = tile + 2 * halo
    while True:
        try:
            x = torch.rand(batch, 3, side, side, device=device)
            if runner.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=runner.bf16):
                runner.model(x)  # warm-up (and autotuning)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                reps = 3 if device.type == "cuda" else 1
                start = time.perf_counter()
                for _ in range(reps):
                    runner.model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
            seconds = (time.perf_counter() - start) / reps
            break
        except torch.cuda.OutOfMemoryError:
            del x
            torch.cuda.empty_cache()
            if batch == 1:
                return {"tile": tile, "halo": halo, "error": "out of memory at batch 1"}
            batch //= 2
    return {
        "tile": tile,
        "halo": halo,
        "batch": batch,
        "halo_overhead": ((tile + 2 * halo) / tile) ** 2,
        "raw_hr_mp_per_s": batch * (side * scale) ** 2 / 1e6 / seconds,
        "useful_hr_mp_per_s": batch * (tile * scale) ** 2 / 1e6 / seconds,
    }


def on_demand_latency(
    archive: Path, spec: str, device: str, hr_tile: int, corner: bool, precision: str = "fp32"
) -> dict[str, Any]:
    import wsistore

    side = LATENCY_SIDE
    with wsistore.open(archive, model=spec, device=device, precision=precision) as slide:
        inside = (hr_tile // 2 - side // 2, hr_tile // 2 - side // 2)
        timings: dict[str, Any] = {}
        for key, location in (("cold_ms", inside), ("cached_ms", inside)):
            start = time.perf_counter()
            slide.read_region(location, 0, (side, side))
            timings[key] = 1000 * (time.perf_counter() - start)
        if corner:
            start = time.perf_counter()
            slide.read_region((hr_tile - side // 2, hr_tile - side // 2), 0, (side, side))
            timings["cold_four_tiles_ms"] = 1000 * (time.perf_counter() - start)
    return timings


def machine() -> str:
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (
        f"{platform.machine()}, {os.cpu_count()} cores{gpu}, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def to_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"`{result['command']}` on {result['machine']}; archive {result['archive_dimensions'][0]} x "
        f"{result['archive_dimensions'][1]} all tissue.",
        "",
        "| model | device | tile/halo (LR) | region HR MP | end to end HR MP/s | generator alone useful / raw | "
        "decode LR (HR MP/s) | encode JPEG (HR MP/s) | 512 px on demand, ms: cold / cached / 4 tiles cold |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["models"]:
        lat = r["on_demand_512"]
        corner = f" / {lat['cold_four_tiles_ms']:.0f}" if "cold_four_tiles_ms" in lat else ""
        lines.append(
            f"| {r['model']} | {r['device']} {r['precision']}{' compile' if r['compile'] else ''} b{r['batch']} | "
            f"{r['compute_tile_lr']}/{r['halo_lr']} ({r['halo_overhead']:.2f}x) | {r['region_hr_megapixels']:.1f} | "
            f"{r['end_to_end_hr_mp_per_s']:.3g} | {r['generator_alone_useful_hr_mp_per_s']:.3g} / "
            f"{r['generator_alone_raw_hr_mp_per_s']:.3g} | "
            f"{r['decode_hr_mp_per_s']:.3g} | {r['encode_jpeg_hr_mp_per_s']:.3g} | "
            f"{lat['cold_ms']:.0f} / {lat['cached_ms']:.1f}{corner} |"
        )
    sweeps = [(r["model"], r["device"], r["precision"], t) for r in result["models"] for t in r["tile_sweep"]]
    if sweeps:
        lines += [
            "",
            "Generator alone by compute tile size (random input):",
            "",
            "| model | device | tile/halo (LR) | batch | halo overhead | raw HR MP/s | useful HR MP/s |",
            "|---|---|---|---|---|---|---|",
        ]
        for model, device, precision, t in sweeps:
            if "error" in t:
                lines.append(f"| {model} | {device} {precision} | {t['tile']}/{t['halo']} | | | {t['error']} | |")
            else:
                lines.append(
                    f"| {model} | {device} {precision} | {t['tile']}/{t['halo']} | {t['batch']} | "
                    f"{t['halo_overhead']:.2f}x | "
                    f"{t['raw_hr_mp_per_s']:.3g} | {t['useful_hr_mp_per_s']:.3g} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models",
        nargs="+",
        default=["bicubic", "edsr-32x64"],
        help=f"bicubic, nearest, {', '.join(BUILT_MODELS)} or weights files",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--archive", type=Path, help="an all-tissue archive (default: build one from the real tiles)")
    parser.add_argument(
        "--cells", type=int, help=f"mosaic side in 1024 px cells (default {CPU_CELLS} on CPU, {CUDA_CELLS} on CUDA)"
    )
    parser.add_argument(
        "--region-tiles",
        type=int,
        help="compute tiles per side of the restored region (default: CPU 2 (EDSR-32x64 1), CUDA all)",
    )
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument(
        "--sweep",
        nargs="*",
        type=int,
        help="compute tile sizes to time the generator alone on "
        f"(default: none on CPU, {' '.join(map(str, SWEEP_CUDA))} on CUDA)",
    )
    parser.add_argument(
        "--precision", nargs="+", default=["fp32"], choices=("fp32", "int8", "auto"), help="CPU precisions to run"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    from wsistore.archive.reader import Archive
    from wsistore.models.device import resolve_device

    cuda = resolve_device(args.device).type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        archive = args.archive or all_tissue_archive(
            workdir, args.cells or (CUDA_CELLS if cuda else CPU_CELLS), args.workers
        )
        md = Archive.open(archive).metadata
        result = {
            "command": "python -m benchmarks.bench_restore " + " ".join(sys.argv[1:]),
            "machine": machine(),
            "archive_dimensions": [md.width, md.height],
            "models": [
                bench_model(archive, name, args, workdir, precision)
                for name in args.models
                for precision in args.precision
            ],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
