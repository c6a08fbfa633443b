#!/usr/bin/env python3
"""NAS-Bench-201 reproduction table, protocol A: run the searches, record them, report the table.

Protocol A: every method searches ``spaces/nb201.nas`` on CIFAR-10 with its full default NB201
schedule (``dslnas methods``), seeds 0 1 2; the final architecture is looked up in the NB201
table on CIFAR-10, CIFAR-100 and ImageNet16-120 (200-epoch test accuracy).

Subcommands::

    run     run the (method, seed) searches, K at a time, until done or out of --budget; a
            stopped search keeps its last per-epoch checkpoint and a later ``run`` on the same
            disk resumes it; ``--collect DIR`` copies each search's small files to DIR/<job>/
    record  one small JSON per finished run (no accuracies) for results/nb201/ in the repo
    report  markdown (or --json) table: mean ± std per method beside the published numbers

Layout: ``RUNS/<method>-s<seed>/`` is the search's run directory (config.json, metrics.jsonl,
checkpoint.pt, genotype.*, tb/) plus ``reproduce.json`` (this script's notes per session: K,
GPU, commit, command); ``RUNS/<method>-s<seed>.log`` is the search's output, all sessions
(``RUNS/<method>-s0-1-2.log`` for the process of seeds 0, 1 and 2 in lockstep).

Device recipe (the ``run`` tool: at most 10 minutes a command, 64 MiB carried in, at most 8 files
of at most 16 MiB coming back from $OUT, at most 2 folder levels down; the disk is bare at every
call, so whatever a later call needs comes back through $OUT and is carried in again)
-------------------------------------------------------------------------------------------------
Here, once (git-ignored folders; derived data is never committed)::

    mkdir -p .device-data .device-cache && cp ../shared/data/nb201-test-accuracy.csv \
        ../shared/tools/cifar10_from_jpeg.py .device-data/ &&
    python benchmarks/cifar10_compact.py ../shared/data/cifar10-jpeg.npz \
        .device-data/cifar10-jpeg.npz        # 18.4 MB instead of 55.8: same arrays, deflated

Each call installs the wheels (``.whl/``: lark and graphviz, which the device image lacks),
rebuilds CIFAR-10 from its JPEG copy (6 s), runs the queue, and packs what comes back into one
tar in 15 MiB parts (the compile cache alone is 39.9 MB on an H200, over $OUT's 16 MiB a file,
and a call may bring back more than $OUT's 8 files)::

    run(carry=[".whl", ".device-data", ".device-cache", "runs/nb201"], timeout_s=600, command=
        "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade "
        "--target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 && "
        "python3 .device-data/cifar10_from_jpeg.py .device-data/cifar10-jpeg.npz "
        "data/cifar-10-batches-py && mkdir -p $OUT/c && "
        "python3 benchmarks/reproduce_nb201.py run --runs runs/nb201 --data data "
        "--benchmark .device-data/nb201-test-accuracy.csv --methods M --seeds S [--lockstep] "
        "--budget 550 --margin 25 --device cuda --commit HASH --collect $OUT/c "
        "--collect-checkpoints --compile-cache .device-cache/compile-cache.tgz 2>&1 | "
        "tee $OUT/log.txt; cp runs/nb201/*.log $OUT/c/; "
        "cd $OUT && tar cf - c | split -b 15M - runs.tar.part && rm -rf c")

then, here, ``cat FILES_AT/runs.tar.part* | tar xf - -C DIR`` and copy each
``DIR/c/<method>-s<seed>/`` into ``runs/nb201/`` (an unfinished search resumes from its
checkpoint in the next call; ``run`` points its config at the new checkout) and
``DIR/c/compile-cache.tgz`` into ``.device-cache/``. HASH is ``git rev-parse HEAD`` here (the
device's copy of the tree has no .git). A machine stays warm 30 s after a call and keeps its
disk: a second call made at once finds ``runs/nb201`` (compile cache included) still there, so
it carries only ``.whl``, ``.device-data`` and ``.device-cache`` (a carried ``runs/nb201``
would replace the one on the device).

* Budget: --margin seconds before --budget, counted from the script's start, the searches get
  SIGTERM: each finishes its current step, saves a checkpoint there (inside the epoch) and stops
  (SIGKILL after 15 s, keeping the last checkpoint); the rest of the call is for the install, the
  data and the copies. So even an epoch longer than a call (idarts-ift's eager inner loop)
  advances from call to call.
* Compile cache: a cold NB201 search spends minutes in torch.compile before its first epoch
  (H200: the first epoch took 214 s, later ones 8.1 s); with TorchInductor's cache warm (keyed
  by the code, the torch version and the GPU) the first epoch took 20-23 s. A cache made on
  another GPU model or torch version is simply not hit.
* What fits in the 64 MiB carried in: the working tree, the wheels and the data ≈ 21 MB; then
  either the compile cache (39.9 MB) or up to three unfinished searches' checkpoints (13.9 MB
  each), not both.
* ``--lockstep``: the queued seeds of a method run in one process (``dslnas search --seeds``,
  one CUDA stream each; docs/architecture.md); ``--parallel`` then counts such processes. What
  it gains on a GPU is measured by ``benchmarks/lockstep_speed.py``.

Resuming also works where the disk stays (a workstation): call ``run`` again with the same
--runs.

Then, here (FILES_AT: the reply's files_at folder; the table is never committed)::

    python3 benchmarks/reproduce_nb201.py record --runs FILES_AT --out results/nb201
    python3 benchmarks/reproduce_nb201.py report --runs results/nb201 \\
        --benchmark .device-data/nb201-test-accuracy.csv

The records hold genotypes, timings and commands, no accuracies: ``report`` looks them up in the
table (``report --runs FILES_AT`` also lists the unfinished searches).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))            # dslnas from this checkout (not installed on the device)
from dslnas.runs import mean_std  # noqa: E402
SPACE = REPO / "spaces" / "nb201.nas"
SIDECAR = "reproduce.json"
CHECKPOINT = "checkpoint.pt"
RECORD_FORMAT = "dslnas-nb201-record/1"
SEEDS = (0, 1, 2)
KILL_GRACE = 15.0                        # seconds between SIGTERM and SIGKILL: a search
                                         # finishes its step and saves a checkpoint
DATASETS = ("cifar10", "cifar100", "ImageNet16-120")   # as asked of BenchmarkTable.dataset
# what a search writes into its run directory (anything else makes `run` refuse to clear it)
RUN_FILES = {"config.json", "metrics.jsonl", "tb", "summary.json", "genotype.json",
             "genotype.txt", "genotype.svg", "genotype.dot", CHECKPOINT, SIDECAR, ".lock"}
# what --collect copies (genotype.json only exists once the search finished)
COLLECT_FILES = ("metrics.jsonl", "config.json", SIDECAR, "genotype.json")
OUT_MAX_FILES = 8                        # the most files $OUT brings back
OUT_MAX_BYTES = 16 * 2**20               # the largest file $OUT brings back
COMPILE_CACHE = ".compile-cache"         # TorchInductor's cache, in the runs folder

_T0 = time.monotonic()                   # --budget counts from the script's start

# ---- published NB201 results -----------------------------------------------------------------
# Source: ../shared/reference/methods.md (the project's implementation reference of the
# methods), its NB201 result sections: §1.5 (the NB201 paper's weight-sharing table: DARTS-V1 and
# DARTS-V2 rows and search seconds, protocol A), §3(d) (PC-DARTS as run by DrNAS, protocol B),
# §4(d)/(e) (DrNAS, protocol B; issue #8: from the non-progressive script), §5(d) (RF-DARTS:
# PapersWithCode means, ImageNet16-120 cut off), §6(d) (iDARTS-Wang: none found), §7(b)/(d)
# (iDARTS-Zhang, protocol A; 86,430.6 s is one 30-epoch run in the official log), §8(d)
# (Amended-DARTS: none known). Test accuracy %, (mean, std); std None = not given.
# Protocol A = search on CIFAR-10, look the same architecture up on all three datasets (what this
# script does); B = one search per dataset (not directly comparable).
PUBLISHED: dict[str, dict] = {
    "darts": {"acc": {"cifar10": (54.30, 0.00), "cifar100": (15.61, 0.00),
                      "ImageNet16-120": (16.32, 0.00)},
              "protocol": "A", "search_s": 10889.87, "source": "NB201 paper, DARTS-V1"},
    "darts-2nd": {"acc": {"cifar10": (54.30, 0.00), "cifar100": (15.61, 0.00),
                          "ImageNet16-120": (16.32, 0.00)},
                  "protocol": "A", "search_s": 29901.67, "source": "NB201 paper, DARTS-V2"},
    "pc-darts": {"acc": {"cifar10": (93.41, 0.30), "cifar100": (67.48, 0.89),
                         "ImageNet16-120": (41.31, 0.22)},
                 "protocol": "B", "search_s": None, "source": "DrNAS paper's table"},
    "drnas": {"acc": {"cifar10": (94.36, 0.00), "cifar100": (73.51, 0.00),
                      "ImageNet16-120": (46.34, 0.00)},
              "protocol": "B", "search_s": None, "source": "DrNAS paper"},
    "rf-darts": {"acc": {"cifar10": (94.27, None), "cifar100": (72.94, None),
                         "ImageNet16-120": None},
                 "protocol": "?", "search_s": None,
                 "source": "RF-DARTS, PapersWithCode means (best C10 94.36)"},
    "idarts-ift": {"acc": {"cifar10": (93.58, 0.32), "cifar100": (70.83, 0.48),
                           "ImageNet16-120": (40.89, 0.68)},
                   "protocol": "A", "search_s": 86430.6,
                   "source": "iDARTS (Zhang et al.); seconds: one run, official log"},
}
NOT_PUBLISHED: dict[str, str] = {
    "drnas-progressive": "none: DrNAS' NB201 numbers come from the non-progressive script",
    "rf-pcdarts": "none found",
    "idarts-nn": "none found",
    "amended-darts": "none known",
}


# ---- small helpers ---------------------------------------------------------------------------

def job_name(method: str, seed: int) -> str:
    return f"{method}-s{seed}"


def all_methods() -> list[str]:
    """The method names, in the order of ``dslnas methods``."""
    from dslnas.methods.spec import METHODS
    return list(METHODS)


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, data) -> None:
    """Atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def read_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl records, as the search reads them (a line cut by a kill ends the list)."""
    from dslnas.search.rundir import RunDir
    try:
        return RunDir(run_dir, tensorboard=False).read_metrics()
    except OSError:
        return []


def repo_arg(path: str | Path) -> str:
    """A path argument for a child running in the repo root: relative to it when inside it."""
    p = Path(path).expanduser().absolute()
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(p)


def shown_command(cmd: list[str]) -> str:
    """The command as one shell line, with ``python`` for this interpreter's path."""
    return shlex.join(["python", *cmd[1:]])


