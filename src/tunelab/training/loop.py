"""The one training loop, on accelerate: accumulate, clip, step, schedule, evaluate, keep best, stop.

Hand-written rather than HF Trainer because methods own the micro-step (``MethodSpec.step``) and the
loop must stay closed to them; exact resume needs data order derived from (seed, epoch) only.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader

from tunelab.data.batching import epoch_batches, row_lengths, shard_batches
from tunelab.methods.spec import OptimizerStepContext, RunState
from tunelab.training.checkpoint import TrainerState, load_checkpoint, save_checkpoint
from tunelab.training.optim import build_optimizer, build_scheduler
from tunelab.training.plan import Plan
from tunelab.training.setup import TrainInputs
from tunelab.training.tracking import LogWindow, Tracker

logger = logging.getLogger(__name__)

Evaluate = Callable[[torch.nn.Module], Mapping[str, Any]]
OnBest = Callable[[torch.nn.Module, Mapping[str, Any], int], None]
OnEval = Callable[[Mapping[str, Any], int], bool]
StopReason = Literal["completed", "early_stopping", "interrupted", "pruned"]


@dataclass
class TrainResult:
    """How the run ended; ``losses`` maps each logged step to the mean loss since the previous log.

    ``pruned``: the caller's ``on_eval`` asked to stop (a hyperparameter search gave up on the run).
    """

    step: int
    stopped: StopReason
    best_metric: float | None
    best_step: int | None
    checkpoint: Path | None
    losses: dict[int, float] = field(default_factory=dict)
    signal_number: int | None = None


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each optimizer step.

    Installed, a signal no longer ends the process: the loop stops at the next step boundary with a
    checkpoint, and a run that already took its last step ignores the flag (it finishes, exit 0).
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Record SIGINT/SIGTERM while inside; the previous handlers come back on exit (nesting works)."""

        def handler(signum: int, frame: Any) -> None:
            self.signum = signum

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def _agreed_signal(accelerator: Accelerator, signum: int | None) -> int | None:
    """The stop signal as all ranks see it: if one rank was signalled, all stop at the same step.

    Without this a rank that alone received the signal would enter the (collective) checkpoint
    save while the others run the next step, and the job would hang.
    """
    if accelerator.num_processes == 1:
        return signum
    flag = torch.tensor([signum or 0], device=accelerator.device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return int(flag.item()) or None


def _improved(value: float, best: float | None, higher_is_better: bool) -> bool:
    if best is None:
        return True
    return value > best if higher_is_better else value < best


def steps_per_epoch(n_examples: int, cfg_batch: int, accumulation: int, world_size: int) -> int:
    """Optimizer steps in one epoch on each rank (a short last accumulation group still steps)."""
    batches_per_rank = math.ceil(math.ceil(n_examples / cfg_batch) / world_size)
    return math.ceil(batches_per_rank / accumulation)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  {task.fields[speed]:.1f} samples/s"
        ),
        TimeRemainingColumn(),
        console=Console(stderr=True),  # stdout stays for machine-readable output
        disable=not enabled,
        transient=False,
    )


def _accumulate(
    inputs: TrainInputs,
    step_fn: Callable[..., Any],
    accelerator: Accelerator,
    model: torch.nn.Module,
    group: list[list[int]],
    generator: torch.Generator,
    window: LogWindow,
    count_targets: Callable[[Mapping[str, torch.Tensor]], torch.Tensor],
) -> tuple[torch.Tensor, int]:
    """Forward + backward every micro-batch of one optimizer step; gradients all-reduce only on the last.

    Each method's loss stays a mean over its micro-batch's targets; this weights micro-batch ``j`` by
    ``n_j / N`` (``n_j`` its targets, ``N`` the step's targets summed over micro-batches and ranks) and
    by the world size, which DDP's gradient mean divides out again. The step's gradient is then that
    of the mean over all its targets, so accumulation 4 x 2 equals one batch of 8 and two ranks equal
    one process, even when micro-batches hold different numbers of tokens.

    Returns this rank's share of the step's target-weighted loss (a tensor, so no device sync here; the
    ranks' shares sum to the global loss) and the global sample count; the methods' per-micro-batch
    metrics go into ``window``.
    """
    collate = inputs.train_collator or inputs.collator
    loader = DataLoader(inputs.train, batch_sampler=group, collate_fn=collate, generator=generator)
    batches = [send_to_device(batch, accelerator.device) for batch in loader]
    counts = torch.stack([count_targets(batch).to(accelerator.device) for batch in batches]).float()
    total = accelerator.reduce(counts.sum(), reduction="sum").clamp(min=1.0)
    weights = counts / total  # (micro-batches,): each one's share of the global step

    loss_sum = torch.zeros((), device=accelerator.device)
    for j, batch in enumerate(batches):
        scale = weights[j] * accelerator.num_processes

        def backward(loss: torch.Tensor, scale: torch.Tensor = scale) -> None:
            accelerator.backward(loss * scale)

        last = j == len(batches) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            out = step_fn(inputs.adapted, batch, backward)
        loss_sum += out.loss.float() * weights[j]
        window.add(out.metrics)
    return loss_sum, sum(len(rows) for rows in group) * accelerator.num_processes


