"""Metrics from maintained libraries, cross-checked against each other on real tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import piq
import pytest
import torch
import torchmetrics.functional.image as tmf
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio

from wsistore.codecs import make_codec
from wsistore.degradation import degrade
from wsistore.errors import InputError
from wsistore.psnr import IDENTICAL_PSNR
from wsistore.reports.metrics import METRICS, Lpips, evaluate, nuclei_agreement, psnr, ssim
from wsistore.tissue import tissue_pixels


@pytest.fixture(scope="module")
def pair(tile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A real tile and its archive-path reconstruction by bicubic."""
    lr = degrade(tile, make_codec("jpegxl", 1.0))
    up = torch.nn.functional.interpolate(
        torch.from_numpy(lr).permute(2, 0, 1)[None].float(), scale_factor=4, mode="bicubic"
    )
    return tile, up[0].permute(1, 2, 0).clamp(0, 255).round().byte().numpy()


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255


def test_psnr_agrees_with_scikit_image_and_torchmetrics(pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = pair
    ours = psnr(a, b)
    assert ours == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-9)
    assert ours == pytest.approx(float(tmf.peak_signal_noise_ratio(_t(b), _t(a), data_range=1.0)), abs=1e-3)
    assert 20 < ours < 40


def test_ssim_agrees_across_libraries(pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = pair
    ours = ssim(a, b)
    tm = float(tmf.structural_similarity_index_measure(_t(b), _t(a), data_range=1.0))
    pq = float(piq.ssim(_t(b), _t(a), data_range=1.0, downsample=False))
    assert ours == pytest.approx(tm, abs=0.005) and ours == pytest.approx(pq, abs=0.005)


def test_ms_ssim_agrees_across_libraries(pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = pair
    x, y = _t(a[:512, :512]), _t(b[:512, :512])
    assert float(piq.multi_scale_ssim(y, x, data_range=1.0)) == pytest.approx(
        float(tmf.multiscale_structural_similarity_index_measure(y, x, data_range=1.0)), abs=0.01
    )


def test_identical_images_score_as_identical(tile: np.ndarray) -> None:
    mask = tissue_pixels(tile)
    result = evaluate(tile, tile, mask)
    assert result["psnr"] == IDENTICAL_PSNR and result["ssim"] == pytest.approx(1.0)
    assert result["ms_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert result["haarpsi"] == pytest.approx(1.0, abs=1e-5)  # piq gives 1.0000024, not 1
    assert result["gmsd"] == pytest.approx(0.0, abs=1e-7)
    assert result["nuclei_f1"] == 1.0 and result["nuclei_count_ratio"] == 1.0
    assert result["lpips"] is None
    assert set(METRICS) <= set(result)


def test_worse_reconstruction_scores_worse(tile: np.ndarray, pair: tuple[np.ndarray, np.ndarray]) -> None:
    mask = tissue_pixels(tile)
    _, good = pair
    bad = ndimage.uniform_filter(good, size=(7, 7, 1))
    g, b = evaluate(tile, good, mask), evaluate(tile, bad, mask)
    for name in ("psnr", "ssim", "ms_ssim", "haarpsi", "nuclei_f1"):
        assert g[name] > b[name], name
    assert g["gmsd"] < b["gmsd"]


def test_metrics_ignore_background(tile: np.ndarray) -> None:
    mask = np.zeros(tile.shape[:2], bool)
    mask[:500] = True
    changed = tile.copy()
    changed[600:] = 255 - changed[600:]
    assert psnr(tile, changed, mask) == IDENTICAL_PSNR
    assert psnr(tile, changed) < 20


def test_nuclei_found_on_real_tissue(tile: np.ndarray) -> None:
    mask = tissue_pixels(tile)
    blurred = ndimage.uniform_filter(tile, size=(9, 9, 1))
    result = nuclei_agreement(tile, blurred, mask, mpp=0.25)
    assert 0 < result["nuclei_f1"] < 1


def test_lpips_needs_user_weights(tmp_path: Path, tile: np.ndarray) -> None:
    import torchvision

    with pytest.raises(InputError, match="AlexNet"):
        Lpips(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not weights")
    with pytest.raises(InputError):
        Lpips(tmp_path / "junk.pth")
    # the loading path with a structurally valid AlexNet state dict (random, not ImageNet)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), tmp_path / "alexnet.pth")
    lpips = Lpips(tmp_path / "alexnet.pth")
    x = _t(tile[:256, :256])
    assert float(lpips(x, x).max()) == pytest.approx(0.0, abs=1e-6)
    assert float(lpips(x, 1 - x).min()) > 0