def device_name(device: str) -> str | None:
    """The GPU model (nvidia-smi) for cuda, the processor's model for cpu; None if unknown."""
    if device == "cpu":
        from dslnas.search.bench import device_name as model
        return model("cpu")
    try:
        p = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    names = p.stdout.strip().splitlines()
    return names[0].strip() if names else None


def git_commit() -> str | None:
    """HEAD of this checkout (+"-dirty" with tracked changes); None without git."""
    def git(*a: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True,
                              timeout=20)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


# ---- the state of one run directory ----------------------------------------------------------

@dataclass
class RunState:
    status: str                 # finished | partial | empty (nothing to resume) | absent
    epochs: int = 0             # epochs done, by metrics.jsonl
    total: int | None = None    # the schedule's epochs

    def describe(self) -> str:
        if self.status not in ("finished", "partial"):
            return self.status
        done = ", finished" if self.status == "finished" else ""
        return f"{self.epochs}/{self.total or '?'} epochs{done}"


def run_state(run_dir: Path) -> RunState:
    """Finished: genotype.json exists (the search writes it only at the end) and metrics.jsonl
    reaches the schedule's last epoch; no checkpoint is needed (a --collect folder has none).
    Partial: a checkpoint exists (resumable). Empty: anything else; it starts from scratch.

    In the instant between an epoch's metrics line and its checkpoint the epochs count one more
    than the checkpoint holds (the resume truncates the line)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return RunState("absent")
    config = read_json(run_dir / "config.json")
    try:
        total = int(config["method"]["schedule"]["epochs"])
    except (KeyError, TypeError, ValueError):
        total = None
    metrics = read_metrics(run_dir)
    epochs = int(metrics[-1].get("epoch", len(metrics))) if metrics else 0
    if (run_dir / "genotype.json").is_file() and (total is None or epochs >= total):
        return RunState("finished", epochs, total)
    if (run_dir / CHECKPOINT).is_file():
        return RunState("partial", epochs, total)
    return RunState("empty", epochs, total)


def read_sidecar(run_dir: Path) -> dict:
    data = read_json(Path(run_dir) / SIDECAR)
    return data if isinstance(data, dict) else {"sessions": []}


def clear_for_fresh_start(run_dir: Path) -> None:
    """A run folder without a checkpoint holds nothing to resume: remove it, so that ``dslnas
    search --out`` finds no folder. Refuses folders with files a search does not write."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return
    strange = [p.name for p in run_dir.iterdir()
               if p.name not in RUN_FILES and not (p.name.startswith(".") and
                                                   p.name.endswith(".tmp"))]
    if strange:
        raise RuntimeError(f"{run_dir} has no checkpoint but holds files a search does not "
                           f"write ({', '.join(sorted(strange))}); move them away")
    shutil.rmtree(run_dir)


