"""One generator on one device, fed by many threads.

Callers (Dask tasks, on-demand reads) hand LR windows to :meth:`GeneratorRunner.upscale`
and wait; one thread owns the model and runs what is queued. On CUDA it batches
concurrent windows (bf16 autocast, channels_last, optionally ``torch.compile``) and halves
the batch when the GPU runs out of memory. On the CPU each window runs alone: oneDNN
picks different kernels for different batch sizes at some shapes, and restore promises
pixels that do not depend on ``--batch``. Learned models run channels_last on the CPU too:
oneDNN's convolutions are 1.5-1.8x faster in that layout on 2 cores (BENCHMARKS.md), and
every CPU restore uses it, so full restores, regions and on-demand reads still agree bit
for bit. With ``precision="int8"`` (CPU only) the generator runs quantised
in OpenVINO (:mod:`wsistore.restoration.int8`).
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch

from wsistore.errors import InputError, WsistoreError, first_line
from wsistore.geometry import Box
from wsistore.models.weights import INTERPOLATIONS, LoadedGenerator
from wsistore.restoration.int8 import Int8Network, resolve_precision

#: Seconds the model thread waits for more windows to fill a GPU batch.
BATCH_LINGER_S = 0.005
DEFAULT_CUDA_BATCH = 8
log = logging.getLogger("wsistore.restoration")


@dataclass
class _Request:
    window: np.ndarray  # (h, w, 3) uint8 LR
    crop: Box  # HR (x0, y0, x1, y1) to return
    future: Future[np.ndarray]


class GeneratorRunner:
    """A loaded generator on a device, shared by every thread of this process."""

    def __init__(
        self,
        generator: LoadedGenerator,
        device: torch.device,
        batch: int | None = None,
        compile: bool = False,
        precision: str = "fp32",
    ) -> None:
        """``precision``: fp32 (bf16 on CUDA), int8 (CPU) or auto (:func:`resolve_precision`);
        restore, serve and on-demand reads pass ``DEFAULT_PRECISION``, so they agree.
        ``fallback`` says why auto runs a learned generator in fp32 on the CPU (else None)."""
        self.generator = generator
        self.device = device
        self.cuda = device.type == "cuda"
        if batch is not None and batch < 1:
            raise InputError(f"batch must be at least 1, got {batch}")
        self.batch = 1 if not self.cuda else (batch or DEFAULT_CUDA_BATCH)
        learned = generator.card.get("architecture", generator.name) not in INTERPOLATIONS
        self.bf16 = self.cuda and learned
        resolved, why = resolve_precision(precision, device, generator)
        self.fallback = why if learned and not self.cuda else None
        if self.fallback:  # serve logs it; restore's summary line says it
            log.info("generator %s runs fp32 (%s)", generator.name, self.fallback)
        self.int8 = Int8Network(generator) if resolved == "int8" else None
        model = generator.model.to(device).eval()
        self.channels_last = learned
        if self.cuda:
            torch.backends.cudnn.benchmark = True
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = torch.compile(model) if compile and self.cuda and learned else model
        self.scale = int(generator.model.scale)
        self.receptive_field = int(generator.model.receptive_field)
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "int8" if self.int8 is not None else "fp32"

    @property
    def runtime(self) -> str:
        """What runs the network: torch or OpenVINO, with its version."""
        return self.int8.runtime if self.int8 is not None else f"torch {torch.__version__}"

    def upscale(self, window: np.ndarray, crop: Box) -> np.ndarray:
        """The HR ``crop`` (window coordinates) of the generator's output for ``window``."""
        self._ensure_thread()
        future: Future[np.ndarray] = Future()
        self._queue.put(_Request(window, crop, future))
        return future.result()

    def close(self) -> None:
        """Stop the model thread (pending requests are still served)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    # -- the model thread ----------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="wsistore-generator", daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.batch:
                try:
                    item = self._queue.get(timeout=BATCH_LINGER_S)
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            self._run(batch)

    def _run(self, batch: list[_Request]) -> None:
        try:
            outputs = self._forward([r.window for r in batch], [r.crop for r in batch])
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if len(batch) == 1:
                side = batch[0].window.shape[1]
                self._fail(batch, WsistoreError(f"out of GPU memory on one {side} px tile even at batch 1"))
                return
            self.batch = max(1, len(batch) // 2)
            for start in range(0, len(batch), self.batch):
                self._run(batch[start : start + self.batch])
            return
        except Exception as exc:  # the error belongs to the callers, not to this thread
            self._fail(batch, WsistoreError(f"generator {self.generator.name} failed: {first_line(exc)}"))
            return
        except BaseException as exc:  # an interrupt: hand it to the callers, keep serving
            self._fail(batch, exc)
            return
        for request, out in zip(batch, outputs, strict=True):
            request.future.set_result(out)

    @staticmethod
    def _fail(batch: list[_Request], error: BaseException) -> None:
        for request in batch:
            request.future.set_exception(error)

    @torch.inference_mode()
    def _forward(self, windows: list[np.ndarray], crops: list[Box]) -> list[np.ndarray]:
        x = torch.from_numpy(np.stack(windows)).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        if self.int8 is not None:
            hr = [self.int8(x[i : i + 1].numpy())[0] for i in range(len(windows))]
            return [
                np.ascontiguousarray(h[:, y0:y1, x0:x1].transpose(1, 2, 0)) for h, (x0, y0, x1, y1) in zip(hr, crops)
            ]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            y = self.model(x)
        return [
            to_uint8(y[i, :, y0:y1, x0:x1]).permute(1, 2, 0).contiguous().cpu().numpy()
            for i, (x0, y0, x1, y1) in enumerate(crops)
        ]


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """Generator output (RGB in [0, 1], unclamped) -> uint8, rounding to nearest (in place
    where it can)."""
    return image.float().clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
