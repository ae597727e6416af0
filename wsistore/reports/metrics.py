"""Full-reference quality metrics on tissue only, from maintained libraries.

* pixel metrics over tissue pixels: PSNR (mean squared error over tissue pixels), SSIM
  (scikit-image, Gaussian window sigma 1.5, the map averaged over tissue pixels);
* patch metrics averaged over 256 x 256 patches that are at least 90 % tissue:
  MS-SSIM, HaarPSI and GMSD (piq), LPIPS-Alex (torchmetrics' LPIPS layers with the
  user's own torchvision AlexNet ImageNet weights; unavailable without them);
* a diagnostic-content proxy: nuclei found by colour deconvolution (haematoxylin,
  scikit-image ``rgb2hed``) and thresholding on the original and on the reconstruction,
  matched by centroid distance: F1 of matched nuclei and the count ratio.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import piq
import torch
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree
from skimage.color import rgb2hed
from skimage.filters import threshold_otsu
from skimage.metrics import structural_similarity

from wsistore.errors import InputError
from wsistore.psnr import psnr_from_mse

PATCH = 256
PATCH_TISSUE = 0.9


@dataclass(frozen=True)
class Metric:
    """One registered metric."""

    name: str
    higher_is_better: bool
    source: str
    description: str


#: Explicit registry of the metrics every report shows.
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("psnr", True, "numpy", "PSNR over tissue pixels (dB)"),
        Metric("psnr_image", True, "numpy", "PSNR over the whole image (dB)"),
        Metric("ssim", True, "scikit-image", "SSIM map averaged over tissue pixels"),
        Metric("ms_ssim", True, "piq", "multi-scale SSIM on tissue patches"),
        Metric("haarpsi", True, "piq", "Haar wavelet perceptual similarity on tissue patches"),
        Metric("gmsd", False, "piq", "gradient magnitude similarity deviation on tissue patches (lower is better)"),
        Metric("lpips", False, "torchmetrics + user AlexNet weights", "LPIPS-Alex on tissue patches (lower is better)"),
        Metric("nuclei_f1", True, "scikit-image", "F1 of nuclei matched between original and reconstruction"),
        Metric("nuclei_count_ratio", True, "scikit-image", "nuclei found in the reconstruction / in the original"),
    )
}


def psnr(reference: np.ndarray, test: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB over ``mask`` pixels (all pixels without a mask); see :mod:`wsistore.psnr`."""
    diff = reference.astype(np.float64) - test.astype(np.float64)
    sq = (diff**2).mean(axis=2)
    mse = float(sq[mask].mean() if mask is not None else sq.mean())
    return psnr_from_mse(mse)


def ssim(reference: np.ndarray, test: np.ndarray, mask: np.ndarray | None = None) -> float:
    """SSIM (Wang et al. 2004 settings) averaged over ``mask`` pixels."""
    _, full = structural_similarity(
        reference,
        test,
        channel_axis=2,
        data_range=255,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        full=True,
    )
    per_pixel = full.mean(axis=2)
    return float(per_pixel[mask].mean() if mask is not None else per_pixel.mean())


def tissue_patches(mask: np.ndarray, size: int = PATCH, min_fraction: float = PATCH_TISSUE) -> list[tuple[int, int]]:
    """Top-left corners of non-overlapping ``size`` patches that are mostly tissue."""
    h, w = mask.shape
    return [
        (y, x)
        for y in range(0, h - size + 1, size)
        for x in range(0, w - size + 1, size)
        if mask[y : y + size, x : x + size].mean() >= min_fraction
    ]


def _patch_tensor(image: np.ndarray, corners: list[tuple[int, int]], size: int) -> torch.Tensor:
    stack = np.stack([image[y : y + size, x : x + size] for y, x in corners])
    return torch.from_numpy(stack).permute(0, 3, 1, 2).float() / 255.0