def repoint_config(run_dir: Path, benchmark: str | Path) -> None:
    """A run carried to another checkout (the next device call) stores the absolute paths of
    the machine that started it: point ``space_file`` at this checkout's space when the stored
    one is gone, and ``benchmark`` at this call's table (``--resume`` loads both; the search
    still checks that the compiled space is the one it started with)."""
    path = Path(run_dir) / "config.json"
    config = read_json(path)
    if not isinstance(config, dict):
        return
    changed = dict(config)
    if not Path(str(config.get("space_file", ""))).is_file():
        changed["space_file"] = str(SPACE)
    if config.get("benchmark") is not None:
        changed["benchmark"] = str(Path(benchmark).resolve())
    if changed != config:
        write_json(path, changed)


def collect_small_files(run_dirs: Iterable[Path], dest: Path,
                        out: Callable[[str], None] = print,
                        checkpoints: bool = False, others: int = 0) -> list[Path]:
    """Copy each run's COLLECT_FILES (never tb/) to ``dest/<run>/``; with ``checkpoints``, an
    unfinished run's checkpoint too, so that a later call can carry the folder in and resume.
    ``others``: files already in ``dest`` that count towards $OUT's limit (the compile cache)."""
    written = []
    for run_dir in map(Path, run_dirs):
        names = [n for n in COLLECT_FILES if (run_dir / n).is_file()]
        if checkpoints and run_state(run_dir).status == "partial":
            names.append(CHECKPOINT)
        if names:
            (dest / run_dir.name).mkdir(parents=True, exist_ok=True)
        for name in names:
            written.append(Path(shutil.copy2(run_dir / name, dest / run_dir.name / name)))
    out(f"collected {len(written)} file(s) into {dest}/")
    if len(written) + others > OUT_MAX_FILES:
        out(f"WARNING: {len(written) + others} files: $OUT brings back at most {OUT_MAX_FILES}; "
            f"queue fewer searches per call")
    return written


def restore_compile_cache(archive: Path, cache_dir: Path,
                          out: Callable[[str], None] = print) -> None:
    """Unpack a compile cache written by ``pack_compile_cache`` into ``cache_dir``. A missing
    archive (the first call of a series) or an unreadable one only means compiling cold."""
    archive = Path(archive)
    if not archive.is_file():
        out(f"compile cache: {archive} not found, compiling cold")
        return
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(cache_dir, filter="data")
    except (OSError, EOFError, tarfile.TarError) as e:
        shutil.rmtree(cache_dir, ignore_errors=True)        # no half-restored cache
        out(f"compile cache: {archive} is unreadable ({type(e).__name__}: {e}), compiling cold")
        return
    out(f"compile cache: restored {archive} ({archive.stat().st_size / 1e6:.1f} MB)")


def pack_compile_cache(cache_dir: Path, archive: Path,
                       out: Callable[[str], None] = print) -> Path | None:
    """Write ``cache_dir``'s contents to the gzipped tar ``archive`` (atomically); None if there
    is no cache or it could not be written (said, never raised: the searches are done)."""
    if not cache_dir.is_dir():
        return None
    tmp = archive.with_name(f".{archive.name}.tmp")
    try:
        archive.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
            for p in sorted(cache_dir.iterdir()):
                tar.add(p, arcname=p.name)
        os.replace(tmp, archive)
    except (OSError, tarfile.TarError) as e:
        tmp.unlink(missing_ok=True)
        out(f"compile cache: could not write {archive} ({type(e).__name__}: {e})")
        return None
    size = archive.stat().st_size
    out(f"compile cache: wrote {archive} ({size / 1e6:.1f} MB)")
    if size > OUT_MAX_BYTES:
        out(f"WARNING: {archive} is over the {OUT_MAX_BYTES // 2**20} MiB that $OUT brings back")
    return archive


# ---- run: the queue --------------------------------------------------------------------------

