"""Ship a trained checkpoint inside the package: ``wsistore/weights/NAME.safetensors``
(fp16, with its model card), ``NAME.md`` (the card for people) and its ``registry.json``
entry (file, sha256, the archive LR setting it was trained on, and whether restore uses it by
default: for every archive, or with ``--default-for-lr`` for archives of its LR setting).

    python pipelines/ship.py CHECKPOINT NAME --run RUN_DIR [--default] [--default-for-lr]
        [--summary TEXT] [--report benchmarks/reports/validation/results.json]

The card gains what the checkpoint alone cannot say: how the patches were prepared
(positions, dihedral transforms, grid phases), training wall and CPU minutes and steps per
second (from the checkpoints' times and the run's threads), and, with ``--report``, the
validation report's tissue-only metrics of this model next to bicubic.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wsistore.models.weights import load_generator, lr_setting, read_card, save_generator  # noqa: E402
from wsistore.restoration.int8 import CALIBRATION_FILE, CALIBRATION_SHA256  # noqa: E402
from wsistore.training.shards import read_manifest  # noqa: E402

WEIGHTS = ROOT / "wsistore" / "weights"
REGISTRY = WEIGHTS / "registry.json"


#: Where the shipped runs trained, unless ``--note`` says otherwise.
CPU_NOTE = "the run shared the 2-core machine with one other single-thread training run"


def stage_timing(run: Path, card: dict[str, Any], threads: int, note: str = CPU_NOTE) -> dict[str, Any]:
    """Wall minutes from the run's start (its config.json) to this checkpoint, by the files'
    modification times, and what that means per step (``threads`` CPU threads, or on CUDA
    the one GPU)."""
    checkpoint_time = max(
        p.stat().st_mtime for p in (run / "checkpoints").glob(f"{card['stage']}-step{card['step']:07d}.safetensors")
    )
    start = (run / "config.json").stat().st_mtime
    minutes = (checkpoint_time - start) / 60
    return {
        "wall_minutes": round(minutes, 1),
        "threads": threads,
        "cpu_minutes": round(minutes * threads, 1),
        "steps": card["step"],
        "steps_per_second": round(card["step"] / (minutes * 60), 3),
        "note": f"wall time from the run's start to this checkpoint, validation included; {note}",
    }


#: The card's line on the int8 path (compact generators only).
INT8_CALIBRATION = (
    f"- int8 (`--precision int8`, `auto` on CPUs with VNNI): activation ranges calibrated on `{CALIBRATION_FILE}` "
    f"(sha256 `{CALIBRATION_SHA256[:12]}...`; its card `int8-calibration.md`), once per weights and adaptation"
)

METRICS = ("psnr", "ssim", "ms_ssim", "haarpsi", "gmsd", "lpips", "nuclei_f1")


def report_metrics(report: Path, name: str) -> dict[str, Any]:
    """Means over a validation report's held-out tiles (tissue only, LR as archived at the
    report's default setting) for this model, bicubic and nearest (i-HR)."""
    results = json.loads(report.read_text())
    tiles = {i["name"] for i in results["inputs"] if i["kind"] == "tile"}
    setting = results["default_setting"]
    table: dict[str, dict[str, float | None]] = {}
    for upscaler in (name, "bicubic", "nearest"):
        rows = [
            r
            for r in results["records"]
            if r["family"] == "archive"
            and r["setting"] == setting
            and r["upscaler"] == upscaler
            and r["input"] in tiles
        ]
        if not rows:
            continue
        table[upscaler] = {
            k: (
                sum(r["metrics"][k] for r in rows) / len(rows)
                if all(r["metrics"].get(k) is not None for r in rows)
                else None
            )
            for k in METRICS
        } | {"bpp": sum(r["bpp"] for r in rows) / len(rows), "tiles": len(rows)}
    scored = next((m.get("weights_sha256") for m in results.get("models", []) if m.get("name") == name), None)
    return {
        "report": str(report.resolve().relative_to(ROOT)),
        "setting": setting,
        "tiles": sorted(tiles),
        "means": table,
        "scored_sha256": scored,
    }


def ship(
    checkpoint: Path,
    name: str,
    run: Path,
    default: bool,
    summary: str,
    threads: int,
    report: Path | None,
    note: str = CPU_NOTE,
    default_for_lr: bool = False,
) -> dict[str, Any]:
    card = read_card(checkpoint)
    manifest = read_manifest(card["data"]["shards"])
    card["shipped_as"] = name
    card["summary"] = summary
    card["preparation"] = {
        k: manifest.get(k)
        for k in ("patch", "patches_per_file", "positions", "dihedral", "phases", "variants", "min_tissue", "seed")
    }
    card["timing"] = stage_timing(run, card, threads, note)
    if report is not None:
        card["validation_report"] = report_metrics(report, name)
    model = load_generator(str(checkpoint)).model
    path = WEIGHTS / f"{name}.safetensors"
    digest = save_generator(path, model, card, half=True)
    registry = json.loads(REGISTRY.read_text()) if REGISTRY.is_file() else {}
    lr = lr_setting(card.get("codec"))
    for entry in registry.values():
        if default:
            entry.pop("default", None)
        if default_for_lr and entry.get("lr") == lr:
            entry.pop("default_for_lr", None)
    registry[name] = {
        "file": path.name,
        "sha256": digest,
        "architecture": card["architecture"],
        "config": card["config"],
        "lr": lr,
        "summary": summary,
        **({"default": True} if default else {}),
        **({"default_for_lr": True} if default_for_lr else {}),
    }
    REGISTRY.write_text(json.dumps(dict(sorted(registry.items())), indent=1) + "\n")
    (WEIGHTS / f"{name}.md").write_text(model_card_markdown(name, card, digest))
    return registry[name]


