"""The int8 CPU restore path (opt-in, ``--precision int8``): the compact generator's network
quantised to 8 bits and run by ONNX Runtime, the bicubic skip still added in fp32 by torch.

The network (head, residual blocks, tail conv and pixel shuffle: everything but the skip)
is exported to ONNX with each PReLU written as ``max(x, a x)`` (equal for slopes up to 1;
ONNX Runtime's PRelu broadcasts its per-channel slope slowly and has no quantised kernel),
then statically quantised in QDQ format: per-channel int8 weights, uint8 activations,
convolutions, the slope products and the residual additions quantised (ONNX Runtime fuses
them into QLinearConv / QLinearMul / QLinearAdd; the ``max`` stays fp32 between them).
Activation ranges (min/max) are calibrated once on fixed LR: regions of the embedded
sample slide, downsampled and coded with the default codec exactly as ingest stores them.
The quantised model is cached per (weights sha256, adaptation sha256, onnxruntime) in the
user cache directory (``$WSISTORE_CACHE`` or ``$XDG_CACHE_HOME/wsistore``).

Exactness: integer convolutions accumulate exactly and every fp32 step is elementwise, so
a pixel does not depend on the window size or position and tiles agree with the whole
image bit for bit; calibration is deterministic, so the same weights give the same model.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wsistore.errors import InputError, held_back
from wsistore.models.weights import INTERPOLATIONS, LoadedGenerator

#: ``--precision`` values: ``auto`` is int8 for compact generators on CPUs with VNNI (AVX-512
#: VNNI, AVX-VNNI, AMX-INT8), fp32 elsewhere (and bf16 on CUDA).
PRECISIONS = ("fp32", "int8", "auto")
#: restore, serve and ``wsistore.open``: fp32 for now. int8 meets the quality bar (-0.018 dB
#: PSNR against fp32 on the validation tiles, <= 0.05 dB allowed) but is only 1.06-1.11x
#: faster warm on 2 loaded cores (BENCHMARKS.md, issue 24): not enough to change every
#: default restore's pixels.
DEFAULT_PRECISION = "fp32"
#: Bump when export or calibration changes: cached models of an older recipe are not reused.
RECIPE = 1
#: Calibration: regions of the sample slide (HR px side, count) and the ops quantised.
CALIBRATION_SIDE = 512
CALIBRATION_REGIONS = 6
QUANTISED_OPS = ("Conv", "Mul", "Add")
_LOCK = threading.Lock()


def has_vnni() -> bool:
    """Whether this CPU has int8 dot-product instructions (Linux /proc/cpuinfo flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def int8_problem(generator: LoadedGenerator | None, device: torch.device) -> str | None:
    """Why ``generator`` cannot run in int8 on ``device``, or None when it can."""
    from wsistore.models.compact import CompactNet

    if device.type != "cpu":
        return f"--precision int8 runs on the CPU; this restore runs on {device.type} (use --device cpu)"
    if generator is not None and generator.card.get("architecture", generator.name) in INTERPOLATIONS:
        return "--precision int8 applies to learned generators, not interpolation"
    if generator is not None and not (isinstance(generator.model, CompactNet) and generator.model.bicubic_skip):
        return f"--precision int8 supports the compact generators; {generator.name} is not one"
    if generator is not None and any(
        float(m.weight.detach().max()) > 1.0 for m in generator.model.modules() if isinstance(m, nn.PReLU)
    ):
        return f"{generator.name}: a PReLU slope above 1 cannot run in int8"
    if not onnxruntime_available():
        return "--precision int8 needs onnxruntime: pip install onnxruntime"
    try:
        from wsistore.sample import sample_slide_path

        sample_slide_path()
    except InputError as exc:
        return f"--precision int8 calibrates on the sample slide: {exc}"
    return None


def resolve_precision(precision: str, device: torch.device, generator: LoadedGenerator | None = None) -> str:
    """``fp32`` or ``int8`` for ``precision`` on ``device`` with ``generator``: auto is int8 where
    it can run and the CPU has VNNI; int8 where it cannot is an error."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return precision
    problem = int8_problem(generator, device)
    if precision == "auto":
        return "int8" if problem is None and has_vnni() else "fp32"
    if problem is not None:
        raise InputError(problem)
    return precision


class _MaxPReLU(nn.Module):
    """PReLU as ``max(x, a x)`` (equal for slopes <= 1)."""

    def __init__(self, prelu: nn.PReLU) -> None:
        super().__init__()
        self.slope = nn.Parameter(prelu.weight.detach().clone().view(1, -1, 1, 1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(x, x * self.slope)


class _Residual(nn.Module):
    """The compact generator without its bicubic skip: ``(N, 3, h, w) -> (N, 3, s h, s w)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        m: Any = self.model
        x = m.head(m.centred(lr))
        return m.tail(m.body(x) + x)


def residual_network(generator: LoadedGenerator) -> nn.Module:
    """The exportable residual network of a compact generator (PReLUs as max)."""
    import copy

    problem = int8_problem(generator, torch.device("cpu"))
    if problem is not None:
        raise InputError(problem)
    model = copy.deepcopy(generator.model).cpu().float().eval()
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.PReLU):
                setattr(parent, name, _MaxPReLU(child))
    return _Residual(model).eval()