@dataclass
class Job:
    method: str
    seed: int
    run_dir: Path
    mode: str = ""                         # fresh | resume
    command: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    log_file: object = None
    started: float = 0.0
    started_at: str = ""
    epochs_before: int = 0
    killed: str = ""                       # why this script stopped it ("at the budget")
    outcome: str = ""
    group: list[int] = field(default_factory=list)   # lockstep: the seeds of its process

    @property
    def name(self) -> str:
        return job_name(self.method, self.seed)

    @property
    def log(self) -> Path:
        """The output of the search's process, beside its run folder (which the search must
        create itself); one log for the searches of one lockstep process."""
        seeds = self.group or [self.seed]
        return self.run_dir.with_name(f"{self.method}-s{'-'.join(map(str, seeds))}.log")


def search_command(jobs: Job | list[Job], args) -> list[str]:
    """The child's command line (run in the repo root): one search, or several of one method
    and mode in lockstep (``dslnas search --seeds`` / ``--resume`` of several folders)."""
    jobs = [jobs] if isinstance(jobs, Job) else jobs
    base = [sys.executable, "-m", "dslnas.cli", "search"]
    if jobs[0].mode == "resume":       # the rest comes from the runs' config.json
        return base + ["--resume", *(repo_arg(j.run_dir) for j in jobs),
                       "--data", repo_arg(args.data),
                       "--device", args.device, "--no-progress", "--no-download"]
    job = jobs[0]
    if len(jobs) == 1:
        seeds, out = ["--seed", str(job.seed)], repo_arg(job.run_dir)
    else:
        seeds = ["--seeds", *(str(j.seed) for j in jobs)]
        out = repo_arg(job.run_dir.parent / f"{job.method}-s{{seed}}")
    return base + [repo_arg(SPACE), "--method", job.method, *seeds,
                   "--out", out, "--data", repo_arg(args.data),
                   "--benchmark", repo_arg(args.benchmark), "--device", args.device,
                   "--dataset", args.dataset, "--no-download", "--no-progress",
                   *shlex.split(args.search_args or "")]


def lockstep_groups(jobs: list[Job], lockstep: bool) -> list[list[Job]]:
    """The processes to start, in queue order: one per search, or with ``lockstep`` one per
    method and mode (fresh or resumed) holding all of its searches in the queue."""
    if not lockstep:
        return [[j] for j in jobs]
    groups: dict[tuple[str, str], list[Job]] = {}
    for job in jobs:
        mode = "resume" if run_state(job.run_dir).status == "partial" else "fresh"
        groups.setdefault((job.method, mode), []).append(job)
    return list(groups.values())


