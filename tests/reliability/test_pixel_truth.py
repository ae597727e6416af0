"""Pixel truth campaign (:mod:`benchmarks.reliability.pixel_truth`): every archived file holds
the image its truth says, scored against an independent decode, and every file that cannot be
archived faithfully is refused in one line."""

from __future__ import annotations

import pytest

from benchmarks.reliability.pixel_truth import WRONG_BELOW_DB, Outcome, campaign


def _wrong(outcomes: list[Outcome]) -> list[str]:
    return [f"{o.name}: {o.psnr_db} dB, {o.message}" for o in outcomes if o.verdict == "wrong"]


def test_quick_campaign() -> None:
    """The files built with a known truth, the shared DICOM (its frames laid column by column
    by hand) and the refusals (the VSI, the multichannel QPTIFF, a CZI)."""
    totals, outcomes = campaign(quick=True)
    assert totals["wrong"] == 0, _wrong(outcomes)
    assert totals["archived_correctly"] == 6 and totals["refused"] == 3
    assert totals["worst_psnr_db"] > WRONG_BELOW_DB
    dicoms = [o for o in outcomes if o.name.startswith("dicom") or o.name.endswith(".dcm")]
    assert all(o.decoders == ["dicom", "pydicom"] for o in dicoms)


@pytest.mark.campaign
def test_full_campaign() -> None:
    """Every slide file in ../shared/data and the embedded sample too."""
    totals, outcomes = campaign()
    assert totals["wrong"] == 0, _wrong(outcomes)
    assert totals["archived_correctly"] >= 12 and totals["refused"] == 3
