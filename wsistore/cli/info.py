"""``wsistore info ARCHIVE``: sizes, compression, dimensions, mpp, tissue and codec."""

from __future__ import annotations

import argparse
import re
from typing import Any

from wsistore.cli import _options


def add_parser(sub: Any) -> None:
    """Register ``info``."""
    p = sub.add_parser("info", help="describe an archive", description=run.__doc__)
    p.add_argument("archive")
    _options.add_storage_options(p)
    _options.add_json(p)
    p.add_argument(
        "--loss-map", metavar="PNG", help="also draw the slide with its loss map over it (a heat map) to this PNG"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Sizes, compression, dimensions, mpp, tissue and codec of an archive."""
    from wsistore.archive.reader import Archive

    archive = Archive.open(args.archive, storage_options=args.storage_options)
    info = archive.info()
    if args.loss_map:
        from wsistore.errors import InputError
        from wsistore.reports.loss_map import loss_figure

        if info.get("loss_map") is None:
            raise InputError(f"{args.archive} has no loss map (archive format before 1.2): nothing to draw")
        loss_figure(archive, args.loss_map)
    _options.show(info, args.json, describe)
    return 0


def describe(info: dict[str, Any]) -> str:
    """``Archive.info()`` as aligned ``key: value`` lines."""
    size = _options.size
    codec = info["codec"]
    mpp = info["mpp"]
    width, height = info["dimensions"]
    lr_width, lr_height = info["lr_dimensions"]
    stripped = f" (stripped: {', '.join(info['stripped_images'])})" if info["stripped_images"] else ""
    lines = [
        ("archive", f"{info['archive']} (format {info['format_version']}, complete)"),
        ("source", f"{info['source']} ({size(info['source_bytes'])}, {info['vendor'] or 'unknown vendor'})"),
        (
            "dimensions",
            f"{width} x {height} source px; LR {lr_width} x {lr_height} (scale {info['scale']}), "
            f"{len(info['levels'])} levels",
        ),
        ("mpp", f"{mpp[0]:.4g} x {mpp[1]:.4g} um/px ({info['mpp_source']})" if mpp else "unknown (not in the source)"),
        (
            "image pyramid",
            f"{size(info['pyramid_bytes'])}: {info['pyramid_bits_per_source_pixel']:.3f} bits per source pixel, "
            f"ratio {info['pyramid_ratio']:.2f}x vs {info['pyramid_ratio_against']} "
            f"({size(info['source_image_bytes'])})"
            + (
                f"; with the full-resolution chunks {size(info['image_bytes'])}: "
                f"{info['image_bits_per_source_pixel']:.3f} bits per source pixel, ratio {info['image_ratio']:.2f}x"
                if info.get("hr_bytes")
                else ""
            ),
        ),
        ("associated", _associated(info, stripped)),
        (
            "archive bytes",
            f"{size(info['archive_bytes'])} in all ({info['bits_per_source_pixel']:.3f} bits per source pixel), "
            f"ratio {info['compression_ratio']:.2f}x vs the whole source file",
        ),
        (
            "tissue",
            f"{info['tissue_fraction']:.1%} of the slide; {info['background_dropped']:.1%} of chunks dropped as "
            f"background ({info['chunks_written']}/{info['chunks_total']} stored)",
        ),
        ("codec", _codec_text(codec)),
        ("mode", _mode(info)),
        ("restorers", _restorers(info.get("restorers"))),
        ("archive loss", _loss(info.get("loss_map"), info.get("mode") == "hybrid")),
        ("adaptation", _options.adaptation_text(info.get("adaptation"))),
        ("created", info["created"]),
    ]
    return "\n".join(f"{key:>14}: {value}" for key, value in lines)


def _mode(info: dict[str, Any]) -> str:
    """``sr``, or a hybrid archive's chunks and bytes per mode, its HR codec and lambda."""
    modes, hybrid = info["chunk_modes"], info.get("hybrid")
    if info["mode"] != "hybrid" or hybrid is None:
        return f"sr (all {modes['sr']['chunks']} tissue chunks restored from the LR)"
    sr, hr = modes["sr"], modes["hr"]
    size = _options.size
    kept = f" + {size(hr['lr_bytes'])} LR kept" if hr["lr_bytes"] else ""  # format 1.5 kept the LR chunks
    target = f" (found for {hybrid['target_bpp']:g} bpp)" if hybrid.get("target_bpp") else ""
    if hybrid.get("lambda_from") == "the LR's slope":  # format 1.8: no --lambda, no target
        target = " (the LR's slope)"
    used = hybrid.get("options")  # format 1.8: the chunks per option
    settings = _settings_used(used) if used else _codec_text(hybrid["hr_codec"])
    probe = hybrid.get("probe")  # format 1.8 with probes: the settings weighed by a fast coding first
    probed = f"; {hybrid['hr_codings']} HR codings after probes at speed {probe['speed']}" if probe else ""
    return (
        f"hybrid: {sr['chunks']} chunks SR ({sr['share']:.1%}, {size(sr['bytes'])} LR), {hr['chunks']} full "
        f"resolution ({hr['share']:.1%}, {size(hr['bytes'])} HR{kept}); HR {settings or 'none'}; "
        f"lambda {hybrid['lambda']:g}{target}{probed}"
    )


def _codec_text(codec: dict[str, Any]) -> str:
    settings = ", ".join(f"{k}={v}" for k, v in codec.get("configuration", {}).items())
    return f"{codec['name']} ({settings})"


def _restorers(record: dict[str, Any] | None) -> str:
    """Chunks per restorer (format 1.7) and how they were chosen."""
    if record is None:
        return "the generator everywhere (no choice recorded: format before 1.7, or ingest not asked to measure)"
    chunks, gains = record["chunks"], record.get("gain_db")
    measured = (
        f"; generator over bicubic {gains['min']:+.2f} to {gains['max']:+.2f} dB (median {gains['median']:+.2f}) "
        f"on {record['measured']} chunks measured"
        if gains
        else ""
    )
    return (
        f"{chunks['generator']} chunks by the generator, {chunks['bicubic']} by bicubic ({record['method']}{measured})"
    )


def _associated(info: dict[str, Any], stripped: str) -> str:
    names = ", ".join(info["associated_images"]) or "none"
    text = f"{names}: {_options.size(info['associated_bytes'])}"
    if info.get("source_associated_bytes") is not None:
        text += f" (the source spends {_options.size(info['source_associated_bytes'])} on them)"
    return text + stripped


def _loss(loss: dict[str, Any] | None, hybrid: bool = False) -> str:
    if loss is None:
        return "no loss map (format before 1.2)"
    if not loss["chunks"]:
        return "no tissue chunks"
    row, col = loss["worst_chunk"]
    return (
        "RMS of source minus bicubic of the archive"
        + (" (minus the HR chunk where stored at full resolution)" if hybrid else "")
        + f" over {loss['chunks']} tissue chunks: median "
        f"{loss['median_rms']:.2f}, 95th percentile {loss['p95_rms']:.2f}, worst {loss['max_rms']:.2f} grey levels "
        f"(chunk row {row} col {col})"
    )


def _settings_used(used: dict[str, int]) -> str:
    """The chunks per HR setting: ``avif level 4: 1, 38: 5 chunks (speed=6, ...)`` where the
    settings differ in their first parameter only (one codec's quality ladder), else each in
    full."""
    counts = {path: n for path, n in used.items() if path != "sr" and n}
    parts = [re.fullmatch(r"(\w+)\((\w+)=([^,)]*)(.*)\)", path) for path in counts]
    heads = {(m.group(1), m.group(2), m.group(4)) for m in parts if m}
    if len(heads) != 1 or not all(parts):
        return ", ".join(f"{n} at {path}" for path, n in counts.items())
    ((codec, key, rest),) = heads
    levels = ", ".join(f"{m.group(3)}: {n}" for m, n in zip(parts, counts.values()) if m)
    rest = rest.strip(", ")
    return f"{codec} {key} {levels} chunks" + (f" ({rest})" if rest else "")