class Runner:
    """Runs jobs K at a time under a wall-clock budget. ``hook(runner)`` is called every poll
    (tests use it to move ``kill_at``)."""

    def __init__(self, jobs: list[Job], args, out: Callable[[str], None] = print,
                 hook: Callable[["Runner"], None] | None = None, t0: float | None = None):
        self.args, self.out, self.hook = args, out, hook
        self.t0 = time.monotonic() if t0 is None else t0
        self.kill_at = (self.t0 + args.budget - args.margin) if args.budget is not None else None
        self.pending = lockstep_groups(jobs, args.lockstep)   # one process each
        self.running: list[Job] = []
        self.failed: list[Job] = []
        self.device_name = device_name(args.device)
        self.commit = args.commit or git_commit()
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        if args.compile_cache:      # TorchInductor keeps FX graphs and Triton kernels there
            self.env["TORCHINDUCTOR_CACHE_DIR"] = str(Path(args.runs).absolute() / COMPILE_CACHE)

    def clock(self) -> str:
        return f"[{time.monotonic() - self.t0:6.0f}s]"

    def time_left(self) -> float:
        return math.inf if self.kill_at is None else self.kill_at - time.monotonic()

    def processes(self) -> int:
        return len({id(j.proc) for j in self.running})

    def start(self, group: list[Job]) -> None:
        """Start one process for the searches of ``group`` (all fresh or all resumed)."""
        states = [run_state(job.run_dir) for job in group]
        seeds = [job.seed for job in group]
        log_file = None
        try:
            for job, state in zip(group, states):
                job.group = seeds if len(group) > 1 else []
                if state.status == "partial":
                    job.mode = "resume"
                    job.epochs_before = state.epochs
                    repoint_config(job.run_dir, self.args.benchmark)
                    for p in job.run_dir.glob(f".{CHECKPOINT}.*.tmp"):   # a kill mid-save
                        p.unlink()
                else:
                    job.mode = "fresh"
                    clear_for_fresh_start(job.run_dir)
            command = search_command(group, self.args)
            log_file = open(group[0].log, "ab")
            started_at = time.strftime("%Y-%m-%dT%H:%M:%S")
            log_file.write(
                f"\n=== reproduce_nb201 {started_at}: {group[0].mode}, K={self.args.parallel}"
                f"{', lockstep' if len(group) > 1 else ''}, device {self.args.device}: "
                f"{shown_command(command)}\n".encode())
            log_file.flush()
            started = time.monotonic()
            proc = subprocess.Popen(command, cwd=REPO, stdout=log_file,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self.env, process_group=0)
        except (OSError, RuntimeError) as e:
            for job in group:
                job.outcome = "failed"
                self.failed.append(job)
                self.out(f"{self.clock()} {job.name}: FAILED to start: {e}")
            if log_file:
                log_file.close()
            return
        for job, state in zip(group, states):
            job.command, job.log_file, job.proc = command, log_file, proc
            job.started_at, job.started = started_at, started
            what = f"resume at epoch {state.epochs}" if job.mode == "resume" else "fresh"
            together = f", in lockstep with {len(group) - 1} more" if len(group) > 1 else ""
            self.out(f"{self.clock()} {job.name}: start ({what}{together})")
            self.running.append(job)

    def finish(self, job: Job) -> None:
        """Say how the search ended and note the session in its reproduce.json."""
        self.running.remove(job)
        job.log_file.close()
        rc = job.proc.returncode
        wall = time.monotonic() - job.started
        state = run_state(job.run_dir)
        if state.status == "finished":
            job.outcome = "finished"
            m = read_metrics(job.run_dir)
            secs = float(m[-1].get("elapsed", 0.0)) if m else 0.0
            line = (f"finished  {state.describe()}, search {secs:.1f} s "
                    f"({secs / max(1, len(m)):.2f} s/epoch), wall {wall:.0f} s")
        elif job.killed or rc == 0:                 # or dslnas --stop-after
            job.outcome = "stopped"
            why = job.killed or "(exit 0)"
            line = (f"stopped {why}: {state.describe()} done, checkpoint kept"
                    if state.status == "partial" else f"stopped {why}, no checkpoint yet")
        else:
            job.outcome = "failed"
            self.failed.append(job)
            tail = job.log.read_text(errors="replace").splitlines()[-15:]
            line = (f"FAILED (exit {rc}) after {wall:.0f} s, {state.describe()}; "
                    f"end of {job.log}:\n" + "\n".join("    " + t for t in tail))
        self.out(f"{self.clock()} {job.name}: {line}")
        if not (job.run_dir / "config.json").is_file():     # the search made no folder
            return
        side = read_sidecar(job.run_dir)
        side.setdefault("format", "reproduce-nb201-sessions/1")
        if job.mode == "fresh":
            side["search_command"] = shown_command(job.command)
        side.setdefault("sessions", []).append({
            "mode": job.mode, "parallel": self.args.parallel,
            "lockstep": len(job.group) or 1, "device": self.args.device,
            "device_name": self.device_name, "host": platform.node(),
            "commit": self.commit, "started": job.started_at, "wall_s": round(wall, 2),
            "epochs_before": job.epochs_before, "epochs_after": state.epochs, "exit": rc,
            "outcome": job.outcome, "command": shown_command(job.command)})
        write_json(job.run_dir / SIDECAR, side)

    def stop_all(self, why: str = "at the budget") -> None:
        """SIGTERM every running search's process group, SIGKILL what is left KILL_GRACE
        seconds later. The last per-epoch checkpoint (written atomically) survives."""
        for job in self.running:
            job.killed = why
        # once per process: a lockstep process runs several jobs, and a second signal would
        # tell it to stop at once, without the checkpoint of the current step
        for proc in {id(j.proc): j.proc for j in self.running}.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        end = time.monotonic() + KILL_GRACE
        while time.monotonic() < end and any(j.proc.poll() is None for j in self.running):
            time.sleep(0.05)
        for job in list(self.running):
            if job.proc.poll() is None:
                try:
                    os.killpg(job.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                job.proc.wait()
            self.finish(job)

    def loop(self) -> None:
        args = self.args
        while self.pending or self.running:
            if self.hook is not None:
                self.hook(self)
            if self.time_left() <= 0:
                if self.running:
                    self.out(f"{self.clock()} budget reached: stopping "
                             f"{', '.join(j.name for j in self.running)}")
                self.stop_all()
                return
            while self.pending and self.processes() < args.parallel:
                if self.time_left() < args.min_start:
                    self.out(f"{self.clock()} {self.time_left():.0f} s left (< --min-start "
                             f"{args.min_start:g} s): starting no more searches")
                    self.pending = []            # the summary lists them as pending
                else:
                    self.start(self.pending.pop(0))
            for job in list(self.running):
                if job.proc.poll() is not None:
                    self.finish(job)
            if self.running or self.pending:
                time.sleep(args.poll)


def summarize_queue(jobs: list[Job], failed: list[Job]) -> dict[str, list[str]]:
    """finished / partial (epochs) / pending / failed, by the run folders' state now."""
    failed_names = {j.name for j in failed}
    out = {"finished": [], "partial": [], "pending": [], "failed": []}
    for job in jobs:
        st = run_state(job.run_dir)
        if job.name in failed_names:
            out["failed"].append(f"{job.name} ({st.describe()})")
        elif st.status == "finished":
            out["finished"].append(job.name)
        elif st.status == "partial":
            out["partial"].append(f"{job.name} ({st.epochs}/{st.total or '?'})")
        else:
            out["pending"].append(job.name)
    return out


def cmd_run(args, hook: Callable[[Runner], None] | None = None,
            out: Callable[[str], None] | None = None, t0: float | None = None) -> int:
    """``t0``: when the budget started (default now; the script passes its start)."""
    out = out or (lambda s: print(s, flush=True))
    if args.parallel < 1:
        raise SystemExit("error: --parallel must be >= 1")
    if not Path(args.benchmark).is_file():
        raise SystemExit(f"error: --benchmark {args.benchmark}: no such file")
    args.data = Path(args.data).expanduser()
    if not args.data.is_dir():                 # the searches never download
        raise SystemExit(f"error: --data {args.data}: no such folder")
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    # seed-major: every method's seed 0 first
    methods = list(dict.fromkeys(args.methods or all_methods()))
    seeds = list(dict.fromkeys(args.seeds if args.seeds is not None else SEEDS))
    jobs = [Job(m, s, runs / job_name(m, s)) for s in seeds for m in methods]
    todo = []
    for job in jobs:
        st = run_state(job.run_dir)
        if st.status == "finished":
            out(f"skip {job.name}: finished ({st.describe()})")
        else:
            todo.append(job)
    if args.dry_run:
        for group in lockstep_groups(todo, args.lockstep):
            for job in group:
                job.mode = "resume" if run_state(job.run_dir).status == "partial" else "fresh"
            out(f"would {group[0].mode}: {shown_command(search_command(group, args))}")
        return 0
    out(f"{len(todo)} of {len(jobs)} searches to run, {args.parallel} at a time"
        + (" (processes, each running a method's seeds in lockstep)" if args.lockstep else "")
        + (f", budget {args.budget:g} s (stop at {args.budget - args.margin:g} s)"
           if args.budget is not None else ""))
    cache_dir = runs / COMPILE_CACHE
    if args.compile_cache:
        restore_compile_cache(Path(args.compile_cache), cache_dir, out=out)
    runner = Runner(todo, args, out=out, hook=hook, t0=t0)

    def on_sigterm(signum, frame):             # e.g. the device's command timeout
        raise KeyboardInterrupt
    old = signal.signal(signal.SIGTERM, on_sigterm)
    interrupted = False
    try:
        runner.loop()
    except KeyboardInterrupt:
        interrupted = True
        out(f"{runner.clock()} interrupted: stopping the running searches")
        runner.stop_all("on interrupt")
    finally:
        signal.signal(signal.SIGTERM, old)
        packed = None
        if args.compile_cache:               # back where it came from, or with the collection
            archive = Path(args.compile_cache)
            packed = pack_compile_cache(cache_dir, Path(args.collect) / archive.name
                                        if args.collect else archive, out=out)
        if args.collect:                     # also after a budget stop or an interruption;
            # the searches of this call (those finished before came back with their call)
            collect_small_files([j.run_dir for j in todo], Path(args.collect), out=out,
                                checkpoints=args.collect_checkpoints,
                                others=int(packed is not None))
    summary = summarize_queue(jobs, runner.failed)
    out("")
    for key, names in summary.items():
        out(f"{key + ':':9s} {len(names):2d}  {', '.join(names) or '-'}")
    if interrupted:
        return 130
    return 1 if summary["failed"] else 0


# ---- report and record -----------------------------------------------------------------------

# A run is a record (RECORD_FORMAT: what `record` commits) plus the keys in LOCAL, which are
# never committed.
LOCAL = ("finished", "total", "source")


def run_name(run: dict) -> str:
    return job_name(run["method"], run["seed"])


def _final_nb201(run_dir: Path, metrics: list[dict]) -> str | None:
    from dslnas.genotype import GenotypeError, from_json, to_nb201_string
    try:
        return to_nb201_string(from_json((run_dir / "genotype.json").read_text()))
    except (OSError, GenotypeError, ValueError):
        return metrics[-1].get("nb201") if metrics else None


def load_run_dir(run_dir: Path) -> dict | None:
    """A search's run folder, or its --collect copy (no checkpoint needed), as a run; None if
    it is not one."""
    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json")
    if not isinstance(config, dict) or "method" not in config:
        return None
    st = run_state(run_dir)
    metrics = read_metrics(run_dir)
    side = read_sidecar(run_dir)
    sessions = side.get("sessions") or []
    secs = [float(r.get("seconds", 0.0)) for r in metrics]
    elapsed = metrics[-1].get("elapsed") if metrics else None
    argv = config.get("argv")
    return {
        "format": RECORD_FORMAT,
        "method": config["method"]["name"], "seed": int(config.get("seed", 0)),
        "nb201": _final_nb201(run_dir, metrics) if st.status == "finished" else None,
        "epochs": st.epochs,
        "search_seconds": None if elapsed is None else round(float(elapsed), 3),
        "seconds_per_epoch": round(statistics.fmean(secs), 3) if secs else None,
        "epoch_seconds": [round(s, 3) for s in secs],
        "parallel": sorted({s["parallel"] for s in sessions if s.get("parallel")}),
        "device": config.get("device"),
        "device_name": next((s["device_name"] for s in reversed(sessions)
                             if s.get("device_name")), None),
        "dataset": (config.get("dataset") or {}).get("name"),
        "overrides": {k: v for k, v in (config.get("overrides") or {}).items()
                      if k != "method_file"},
        "versions": dict(config.get("versions") or {}),
        "commit": next((s["commit"] for s in sessions if s.get("commit")), None),
        "command": ("python -m dslnas.cli " + shlex.join(argv) if isinstance(argv, list)
                    else side.get("search_command")),
        "resume_commands": [s["command"] for s in sessions if s.get("mode") == "resume"],
        "sessions": 1 + len(config.get("resumed") or []),   # each pays start-up and warm-up
        "created": config.get("created"),
        "finished": st.status == "finished", "total": st.total, "source": str(run_dir)}


def load_record(path: Path) -> dict | None:
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
        return None
    return {**data, "finished": True, "total": data.get("epochs"), "source": str(path)}


def gather(paths: Iterable[Path], out: Callable[[str], None] | None = None
           ) -> tuple[list[dict], list[dict]]:
    """(finished, unfinished) runs from run folders, folders of run folders (a runs folder or a
    --collect folder), record files and record folders. A (method, seed) seen twice counts once:
    the first finished copy (a differing genotype is reported), else the first copy."""
    out = out or (lambda s: print(s, file=sys.stderr))
    runs: dict[tuple[str, int], dict] = {}
    for path in map(Path, paths):
        if path.is_file() or (path / "config.json").is_file():
            candidates = [path]
        elif path.is_dir():
            candidates = sorted(p for p in path.iterdir() if p.is_dir() or p.suffix == ".json")
        else:
            out(f"warning: {path}: no such file or folder")
            continue
        for c in candidates:
            run = load_run_dir(c) if c.is_dir() else load_record(c)
            if run is None:
                continue
            have = runs.get((run["method"], run["seed"]))
            if have is None or (run["finished"] and not have["finished"]):
                runs[run["method"], run["seed"]] = run
            elif run["finished"] and have["nb201"] != run["nb201"]:
                out(f"warning: {run_name(run)}: {run['source']} has genotype {run['nb201']}, "
                    f"{have['source']} {have['nb201']}; using the latter")
    return ([r for r in runs.values() if r["finished"]],
            [r for r in runs.values() if not r["finished"]])


def lookup(table, nb201: str | None) -> dict[str, float | None]:
    """Accuracy per DATASETS key (None where the table lacks the dataset or the arch)."""
    from dslnas.bench.nb201 import BenchmarkError
    acc: dict[str, float | None] = {}
    for key in DATASETS:
        try:
            acc[key] = table.accuracy(nb201, key) if nb201 else None
        except BenchmarkError:
            acc[key] = None
    return acc


def method_order(names: Iterable[str]) -> list[str]:
    known = list(dict.fromkeys([*all_methods(), *PUBLISHED, *NOT_PUBLISHED]))
    names = set(names)
    return [m for m in known if m in names] + sorted(names - set(known))


def build_report(finished: list[dict], unfinished: list[dict], table) -> dict:
    runs = []
    for info in sorted(finished, key=lambda r: (r["method"], r["seed"])):
        acc = lookup(table, info["nb201"])
        secs = info.get("search_seconds")
        runs.append({"method": info["method"], "seed": info["seed"], "nb201": info["nb201"],
                     "accuracy": acc, "epochs": info["epochs"],
                     "search_minutes": None if secs is None else secs / 60,
                     "parallel": info.get("parallel") or [],
                     "device_name": info.get("device_name"),
                     "in_table": any(v is not None for v in acc.values()),
                     "source": info["source"]})
    unfinished = [{k: u[k] for k in ("method", "seed", "epochs", "total", "source")}
                  for u in unfinished]
    methods = {}
    for m in method_order({r["method"] for r in runs + unfinished}):
        mine = [r for r in runs if r["method"] == m]
        entry = {"seeds": [r["seed"] for r in mine], "accuracy": {},
                 "unfinished": sorted(f"s{u['seed']} ({u['epochs']}/{u['total'] or '?'})"
                                      for u in unfinished if u["method"] == m)}
        for key in DATASETS:
            vals = [r["accuracy"][key] for r in mine if r["accuracy"][key] is not None]
            mean, std = mean_std(vals)
            entry["accuracy"][key] = {"mean": mean, "std": std, "n": len(vals)}
        minutes = [r["search_minutes"] for r in mine if r["search_minutes"] is not None]
        entry["search_minutes"] = statistics.fmean(minutes) if minutes else None
        # a CPU search takes hours where a GPU one takes minutes: one mean per device too
        by_device: dict = {}
        for r in mine:
            if r["search_minutes"] is not None:
                by_device.setdefault(r["device_name"] or "?", []).append(r["search_minutes"])
        entry["search_minutes_by_device"] = {d: statistics.fmean(v) for d, v in by_device.items()}
        entry["parallel"] = sorted({k for r in mine for k in r["parallel"]})
        pub = PUBLISHED.get(m)
        entry["published"] = (
            {"accuracy": {k: (None if v is None else {"mean": v[0], "std": v[1]})
                          for k, v in pub["acc"].items()},
             "protocol": pub["protocol"], "search_seconds": pub["search_s"],
             "source": pub["source"]} if pub else
            {"none": NOT_PUBLISHED.get(m, "not in the reference")})
        methods[m] = entry
    return {"benchmark": getattr(table, "source", ""), "methods": methods, "runs": runs,
            "unfinished": unfinished}


def _fmt_ms(mean, std) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.2f} ± {'—' if std is None else f'{std:.2f}'}"


