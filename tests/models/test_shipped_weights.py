"""The generators shipped in ``wsistore/weights``: every one loads, matches its sha256,
carries a complete model card, beats bicubic on a held-out tile as the archive stores it,
records the archive LR it was trained on, and restore uses the default one when no model is
named (the one trained on an archive's LR where the default was not)."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data import TILES
from wsistore.checksums import sha256_file
from wsistore.codecs import ImageCodec, make_codec
from wsistore.degradation import degrade
from wsistore.errors import InputError
from wsistore.models.weights import default_model, load_generator, lr_setting, read_card, shipped_weights

SHIPPED = shipped_weights()
#: what every shipped card must say (the guide's list: data, steps, CPU minutes, codec,
#: grid, downsample, validation metrics, data licences)
CARD_KEYS = (
    "architecture",
    "config",
    "steps_done",
    "timing",
    "codec",
    "chunk",
    "downsample",
    "metrics",
    "baseline_bicubic",
    "data",
    "preparation",
)
HELD_OUT = "kidney_monuseg_HE-7130.png"  # in pipelines/validation_tiles.txt


def weights_path(name: str) -> Path:
    return Path(str(resources.files("wsistore.weights").joinpath(SHIPPED[name]["file"])))


def test_three_models_ship_and_one_is_the_default() -> None:
    assert len(SHIPPED) >= 3
    defaults = [name for name, entry in SHIPPED.items() if entry.get("default")]
    assert defaults == [default_model()]
    architectures = {entry["architecture"] for entry in SHIPPED.values()}
    assert {"compact", "edsr"} <= architectures


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_model_loads_with_its_sha256_and_card(name: str) -> None:
    path = weights_path(name)
    assert path.stat().st_size < 12 * 2**20
    assert sha256_file(path) == SHIPPED[name]["sha256"]
    card = read_card(path)
    missing = [k for k in CARD_KEYS if k not in card]
    assert not missing, missing
    assert card["data"]["licences"] and any("CC BY-NC-SA" in licence for licence in card["data"]["licences"])
    assert card["timing"]["cpu_minutes"] > 0 and card["metrics"]["val_psnr"] > card["baseline_bicubic"]["val_psnr"]
    assert HELD_OUT in {f["name"] for f in card["data"]["files"] if f["split"] == "val"}
    assert (path.parent / f"{name}.md").is_file()
    loaded = load_generator(name)
    assert (
        loaded.weights_sha256 == SHIPPED[name]["sha256"]
        and loaded.card["architecture"] == SHIPPED[name]["architecture"]
    )


def test_a_damaged_shipped_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry's sha256 is checked on every load: one flipped byte is refused."""
    name = default_model()
    copy = tmp_path / "weights"
    shutil.copytree(weights_path(name).parent, copy)
    data = bytearray((copy / SHIPPED[name]["file"]).read_bytes())
    data[-100] ^= 0xFF
    (copy / SHIPPED[name]["file"]).write_bytes(bytes(data))
    import wsistore.models.weights as weights

    monkeypatch.setattr(weights.resources, "files", lambda package: copy)
    with pytest.raises(InputError, match="fail their checksum"):
        load_generator(name)


def test_the_default_model_beats_bicubic_on_a_held_out_tile() -> None:
    """On a validation tile the models never saw, LR exactly as the default archive stores
    it: the shipped default is clearly better than bicubic (the full comparison is the
    committed validation report)."""
    image = np.asarray(Image.open(TILES / HELD_OUT).convert("RGB"))[:512, :512]
    lr = degrade(image, make_codec())
    x = torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255
    hr = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255

    def psnr(name: str) -> float:
        with torch.inference_mode():
            out = load_generator(name).model(x).clamp(0, 1).mul(255).round() / 255
        return float(-10 * torch.log10(((out - hr) ** 2).mean()))

    assert psnr(default_model()) > psnr("bicubic") + 0.5


def test_every_entry_records_the_lr_its_card_was_trained_on() -> None:
    """The registry's ``lr`` is the card's codec by name and quality knob (speed does not count)."""
    for name, entry in SHIPPED.items():
        assert entry["lr"] == lr_setting(read_card(weights_path(name))["codec"]), name
    assert SHIPPED["compact-l1-gpu"]["lr"] == {"codec": "imagecodecs_avif", "level": 75}
    assert SHIPPED["compact-l1-q60"]["lr"] == {"codec": "imagecodecs_avif", "level": 60}


@pytest.mark.parametrize(
    ("codec", "expected"),
    [
        (None, "compact-l1-gpu"),
        (make_codec("avif", 75), "compact-l1-gpu"),
        (make_codec("avif", 75, speed=6), "compact-l1-gpu"),
        (make_codec("avif", 60), "compact-l1-q60"),
        (make_codec("avif", 60, speed=4), "compact-l1-q60"),
        (make_codec("avif", 60).to_dict(), "compact-l1-q60"),  # as the archive's zarr.json records it
        (make_codec("avif", 50), "compact-l1-gpu"),  # nothing trained there: the default
        (make_codec("jpegxl", 1.0), "compact-l1-gpu"),
        (make_codec("png"), "compact-l1-gpu"),
    ],
)
def test_the_default_model_matches_the_archive_lr(codec: ImageCodec | dict[str, Any] | None, expected: str) -> None:
    assert default_model(codec) == expected


def test_models_lists_each_lr() -> None:
    from wsistore.cli.models import describe
    from wsistore.models.catalog import catalog

    listing = describe(catalog())
    assert "compact-l1-q60" in listing and "trained on LR avif level=60 (default for its LR)" in listing
    assert "trained on LR avif level=75 (default)" in listing