class Lpips:
    """LPIPS-Alex: torchmetrics' bundled linear layers + the user's AlexNet ImageNet weights."""

    def __init__(self, alexnet_weights: str | Path) -> None:
        import torchvision
        from torchmetrics.functional.image.lpips import _LPIPS

        path = Path(alexnet_weights)
        if not path.is_file():
            raise InputError(f"LPIPS needs torchvision AlexNet ImageNet weights; {path} does not exist")
        backbone = torchvision.models.alexnet(weights=None)
        try:
            backbone.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:  # torch.load raises pickle, runtime and value errors for bad files
            raise InputError(f"{path} is not a torchvision AlexNet state dict ({str(exc).splitlines()[0]})") from None
        self.net = _LPIPS(pretrained=True, net="alex", pnet_rand=True).eval()
        for slice_ in (
            self.net.net.slice1,
            self.net.net.slice2,
            self.net.net.slice3,
            self.net.net.slice4,
            self.net.net.slice5,
        ):
            for index, layer in slice_.named_children():
                layer.load_state_dict(backbone.features[int(index)].state_dict())

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net(2 * x - 1, 2 * y - 1).flatten()


def nuclei_centroids(image: np.ndarray, threshold: float, min_area: int) -> np.ndarray:
    """Centroids ``(n, 2)`` of haematoxylin-rich blobs of at least ``min_area`` pixels."""
    haem = rgb2hed(image)[..., 0]
    binary = ndimage.binary_opening(haem > threshold, iterations=1)
    labels, n = ndimage.label(binary)
    if n == 0:
        return np.zeros((0, 2))
    areas = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    keep = np.flatnonzero(areas >= min_area) + 1
    if keep.size == 0:
        return np.zeros((0, 2))
    return np.asarray(ndimage.center_of_mass(binary, labels, keep))


def nuclei_agreement(reference: np.ndarray, test: np.ndarray, mask: np.ndarray, mpp: float = 0.25) -> dict[str, float]:
    """F1 of nuclei matched within 3 um, and the count ratio; the threshold (Otsu on the
    original's haematoxylin over tissue, top 0.5 % clipped) is shared so only the image
    content differs."""
    haem = rgb2hed(reference)[..., 0]
    values = haem[mask] if mask.any() else haem.ravel()
    threshold = float(threshold_otsu(np.clip(values, None, np.percentile(values, 99.5))))  # robust to dark debris
    min_area = max(4, int(round(12.0 / mpp**2)))  # ~12 square micrometres
    ref = nuclei_centroids(reference, threshold, min_area)
    out = nuclei_centroids(test, threshold, min_area)
    if len(ref) == 0:
        return {"nuclei_f1": float("nan"), "nuclei_count_ratio": float("nan")}
    matched = 0
    if len(out):
        radius = 3.0 / mpp
        tree = cKDTree(out)
        dist = np.full((len(ref), len(out)), 1e6)
        for i, near in enumerate(tree.query_ball_point(ref, radius)):
            for j in near:
                dist[i, j] = np.hypot(*(ref[i] - out[j]))
        rows, cols = linear_sum_assignment(dist)
        matched = int((dist[rows, cols] <= radius).sum())
    return {"nuclei_f1": 2 * matched / (len(ref) + len(out)), "nuclei_count_ratio": len(out) / len(ref)}


def evaluate(
    reference: np.ndarray,
    test: np.ndarray,
    mask: np.ndarray,
    lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    mpp: float | None = None,
) -> dict[str, Any]:
    """Every metric in :data:`METRICS` for one reconstruction (LPIPS None without weights)."""
    if reference.shape != test.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {test.shape}")
    result: dict[str, Any] = {"psnr": float(psnr(reference, test, mask)), "psnr_image": float(psnr(reference, test))}
    result["ssim"] = ssim(reference, test, mask)
    corners = tissue_patches(mask)
    if corners:
        x, y = _patch_tensor(reference, corners, PATCH), _patch_tensor(test, corners, PATCH)
        result["ms_ssim"] = float(piq.multi_scale_ssim(x, y, data_range=1.0, reduction="mean"))
        result["haarpsi"] = float(piq.haarpsi(x, y, data_range=1.0, reduction="mean"))
        result["gmsd"] = float(piq.gmsd(x, y, data_range=1.0, reduction="mean"))
        result["lpips"] = float(lpips(x, y).mean()) if lpips is not None else None
    else:
        result.update(ms_ssim=None, haarpsi=None, gmsd=None, lpips=None)
    result.update(nuclei_agreement(reference, test, mask, mpp or 0.25))
    result["tissue_patches"] = len(corners)
    result["tissue_fraction"] = float(mask.mean())
    return result