def _fmt_pub(pub: dict) -> str:
    if "none" in pub:
        return f"— ({pub['none']})"
    bits = []
    for key in DATASETS:
        v = pub["accuracy"].get(key)
        bits.append("?" if v is None else
                    f"{v['mean']:.2f}" + ("" if v["std"] is None else f"±{v['std']:.2f}"))
    return " / ".join(bits) + f" ({pub['protocol']})"


def format_report(rep: dict) -> str:
    lines = ["## NAS-Bench-201, protocol A (search on CIFAR-10; the same architecture looked up "
             "on all three)", "",
             f"Table: {rep['benchmark']}. Test accuracy (%) of the final architecture, mean ± "
             f"sample std (n-1) over the finished seeds; — with one seed.", "",
             "| method | finished seeds | CIFAR-10 | CIFAR-100 | ImageNet16-120 | published "
             "C10 / C100 / IN16 (protocol) | search min/run (published) | K |",
             "|---|---|---|---|---|---|---|---|"]
    for m, e in rep["methods"].items():
        seeds = f"{len(e['seeds'])}" + (f" ({', '.join(map(str, e['seeds']))})" if e["seeds"]
                                        else "")
        if e["unfinished"]:
            seeds += f"; unfinished {', '.join(e['unfinished'])}"
        accs = [_fmt_ms(e["accuracy"][k]["mean"], e["accuracy"][k]["std"])
                if e["accuracy"][k]["n"] else "n/a" for k in DATASETS]
        mins = "n/a" if e["search_minutes"] is None else f"{e['search_minutes']:.1f}"
        if len(e["search_minutes_by_device"]) > 1:
            mins = "; ".join(f"{v:.1f} ({d})" for d, v in e["search_minutes_by_device"].items())
        pub_s = e["published"].get("search_seconds")
        if pub_s:
            mins += f" ({pub_s / 60:.1f})"
        k = ", ".join(map(str, e["parallel"])) or "?"
        lines.append(f"| {m} | {seeds} | {' | '.join(accs)} | {_fmt_pub(e['published'])} | "
                     f"{mins} | {k} |")
    lines += ["", "Protocol A: as here. B: one search per dataset (not directly comparable). "
              "Published numbers and seconds: see PUBLISHED in benchmarks/reproduce_nb201.py "
              "(from reference/methods.md); published seconds are on other GPUs.", "",
              "### Runs", "",
              "| method | seed | genotype | CIFAR-10 | CIFAR-100 | ImageNet16-120 | epochs | "
              "search min | K | device |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rep["runs"]:
        accs = ["n/a" if r["accuracy"][k] is None else f"{r['accuracy'][k]:.2f}"
                for k in DATASETS]
        mins = "n/a" if r["search_minutes"] is None else f"{r['search_minutes']:.1f}"
        note = "" if r["in_table"] else " (not in the table)"
        arch = str(r["nb201"]).replace("|", "\\|")      # a bare | would split the cell
        lines.append(f"| {r['method']} | {r['seed']} | `{arch}`{note} | "
                     f"{' | '.join(accs)} | {r['epochs']} | {mins} | "
                     f"{', '.join(map(str, r['parallel'])) or '?'} | {r['device_name'] or '?'} |")
    if rep["unfinished"]:
        lines += ["", "Unfinished: " + ", ".join(
            f"{u['method']}-s{u['seed']} ({u['epochs']}/{u['total'] or '?'} epochs)"
            for u in rep["unfinished"])]
    return "\n".join(lines)


def cmd_report(args, out: Callable[[str], None] = print) -> int:
    from dslnas.bench.nb201 import BenchmarkError, BenchmarkTable
    try:
        table = BenchmarkTable.load(args.benchmark)
    except BenchmarkError as e:
        out(f"error: {e}")
        return 2
    finished, unfinished = gather(args.runs)
    rep = build_report(finished, unfinished, table)
    out(json.dumps(rep, indent=2) if args.json else format_report(rep))
    return 0


def _no_accuracy(obj, where: str = "record") -> None:
    """Records are committed; the table's accuracies must never be in them."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            lk = str(k).lower()
            if "acc" in lk or "benchmark" in lk:
                raise ValueError(f"{where}.{k}: a record must not hold accuracies")
            _no_accuracy(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _no_accuracy(v, f"{where}[{i}]")


def cmd_record(args, out: Callable[[str], None] = print) -> int:
    """Write each finished run folder's record (LOCAL keys dropped) to ``args.out``."""
    finished, unfinished = gather(args.runs)
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    for run in sorted(finished, key=lambda r: (r["method"], r["seed"])):
        if run["source"].endswith(".json"):          # already a record
            continue
        rec = {k: v for k, v in run.items() if k not in LOCAL}
        _no_accuracy(rec)
        path = dest / f"{run_name(run)}.json"
        write_json(path, rec)
        out(f"wrote {path}")
    for u in unfinished:
        out(f"not recorded (unfinished): {run_name(u)} ({u['epochs']}/{u['total'] or '?'} "
            f"epochs)")
    return 0


# ---- command line ----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="reproduce_nb201.py", description=__doc__.split("\n\n")[0],
        epilog="`reproduce_nb201.py run --help` shows the device recipe.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run / resume the searches within a wall-clock budget",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--runs", required=True, metavar="DIR", help="the runs folder")
    r.add_argument("--data", required=True, metavar="DATA_DIR", help="dataset root (--data)")
    r.add_argument("--benchmark", required=True, metavar="TABLE.csv", help="NB201 table")
    r.add_argument("--methods", nargs="+", metavar="M",
                   help="default: all of `dslnas methods`")
    r.add_argument("--seeds", nargs="+", type=int, metavar="S", help="default: 0 1 2")
    r.add_argument("--budget", type=float, metavar="SECONDS",
                   help="wall-clock budget of this call, from the script's start (default: none)")
    r.add_argument("--margin", type=float, default=20.0, metavar="SECONDS",
                   help="stop the searches this long before the budget ends (default 20)")
    r.add_argument("--min-start", type=float, default=60.0, metavar="SECONDS",
                   help="start no search with less than this left before the stop (default 60)")
    r.add_argument("--parallel", "-K", type=int, default=1, metavar="K",
                   help="searches at once on the device (default 1)")
    r.add_argument("--lockstep", action="store_true",
                   help="run all queued seeds of a method in one process (dslnas search "
                        "--seeds: one CUDA stream each, the GPU overlaps them); --parallel "
                        "then counts processes")
    r.add_argument("--device", default="cuda", choices=("cuda", "cpu", "auto"))
    r.add_argument("--dataset", default="cifar10", help="search dataset (default cifar10)")
    r.add_argument("--search-args", metavar="'ARGS'", help="more arguments for fresh "
                   "searches, one string, e.g. --search-args='--epochs 2 --set C=8'")
    r.add_argument("--collect", metavar="DIR",
                   help="at the end, copy each search's metrics.jsonl, config.json, "
                        "reproduce.json and genotype.json to DIR/<method>-s<seed>/ ($OUT)")
    r.add_argument("--collect-checkpoints", action="store_true",
                   help="with --collect: also the checkpoint of each unfinished search "
                        "(13.9 MB for NB201), to carry into the next call and resume there")
    r.add_argument("--compile-cache", metavar="FILE.tgz",
                   help="keep torch.compile's cache (TorchInductor: graphs and Triton kernels) "
                        "across calls: unpack FILE.tgz first if it exists, give the searches "
                        f"RUNS/{COMPILE_CACHE}/, pack it back at the end into FILE.tgz, or "
                        "into the --collect folder under the same name")
    r.add_argument("--commit", help="the code's commit, recorded (default: git rev-parse HEAD "
                                    "where .git exists)")
    r.add_argument("--poll", type=float, default=0.5, help=argparse.SUPPRESS)
    r.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")

    rep = sub.add_parser("report", help="markdown table of the finished runs")
    rep.add_argument("--runs", required=True, nargs="+", metavar="DIR",
                     help="runs folders, run folders, --collect folders or record folders")
    rep.add_argument("--benchmark", required=True, metavar="TABLE.csv")
    rep.add_argument("--json", action="store_true")

    rec = sub.add_parser("record", help="one JSON per finished run, without accuracies")
    rec.add_argument("--runs", required=True, nargs="+", metavar="DIR",
                     help="runs folders, run folders or --collect folders")
    rec.add_argument("--out", required=True, metavar="DIR", help="e.g. results/nb201")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return cmd_run(args, t0=_T0)
    return cmd_report(args) if args.command == "report" else cmd_record(args)


if __name__ == "__main__":
    sys.exit(main())
