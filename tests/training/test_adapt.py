"""Per-slide adaptation: the subset, its bytes, applying it, and tuning on a real archive
(wsistore.models.adaptation, wsistore.training.adapt)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wsistore.archive.reader import Archive
from wsistore.errors import ArchiveError
from wsistore.models import adaptation
from wsistore.models.weights import default_model, load_generator
from wsistore.readers import open_slide
from wsistore.training.adapt import AdaptationSource, AdaptOptions, tune


def test_the_subset_is_biases_and_prelu_slopes() -> None:
    base = load_generator(default_model())
    params = adaptation.adapted_parameters(base.model)
    assert sum(p.numel() for p in params.values()) == 1008  # the default compact 48 x 6
    assert len(adaptation.encode(base.model)) == 2 * 1008


def test_apply_gives_the_tuned_model_exactly(one_torch_thread: None) -> None:
    base = load_generator(default_model())
    tuned = load_generator(default_model())
    with torch.no_grad():
        for p in adaptation.adapted_parameters(tuned.model).values():
            p.add_(torch.linspace(-0.05, 0.05, p.numel()).view_as(p)).copy_(p.half().float())
    assert base.weights_sha256 is not None
    applied = adaptation.apply(base, adaptation.encode(tuned.model), base.weights_sha256)
    lr = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(applied.model(lr), tuned.model(lr))
        assert not torch.equal(base.model(lr), tuned.model(lr))  # the base itself is untouched
    assert applied.describe()["adaptation_sha256"] == applied.adaptation_sha256
    assert applied.describe()["weights_sha256"] == base.weights_sha256
    with pytest.raises(ArchiveError, match="made for generator weights"):
        adaptation.apply(base, adaptation.encode(tuned.model), "0" * 64)
    with pytest.raises(ArchiveError, match="bytes"):
        adaptation.apply(base, b"\0" * 10, base.weights_sha256)


def test_tuning_on_a_real_archive_is_deterministic(sample_archive: Path, slide_path: Path) -> None:
    options = AdaptOptions(steps=6, pairs=24, batch=4)
    with open_slide(slide_path) as slide:
        source = AdaptationSource.of_archive(Archive.open(sample_archive), slide)
        first = tune(source, options)
        again = tune(source, options)
    assert first.payload == again.payload  # same slide, same settings: the same bytes
    info = first.info
    assert info["steps"] == 6 and info["pairs_held_out"] > 0 and info["pairs_train"] > 0
    assert info["bytes"] == 2016 and info["base_sha256"] == load_generator(default_model()).weights_sha256
    assert info["held_out_psnr_base"] > 20 and isinstance(info["kept"], bool)
