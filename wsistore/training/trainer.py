"""The training loop: stages in order, Adam, periodic validation, the K best checkpoints
of each stage (safetensors + model card), a JSONL metrics log, and exact resume.

Determinism: every model is initialised from ``seed`` (plus a fixed offset per model),
batches come from one seeded ``torch.Generator``, and the run state (weights, optimizer
and scheduler states, RNG states) is saved every ``checkpoint_every`` steps and at the end
of each stage, so an interrupted CPU run resumed from its state reproduces the
uninterrupted run's weights bit for bit. CUDA runs use bf16 autocast and channels_last.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn
from torch.optim import lr_scheduler

from wsistore.checksums import sha256_file
from wsistore.errors import InputError, OutputExistsError, WsistoreError
from wsistore.models.adversarial import AdversarialLoss
from wsistore.models.base import Generator
from wsistore.models.device import resolve_device
from wsistore.models.edsr import InterpolationUpsampler
from wsistore.models.losses import PyramidLoss
from wsistore.models.perceptual import Autoencoder, AutoencoderConfig, AutoencoderLoss
from wsistore.models.registry import build_adversarial, build_generator, build_loss
from wsistore.models.weights import save_generator
from wsistore.progress import Progress
from wsistore.training.adversaries import Adversaries
from wsistore.training.config import METRICS, Stage, TrainConfig
from wsistore.training.evaluate import autocast, evaluate, to_device
from wsistore.training.shards import BatchSampler, PatchSet, load_validation, read_manifest
from wsistore.training.state import (
    STATE_FILE,
    cpu_state_dict,
    load_state,
    restore_rng,
    rng_state,
    save_state,
    write_failure,
)

METRICS_LOG = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
#: The finished run's weights.
FINAL = "final.safetensors"
#: seed offset of the autoencoder (discriminators: ``adversaries.SEED_OFFSETS``), so adding
#: a model never changes another's initialisation
_SEED_AUTOENCODER = 2


@dataclass(frozen=True)
class Phase:
    """A unit of the plan: the autoencoder pre-training, or one recipe stage."""

    name: str
    kind: str  # autoencoder | pixel | gan | discriminator
    steps: int
    stage: Stage | None = None

    @property
    def trains_generator(self) -> bool:
        return self.kind in ("pixel", "gan")


def plan(config: TrainConfig) -> list[Phase]:
    """Phases in order: autoencoder pre-training first when a stage uses it (unless the
    recipe places an autoencoder stage itself)."""
    explicit = any(s.kind == "autoencoder" for s in config.stages)
    implicit = config.uses_autoencoder and not explicit
    phases = [Phase("autoencoder", "autoencoder", config.content.autoencoder_steps)] if implicit else []
    return phases + [Phase(s.name, s.kind, s.steps, s) for s in config.stages]


@dataclass
class RunResult:
    """What a run (or a run stopped early) produced."""

    out: Path
    step: int
    finished: bool
    best: dict[str, list[dict[str, Any]]]
    baseline: dict[str, float]
    validations: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    steps_per_second: float = 0.0


class Trainer:
    """Runs one recipe. Build it, then call :meth:`run`."""

    def __init__(self, config: TrainConfig, config_file: str = "", progress: bool = True) -> None:
        self.config = config
        self.config_file = config_file
        self.progress = progress
        self.device = resolve_device(config.run.device)
        self.out = config.out
        if not config.data.shards:
            raise InputError("data.shards is not set (a folder made by 'wsistore train prepare')")
        self.manifest = read_manifest(config.data.shards)
        self.phases = plan(config)
        seed = config.run.seed
        torch.manual_seed(seed)
        self.generator: Generator = build_generator(config.generator.name, config.generator.settings)
        self.adversaries = Adversaries(config, seed)
        self.autoencoder: Autoencoder | None = None
        if config.uses_autoencoder:
            torch.manual_seed(seed + _SEED_AUTOENCODER)
            self.autoencoder = Autoencoder(AutoencoderConfig(**config.content.autoencoder))
        layout = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        for model in (self.generator, *self.adversaries.models.values(), self.autoencoder):
            if model is not None:
                model.to(self.device).to(memory_format=layout)
        self.bf16 = config.run.precision == "bf16"
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = self.bf16
            torch.backends.cudnn.allow_tf32 = self.bf16
        self.train_patches = PatchSet(config.data.shards, "train")
        self.val_lr, self.val_hr = load_validation(config.data.shards, config.validation.max_patches)
        self.rng = torch.Generator().manual_seed(seed)
        data = config.data
        self.sampler = BatchSampler(self.train_patches, data.batch_size, data.patch, data.flips, self.rng)
        self._losses: dict[str, nn.Module] = {}
        self.terms: list[tuple[str, float, nn.Module]] = []
        self.pyramid = False  # a term judges every level of the generator
        self.adversarial: AdversarialLoss | None = None
        self._resumed: dict[str, Any] = {}
        # progress, restored on resume
        self.phase_index = 0
        self.phase_step = 0
        self.step = 0
        self.best: dict[str, list[dict[str, Any]]] = {}
        self.baseline: dict[str, float] = {}
        self.validations: list[dict[str, Any]] = []
        self.elapsed = 0.0
        self.log_lines = 0  # lines of the metrics log, saved with the state

    # -- public ------------------------------------------------------------------------------
    def run(self, resume: bool = False, overwrite: bool = False, stop_after: int | None = None) -> RunResult:
        """Train to the end of the plan (or stop after global step ``stop_after``)."""
        if resume:
            self._resume()
        else:
            self._start(overwrite)
        start, start_step = time.perf_counter(), self.step
        total = sum(p.steps for p in self.phases)
        bar = Progress(total, "train", "step", self.progress, initial=self.step)
        try:
            while self.phase_index < len(self.phases):
                phase = self.phases[self.phase_index]
                optim = self._begin(phase)
                if "rng" in self._resumed:
                    restore_rng(self._resumed.pop("rng"), self.rng)
                if resume and "optim" in self._resumed:
                    optim.load(self._resumed.pop("optim"))
                if phase.kind != "autoencoder" and not self.validations:
                    self._validate(phase, consider=False)
                while self.phase_step < phase.steps:
                    logs = self._train_step(phase, optim)
                    self.phase_step += 1
                    self.step += 1
                    bar.update()
                    if self.step % self.config.run.log_every == 0 or self.phase_step == phase.steps:
                        at = {"step": self.step, "phase": phase.name, "phase_step": self.phase_step}
                        self._log({**at, "lr": optim.lr(), **{k: float(v) for k, v in logs.items()}})
                        bar.note(f"{phase.name} loss {float(logs['loss']):.4g}")
                    if phase.trains_generator and self.step % self.config.validation.every == 0:
                        self._validate(phase)
                    if self.step % self.config.run.checkpoint_every == 0:
                        self._save(optim)
                    if stop_after is not None and self.step >= stop_after:
                        self._save(optim)
                        return self._result(False, start, start_step)
                self._end(phase)
        finally:
            bar.close()
            self.elapsed += time.perf_counter() - start
        return self._finish(start, start_step)

    def nothing_to_resume(self) -> bool:
        """Whether the output folder holds neither a saved state nor a finished run (a run
        killed before its first state): :meth:`run` may start afresh there, with ``overwrite``
        replacing what that run left."""
        return not (self.out / STATE_FILE).is_file() and not (self.out / FINAL).is_file()

    # -- set-up ------------------------------------------------------------------------------
    def _start(self, overwrite: bool) -> None:
        owned = [STATE_FILE, METRICS_LOG, CHECKPOINTS, FINAL, f"{FINAL}.sha256", "run.json"]
        owned += ["config.json", "autoencoder.safetensors"]
        if self.out.exists() and any((self.out / name).exists() for name in owned):
            if not overwrite:
                raise OutputExistsError(f"{self.out} holds a run (resume it, or overwrite it to start again)")
            for name in owned:
                path = self.out / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        (self.out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(json.dumps(self.config.to_dict(), indent=1, default=str))

    def _resume(self) -> None:
        state = load_state(self.out)
        if state["config_sha256"] != self.config.sha256():
            raise InputError(
                f"{self.out}: the recipe changed since this run started; resume with the same config (and overrides)"
            )
        self.generator.load_state_dict(state["generator"])
        self.adversaries.load(state)
        if self.autoencoder is not None:
            self.autoencoder.load_state_dict(state["autoencoder"])
        self.phase_index, self.phase_step, self.step = state["phase_index"], state["phase_step"], state["step"]
        if self.phase_step == 0:  # saved between phases: the next phase's set-up comes after it
            restore_rng(state["rng"], self.rng)
        else:  # saved inside a phase, whose set-up (losses, models) had already drawn from torch's RNG
            self._resumed["rng"] = state["rng"]
        self.best, self.baseline = state["best"], state["baseline"]
        self.validations, self.elapsed = state["validations"], state["elapsed"]
        if state.get("optim"):
            self._resumed["optim"] = state["optim"]
        log = self.out / METRICS_LOG
        if log.is_file():  # drop lines written after the saved state, and a line torn by a kill
            lines = log.read_text().splitlines()
            if "log_lines" in state:  # also the validation logged at the saved step itself
                keep = lines[: state["log_lines"]]
            else:
                keep = [line for line in lines if _logged_step(line) <= self.step]
            log.write_text("".join(line + "\n" for line in keep))
            self.log_lines = len(keep)

    def _begin(self, phase: Phase) -> _Optim:
        """Modes, frozen parts, optimizers and losses for a phase."""
        stage = phase.stage
        if phase.kind == "autoencoder":
            assert self.autoencoder is not None
            self.autoencoder.train().requires_grad_(True)
            if stage is None:  # implicit pre-training, set in [content]
                return _Optim.make({"autoencoder": self.autoencoder}, self.config.content.autoencoder_lr, (0.9, 0.999))
            return _Optim.make({"autoencoder": self.autoencoder}, stage.lr, stage.betas, stage)
        if self.autoencoder is not None:
            self.autoencoder.eval().requires_grad_(False)
        assert stage is not None
        self.terms = [(t.name, self.config.weight(t), self._loss(*self.config.resolve(t))) for t in stage.losses]
        self.pyramid = any(isinstance(loss, PyramidLoss) for _, _, loss in self.terms)
        models: dict[str, nn.Module] = {"generator": self.generator} if phase.trains_generator else {}
        lrs = {"generator": stage.lr}
        self.generator.train(phase.trains_generator)
        if stage.adversaries:
            self.adversaries.train(stage)
            self.adversarial = build_adversarial(stage.adversarial)
            for name, model in self.adversaries.modules(stage).items():
                models[name] = model
                lrs[name] = stage.discriminator_lr
        return _Optim.make(models, lrs, stage.betas, stage)

    def _loss(self, name: str, settings: dict[str, Any]) -> nn.Module:
        key = json.dumps([name, settings], sort_keys=True)
        if key not in self._losses:
            loss = build_loss(name, settings)
            if isinstance(loss, AutoencoderLoss):
                assert self.autoencoder is not None
                loss.autoencoder = self.autoencoder  # the run's pre-trained one
            self._losses[key] = loss.to(self.device)
        return self._losses[key]

    # -- steps -------------------------------------------------------------------------------
    def _train_step(self, phase: Phase, optim: _Optim) -> dict[str, torch.Tensor]:
        lr, hr = (to_device(t, self.device) for t in self.sampler.next())
        if phase.kind == "autoencoder":
            assert self.autoencoder is not None
            with autocast(self.device, self.bf16):
                loss = (self.autoencoder(hr).float() - hr).abs().mean()
            optim.step("autoencoder", loss)
            return {"loss": loss.detach()}
        stage = phase.stage
        assert stage is not None
        if phase.kind == "discriminator":
            assert self.adversarial is not None
            with torch.no_grad(), autocast(self.device, self.bf16):
                sr = self.generator(lr)
            logs = self.adversaries.update(stage, self.adversarial, optim, hr, sr)
            optim.schedule()
            return {"loss": sum(logs.values(), torch.zeros((), device=self.device)), **logs}
        with autocast(self.device, self.bf16):
            levels = self.generator.forward_pyramid(lr) if self.pyramid else [self.generator(lr)]
            sr = levels[-1]
            logs = {
                name: loss.pyramid(levels, hr) if isinstance(loss, PyramidLoss) else loss(sr, hr)
                for name, _, loss in self.terms
            }
            total = sum((w * logs[name] for name, w, _ in self.terms), torch.zeros((), device=self.device))
            if phase.kind == "gan":
                assert self.adversarial is not None
                adversarial = self.adversaries.generator_losses(stage, self.adversarial, hr, sr)
                logs.update(adversarial)
                adversarial_total = sum(adversarial.values(), torch.zeros((), device=self.device))
                total = total + stage.adversarial_weight * adversarial_total
        optim.step("generator", total)
        logs = {k: v.detach() for k, v in logs.items()}
        if phase.kind == "gan":
            assert self.adversarial is not None
            logs.update(self.adversaries.update(stage, self.adversarial, optim, hr, sr))
            for _ in range(stage.critic_steps - 1):  # further critic steps on fresh batches
                lr, hr = (to_device(t, self.device) for t in self.sampler.next())
                with torch.no_grad(), autocast(self.device, self.bf16):
                    sr = self.generator(lr)
                logs.update(self.adversaries.update(stage, self.adversarial, optim, hr, sr))
        optim.schedule()
        return {"loss": total.detach(), **logs}

    # -- validation and checkpoints ------------------------------------------------------------
    def _validate(self, phase: Phase, consider: bool = True) -> None:
        if self.validations and self.validations[-1]["step"] == self.step:
            return
        batch = self.config.validation.batch_size
        if not self.baseline:
            bicubic = InterpolationUpsampler("bicubic").to(self.device)
            self.baseline = evaluate(bicubic, self.val_lr, self.val_hr, self.device, batch, self.bf16)
            self._log({"step": self.step, "phase": phase.name, "baseline_bicubic": self.baseline})
        metrics = evaluate(self.generator, self.val_lr, self.val_hr, self.device, batch, self.bf16)
        record = {"step": self.step, "phase": phase.name, "phase_step": self.phase_step, "val": metrics}
        self.validations.append(record)
        self._log(record)
        if consider and self.phase_step > 0:
            self._consider(phase, metrics)

    def _consider(self, phase: Phase, metrics: dict[str, float]) -> None:
        """Keep this checkpoint if it is among the stage's K best by the chosen metric."""
        v = self.config.validation
        higher = METRICS[v.metric]
        ranked = self.best.setdefault(phase.name, [])
        value = metrics[v.metric]
        if len(ranked) >= v.keep_best:
            worst = ranked[-1][v.metric]
            if not (value > worst if higher else value < worst):
                return
        name = f"{phase.name}-step{self.step:07d}.safetensors"
        path = self.out / CHECKPOINTS / name
        digest = self._save_weights(path, phase, metrics)
        path.with_name(name + ".sha256").write_text(f"{digest}  {name}\n")
        ranked.append({"step": self.step, "file": f"{CHECKPOINTS}/{name}", "sha256": digest, **metrics})
        ranked.sort(key=lambda r: r[v.metric], reverse=higher)
        for dropped in ranked[v.keep_best :]:
            (self.out / dropped["file"]).unlink(missing_ok=True)
            (self.out / (dropped["file"] + ".sha256")).unlink(missing_ok=True)
        del ranked[v.keep_best :]
        (self.out / "best.json").write_text(json.dumps(self.best, indent=1))

    def _end(self, phase: Phase) -> None:
        if phase.kind == "autoencoder":
            assert self.autoencoder is not None
            self.autoencoder.eval().requires_grad_(False)
        elif phase.trains_generator:
            self._validate(phase)
        self.phase_index += 1
        self.phase_step = 0
        self._save(None)

    def _save(self, optim: _Optim | None) -> None:
        save_state(
            self.out,
            {
                "config_sha256": self.config.sha256(),
                "phase_index": self.phase_index,
                "phase_step": self.phase_step,
                "step": self.step,
                "generator": cpu_state_dict(self.generator),
                **self.adversaries.state(),
                "autoencoder": cpu_state_dict(self.autoencoder) if self.autoencoder is not None else None,
                "optim": optim.state() if optim is not None else None,
                "rng": rng_state(self.rng),
                "best": self.best,
                "baseline": self.baseline,
                "validations": self.validations,
                "elapsed": self.elapsed,
                "log_lines": self.log_lines,
            },
        )

    def _card(self, phase: Phase, metrics: dict[str, float]) -> dict[str, Any]:
        """The model card stored in every checkpoint."""
        import wsistore

        g, m = self.generator, self.manifest
        content = self.config.content_losses
        return {
            "architecture": self.config.generator.name,
            "config": dataclasses.asdict(g.config),  # type: ignore[call-overload]
            "scale": g.scale,
            "receptive_field": g.receptive_field,
            "parameters": g.parameter_count,
            "recipe": self.config.run.name,
            "config_file": self.config_file,
            "training": self.config.to_dict(),
            "stage": phase.name,
            "stage_kind": phase.kind,
            "step": self.step,
            "stage_step": self.phase_step,
            "steps_done": self._steps_done(),
            "content_loss": content[0] if len(content) == 1 else (content or None),
            "content_loss_detail": self._content_detail(content),
            "metrics": {f"val_{k}": v for k, v in metrics.items()},
            "baseline_bicubic": {f"val_{k}": v for k, v in self.baseline.items()},
            "data": {
                "shards": str(self.config.data.shards),
                "files": [{k: f[k] for k in ("name", "split", "sha256", "licence", "patches")} for f in m["files"]],
                "licences": m["licences"],
                "counts": m["counts"],
                "patch_lr": m["patch"],
                "split": m["split"],
            },
            "codec": m["codec"],
            "codec_label": m["codec_label"],
            "chunk": m["chunk"],
            "downsample": m["downsample"],
            "device": str(self.device),
            "precision": (
                ("bf16 autocast, TF32" if self.bf16 else "fp32") + ", channels_last"
                if self.device.type == "cuda"
                else "fp32"
            ),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "software": {"wsistore": wsistore.__version__, "torch": torch.__version__},
        }

    def _content_detail(self, content: list[str]) -> dict[str, Any]:
        detail: dict[str, Any] = {}
        if "vgg19" in content:
            path = Path(self.config.content.vgg19_weights)
            layer = self.config.content.vgg19_layer
            detail["vgg19"] = {"weights": path.name, "sha256": sha256_file(path), "layer": layer}
        if "autoencoder" in content:
            steps = sum(p.steps for p in self.phases if p.kind == "autoencoder")
            detail["autoencoder"] = {"settings": self.config.content.autoencoder, "pretrain_steps": steps}
        return detail

    def _steps_done(self) -> dict[str, int]:
        done = {p.name: p.steps for p in self.phases[: self.phase_index]}
        if self.phase_index < len(self.phases):
            done[self.phases[self.phase_index].name] = self.phase_step
        return done

    def _finish(self, start: float, start_step: int) -> RunResult:
        last = next((p for p in reversed(self.phases) if p.trains_generator), self.phases[-1])
        metrics = self.validations[-1]["val"] if self.validations else {}
        self.phase_index, self.phase_step = len(self.phases), 0
        digest = self._save_weights(self.out / FINAL, last, metrics)
        (self.out / f"{FINAL}.sha256").write_text(f"{digest}  {FINAL}\n")
        result = self._result(True, start, start_step)
        final = {"file": FINAL, "sha256": digest, **metrics}
        summary = dataclasses.asdict(result) | {"out": str(result.out), "final": final}
        (self.out / "run.json").write_text(json.dumps(summary, indent=1))
        return result

    def _save_weights(self, path: Path, phase: Phase, metrics: dict[str, float]) -> str:
        """The generator's weights and card at ``path``; returns the file's sha256."""
        try:
            return save_generator(path, self.generator, self._card(phase, metrics), half=False)
        except (OSError, RuntimeError, SafetensorError) as exc:  # safetensors reports a full disk as its own error
            raise WsistoreError(
                f"cannot write {path}: {write_failure(self.out, exc)}; rerun with --resume once fixed"
            ) from exc

    def _result(self, finished: bool, start: float, start_step: int) -> RunResult:
        seconds = time.perf_counter() - start
        steps = self.step - start_step
        rate = steps / seconds if seconds > 0 else 0.0
        return RunResult(self.out, self.step, finished, self.best, self.baseline, list(self.validations), seconds, rate)

    def _log(self, record: dict[str, Any]) -> None:
        self.log_lines += 1
        with (self.out / METRICS_LOG).open("a") as f:
            f.write(json.dumps(record) + "\n")