class TrainingRun:
    """One run of the loop: the prepared model/optimizer/scheduler, the loop state and its outputs.

    ``train`` drives it; each method here is one phase of an optimizer step, so the loop itself reads
    top to bottom on one screen. ``training.measure`` drives a few of its optimizer steps alone.
    """

    def __init__(
        self,
        plan: Plan,
        inputs: TrainInputs,
        accelerator: Accelerator,
        evaluate: Evaluate | None,
        on_best: OnBest | None,
        resume_from: Path | None,
        on_eval: OnEval | None = None,
    ) -> None:
        cfg = self.cfg = plan.cfg.train
        self.plan, self.inputs, self.accelerator = plan, inputs, accelerator
        self.evaluate, self.on_best, self.on_eval = evaluate, on_best, on_eval
        config_dict = plan.cfg.model_dump(mode="json")
        self.lengths = row_lengths(inputs.train)
        per_epoch = steps_per_epoch(
            len(self.lengths), cfg.batch_size, cfg.gradient_accumulation_steps, accelerator.num_processes
        )
        self.total_steps = cfg.max_steps or cfg.num_train_epochs * per_epoch

        model = inputs.adapted.model
        optimizer = build_optimizer(model, cfg, inputs.adapted.lr_scale, inputs.adapted.lr_start)
        scheduler = build_scheduler(optimizer, cfg, self.total_steps)
        self.model, self.optimizer, self.scheduler = accelerator.prepare(model, optimizer, scheduler)
        inputs.adapted.model = self.model
        self.step_fn = plan.step
        self.step_hooks = [(s.on_optimizer_step, p) for s, p in plan.methods if s.on_optimizer_step]
        task_params = inputs.task_params if inputs.task_params is not None else plan.task_params
        self.count_targets = partial(plan.task.count_targets, params=task_params)

        companions = inputs.adapted.companions.items()
        self.run_states = {k: c for k, c in companions if isinstance(c, RunState)}
        self.unwrapped = accelerator.unwrap_model(self.model)
        digests = {key: file.sha256 for key, file in inputs.data_files.items()}
        self.state = TrainerState(config=config_dict, inputs=digests)
        self.window = LogWindow(accelerator.device)
        if resume_from is not None:
            self.state = load_checkpoint(
                accelerator, resume_from, config_dict, self.run_states, self.unwrapped, digests
            )
            if self.state.log_window:
                self.window.restore(self.state.log_window, accelerator)
            logger.info(
                "resumed from %s at step %d (epoch %d)", resume_from, self.state.step, self.state.epoch
            )
        self.tracker = Tracker(cfg.output_dir, accelerator.is_main_process, self.state.step)
        self.result = TrainResult(
            step=self.state.step, stopped="completed", best_metric=None, best_step=None, checkpoint=None
        )
        self.last_saved: int | None = self.state.step if resume_from is not None else None
        self.last_eval: int | None = None
        self.generator = torch.Generator().manual_seed(cfg.seed)  # keeps DataLoader off the global RNG

    def epoch_groups(self) -> list[list[list[int]]]:
        """This rank's micro-batches of the current epoch, grouped per optimizer step."""
        cfg, acc = self.cfg, self.accelerator
        global_batch = cfg.batch_size * acc.num_processes
        batches = shard_batches(
            epoch_batches(self.lengths, global_batch, cfg.seed, self.state.epoch, cfg.group_by_length),
            acc.process_index,
            acc.num_processes,
        )
        ga = cfg.gradient_accumulation_steps
        return [batches[i : i + ga] for i in range(0, len(batches), ga)]

    def optimizer_step(self, group: list[list[int]]) -> None:
        """Forward + backward every micro-batch of ``group``, clip, step, schedule, run method hooks."""
        loss, samples = _accumulate(
            self.inputs,
            self.step_fn,
            self.accelerator,
            self.model,
            group,
            self.generator,
            self.window,
            self.count_targets,
        )
        self.window.samples += samples
        self.window.loss += loss
        self.window.steps += 1
        if self.cfg.max_grad_norm is not None:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.state.step += 1
        self.state.step_in_epoch += 1
        reduce_sum = partial(self.accelerator.reduce, reduction="sum")
        context = OptimizerStepContext(self.state.step, self.total_steps, reduce_sum)
        for hook, params in self.step_hooks:
            self.window.add(hook(self.inputs.adapted, params, context))
        self.optimizer.zero_grad(set_to_none=True)

    def log(self, step_start: float, progress: Progress, bar: TaskID) -> None:
        """Every ``logging_steps``: mean loss, lr, samples/s and method metrics since the last log."""
        due = self.state.step % self.cfg.logging_steps == 0 or self.state.step == self.total_steps
        window = self.window
        if due:  # read back first: the device sync belongs to the timed window
            mean_loss = self.accelerator.reduce(window.loss / window.steps, reduction="sum").item()
        window.time += time.perf_counter() - step_start
        if due:
            speed = window.samples / window.time if window.time > 0 else 0.0
            lr = self.scheduler.get_last_lr()[0]
            self.result.losses[self.state.step] = mean_loss
            scalars = {"train/loss": mean_loss, "train/lr": lr, "train/samples_per_s": speed}
            self.tracker.log(self.state.step, {**scalars, **window.pop()})
            progress.update(bar, loss=mean_loss, lr=lr, speed=speed)
        progress.update(bar, completed=self.state.step)

    def after_step(self, steps_in_epoch: int, stop: StopFlag) -> bool:
        """Epoch bookkeeping, evaluation, stop signal and checkpoint; True when the run ends here."""
        cfg, state = self.cfg, self.state
        end_of_epoch = state.step_in_epoch == steps_in_epoch
        if end_of_epoch:
            state.epoch, state.step_in_epoch = state.epoch + 1, 0
        due_eval = (end_of_epoch and cfg.eval_steps is None) or (
            cfg.eval_steps is not None and state.step % cfg.eval_steps == 0
        )
        finished = state.step >= self.total_steps
        if due_eval or (finished and self.last_eval != state.step):
            self.result.stopped = self.run_eval()
        signum = _agreed_signal(self.accelerator, stop.signum)  # read after eval: a signal during it counts
        if signum is not None and not finished and self.result.stopped == "completed":
            self.result.stopped, self.result.signal_number = "interrupted", signum
        if state.step % cfg.save_steps == 0 or finished or self.result.stopped != "completed":
            self.checkpoint()
        return finished or self.result.stopped != "completed"

    def run_eval(self) -> StopReason:
        """Evaluate, keep best, then ask ``on_eval`` and early stopping whether to go on."""
        if self.evaluate is None:
            return "completed"
        state = self.state
        self.last_eval = state.step
        self.model.eval()
        metrics = dict(self.evaluate(self.model))
        self.model.train()
        self.tracker.log(state.step, {f"eval/{k}": v for k, v in metrics.items()})
        value = float(metrics[self.plan.selection_metric])
        logger.info("step %d eval: %s", state.step, _summary(metrics))
        if _improved(value, state.best_metric, self.plan.higher_is_better):
            state.best_metric, state.best_step, state.evals_without_improvement = value, state.step, 0
            if self.on_best is not None:
                self.on_best(self.accelerator.unwrap_model(self.model), metrics, state.step)
        else:
            state.evals_without_improvement += 1
        if self.on_eval is not None and self.on_eval(metrics, state.step):
            return "pruned"
        patience = self.cfg.early_stopping_patience
        stop = patience is not None and state.evals_without_improvement >= patience
        return "early_stopping" if stop else "completed"

    def checkpoint(self) -> None:
        """A resumable checkpoint of this step, unless one was just written."""
        if self.last_saved != self.state.step:
            self.state.log_window = self.window.state(self.accelerator)
            self.state.world_size = self.accelerator.num_processes
            self.tracker.flush()
            self.result.checkpoint = save_checkpoint(
                self.accelerator,
                self.cfg.output_dir,
                self.state,
                self.cfg.save_total_limit,
                self.run_states,
                self.unwrapped,
            )
            self.last_saved = self.state.step

    def finish(self) -> TrainResult:
        """Close the tracker and report how the run ended."""
        self.tracker.close()
        result, state = self.result, self.state
        result.step, result.best_metric, result.best_step = state.step, state.best_metric, state.best_step
        return result


