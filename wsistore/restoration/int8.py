"""The int8 CPU restore path (``--precision int8``): the compact generator quantised to 8 bits
and run by OpenVINO.

Two OpenVINO models per generator:

- **the network** (head, residual blocks and tail convolution, everything but the pixel shuffle
  and the skip), exported to ONNX and statically quantised in QDQ format by ONNX Runtime's
  quantiser: per-channel int8 weights, uint8 activations, min/max ranges calibrated once on
  fixed LR shipped with the weights (``int8-calibration.png``: regions of the sample slide,
  downsampled and coded with the default codec exactly as ingest stores them). OpenVINO runs
  its convolutions in int8 (AMX or VNNI) and the steps between them (PReLU, the residual
  additions) in bf16 where the CPU has it, fp32 otherwise;
- **the finish**, in fp32: the bicubic skip as a fixed 5 x 5 convolution to the ``s^2`` phases
  (:func:`wsistore.degradation.bicubic_phase_taps`), added to the network's output, then the
  pixel shuffle and the rounding to uint8.

The quantised network is cached per (weights sha256, adaptation sha256, onnxruntime, recipe) in
the user cache directory (``$WSISTORE_CACHE`` or ``$XDG_CACHE_HOME/wsistore``).

Exactness: integer convolutions accumulate exactly and every other step is per pixel, so a
pixel does not depend on the window's size or position and tiles agree with the whole image
bit for bit; calibration is deterministic, so the same weights give the same model. Across
machines the int8 convolutions agree, while the steps between them run in bf16 or fp32 by
the CPU (BENCHMARKS.md gives the difference).
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

from wsistore.errors import InputError, WsistoreError, held_back
from wsistore.models.weights import INTERPOLATIONS, LoadedGenerator

#: ``--precision`` values: ``auto`` is int8 for compact generators on CPUs with VNNI (AVX-512
#: VNNI, AVX-VNNI, AMX-INT8), fp32 elsewhere (and bf16 on CUDA); int8 where it cannot run is an error.
PRECISIONS = ("fp32", "int8", "auto")
#: restore, serve and ``wsistore.open``: int8 where it runs on a CPU with VNNI. It meets the
#: quality bar (-0.018 dB PSNR against fp32 on the validation and the out-of-distribution tiles,
#: <= 0.05 dB allowed) and restores 2.3-2.9x faster end to end on 2 cores (BENCHMARKS.md).
DEFAULT_PRECISION = "auto"
#: Bump when export or calibration changes: cached models of an older recipe are not reused.
RECIPE = 2
#: Calibration LR, package data beside the weights (made by ``pipelines/int8_calibration.py``,
#: described in its card ``int8-calibration.md``): square uint8 RGB regions stacked top to
#: bottom in one lossless PNG, and its sha256.
CALIBRATION_FILE = "int8-calibration.png"
CALIBRATION_SHA256 = "34c7b6899bbff8650bf5be863e5c34145197a610fc603d5e176ceee75eb4936c"
#: The ops quantised.
QUANTISED_OPS = ("Conv",)
#: oneDNN ISA limits without int8 dot products: its AVX2 int8 convolutions multiply pairs into
#: saturating 16-bit sums, which ruins this model (26 dB against the VNNI result), so int8
#: needs VNNI (AVX-512 VNNI and AMX give identical pixels).
NO_VNNI_ISAS = ("SSE41", "AVX", "AVX2", "AVX512_CORE")
_LOCK = threading.Lock()


def has_vnni() -> bool:
    """Whether this CPU has int8 dot-product instructions (Linux /proc/cpuinfo flags), and
    oneDNN is not told to leave them unused (``ONEDNN_MAX_CPU_ISA``)."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in NO_VNNI_ISAS:
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def module_available(name: str) -> bool:
    """Whether ``name`` can be imported."""
    import importlib.util

    return importlib.util.find_spec(name) is not None


def int8_problem(generator: LoadedGenerator | None, device: torch.device) -> str | None:
    """Why ``generator`` cannot run in int8 on ``device``, as a clause ("int8 needs ..."), or
    None when it can."""
    from wsistore.models.compact import CompactNet

    if device.type != "cpu":
        return f"int8 runs on the CPU, not {device.type}: use --device cpu"
    if generator is not None and generator.card.get("architecture", generator.name) in INTERPOLATIONS:
        return "int8 applies to learned generators, not interpolation"
    if generator is not None and not (isinstance(generator.model, CompactNet) and generator.model.bicubic_skip):
        return f"int8 supports only the compact generators, not {generator.name}"
    for module in ("onnxruntime", "openvino"):
        if not module_available(module):
            return f"int8 needs {module}: pip install {module}"
    if not has_vnni():
        return "int8 needs a CPU with AVX-512 VNNI, AVX-VNNI or AMX"
    return None


def resolve_precision(
    precision: str, device: torch.device, generator: LoadedGenerator | None = None
) -> tuple[str, str | None]:
    """``fp32`` or ``int8`` for ``precision`` on ``device`` with ``generator``, and why where
    auto chose fp32 (:func:`int8_problem`; None otherwise): auto is int8 where it can run;
    int8 where it cannot is an error."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return precision, None
    problem = int8_problem(generator, device)
    if precision == "auto":
        return ("int8", None) if problem is None else ("fp32", problem)
    if problem is not None:
        raise InputError(f"--precision {problem}")
    return precision, None


class _Network(nn.Module):
    """The compact generator before its pixel shuffle and skip: ``(N, 3, h, w) -> (N, 3 s^2, h, w)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        m: Any = self.model
        x = m.head(m.centred(lr))
        return m.tail[0](m.body(x) + x)


