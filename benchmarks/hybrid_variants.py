"""Which hybrid rule pays (issue 26): per-chunk choices scored from the same coded chunks.

For each input of a split (``ood`` or ``slides`` of :mod:`benchmarks.ood_report`), the LR is coded
per chunk at several AVIF rates and restored by the default generator (no adaptation), and each
level-0 chunk is coded at full resolution at several AVIF levels (``--hr-settings``, as hybrid
ingest codes it). Then per variant and lambda, each chunk takes its cheapest option by
``SSE + lambda x bits``:

* ``kept``: LR at q75 stored for every chunk (format 1.5), HR at level 40 or SR;
* ``dropped``: an HR chunk's LR not stored (format 1.6), HR at level 40 or SR;
* ``dropped, HR level per chunk``: as ``dropped``, the HR level chosen per chunk too;
* ``proxy``: as ``dropped``, but decided on the loss map's SSE (bicubic of the coded LR chunk, what
  ingest computes anyway), times ``--proxy-gain``, in place of the generator's; scored on the
  generator's. Printed with the share of chunks it sends the other way than the generator would.

Printed per variant: mean bpp and whole-image PSNR over the inputs (no tissue mask), the share of
chunks at full resolution, and the difference to the better of the pure SR and AVIF-on-HR mean
curves at the same mean bytes ("vs better"). Run on a quiet machine; the SR path runs on the CPU.

    python -m benchmarks.hybrid_variants --split ood [--hr-settings pixelformat=YUV444,speed=6]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from benchmarks.ood_report import splits
from wsistore.archive.hybrid_choice import sse
from wsistore.codecs import parse_codec
from wsistore.degradation import Downsample, encode_on_grid, loss_rms
from wsistore.models.weights import default_model
from wsistore.psnr import psnr_from_mse
from wsistore.reports.inputs import load_inputs
from wsistore.reports.methods import HrChunks, code_full_resolution
from wsistore.restoration.engine import runner_for, upscale_image

LR_RATES = (45, 60, 75, 85, 90)
HR_LEVELS = (20, 30, 40, 50, 60)
LAMBDAS = (300.0, 600.0, 900.0, 1350.0, 2700.0)
#: AVIF on the full image: the report's levels and 25, 35, 40, 50, so the curve is dense near 0.2 bpp
AVIF_RATES = [f"avif:level={q},speed=6" for q in (0, 5, 12, 20, 25, 30, 35, 40, 45, 50, 60)]
CHUNK = 256  # LR pixels; HR chunks of 1024
VARIANTS = {
    "kept (format 1.5)": ((75,), (40,), True),
    "dropped (format 1.6)": ((75,), (40,), False),
    "dropped, HR level per chunk": ((75,), HR_LEVELS, False),
}


@dataclass
class Option:
    kind: str  # "sr" or "hr"
    level: int  # LR rate or HR level
    sse: int
    nbytes: int  # as stored (crc32c included)
    proxy_sse: float | None = None  # SR options: the loss map's SSE (bicubic of the same coded LR)


@dataclass
class Scored:
    pixels: int
    chunks: list[list[Option]]
    sr: list[tuple[float, float]]  # (bpp, PSNR) per LR rate
    avif: list[tuple[float, float]]  # AVIF on the full image


def score_input(hr: np.ndarray, fill: int, lr_origin: tuple[int, int], hr_settings: str) -> Scored:
    """Every option of every chunk of one input."""
    height, width = hr.shape[:2]
    pixels = height * width
    side, origin = 4 * CHUNK, (4 * lr_origin[0], 4 * lr_origin[1])
    options: dict[tuple[int, int, int, int], list[Option]] = {}
    chunks = HrChunks(hr, side, origin)
    for level in HR_LEVELS:
        for i, box in enumerate(chunks.boxes):
            c = chunks.coded(i, f"avif:level={level},{hr_settings}")
            options.setdefault(box, []).append(Option("hr", level, c.sse, c.nbytes))
    lr = Downsample(4).reduce_region(hr)
    runner = runner_for(default_model(), "cpu")
    sr_curve = []
    for rate in LR_RATES:
        coded, sizes = encode_on_grid(lr, parse_codec(f"avif:level={rate},speed=8"), CHUNK, fill, lr_origin)
        sr = upscale_image(coded, runner, (height, width))
        sr_curve.append((8 * sum(sizes.values()) / pixels, psnr_from_mse(sse(sr, hr) / hr.size)))
        for (y0, x0, y1, x1), opts in options.items():
            block, lr_block = hr[y0:y1, x0:x1], coded[y0 // 4 : -(-y1 // 4), x0 // 4 : -(-x1 // 4)]
            proxy = loss_rms(block, lr_block, 4) ** 2 * block.size
            opts.append(Option("sr", rate, sse(sr[y0:y1, x0:x1], block), sizes[y0 // 4, x0 // 4] + 4, proxy))
    avif = [code_full_resolution(hr, s) for s in AVIF_RATES]
    avif_curve = [(8 * c.nbytes / pixels, psnr_from_mse(sse(c.image, hr) / hr.size)) for c in avif]
    return Scored(pixels, list(options.values()), sr_curve, avif_curve)


def choose(
    scored: Scored, lam: float, rates: tuple[int, ...], levels: tuple[int, ...], kept: bool
) -> tuple[float, float, float]:
    """(bpp, PSNR, share HR) of one input when each chunk takes its cheapest option."""
    total_sse, total_bytes, hr_chunks = 0, 0, 0
    for opts in scored.chunks:
        lr_kept = next(o.nbytes for o in opts if o.kind == "sr" and o.level == rates[0]) if kept else 0
        allowed = [o for o in opts if (o.kind == "sr" and o.level in rates) or (o.kind == "hr" and o.level in levels)]
        cost = [(o.sse + lam * 8 * (o.nbytes + (lr_kept if o.kind == "hr" else 0)), i) for i, o in enumerate(allowed)]
        best = allowed[min(cost)[1]]
        total_sse += best.sse
        total_bytes += best.nbytes + (lr_kept if best.kind == "hr" else 0)
        hr_chunks += best.kind == "hr"
    return (
        8 * total_bytes / scored.pixels,
        psnr_from_mse(total_sse / (3 * scored.pixels)),
        hr_chunks / len(scored.chunks),
    )


def choose_by_proxy(scored: Scored, lam: float, gain: float) -> tuple[float, float, float, float]:
    """(bpp, PSNR, share HR, share decided otherwise) of one input when each chunk is decided
    between SR at q75 and HR at level 40 (format 1.6) on ``gain`` x the loss map's SSE, not the
    generator's."""
    total_sse, total_bytes, hr_chunks, wrong = 0, 0, 0, 0
    for opts in scored.chunks:
        sr = next(o for o in opts if o.kind == "sr" and o.level == 75)
        hr = next(o for o in opts if o.kind == "hr" and o.level == 40)
        assert sr.proxy_sse is not None
        by_proxy = gain * sr.proxy_sse + lam * 8 * sr.nbytes > hr.sse + lam * 8 * hr.nbytes
        by_model = sr.sse + lam * 8 * sr.nbytes > hr.sse + lam * 8 * hr.nbytes
        best = hr if by_proxy else sr
        total_sse += best.sse
        total_bytes += best.nbytes
        hr_chunks += by_proxy
        wrong += by_proxy != by_model
    n = len(scored.chunks)
    return 8 * total_bytes / scored.pixels, psnr_from_mse(total_sse / (3 * scored.pixels)), hr_chunks / n, wrong / n