def export_onnx(network: nn.Module) -> bytes:
    """The network as ONNX (opset 17), height and width dynamic."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (torch.rand(1, 3, 32, 32),),
            buf,  # type: ignore[arg-type]  # torch accepts file objects
            dynamo=False,
            input_names=["lr"],
            output_names=["residual"],
            dynamic_axes={"lr": {2: "h", 3: "w"}, "residual": {2: "H", 3: "W"}},
            opset_version=17,
        )
    return buf.getvalue()


def calibration_lr() -> list[np.ndarray]:
    """Fixed calibration LR, ``(1, 3, h, w)`` fp32 in [0, 1]: regions of the sample slide as the
    default archive stores them (downsampled, then AVIF-coded on the chunk grid)."""
    from wsistore.codecs import make_codec
    from wsistore.degradation import degrade
    from wsistore.readers import open_input
    from wsistore.sample import sample_slide_path

    side, codec = CALIBRATION_SIDE, make_codec()
    out = []
    with open_input(sample_slide_path()) as slide:
        width, height = slide.dimensions
        for i in range(CALIBRATION_REGIONS):
            x = (width - side) * (i % 3) // 2
            y = (height - side) * (i // 3) // max(1, (CALIBRATION_REGIONS - 1) // 3)
            hr = np.ascontiguousarray(slide.read_region((x, y), 0, (side, side))[..., :3])
            lr = degrade(hr, codec)
            out.append(np.ascontiguousarray(lr.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0))
    return out


def quantise(onnx_model: bytes, calibration: list[np.ndarray]) -> bytes:
    """Static QDQ quantisation: per-channel int8 weights, uint8 activations (min/max ranges)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items: Iterator[np.ndarray] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {"lr": item}

    with tempfile.TemporaryDirectory(prefix="wsistore-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(onnx_model)
        with held_back(("",)):  # the root logger's "consider pre-processing": not for this graph
            quantize_static(
                str(src),
                str(dst),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(QUANTISED_OPS),
            )
        return dst.read_bytes()


def cache_dir() -> Path:
    root = os.environ.get("WSISTORE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "wsistore"
    )
    return Path(root) / "int8"


def cache_key(generator: LoadedGenerator) -> str:
    import onnxruntime

    if generator.weights_sha256 is None:  # a model in memory: key on its parameters
        digest = hashlib.sha256()
        for name, value in sorted(generator.model.state_dict().items()):
            digest.update(name.encode() + value.detach().float().cpu().numpy().tobytes())
        weights = digest.hexdigest()
    else:
        weights = generator.weights_sha256
    parts = f"{weights}-{generator.adaptation_sha256 or 'none'}-ort{onnxruntime.__version__}-r{RECIPE}"
    return hashlib.sha256(parts.encode()).hexdigest()[:32]


def quantised_model(generator: LoadedGenerator, use_cache: bool = True) -> bytes:
    """The quantised ONNX model of ``generator``: from the cache, or built (and cached)."""
    path = cache_dir() / f"{cache_key(generator)}.onnx"
    with _LOCK:
        if use_cache and path.is_file():
            return path.read_bytes()
        model = quantise(export_onnx(residual_network(generator)), calibration_lr())
        if use_cache:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as f:
                    f.write(model)
                os.replace(f.name, path)
            except OSError:
                pass  # an unwritable cache only costs the next start the calibration
        return model


class Int8Network:
    """An ONNX Runtime session of the quantised residual network, on the CPU threads torch uses."""

    def __init__(self, generator: LoadedGenerator) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(quantised_model(generator), options, providers=["CPUExecutionProvider"])
        self.runtime = f"onnxruntime {ort.__version__}"

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        out: Any = self.session.run(None, {"lr": lr})[0]
        return np.asarray(out)
