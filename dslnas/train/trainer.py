"""Training a genotype's network from scratch: the evaluation phase after a search.

``train(...)`` trains :func:`~dslnas.supernet.network.build_child`'s network of a genotype with a
:class:`~dslnas.train.recipes.Recipe` and tests it after every epoch, writing into a
:class:`~dslnas.search.rundir.RunDir` (config.json, metrics.jsonl, tb/, checkpoint.pt, and at
the end model.pt and summary.json).

Written for the GPU first, like the search: the images live on the device and are cropped,
flipped and cut out there (``DeviceBatches``); SGD runs fused on CUDA; the loss and accuracy
sums stay device tensors read once per epoch (no host sync per step); channels-last and
``torch.compile`` of the whole network are options (compiling is on by default on CUDA; the
drop-path probability is a buffer, so raising it each epoch does not re-trace).

A checkpoint is written atomically at the end of every epoch, every ``checkpoint_every``
seconds inside one and when ``should_stop`` says so; a resume continues from that step with
the same batches and random draws.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Callable

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from ..genotype import to_dict
from ..search import checkpoint as ckpt
from ..search.loader import DeviceBatches, EvalBatches
from ..search.loop import _deterministic_pooling, _determinism, _optimizer, seed_everything
from ..search.rundir import RunDir
from ..supernet.network import build_child, count_parameters
from .recipes import Recipe

__all__ = ["Trainer", "TrainError", "TrainResult", "cosine_lr", "train", "epoch_line"]

FORMAT = "dslnas-train"
PRECISIONS = ("fp32", "bf16")


class TrainError(RuntimeError):
    """Training cannot go on (it diverged)."""


class _Stopped(Exception):
    pass


def cosine_lr(recipe: Recipe, epoch: int) -> float:
    """The learning rate of epoch ``epoch`` (0-based): cosine from ``lr`` to ``lr_min``, set
    once per epoch, as DARTS and AutoDL (NB201) do. Epoch 0 trains at ``lr`` (DARTS' code steps
    its scheduler before the first epoch under PyTorch >= 1.1 and so skips it;
    docs/training.md)."""
    return recipe.lr_min + 0.5 * (recipe.lr - recipe.lr_min) * (
        1.0 + math.cos(math.pi * epoch / recipe.epochs))


class Trainer:
    """The network of ``genotype`` in the space ``ir`` (built at the recipe's size by the
    caller), its optimiser, and one epoch's metric sums."""

    def __init__(self, ir, genotype, recipe: Recipe, *, device: str | torch.device = "cpu",
                 seed: int = 0, deterministic: bool = False, channels_last: bool = False,
                 compile_model: bool = False, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.recipe = recipe
        self.device = torch.device(device)
        self.autocast = precision == "bf16"     # weights, gradients and SGD stay fp32
        seed_everything(seed, deterministic)
        model = build_child(ir, genotype, auxiliary=recipe.auxiliary > 0)
        if deterministic:
            _deterministic_pooling(model)
        model.to(self.device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.params = list(model.parameters())
        # DARTS decays every weight, BN's included
        self.optimizer = _optimizer(torch.optim.SGD, self.params, self.device, dict(
            lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay))
        # static shapes: the last partial batch and eval get graphs of their own rather than
        # turning every later step into a dynamic-shape graph
        self.forward = torch.compile(model, dynamic=False) if compile_model else model
        self.epoch = 0              # epochs done
        self.elapsed = 0.0          # seconds of training and testing, over all sessions
        self._sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss·n, correct, n

    @property
    def parameters_count(self) -> int:
        """Weights without the auxiliary head (what DARTS reports as the model size)."""
        head = self.model.aux_head
        return count_parameters(self.params) - (count_parameters(head.parameters()) if head else 0)

    # ---- one epoch ------------------------------------------------------------------------
    def begin_epoch(self) -> tuple[float, float]:
        """Set the epoch's learning rate and drop-path probability; return both."""
        lr = cosine_lr(self.recipe, self.epoch)
        for group in self.optimizer.param_groups:       # a host-side float: no device work
            group["lr"] = lr
        drop = self.recipe.drop_path * self.epoch / self.recipe.epochs
        self.model.set_drop_path(drop)
        self.model.train()
        return lr, drop

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with self._autocast():
            out = self.forward(x)
            logits, aux = out if isinstance(out, tuple) else (out, None)
            loss = F.cross_entropy(logits, y)
            total = loss if aux is None else \
                loss + self.recipe.auxiliary * F.cross_entropy(aux, y)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.recipe.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.params, self.recipe.grad_clip)
        self.optimizer.step()
        with torch.no_grad():       # the main head's loss (DARTS' log adds 0.4 * aux)
            self._sums[0] += loss.detach() * y.numel()
            self._sums[1] += (logits.argmax(1) == y).sum()
            self._sums[2] += y.numel()

    def train_metrics(self) -> dict[str, float]:
        """The epoch's mean loss and accuracy (%), one host read; resets the sums."""
        loss_sum, correct, n = self._sums.tolist()
        self._sums.zero_()
        return {"train_loss": loss_sum / max(n, 1), "train_acc": 100.0 * correct / max(n, 1)}

    @torch.no_grad()
    def evaluate(self, batches: EvalBatches) -> dict[str, float]:
        """Loss, top-1 and top-5 accuracy (%) on ``batches``, in eval mode (no drop-path, no
        auxiliary head, BN running statistics)."""
        self.model.eval()
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        for x, y in batches:
            with self._autocast():
                logits = self.forward(x).float()
            k = min(5, logits.shape[1])
            top = logits.topk(k, dim=1).indices
            sums[0] += F.cross_entropy(logits, y, reduction="sum")
            sums[1] += (top[:, 0] == y).sum()
            sums[2] += (top == y[:, None]).any(1).sum()
            sums[3] += y.numel()
        loss_sum, top1, top5, n = sums.tolist()
        n = max(n, 1)
        return {"test_loss": loss_sum / n, "test_acc": 100.0 * top1 / n,
                "test_top5": 100.0 * top5 / n}

    # ---- checkpoints ------------------------------------------------------------------------
    def state_dict(self, train_batches: DeviceBatches, in_epoch: dict | None = None) -> dict:
        state = {
            "format": FORMAT,
            "epoch": self.epoch,
            "epochs": self.recipe.epochs,
            "elapsed": self.elapsed,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data": train_batches.state_dict(),
            "rng": ckpt.rng_state(),
        }
        if in_epoch is not None:
            state["in_epoch"] = {"iterations": int(in_epoch["iterations"]),
                                 "seconds": float(in_epoch["seconds"]),
                                 "sums": self._sums.cpu()}
        return state

    def load_state_dict(self, state: dict, train_batches: DeviceBatches,
                        where: str = "checkpoint") -> dict | None:
        """Restore a checkpoint; return its ``in_epoch`` entry (a save inside an epoch)."""
        ckpt.require(state, ("format", "epoch", "model", "optimizer", "data", "rng"), where)
        if state["format"] != FORMAT:
            raise ckpt.CheckpointError(f"{where} is not a training checkpoint")
        in_epoch = state.get("in_epoch")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            train_batches.load_state_dict(state["data"])
            if in_epoch is not None:
                self._sums.copy_(in_epoch["sums"])
                in_epoch = {"iterations": int(in_epoch["iterations"]),
                            "seconds": float(in_epoch["seconds"])}
        except (RuntimeError, KeyError, ValueError, TypeError) as e:
            raise ckpt.CheckpointError(f"{where} does not match this run: {e}") from None
        self.epoch = int(state["epoch"])
        self.elapsed = float(state.get("elapsed", 0.0))
        ckpt.set_rng_state(state["rng"])
        return in_epoch


@attrs.define
class TrainResult:
    epochs: int
    finished: bool
    test_acc: float | None
    history: list
    seconds: float
    parameters: int
    interrupted: str | None = None


def _fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


def epoch_line(rec: dict) -> str:
    return (f"epoch {rec['epoch']}/{rec['epochs']} | train {_fmt(rec['train_loss'])} / "
            f"{_fmt(rec['train_acc'], '.1f')}% | test {_fmt(rec.get('test_loss'))} / "
            f"{_fmt(rec.get('test_acc'), '.2f')}% | lr {rec['lr']:.5f} | "
            f"drop-path {rec['drop_path']:.3f} | {rec['seconds']:.1f}s")


def train(ir, genotype, recipe: Recipe, train_batches: DeviceBatches, test_batches: EvalBatches,
          run: RunDir, *, device: str | torch.device = "cpu", seed: int = 0,
          deterministic: bool = False, channels_last: bool = False, precision: str = "fp32",
          compile_model: bool | None = None, resume_state: dict | None = None,
          progress: bool = True, stop_after: int | None = None, eval_every: int = 1,
          checkpoint_every: float | None = None,
          should_stop: Callable[[], str | None] | None = None,
          log: Callable[[str], None] | None = None,
          after_iteration: Callable[[], None] | None = None) -> TrainResult:
    """Train ``genotype``'s network of ``ir`` with ``recipe``; see the module doc.

    ``compile_model`` None: compiled on CUDA unless ``deterministic``. ``precision``:
    ``"bf16"`` runs forward and backward under bfloat16 autocast. ``eval_every``: test
    every that many epochs (and always after the last). ``stop_after``: stop once this many
    epochs are done, as if interrupted. ``after_iteration``: called after every step (``Lockstep``
    hands the turn on there). The other arguments are ``search()``'s."""
    device = torch.device(device)
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    if compile_model is None:
        compile_model = device.type == "cuda" and not deterministic
    with _determinism(deterministic, device):
        t = Trainer(ir, genotype, recipe, device=device, seed=seed, deterministic=deterministic,
                    channels_last=channels_last, compile_model=compile_model,
                    precision=precision)
        history: list[dict] = []
        clock = {"done": 0, "seconds": 0.0, "saved": time.monotonic()}
        if resume_state is not None:
            in_epoch = t.load_state_dict(resume_state, train_batches, str(run.checkpoint_path))
            history = run.truncate_metrics(t.epoch)
            if in_epoch is not None:
                clock["done"], clock["seconds"] = in_epoch["iterations"], in_epoch["seconds"]
        epochs = recipe.epochs
        last = epochs if stop_after is None else min(epochs, max(stop_after, t.epoch))
        bar = None
        if progress and sys.stderr.isatty() and t.epoch < last:
            from tqdm.auto import tqdm
            bar = tqdm(total=(last - t.epoch) * len(train_batches) - clock["done"], unit="step",
                       dynamic_ncols=True, file=sys.stderr, leave=False)
        write = bar.write if bar is not None else log

        def save_inside(t0: float) -> None:
            seconds = clock["seconds"] + time.perf_counter() - t0
            ckpt.save(t.state_dict(train_batches, {"iterations": clock["done"],
                                                   "seconds": seconds}), run.checkpoint_path)
            clock["saved"] = time.monotonic()

        interrupted = None
        try:
            while t.epoch < last:
                t0 = time.perf_counter()
                lr, drop = t.begin_epoch()
                steps = len(train_batches)
                if bar is not None:
                    bar.set_description(f"epoch {t.epoch + 1}/{epochs}")
                try:
                    for x, y in train_batches:
                        t.step(x, y)
                        if after_iteration is not None:
                            after_iteration()
                        clock["done"] += 1
                        if bar is not None:
                            bar.update(1)
                        if clock["done"] >= steps:
                            break               # the epoch's end saves (and stops) below
                        why = should_stop() if should_stop is not None else None
                        if why is not None or (checkpoint_every and time.monotonic()
                                               - clock["saved"] >= checkpoint_every):
                            save_inside(t0)
                            if why is not None:
                                raise _Stopped(why)
                except _Stopped as stop:
                    interrupted = str(stop)
                    write(f"stopped ({interrupted}) in epoch {t.epoch + 1} after step "
                          f"{clock['done']} of {steps}; checkpoint saved")
                    break
                t.epoch += 1
                rec = {"epoch": t.epoch, "epochs": epochs, **t.train_metrics(), "lr": lr,
                       "drop_path": drop}
                if not math.isfinite(rec["train_loss"]):
                    raise TrainError(f"the training loss is {rec['train_loss']} in epoch "
                                     f"{t.epoch}: training diverged (try a lower --set lr=...)")
                if t.epoch % eval_every == 0 or t.epoch == epochs:
                    rec.update(t.evaluate(test_batches))
                seconds = clock["seconds"] + time.perf_counter() - t0
                t.elapsed += seconds
                rec["seconds"], rec["elapsed"] = seconds, t.elapsed
                run.append_metrics(rec)
                history.append(rec)
                run.scalars(t.epoch, {"loss/train": rec["train_loss"],
                                      "acc/train": rec["train_acc"],
                                      "loss/test": rec.get("test_loss"),
                                      "acc/test": rec.get("test_acc"), "lr": lr,
                                      "drop_path": drop, "time/epoch_s": seconds})
                ckpt.save(t.state_dict(train_batches), run.checkpoint_path)
                clock.update(done=0, seconds=0.0, saved=time.monotonic())
                write(epoch_line(rec))
                interrupted = should_stop() if should_stop is not None else None
                if interrupted is not None and t.epoch < last:
                    write(f"stopped ({interrupted}) after epoch {t.epoch}; checkpoint saved")
                    break
        finally:
            if bar is not None:
                bar.close()
        finished = t.epoch >= epochs
        final = next((r.get("test_acc") for r in reversed(history) if "test_acc" in r), None)
        if finished:
            ckpt.save({"format": "dslnas-model", "model": t.model.state_dict(),
                       "genotype": to_dict(genotype),
                       "recipe": recipe.to_dict()}, run.path / "model.pt")
        return TrainResult(epochs=t.epoch, finished=finished, test_acc=final, history=history,
                           seconds=t.elapsed, parameters=t.parameters_count,
                           interrupted=None if finished else interrupted)