def _mean_curve(curves: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    return sorted(
        (float(np.mean([c[i][0] for c in curves])), float(np.mean([c[i][1] for c in curves])))
        for i in range(len(curves[0]))
    )


def _at(curve: list[tuple[float, float]], bpp: float) -> float | None:
    xs = [p[0] for p in curve]
    return float(np.interp(bpp, xs, [p[1] for p in curve])) if xs[0] <= bpp <= xs[-1] else None


def _vs_better(sr: list[tuple[float, float]], avif: list[tuple[float, float]], bpp: float, psnr: float) -> str:
    """``psnr`` minus the better of the pure SR and AVIF mean curves at ``bpp`` (n/a outside both)."""
    pure = [v for v in (_at(sr, bpp), _at(avif, bpp)) if v is not None]
    return f"{psnr - max(pure):+.3f}" if pure else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("ood", "slides"), default="ood")
    parser.add_argument("--hr-settings", default="pixelformat=YUV444,speed=6", help="AVIF settings of the HR chunks")
    parser.add_argument(
        "--proxy-gain", type=float, default=0.75, help="SR SSE estimated as this x the loss map's (bicubic) SSE"
    )
    args = parser.parse_args()
    scored = [score_input(i.hr, i.fill, i.lr_origin, args.hr_settings) for i in load_inputs(splits()[args.split], 2048)]
    sr, avif = _mean_curve([s.sr for s in scored]), _mean_curve([s.avif for s in scored])
    for name, (rates, levels, kept) in VARIANTS.items():
        print(name)
        for lam in LAMBDAS:
            bpp, psnr, share = np.mean([choose(s, lam, rates, levels, kept) for s in scored], axis=0)
            better = _vs_better(sr, avif, bpp, psnr)
            print(f"  lambda {lam:6g}: {bpp:.3f} bpp, {psnr:.3f} dB, {share:.0%} HR, vs better {better}")
    ratios = [
        o.sse / o.proxy_sse
        for s in scored
        for c in s.chunks
        for o in c
        if o.kind == "sr" and o.level == 75 and o.proxy_sse
    ]
    print(
        f"SR SSE / loss-map SSE at q75 over {len(ratios)} chunks: median {np.median(ratios):.3f}, "
        f"quartiles {np.quantile(ratios, 0.25):.3f}-{np.quantile(ratios, 0.75):.3f}"
    )
    for gain in (1.0, args.proxy_gain):
        print(f"proxy: the loss map's SSE x {gain:g} in place of the generator's")
        for lam in LAMBDAS:
            bpp, psnr, share, wrong = np.mean([choose_by_proxy(s, lam, gain) for s in scored], axis=0)
            better = _vs_better(sr, avif, bpp, psnr)
            print(
                f"  lambda {lam:6g}: {bpp:.3f} bpp, {psnr:.3f} dB, {share:.0%} HR, vs better {better}, "
                f"{wrong:.0%} of chunks decided otherwise"
            )


if __name__ == "__main__":
    main()