def _logged_step(line: str) -> float:
    """The step of a metrics-log line; a line torn by a kill counts as after every step."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


@dataclass
class _Optim:
    """Adam per trained model, with the stage's learning-rate schedule (multi-step, or
    cosine over the stage; constant without a stage)."""

    optimizers: dict[str, torch.optim.Adam]
    schedulers: dict[str, lr_scheduler.LRScheduler]

    @classmethod
    def make(
        cls,
        models: dict[str, nn.Module],
        lr: float | dict[str, float],
        betas: tuple[float, float],
        stage: Stage | None = None,
    ) -> _Optim:
        optimizers: dict[str, torch.optim.Adam] = {}
        schedulers: dict[str, lr_scheduler.LRScheduler] = {}
        for name, model in models.items():
            rate = lr[name] if isinstance(lr, dict) else lr
            opt = torch.optim.Adam(model.parameters(), lr=rate, betas=betas)
            optimizers[name] = opt
            scheduler: lr_scheduler.LRScheduler
            if stage is not None and stage.lr_schedule == "cosine":
                scheduler = lr_scheduler.CosineAnnealingLR(opt, max(stage.steps, 1), eta_min=rate * stage.lr_floor)
            else:
                milestones = list(stage.lr_milestones) if stage else []
                scheduler = lr_scheduler.MultiStepLR(opt, milestones, stage.lr_gamma if stage else 1.0)
            schedulers[name] = scheduler
        return cls(optimizers, schedulers)

    def step(self, name: str, loss: torch.Tensor) -> None:
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def schedule(self) -> None:
        for scheduler in self.schedulers.values():
            scheduler.step()

    def lr(self) -> float:
        return float(next(iter(self.optimizers.values())).param_groups[0]["lr"])

    def state(self) -> dict[str, Any]:
        return {
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
        }

    def load(self, state: dict[str, Any]) -> None:
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
