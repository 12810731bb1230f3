"""The training loop, readable top to bottom; policies (device, precision, parallelism, data mixing,
checkpoint format) live in the components it calls.

One step = `accum_grad_iters` micro-batches, then one optimizer update.  Gradients are normalised by
the loss's units in the whole global batch (all micro-batches, all ranks: the task's `StepLoss.units`,
answer tokens or samples), so 2 x batch 4 gives exactly the gradient of batch 8 and N ranks give
the single-process gradient.  What the loss is (reduction, auxiliary losses, feature cache) is the
task's business (tasks/image_text.py); the runner only schedules.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time

import torch
from tqdm import tqdm

from ..common import atomic
from ..common import checkpoint as ckpt
from ..common import device as devices
from ..common import dist, rng
from ..common.config import Config, ConfigError, from_yaml, to_yaml
from ..common.errors import UserError
from ..common.logging import MetricsLogger
from ..common.optim import build_optimizer
from ..common.registry import registry
from ..common.schedulers import build_scheduler
from ..conversation.protocol import STYLE_KEY, PromptStyle
from ..models import weights

log = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """A step's loss or gradient norm, or a weight about to be saved, is not finite: the run stops
    (one line: the step, the value and the last good checkpoint) and writes nothing further."""


@registry.register("runner", "runner_iter")
class IterRunner:
    def __init__(self, cfg: Config, model, task, device: torch.device, info: dist.DistInfo):
        self.cfg, self.run, self.task, self.device, self.info = cfg, cfg.run, task, device, info
        self.model = model  # the user's module; self.ddp is what runs forward/backward
        self.amp_dtype = devices.autocast_dtype(device, self.run.precision)
        self.scaler = devices.grad_scaler(device, self.amp_dtype)
        resume = ckpt.load_training_checkpoint(self.run.resume_ckpt_path) if self.run.resume_ckpt_path else None
        if resume:  # weights go in before wrapping, so DDP/FSDP start from them on every rank
            self._check_resumable(resume)
            log.info("%s", weights.load_checkpoint(model, self.run.resume_ckpt_path).summary())
        task.setup(model)
        if self.run.compile:
            compile_llm(model)
        # The optimizer is built on the wrapped model: FSDP replaces parameters with shards.
        self.ddp = dist.wrap_model(model, self.run.distributed_strategy, device)
        self.optimizer = build_optimizer(self.ddp, self.run)
        self.scheduler = build_scheduler(self.optimizer, self.run)
        self.total_steps = self.run.max_epoch * self.run.iters_per_epoch
        self.step = 0
        self.data_state = None
        self.last_good = self.run.resume_ckpt_path  # the newest checkpoint known to hold finite weights
        if resume:
            self._restore(resume)
        self.watch = _NonFiniteWatch(device, check_grads=self.scaler is None)
        self.metrics = MetricsLogger(self.run.output_dir, self.run.tensorboard, enabled=info.is_main,
                                     resume_step=self.step if resume else None)

    # ------------------------------------------------------------------ the loop
    def train(self) -> dict:
        run = self.run
        if self.info.is_main:
            for stale in atomic.remove_stale_temps(run.output_dir):
                log.info("removed %s, left by a save that was interrupted", stale)
            atomic.write_text(os.path.join(run.output_dir, "config.yaml"), to_yaml(self.cfg))
        batches = self.task.build_train_loader(self.info, self.device)
        held_out = self.task.build_valid_loader(self.info, self.device) if run.valid_every else None
        if self.data_state:
            batches.load_state_dict(self.data_state)
        self.ddp.train()
        window = _Window(self.device)
        last_loss = None  # none when no step runs (a resume from the last checkpoint)
        with tqdm(total=self.total_steps, initial=self.step, disable=not self.info.is_main,
                  desc=os.path.basename(run.output_dir.rstrip("/")), dynamic_ncols=True) as bar:
            while self.step < self.total_steps:
                lr = self.scheduler.step(self.step)
                *step_sums, grad_norm = self._train_step(batches)
                window.add(*step_sums)
                self.step += 1
                self.watch.add(self.step, step_sums[0] / step_sums[1].clamp(min=1), grad_norm)
                bar.update(1)
                epoch_end = self.step % run.iters_per_epoch == 0
                validate = held_out is not None and (self.step % run.valid_every == 0 or self.step == self.total_steps)
                if validate or self.step % run.log_every == 0 or self.step == self.total_steps:
                    # The host-device syncs of the loop (divergence check, window): once per log interval.
                    self._stop_if_diverged()
                    stats = window.flush()
                    last_loss = stats["loss"]
                    stats.update(lr=lr, epoch=(self.step - 1) // run.iters_per_epoch)
                    if validate:
                        stats["valid_loss"] = self._validate(held_out)
                        window.reset()  # the held-out pass is not training throughput
                    self.metrics.log(self.step, stats)
                    bar.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{lr:.2e}", sps=f"{stats['samples_per_s']:.1f}")
                if (run.save_every and self.step % run.save_every == 0) or epoch_end:
                    self._save(batches)
        final = self._save_final()
        curve = self.metrics.close()
        summary = {"steps": self.step, "final_loss": last_loss, "checkpoint": final, "loss_curve": curve,
                   "skipped_samples": batches.skips.report()}
        if self.info.is_main:
            log.info("training finished: %s", summary)
        return summary

    def _train_step(self, batches) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor]:
        """One optimizer update over accum_grad_iters micro-batches; returns (loss sum, its weight,
        answer tokens) as device tensors, the sample count and the gradient norm (device tensor)."""
        accum = self.run.accum_grad_iters
        loss_sum = torch.zeros((), device=self.device)
        weight = torch.zeros((), device=self.device)
        tokens = torch.zeros((), device=self.device)
        samples_seen = 0
        for micro in range(accum):
            samples = _to_device(next(batches), self.device)
            samples_seen += len(samples["answer"])
            sync = micro == accum - 1
            with self._no_sync(sync), devices.autocast(self.device, self.amp_dtype):
                step = self.task.train_step(self.ddp, samples)
            (self.scaler.scale(step.total) if self.scaler else step.total).backward()
            loss_sum += step.total.detach().float()
            weight += step.units.detach().float()
            tokens += step.answer_tokens.detach().float()
        # DDP averaged the per-rank sums over ranks; rescale to a mean over the global batch's units
        # (answer tokens or samples: model.loss_reduction).
        global_weight = weight.clone()
        if self.info.world_size > 1:
            torch.distributed.all_reduce(global_weight)
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        factor = self.info.world_size / global_weight.clamp(min=1)
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        if grads:
            torch._foreach_mul_(grads, factor)
        # The norm is watched for non-finite values (_NonFiniteWatch) whether or not it clips.
        if self.run.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.run.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor over the shards
            grad_norm = grad_norm.full_tensor()
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, weight, tokens, samples_seen, grad_norm.detach().float()

    def _validate(self, held_out) -> float:
        """The held-out loss over every valid_datasets sample (all ranks), in the training loss's
        units; the model is in eval mode (no dropout) meanwhile."""
        total = torch.zeros((), device=self.device)
        units = torch.zeros((), device=self.device)
        self.ddp.eval()
        for _, loader in held_out:
            for samples in loader:
                if not samples.get("answer"):
                    continue  # every sample of this batch was unreadable (counted as skipped)
                samples = _to_device(samples, self.device)
                with devices.autocast(self.device, self.amp_dtype):
                    step = self.task.valid_step(self.ddp, samples)
                total += step.total.detach().float()
                units += step.units.detach().float()
        self.ddp.train()
        if self.info.world_size > 1:
            sums = torch.stack([total, units])
            torch.distributed.all_reduce(sums)
            total, units = sums[0], sums[1]
        return float(total) / max(float(units), 1.0)

    def _no_sync(self, sync: bool):
        if sync or not hasattr(self.ddp, "no_sync"):
            return contextlib.nullcontext()
        return self.ddp.no_sync()

    # ------------------------------------------------------------------ checkpoints
    def _state(self, batches) -> dict:
        return {
            "format": ckpt.FORMAT,
            "model": dist.trainable_state_dict(self.ddp),
            # Full (unsharded) optimizer state keyed by parameter name: the same file resumes
            # a DDP, FSDP or single-process run.
            "optimizer": dist.optimizer_state_dict(self.ddp, self.optimizer),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "data": batches.state_dict(),
            "rng": dist.all_gather_object(rng.rng_state()),  # one per rank: exact resume everywhere
            "config": to_yaml(self.cfg),
            **_lora_record(self.model),
        }

    def _save(self, batches) -> None:
        self._stop_if_diverged()
        state = self._state(batches)  # collective under FSDP: every rank builds it
        self._stop_if_not_finite(state["model"])
        path = ckpt.step_path(self.run.output_dir, self.step)
        if self.info.is_main:
            ckpt.atomic_save(state, path)
            ckpt.prune(self.run.output_dir, self.run.keep_last)
        self.last_good = path
        dist.barrier()

    def _save_final(self) -> str:
        """Trainable weights only, as safetensors: what the next stage's `model.ckpt` names."""
        self._stop_if_diverged()
        aids = self.model.training_aid_prefixes
        state = {k: v for k, v in dist.trainable_state_dict(self.ddp).items() if not k.startswith(aids)}
        self._stop_if_not_finite(state)
        path = os.path.join(self.run.output_dir, "checkpoint_final.safetensors")
        if self.info.is_main:
            # The prompt style travels with the weights: chat and evaluation read it back.
            style = PromptStyle.from_config(self.cfg.model).record()
            ckpt.save_weights(state, path, metadata={STYLE_KEY: style, **_lora_record(self.model)})
        dist.barrier()
        return path

    def _stop_if_diverged(self) -> None:
        """Raise TrainingDiverged naming the first step whose loss or gradient norm was not finite
        (a host sync: called once per log interval and before each save)."""
        bad = self.watch.first_bad(self.info.world_size)
        if bad is not None:
            step, what = bad
            raise TrainingDiverged(f"{self.run.output_dir}: training stopped: step {step} has {what}; "
                                   f"{self._last_good_text()} (lower run.init_lr or check the data)")

    def _stop_if_not_finite(self, state: dict) -> None:
        """Refuse to write weights that are not all finite (state: rank 0's full copies; {} elsewhere)."""
        bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        bad = sum(dist.all_gather_object(bad), [])
        if bad:
            raise TrainingDiverged(f"{self.run.output_dir}: training stopped: after step {self.step} "
                                   f"{len(bad)} trainable tensor(s) are not finite (e.g. {bad[0]}); "
                                   f"{self._last_good_text()} (lower run.init_lr or check the data)")

    def _last_good_text(self) -> str:
        if self.last_good:
            return f"the last good checkpoint is {self.last_good}"
        return "no checkpoint was written before it"

    def _check_resumable(self, state: dict) -> None:
        try:
            saved = from_yaml(state["config"], self.run.resume_ckpt_path).model
        except Exception as exc:  # omegaconf's errors for a config this version cannot read
            raise ConfigError(f"run.resume_ckpt_path: {self.run.resume_ckpt_path}: its stored config cannot be "
                              f"read ({' '.join(str(exc).split())[:200]})") from None
        if saved != self.cfg.model:
            changed = _differences(saved, self.cfg.model, "model")
            raise ConfigError(f"run.resume_ckpt_path: {self.run.resume_ckpt_path} was written for a different model "
                              f"config ({', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}); resume with "
                              f"the config stored in it or start a new run")

    def _restore(self, state: dict) -> None:
        dist.load_optimizer_state_dict(self.ddp, self.optimizer, state["optimizer"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]
        self.data_state = state["data"]
        rngs = state["rng"]
        if len(rngs) != self.info.world_size:
            log.warning("checkpoint has RNG states of %d ranks, this run has %d: random streams restart "
                        "from the seed", len(rngs), self.info.world_size)
        else:
            rng.set_rng_state(rngs[self.info.rank])


def _lora_record(model) -> dict[str, str]:
    """Which Linears carry LoRA (models/lora.py), for the checkpoint; nothing without LoRA."""
    return model.lora_targets.record() if model.lora_targets else {}


def compile_llm(model) -> None:
    """run.compile: the LLM's forward (Phi + injected LoRA) through `torch.compile`, in place
    (`nn.Module.compile`), so parameter names, checkpoints and the DDP/FSDP wrapper see the same
    module.  Only the LLM: the prompt assembly around it is tokenizer/Python work that would break
    the graph, and the towers run under no_grad.  The first steps pay the compilation (tens of
    seconds on CPU); a new padded length recompiles once, after which the shapes are dynamic."""
    model.llm.compile()
    log.info("run.compile: the LLM forward is compiled with torch.compile (first steps include compilation)")


def _differences(old, new, prefix: str) -> list[str]:
    """The dotted keys where two config dataclasses differ (for a message)."""
    if not (dataclasses.is_dataclass(old) and type(old) is type(new)):
        return [prefix] if old != new else []
    return [key for f in dataclasses.fields(old)
            for key in _differences(getattr(old, f.name), getattr(new, f.name), f"{prefix}.{f.name}")]


class _NonFiniteWatch:
    """The first step whose loss or gradient norm was not finite, kept on the device: recording it
    costs no host sync, and the runner reads it once per log interval and before every save.  With
    a grad scaler (fp16) non-finite gradients are the scaler's business (it skips that update), so
    only the loss is watched."""

    def __init__(self, device, check_grads: bool = True):
        self.check_grads = check_grads
        self.step = torch.full((), -1, dtype=torch.long, device=device)
        self.values = torch.zeros(2, device=device)  # (loss, gradient norm) of that step

    def add(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        values = torch.stack([loss.float(), grad_norm.float() if self.check_grads else torch.zeros_like(loss)])
        first = (self.step < 0) & ~torch.isfinite(values).all()
        self.step = torch.where(first, torch.full_like(self.step, step), self.step)
        self.values = torch.where(first, values, self.values)

    def first_bad(self, world_size: int = 1) -> tuple[int, str] | None:
        """(step, "a loss of nan ...") of the first bad step on any rank, or None."""
        never = torch.iinfo(torch.long).max
        step = torch.where(self.step < 0, torch.full_like(self.step, never), self.step)
        if world_size > 1:
            torch.distributed.all_reduce(step, op=torch.distributed.ReduceOp.MIN)
        step = int(step)
        if step == never:
            return None
        if step != int(self.step):
            return step, "a non-finite loss or gradient norm on another rank"
        loss, norm = (float(v) for v in self.values)
        return step, f"a loss of {loss} and a gradient norm of {norm}" if self.check_grads else f"a loss of {loss}"


class _Window:
    """Loss / throughput accumulated on the device between log lines."""

    def __init__(self, device):
        self.device = device
        self.reset()

    def reset(self):
        self.loss_sum = torch.zeros((), device=self.device)
        self.weight = torch.zeros((), device=self.device)
        self.tokens = torch.zeros((), device=self.device)
        self.samples = 0
        self.started = time.perf_counter()

    def add(self, loss_sum, weight, tokens, samples):
        self.loss_sum += loss_sum
        self.weight += weight
        self.tokens += tokens
        self.samples += samples

    def flush(self) -> dict:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        tokens = float(self.tokens)
        out = {"loss": float(self.loss_sum) / max(float(self.weight), 1.0), "samples_per_s": self.samples / elapsed,
               "answer_tokens_per_s": tokens / elapsed}
        self.reset()
        return out


def _to_device(samples: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in samples.items()}
