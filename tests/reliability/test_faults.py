"""Faults on real data (benchmarks/reliability/faults.py): ``kill -9`` during ingest,
restore and ``train run`` then ``--resume`` gives the uninterrupted result, and a full
disk or a read-only destination fails in one line with the output recognisably partial.
The default run kills each operation once or twice; the full campaign (24 kills each) is
marked slow."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks.reliability import faults
from wsistore.archive.partial import PartialOutput
from wsistore.archive.writer import INGEST_OUTPUT

#: A smaller restore region for the default run (the campaign's is 2220 x 1280).
SMALL_REGION = "0,0,1024,768"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


def _ops(work: Path, small: bool) -> dict[str, faults.Operation]:
    """The operations, the restore on a small region or the campaign's; each kind has its own
    ``work`` folder (see :func:`_work`), so their references never mix."""
    ops = {op.name: op for op in faults.operations(work)}
    if small:
        ops["restore"] = faults.restore_op(faults.reference_archive(work / "source.zarr"), SMALL_REGION)
    return ops


def _work(work: Path, small: bool) -> Path:
    folder = work / ("small" if small else "campaign")
    folder.mkdir(exist_ok=True)
    return folder


def _assert_clean(result: dict[str, object]) -> None:
    assert result["mismatches"] == [], json.dumps(result, indent=1)
    assert result["resumed_identical"] == result["verify_ok"] == result["kills"]


@pytest.mark.parametrize(("name", "kills"), [("ingest", 2), ("restore", 1), ("train", 1)])
def test_kill_then_resume_gives_the_uninterrupted_result(work: Path, name: str, kills: int) -> None:
    work = _work(work, True)
    op = _ops(work, small=True)[name]
    result = faults.kill_campaign(op, work, seed=1, kills=kills)
    _assert_clean(result)


@pytest.mark.campaign
@pytest.mark.parametrize("name", faults.OPERATIONS)
def test_kill_campaign_24_per_operation(work: Path, name: str) -> None:
    work = _work(work, False)
    op = _ops(work, small=False)[name]
    result = faults.kill_campaign(op, work, seed=0, kills=24)
    print(f"\n{name}: {json.dumps({k: v for k, v in result.items() if k != 'delays_s'})}")
    _assert_clean(result)
    assert result["kills"] == 24


@pytest.mark.parametrize("name", ["ingest", "train"])
def test_injected_enospc_fails_in_one_line_and_leaves_a_partial(work: Path, name: str) -> None:
    work = _work(work, True)
    op = _ops(work, small=True)[name]
    result = faults.enospc_case(op, work, faults.ENOSPC_INJECTED[name], mount=False)
    assert result["ok"] and result["output"] == "partial", result
    assert "space" in str(result["error"]).lower()


@pytest.mark.skipif(not faults._can_mount(), reason="needs root with a mountable tmpfs")
@pytest.mark.parametrize("name", ["ingest", "restore"])
def test_a_full_disk_fails_in_one_line_and_resumes_once_freed(work: Path, name: str) -> None:
    work = _work(work, True)
    op = _ops(work, small=True)[name]
    reference = work / f"{name}-reference"
    if not reference.exists():
        faults._timed(op, reference)
    # the small region's TIFF is 58 kB, spooled first and then assembled: 80 kB runs out
    budget = {"ingest": faults.ENOSPC_BUDGET["ingest"], "restore": 80_000}[name]
    result = faults.enospc_case(op, work, budget, mount=True)
    assert result["ok"] and result["output"] == "partial", result
    assert "no space left on device" in str(result["error"]).lower()
    assert result["resumed"] == "identical", result


@pytest.mark.parametrize("name", faults.OPERATIONS)
def test_a_read_only_destination_fails_in_one_line(work: Path, name: str) -> None:
    work = _work(work, True)
    op = _ops(work, small=True)[name]
    if os.geteuid() == 0 and not faults._can_mount():
        pytest.skip("root ignores chmod and no tmpfs can be mounted read-only")
    result = faults.readonly_case(op, work, faults._can_mount())
    assert result["ok"], result


def test_torn_temporary_files_are_removed_on_resume(tmp_path: Path) -> None:
    """What a kill inside a write leaves (a ``.tmp``, zarr's ``.<uuid>.partial``) never lands in the output."""
    out = tmp_path / "out.zarr"
    first = PartialOutput.prepare(out, INGEST_OUTPUT, overwrite=False, resume=False)
    first.start({"a": 1})
    torn = [first.work.path / "0" / "c" / ("0." + "ab" * 16 + ".partial"), first.work.path / "manifest.json.tmp"]
    kept = first.work.path / "0" / "c" / "0"
    for path in [*torn, kept]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    again = PartialOutput.prepare(out, INGEST_OUTPUT, overwrite=False, resume=True)  # takes over the abandoned lock
    again.start({"a": 1})
    assert not any(p.exists() for p in torn) and kept.exists()
    again.commit()
    assert sorted(p.name for p in out.rglob("*")) == ["0", "0", "c"] and not faults.partial_of(out).exists()


def test_a_run_killed_after_its_first_validation_resumes_to_the_same_log(work: Path, tmp_path: Path) -> None:
    """The state saved at a stage's end is followed by the next stage's first validation in
    the log; a resume from that state must not log it twice."""
    from wsistore.training.config import load_config
    from wsistore.training.trainer import Trainer

    patches = faults.prepare_patches(work / "patches")
    sets = [*faults.TRAIN_SETS, "run.checkpoint_every=100", f"data.shards={json.dumps(str(patches))}"]

    def trainer(out: Path) -> Trainer:
        config = load_config(faults.RECIPE, [*sets, f"run.out={json.dumps(str(out))}"], smoke=True)
        return Trainer(config, progress=False)

    trainer(tmp_path / "a").run()
    interrupted = trainer(tmp_path / "b")
    original = interrupted._train_step

    def dies_after_the_autoencoder(phase, optim):  # type: ignore[no-untyped-def]
        if phase.kind != "autoencoder":
            raise KeyboardInterrupt
        return original(phase, optim)

    interrupted._train_step = dies_after_the_autoencoder  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        interrupted.run()
    trainer(tmp_path / "b").run(resume=True)
    assert faults.compare_runs(tmp_path / "b", tmp_path / "a") == []


@pytest.mark.campaign
@pytest.mark.parametrize("stop", [6, 14, 30, 40])
def test_a_run_stopped_anywhere_resumes_to_the_same_state(work: Path, tmp_path: Path, stop: int) -> None:
    """Weights, optimizers and every random state, at the autoencoder's end (6), inside
    the pixel (7-30) and GAN (31-42) stages."""
    from wsistore.training.config import load_config
    from wsistore.training.trainer import Trainer

    patches = faults.prepare_patches(work / "patches")
    sets = [*faults.TRAIN_SETS, f"data.shards={json.dumps(str(patches))}"]

    def trainer(out: Path) -> Trainer:
        config = load_config(faults.RECIPE, [*sets, f"run.out={json.dumps(str(out))}"], smoke=True)
        return Trainer(config, progress=False)

    trainer(tmp_path / "a").run()
    assert not trainer(tmp_path / "b").run(stop_after=stop).finished
    trainer(tmp_path / "b").run(resume=True)
    assert faults.compare_runs(tmp_path / "b", tmp_path / "a") == []