def model_card_markdown(name: str, card: dict[str, Any], digest: str) -> str:
    """The card for people: what it is, the data and its licences, how it was trained, how well it does."""
    t, data, prep = card["timing"], card["data"], card["preparation"]
    train_files = [f for f in data["files"] if f["split"] == "train"]
    val_files = [f["name"] for f in data["files"] if f["split"] == "val"]
    lines = [
        f"# {name}",
        "",
        card["summary"],
        "",
        f"- file: `{name}.safetensors` (fp16), sha256 `{digest}`",
        f"- architecture: `{card['architecture']}` {json.dumps(card['config'])}; {card['parameters']:,} parameters; "
        f"receptive field {card['receptive_field']} LR px; scale {card['scale']}",
        *([INT8_CALIBRATION] if card["architecture"] == "compact" else []),
        f"- recipe: `{card['config_file']}`, stage `{card['stage']}` ({card['stage_kind']}), "
        f"global step {card['step']} "
        f"(steps per stage: {json.dumps(card['steps_done'])})",
        f"- content loss: {card['content_loss'] or 'none (pixel losses only)'}",
        f"- training: {t['wall_minutes']} wall minutes, "
        + (
            f"{t['wall_minutes']} GPU minutes, "
            if card["device"].startswith("cuda")
            else f"{t['threads']} thread(s): {t['cpu_minutes']} CPU minutes, "
        )
        + f"{t['steps_per_second']} steps/s ({t['note']}); device {card['device']}, {card['precision']}",
        "",
        "## Data",
        "",
        f"- {data['counts']['train']} training patches from {len(train_files)} files, "
        f"{data['counts']['val']} validation "
        f"patches from {len(val_files)} held-out files ({', '.join(val_files)})",
        f"- LR exactly as the archive stores it: {card['codec_label']}, coded chunk by chunk on the {card['chunk']}-px "
        f"chunk grid (edge chunks padded with the fill value), downsample {card['downsample']['kernel']} "
        f"(format {card['downsample']['version']})",
        f"- patches: LR {prep['patch']} px, {prep['positions']} positions, dihedral transforms before degradation: "
        f"{prep['dihedral']}, chunk-grid phases: {prep['phases']}, up to {prep['patches_per_file']} per file",
        "- licences of the training data (the weights are derived from it):",
        *(f"  - {licence}" for licence in data["licences"]),
        *(
            [
                "- because part of the data is CC BY-NC-SA 4.0, use these weights non-commercially and share derived "
                "weights under the same terms, with attribution "
                "(Kumar et al. IEEE TMI 2017; Verma et al. IEEE TMI 2021)"
            ]
            if any("BY-NC-SA" in licence for licence in data["licences"])
            else []
        ),
        "",
        "## Validation (during training: held-out patches, 8-bit output, whole patches)",
        "",
        "| | PSNR dB | SSIM |",
        "|---|---|---|",
        f"| this model | {card['metrics']['val_psnr']:.2f} | {card['metrics']['val_ssim']:.4f} |",
        f"| bicubic from the same LR | {card['baseline_bicubic']['val_psnr']:.2f} | "
        f"{card['baseline_bicubic']['val_ssim']:.4f} |",
    ]
    report = card.get("validation_report")
    if report:
        lines += [
            "",
            f"## Validation report (`{report['report']}`): {len(report['tiles'])} held-out tiles, tissue only, "
            f"LR as archived at `{report['setting']}`",
            "",
        ]
        if report.get("scored_sha256") and report["scored_sha256"] != digest:
            lines += [
                "The report scored the same tensors shipped before this card was added "
                f"(sha256 `{report['scored_sha256']}`).",
                "",
            ]
        lines += ["| upscaler | bits/px | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
        for upscaler, m in report["means"].items():
            cells = " | ".join("n/a" if m[k] is None else f"{m[k]:.4g}" for k in METRICS)
            lines.append(f"| {upscaler} | {m['bpp']:.3f} | {cells} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("name")
    parser.add_argument("--run", type=Path, required=True, help="the run folder the checkpoint comes from")
    parser.add_argument(
        "--default", action="store_true", help="restore and wsistore.open use this model when none is named"
    )
    parser.add_argument(
        "--default-for-lr",
        action="store_true",
        help="restore uses this model for archives stored at the LR setting it was trained on (unless the default was)",
    )
    parser.add_argument("--summary", default="", help="one sentence: what the model is for")
    parser.add_argument("--threads", type=int, default=1, help="torch threads the run used (default 1)")
    parser.add_argument("--report", type=Path, help="a validation report's results.json to quote")
    parser.add_argument("--note", default=CPU_NOTE, help="where the run trained, beside what (for the card)")
    args = parser.parse_args()
    entry = ship(
        args.checkpoint,
        args.name,
        args.run,
        args.default,
        args.summary,
        args.threads,
        args.report,
        args.note,
        args.default_for_lr,
    )
    print(json.dumps({args.name: entry}, indent=1))


if __name__ == "__main__":
    main()
