"""The one rule for PSNR: ``10 log10(peak^2 / MSE)`` dB, and identical images score
:data:`IDENTICAL_PSNR` (a cap, because JSON has no infinity). The manifest's coding PSNR,
the training validation and the reports all use it."""

from __future__ import annotations

import math

#: PSNR of identical images, in dB.
IDENTICAL_PSNR = 100.0


def psnr_from_mse(mse: float, peak: float = 255.0) -> float:
    """PSNR in dB of a mean squared error on a ``peak`` scale, capped at :data:`IDENTICAL_PSNR`."""
    if mse <= 0:
        return IDENTICAL_PSNR
    return min(IDENTICAL_PSNR, 10.0 * math.log10(peak * peak / mse))
