"""DARTS-ADA (RobustDARTS, Zela et al. 2020): when DARTS-ES decides that the curvature has
grown, do not stop; roll the search back to the epoch whose genotype DARTS-ES would return,
multiply w's weight decay by ``ada_factor`` and search on to the last epoch. Each later
decision does the same, until the weight decay reaches ``ada_max_weight_decay``; from then on
no decision is taken (the ratios are still logged). The search returns its last epoch's genotype.

What R-DARTS' ``train_search.py`` (``--early_stop 3``) does, and so what this does: the
rolled-back state is the end-of-epoch checkpoint of that epoch (weights, optimiser states,
α, the eigenvalues measured up to it, DARTS-ES' tracker with them), the learning-rate curve
goes on from that epoch, and the weight decay applies from the next step on. Defaults: factor
3 and maximum 3e-4·3⁴ = 0.0243, so the DARTS-space search (3e-4) has four raises.

How: every measured epoch from which a genotype can be returned keeps its checkpoint in
``ada/epoch-NNN.pt`` (a hard link to ``checkpoint.pt``: no copy); a rollback makes that state,
with the raised weight decay and the rollback recorded, the run's checkpoint, moves the
abandoned epochs' records from ``metrics.jsonl`` to ``ada-abandoned.jsonl`` and the search
resumes from it, as a killed search resumes. Choices (docs/methods.md): the rolled-back
search also restores the random stream and the data order of that epoch (R-DARTS draws anew);
the unrolled hypergradient's virtual step uses the raised weight decay (R-DARTS' keeps the
previous round's).
"""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from . import checkpoint as ckpt
from .rundir import RunDir

__all__ = ["ABANDONED", "SNAPSHOTS", "at_max", "finish", "keep_snapshot", "needs_snapshot",
           "raised", "roll_back"]

SNAPSHOTS = "ada"                       # ada/epoch-NNN.pt: states a rollback may return to
ABANDONED = "ada-abandoned.jsonl"       # the records of the epochs a rollback abandoned


def raised(weight_decay: float, schedule) -> float:
    """The weight decay after one more DARTS-ADA decision (capped at the maximum)."""
    return min(weight_decay * schedule.ada_factor, schedule.ada_max_weight_decay)


def at_max(weight_decay: float, schedule) -> bool:
    """Whether DARTS-ADA has no raise left (the last round runs to the end)."""
    return math.isclose(weight_decay, schedule.ada_max_weight_decay, rel_tol=1e-9) or \
        weight_decay > schedule.ada_max_weight_decay


def _snapshot(run: RunDir, epoch: int) -> Path:
    return run.path / SNAPSHOTS / f"epoch-{epoch:03d}.pt"


def needs_snapshot(s) -> bool:
    """Whether DARTS-ADA may roll back to the end of ``s.epoch``: its curvature was measured,
    its genotype may be returned and a raise is left."""
    from .loop import _es_start
    return (s.schedule.early_stop == "ada" and s.es_acts() and s.in_epoch is None
            and bool(s.curvature) and s.curvature[-1]["epoch"] == s.epoch >= _es_start(s))


def keep_snapshot(run: RunDir, epoch: int, only_if_missing: bool = False) -> None:
    """Keep the checkpoint saved after ``epoch`` as a state to roll back to. It is linked,
    not copied (checkpoints are replaced by rename, so the link keeps this one's content).
    ``only_if_missing``: on a resume, make the one a kill may have kept from being made."""
    target = _snapshot(run, epoch)
    if only_if_missing and target.is_file():
        return
    target.parent.mkdir(exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(run.checkpoint_path, tmp)
    except OSError:                                  # a file system without hard links
        shutil.copyfile(run.checkpoint_path, tmp)
    os.replace(tmp, target)


def _prune(run: RunDir, after: int | None) -> None:
    """Drop the snapshots of epochs after ``after`` (an abandoned trajectory), or all (None)."""
    folder = run.path / SNAPSHOTS
    if after is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for p in folder.glob("epoch-*.pt"):
        epoch = p.stem.removeprefix("epoch-")
        if epoch.isdigit() and int(epoch) > after:
            p.unlink(missing_ok=True)


def roll_back(s, run: RunDir) -> dict:
    """Carry out ``s.ada_pending`` (a DARTS-ES decision): the state of the epoch it names, with
    w's weight decay raised and the rollback recorded, becomes the run's checkpoint and is
    returned for the search to resume from. A kill at any point leaves a checkpoint that
    resumes to the same place (the decision's, which rolls back again, or the new one)."""
    decision = s.ada_pending
    epoch = decision["genotype_epoch"]
    path = _snapshot(run, epoch)
    if not path.is_file():
        from .loop import SearchError
        raise SearchError(f"DARTS-ADA rolls back to epoch {epoch}, but its checkpoint {path} "
                          f"is gone")
    state = ckpt.load(path)
    wd = raised(s.w_weight_decay, s.schedule)
    state.update(w_weight_decay=wd, ada_pending=None, early_stopped=s.early_stopped,
                 rollbacks=[*s.rollbacks, {**decision, "w_weight_decay": wd}],
                 elapsed=s.elapsed)                 # the abandoned epochs took time too
    round_ = len(s.rollbacks)                       # the trajectory being abandoned
    gone = run.read_metrics(ABANDONED)
    done = {(r.get("ada_round"), r.get("epoch")) for r in gone}
    gone += [{**r, "ada_round": round_} for r in run.read_metrics()
             if r.get("epoch", 0) > epoch and (round_, r.get("epoch")) not in done]
    run.write_metrics(gone, ABANDONED)              # whole and atomic: a kill cuts no line
    ckpt.save(state, run.checkpoint_path)
    _prune(run, None if at_max(wd, s.schedule) else epoch)
    return state


def finish(run: RunDir) -> None:
    """A finished search needs no state to roll back to."""
    _prune(run, None)