def train(
    plan: Plan,
    inputs: TrainInputs,
    accelerator: Accelerator,
    evaluate: Evaluate | None = None,
    on_best: OnBest | None = None,
    resume_from: Path | None = None,
    stop: StopFlag | None = None,
    on_eval: OnEval | None = None,
) -> TrainResult:
    """Train ``inputs.adapted.model`` as ``plan`` says; see module docstring for the contract.

    ``evaluate(model) -> metrics`` runs at each evaluation point; ``on_best(model, metrics, step)`` is
    called when ``train.metric_for_best_model`` improves. Both arrive from the caller (``workflows``)
    so this layer never imports evaluation or saving. A caller that passes its own ``stop`` can keep
    it installed past the loop, so a signal during its own finishing work does not kill the process.
    ``on_eval(metrics, step)`` runs after each evaluation (and best/ update); True stops the run there,
    checkpointed, as ``pruned``. It runs in every process and must answer alike in all of them.
    """
    run = TrainingRun(plan, inputs, accelerator, evaluate, on_best, resume_from, on_eval)
    stop = stop or StopFlag()
    run.model.train()
    with stop.installed(), _progress(accelerator.is_main_process) as progress:
        bar = progress.add_task(
            "train", total=run.total_steps, completed=run.state.step, loss=float("nan"), lr=0.0, speed=0.0
        )
        while run.state.step < run.total_steps and run.result.stopped == "completed":
            groups = run.epoch_groups()
            for group in groups[run.state.step_in_epoch :]:
                step_start = time.perf_counter()
                run.optimizer_step(group)
                run.log(step_start, progress, bar)
                if run.after_step(len(groups), stop):
                    break
    return run.finish()


def _summary(metrics: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
