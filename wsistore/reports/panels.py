"""The crop panels of a bench report: where to cut (the window with the most signal) and how
to show it (one display stretch for every panel of a crop).

Signal is fine structure: the standard deviation of grey values per :data:`BLOCK`-pixel
block, about zero on black padding, blank frames and empty glass (small blocks, so a step
edge, such as tissue against a blank frame, raises only the few blocks on it). On a bright-field
image only stained blocks count (redder than green: haematoxylin, eosin and DAB absorb green
most; marker ink, glass and black do not). A dark-background (fluorescence) image counts every
block, so its crop lands where the bright signal is, and its panels are stretched for display
by one pair of percentiles of the original crop, applied alike to every panel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Side of a panel crop, in pixels.
CROP = 160
#: Side of the blocks whose structure is measured (crop corners lie on this grid).
BLOCK = 4
#: An image whose median pixel (its brightest channel; blank pixels left out) is darker than
#: this has a dark background (fluorescence).
DARK_BACKGROUND = 64
#: Pixels no brighter than this in any channel are blank (padding, missing frames): neither
#: glass nor a fluorescence background, whose pixels carry some light.
BLANK = 2
#: A bright-field block is stained when its mean red exceeds its mean green by this much.
STAINED_BY = 8.0
#: The original's percentiles mapped to black and white on a dark-background panel.
STRETCH_PERCENTILES = (1.0, 99.5)


def dark_background(image: np.ndarray) -> bool:
    """Whether ``image`` (RGB uint8) shows bright signal on a dark background (fluorescence)."""
    brightest = image.max(axis=2)
    lit = brightest[brightest > BLANK]
    return lit.size > 0 and float(np.median(lit)) < DARK_BACKGROUND


def _block_signal(image: np.ndarray) -> np.ndarray:
    """Per whole :data:`BLOCK` x :data:`BLOCK` block of ``image``, its signal (see the module
    docstring); a bright-field image with no stained block counts every block."""
    h, w = image.shape[0] // BLOCK * BLOCK, image.shape[1] // BLOCK * BLOCK
    blocks = image[:h, :w].astype(np.float32).reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK, 3)
    signal = blocks.mean(axis=4).std(axis=(1, 3))
    if not dark_background(image):
        means = blocks.mean(axis=(1, 3))
        stained = means[..., 0] - means[..., 1] >= STAINED_BY
        if stained.any():
            signal *= stained
    return signal


def choose_crop(image: np.ndarray, side: int = CROP) -> tuple[int, int]:
    """The ``(y, x)`` corner (on the :data:`BLOCK` grid) of the ``side``-pixel square of
    ``image`` with the most signal; ``(0, 0)`` where the image is smaller."""
    signal = _block_signal(image)
    n = side // BLOCK
    if signal.shape[0] < n or signal.shape[1] < n:
        return 0, 0
    sums = np.pad(signal.cumsum(axis=0).cumsum(axis=1), ((1, 0), (1, 0)))
    windows = sums[n:, n:] - sums[:-n, n:] - sums[n:, :-n] + sums[:-n, :-n]
    y, x = np.unravel_index(int(np.argmax(windows)), windows.shape)
    return int(y) * BLOCK, int(x) * BLOCK


def cut(image: np.ndarray, corner: tuple[int, int], side: int = CROP) -> np.ndarray:
    """A copy of the ``side``-pixel square of ``image`` at ``corner`` (y, x)."""
    y, x = corner
    return image[y : y + side, x : x + side].copy()


@dataclass(frozen=True)
class Stretch:
    """A linear display stretch: ``low`` shows black, ``high`` white, in every channel."""

    low: float
    high: float

    def apply(self, image: np.ndarray) -> np.ndarray:
        """``image`` stretched, as uint8."""
        scaled = (image.astype(np.float32) - self.low) * (255.0 / (self.high - self.low))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)

    def describe(self) -> str:
        """The stretch in words, for a panel's title."""
        lo, hi = STRETCH_PERCENTILES
        return (
            f"display: {self.low:.0f}-{self.high:.0f} stretched to 0-255 in every panel "
            f"(percentiles {lo:g} and {hi:g} of the original)"
        )


def display_stretch(image: np.ndarray, original: np.ndarray) -> Stretch | None:
    """The stretch for the panels of ``original``, a crop of ``image``: for a dark-background
    ``image``, the percentiles of the crop's brightest channel; bright-field (and a flat crop)
    None, shown as is."""
    if not dark_background(image):
        return None
    low, high = np.percentile(original.max(axis=2), STRETCH_PERCENTILES)
    return Stretch(float(low), float(high)) if high - low >= 1 else None


def save_panel(crops: dict[str, np.ndarray], path: Path, title: str, stretch: Stretch | None = None) -> Path:
    """One row of labelled crops as a PNG, every one shown with ``stretch`` (said in the title)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if stretch is not None:
        title = f"{title}\n{stretch.describe()}"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(crops), figsize=(2.2 * len(crops), 2.8), dpi=110)
    for ax, (label, image) in zip(np.atleast_1d(axes), crops.items()):
        ax.imshow(image if stretch is None else stretch.apply(image), interpolation="nearest")
        ax.set_title(label, fontsize=7)
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
