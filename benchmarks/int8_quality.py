"""int8 against fp32 (issue 24): PSNR/SSIM of each precision against the source and of int8
against fp32, on the validation tiles (``pipelines/validation_tiles.txt``) or the 10 tiles of the
out-of-distribution split (``pipelines/ood_tiles.txt``, ``--split ood``), each tile
degraded and coded as the default archive stores it and restored through the same compute
tiles as restore (:func:`wsistore.restoration.engine.upscale_image`).

    python -m benchmarks.int8_quality [--model compact-l1-gpu] [--split validation|ood]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from benchmarks.ood_report import OOD_LIST
from benchmarks.validation_report import TILES, listed, validation_tiles
from wsistore.codecs import make_codec
from wsistore.degradation import degrade
from wsistore.models.weights import default_model, load_generator
from wsistore.restoration.engine import upscale_image
from wsistore.restoration.runner import GeneratorRunner


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(structural_similarity(a, b, channel_axis=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="default: the shipped default")
    parser.add_argument("--split", choices=("validation", "ood"), default="validation")
    args = parser.parse_args()
    tiles = validation_tiles() if args.split == "validation" else [TILES / f"{n}.png" for n in listed(OOD_LIST)]
    generator = load_generator(args.model or default_model())
    cpu = torch.device("cpu")
    fp32, int8 = GeneratorRunner(generator, cpu), GeneratorRunner(generator, cpu, precision="int8")
    print("| tile | fp32 PSNR | int8 PSNR | int8 vs fp32 PSNR | fp32 SSIM | int8 SSIM | int8 vs fp32 SSIM |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for path in tiles:
        hr = np.asarray(Image.open(path).convert("RGB"))
        hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4]
        lr = degrade(hr, make_codec())
        a, b = upscale_image(lr, fp32, hr.shape[:2]), upscale_image(lr, int8, hr.shape[:2])
        rows.append((psnr(a, hr), psnr(b, hr), psnr(b, a), ssim(a, hr), ssim(b, hr), ssim(b, a)))
        print(f"| {path.stem} | " + " | ".join(f"{v:.4f}" for v in rows[-1]) + " |")
    mean = np.mean(rows, axis=0)
    print("| mean | " + " | ".join(f"{v:.4f}" for v in mean) + " |")
    print(f"int8 loses {mean[0] - mean[1]:.3f} dB PSNR against fp32")


if __name__ == "__main__":
    main()