def finish_model(scale: int) -> Any:
    """The fp32 finish as an OpenVINO model, ``(lr, residual) -> uint8 HR``: the bicubic skip as a
    5 x 5 grouped convolution to the ``scale^2`` phases of each channel, plus the residual, pixel
    shuffle (DepthToSpace, depth first, as torch's), clamp to [0, 1], scale, round half to even."""
    import openvino as ov
    import openvino.opset13 as ops

    from wsistore.degradation import bicubic_phase_taps

    taps = bicubic_phase_taps(scale)
    phases = np.einsum("pi,qj->pqij", taps, taps).reshape(1, scale**2, 1, 5, 5).astype(np.float32)
    lr = ops.parameter([1, 3, -1, -1], np.float32, name="lr")
    residual = ops.parameter([1, 3 * scale**2, -1, -1], np.float32, name="residual")
    skip = ops.group_convolution(lr, ops.constant(np.repeat(phases, 3, axis=0)), [1, 1], [2, 2], [2, 2], [1, 1])
    hr = ops.depth_to_space(ops.add(residual, skip), "depth_first", scale)
    grey = ops.multiply(ops.clamp(hr, 0.0, 1.0), ops.constant(np.float32(255.0)))
    return ov.Model([ops.convert(ops.round(grey, "half_to_even"), "u8")], [lr, residual], "finish")


def network(generator: LoadedGenerator) -> nn.Module:
    """The exportable network of a compact generator (:class:`_Network`)."""
    import copy

    resolve_precision("int8", torch.device("cpu"), generator)  # an error where int8 cannot run
    return _Network(copy.deepcopy(generator.model).cpu().float().eval()).eval()


def export_onnx(module: nn.Module) -> bytes:
    """``module`` as ONNX (opset 17) with input ``lr``, height and width dynamic."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.rand(1, 3, 32, 32),),
            buf,  # type: ignore[arg-type]  # torch accepts file objects
            dynamo=False,
            input_names=["lr"],
            output_names=["out"],
            dynamic_axes={"lr": {2: "h", 3: "w"}, "out": {2: "H", 3: "W"}},
            opset_version=17,
        )
    return buf.getvalue()


def calibration_lr() -> list[np.ndarray]:
    """Fixed calibration LR, ``(1, 3, h, w)`` fp32 in [0, 1]: the regions of the shipped
    ``int8-calibration.png``, its sha256 checked."""
    from importlib import resources

    from PIL import Image

    data = resources.files("wsistore.weights").joinpath(CALIBRATION_FILE).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != CALIBRATION_SHA256:
        raise WsistoreError(
            f"{CALIBRATION_FILE} fails its checksum (sha256 {digest[:12]}..., expected {CALIBRATION_SHA256[:12]}...): "
            "reinstall wsistore"
        )
    lr = np.asarray(Image.open(io.BytesIO(data)))
    regions = np.split(lr, lr.shape[0] // lr.shape[1])
    return [np.ascontiguousarray(r.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0) for r in regions]


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
    from importlib.metadata import version

    if generator.weights_sha256 is None:  # a model in memory: key on its parameters
        digest = hashlib.sha256()
        for name, value in sorted(generator.model.state_dict().items()):
            digest.update(name.encode() + value.detach().float().cpu().numpy().tobytes())
        weights = digest.hexdigest()
    else:
        weights = generator.weights_sha256
    parts = f"{weights}-{generator.adaptation_sha256 or 'none'}-ort{version('onnxruntime')}-r{RECIPE}"
    return hashlib.sha256(parts.encode()).hexdigest()[:32]


def quantised_model(generator: LoadedGenerator, use_cache: bool = True) -> bytes:
    """The quantised ONNX model of ``generator``: from the cache, or built (and cached)."""
    path = cache_dir() / f"{cache_key(generator)}.onnx"
    with _LOCK:
        if use_cache and path.is_file():
            return path.read_bytes()
        model = quantise(export_onnx(network(generator)), calibration_lr())
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
    """The quantised network and the fp32 finish as OpenVINO models, on the CPU threads torch
    uses: ``(1, 3, h, w)`` fp32 LR in [0, 1] -> ``(1, 3, s h, s w)`` uint8 HR."""

    def __init__(self, generator: LoadedGenerator, between: str | None = None) -> None:
        """``between``: bf16 or f32 for the steps between the int8 convolutions (default: bf16
        where the CPU has it)."""
        import openvino as ov

        core = ov.Core()
        threads = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"}
        capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        self.between = between or ("bf16" if "BF16" in capabilities else "f32")
        net = core.read_model(quantised_model(generator), b"")
        finish = finish_model(int(generator.model.scale))
        self.network = core.compile_model(net, "CPU", threads | {"INFERENCE_PRECISION_HINT": self.between})
        self.finish = core.compile_model(finish, "CPU", threads | {"INFERENCE_PRECISION_HINT": "f32"})
        self._requests = (self.network.create_infer_request(), self.finish.create_infer_request())
        self.runtime = f"openvino {ov.__version__.split('-')[0]} (int8 convolutions, {self.between} between)"

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        network, finish = self._requests
        residual = network.infer({0: lr})[0]
        return np.asarray(finish.infer({0: lr, 1: residual})[0])
