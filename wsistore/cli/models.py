"""``wsistore models``: the registered generators, discriminators, losses and shipped weights."""

from __future__ import annotations

import argparse
from typing import Any

from wsistore.cli import _options


def add_parser(sub: Any) -> None:
    """Register ``models``."""
    p = sub.add_parser(
        "models", help="list generators, discriminators, losses and shipped weights", description=run.__doc__
    )
    _options.add_json(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Every registered generator (with receptive field, parameters and FLOPs per output
    pixel of its default settings), discriminator, loss and adversarial loss, and the
    weights shipped with wsistore with the archive LR setting each was trained on (restore
    uses the default, or the one marked for an archive's LR setting)."""
    from wsistore.models.catalog import catalog

    info = catalog()
    _options.show(info, args.json, describe)
    return 0


def describe(info: dict[str, Any]) -> str:
    """The catalogue as an indented listing."""
    lines = ["generators:"]
    for g in info["generators"]:
        cost = f"RF {g['receptive_field']} LR px"
        if g["parameters"]:
            cost += f", {g['parameters'] / 1e6:.2f} M params, {g['mflops_per_output_pixel']:.3f} MFLOP/px"
        lines.append(f"  {g['name']:<22} {g['summary']} ({cost})")
    for title, key in (
        ("discriminators", "discriminators"),
        ("losses", "losses"),
        ("adversarial losses", "adversarial"),
    ):
        lines.append(f"{title}:")
        lines += [f"  {item['name']:<22} {item['summary']}" for item in info[key]]
    lines.append("shipped weights:")
    for name, entry in info["shipped_weights"].items():
        marked = "default" if entry.get("default") else "default for its LR" if entry.get("default_for_lr") else ""
        lines.append(
            f"  {name:<22} {entry.get('file', '')} sha256 {entry.get('sha256', '')[:12]}, "
            f"trained on LR {lr_label(entry.get('lr'))}{f' ({marked})' if marked else ''}"
        )
    if not info["shipped_weights"]:
        lines.append("  (none: train with 'wsistore train run pipelines/cpu.toml')")
    return "\n".join(lines)


def lr_label(lr: dict[str, Any] | None) -> str:
    """A registry entry's LR setting for people, e.g. ``avif level=75``."""
    if not lr:
        return "not recorded"
    settings = "".join(f" {k}={v}" for k, v in lr.items() if k != "codec")
    return str(lr["codec"]).removeprefix("imagecodecs_") + settings
