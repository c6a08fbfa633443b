"""DARTS-ADA and DARTS-ES' simulate mode (RobustDARTS): a decision rolls the search back and
raises w's weight decay, or is only noted."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dslnas.search import ada
from dslnas.search import checkpoint as ckpt

from test_search import TINY, run

NB201 = Path(__file__).resolve().parents[1] / "spaces" / "nb201.nas"

# DARTS-ES thresholds that decide whenever the compared epoch may be returned: α is frozen for
# two epochs, so every decision after epoch 5 compares epoch 5 with epoch 3 and returns to 3.
# NB201 DARTS' w weight decay is 5e-4: two raises (1.5e-3, then the maximum 4.5e-3).
ALWAYS = ["--method", "darts", "--epochs", 8, "--hessian-every", 1, "--set", "es_window=1",
          "--set", "es_delta=2", "--set", "es_factor=1e-9", "--set", "es_start=1",
          "--set", "warmup_epochs=2", "--set", "a_lr=0.05", "--deterministic", *TINY]
ADA = [*ALWAYS, "--early-stop", "ada", "--set", "ada_max_weight_decay=4.5e-3"]


def metrics(path: Path, name: str = "metrics.jsonl") -> list[dict]:
    return [json.loads(line) for line in (path / name).read_text().splitlines()]


def same_search(a: Path, b: Path) -> bool:
    """The same trajectory, abandoned epochs and decisions included (times aside)."""
    def what(path, name):
        return [(r["epoch"], r.get("ada_round"), r["alphas"], r["w_weight_decay"],
                 r.get("early_stop")) for r in metrics(path, name)]
    return all(what(a, n) == what(b, n) for n in ("metrics.jsonl", ada.ABANDONED))


def test_ada_rolls_back_raises_the_weight_decay_and_runs_its_last_round_to_the_end(
        tmp_path, capsys):
    out_dir = tmp_path / "r"
    code, out, err = run(capsys, "search", NB201, *ADA, "--out", out_dir)
    assert code == 0, err
    recs = metrics(out_dir)
    assert [r["epoch"] for r in recs] == list(range(1, 9))          # one record per epoch
    assert [r["w_weight_decay"] for r in recs] == [5e-4] * 3 + [4.5e-3] * 5
    # the abandoned epochs of rounds 0 and 1 (each decided after epoch 5, back to epoch 3)
    gone = metrics(out_dir, ada.ABANDONED)
    assert [(r["ada_round"], r["epoch"], r["w_weight_decay"]) for r in gone] == \
        [(0, 4, 5e-4), (0, 5, 5e-4), (1, 4, 1.5e-3), (1, 5, 1.5e-3)]
    assert gone[1]["early_stop"]["action"] == "ada"
    assert gone[0]["alphas"] != gone[2]["alphas"]        # the raised decay changed the search
    # the last round decides as well, but no longer acts
    assert recs[4]["es_ratio"] > 1e-9 and "early_stop" not in recs[4]

    summary = json.loads((out_dir / "summary.json").read_text())
    assert [(r["epoch"], r["genotype_epoch"], r["w_weight_decay"])
            for r in summary["ada_rollbacks"]] == [(5, 3, 1.5e-3), (5, 3, 4.5e-3)]
    assert summary["darts_es"] == "ada" and summary["epochs"] == 8
    assert summary["early_stop"]["genotype_epoch"] == 3            # DARTS-ES' own answer
    assert json.loads((out_dir / "genotype.json").read_text()) == recs[-1]["genotype"]
    assert json.loads((out_dir / "genotype_es.json").read_text()) == recs[2]["genotype"]
    assert not (out_dir / ada.SNAPSHOTS).exists()
    state = ckpt.load(out_dir / "checkpoint.pt")
    assert state["w_opt"]["param_groups"][0]["weight_decay"] == pytest.approx(4.5e-3)
    assert "DARTS-ADA: after epoch 5 rolled back to epoch 3" in out
    assert "DARTS-ADA: rolled back to epoch 3; w weight decay now 0.0015" in err
    assert "the first possible rollback is after epoch 5" in err


def test_a_rollback_is_a_resume_from_that_epoch_with_the_raised_decay(tmp_path, capsys):
    """Round 2 of the ADA search is exactly a plain search resumed from epoch 3 with w's weight
    decay set to the final value (measuring the curvature changes nothing)."""
    assert run(capsys, "search", NB201, *ADA, "--out", tmp_path / "ada")[0] == 0
    plain = tmp_path / "plain"
    assert run(capsys, "search", NB201, *ALWAYS, "--out", plain, "--stop-after", 3)[0] == 0
    state = ckpt.load(plain / "checkpoint.pt")
    state["w_weight_decay"] = 4.5e-3
    ckpt.save(state, plain / "checkpoint.pt")
    assert run(capsys, "search", "--resume", plain, "--no-progress")[0] == 0
    a, b = metrics(tmp_path / "ada"), metrics(plain)
    assert [r["alphas"] for r in a] == [r["alphas"] for r in b]
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]


def test_a_search_killed_anywhere_around_a_rollback_resumes_to_the_same_end(tmp_path, capsys,
                                                                               monkeypatch):
    assert run(capsys, "search", NB201, *ADA, "--out", tmp_path / "whole")[0] == 0
    # stopped after epoch 4 (round 0), and after epoch 5 (of the last round, after 2 rollbacks)
    for stop in (4, 5):
        out_dir = tmp_path / f"stop{stop}"
        assert run(capsys, "search", NB201, *ADA, "--out", out_dir, "--stop-after", stop)[0] == 0
        assert run(capsys, "search", "--resume", out_dir, "--no-progress")[0] == 0
        assert same_search(out_dir, tmp_path / "whole")

    class Kill(BaseException):
        pass

    def killed(*_, **__):
        raise Kill

    # killed after the decision's checkpoint, before the rollback: the resume rolls back
    out_dir = tmp_path / "killed"
    with monkeypatch.context() as m:
        m.setattr(ada, "roll_back", killed)
        with pytest.raises(Kill):
            run(capsys, "search", NB201, *ADA, "--out", out_dir)
    assert ckpt.load(out_dir / "checkpoint.pt")["ada_pending"]["genotype_epoch"] == 3
    code, _, err = run(capsys, "search", "--resume", out_dir, "--no-progress")
    assert code == 0, err
    assert same_search(out_dir, tmp_path / "whole")

    # killed after epoch 3's checkpoint, before its snapshot: the resume makes it
    out_dir = tmp_path / "unlinked"
    with monkeypatch.context() as m:
        m.setattr(ada, "keep_snapshot", killed)
        with pytest.raises(Kill):
            run(capsys, "search", NB201, *ADA, "--out", out_dir)
    assert ckpt.load(out_dir / "checkpoint.pt")["epoch"] == 3
    assert not (out_dir / ada.SNAPSHOTS / "epoch-003.pt").exists()
    code, _, err = run(capsys, "search", "--resume", out_dir, "--no-progress")
    assert code == 0, err
    assert same_search(out_dir, tmp_path / "whole")


def test_simulate_notes_the_decision_and_searches_on(tmp_path, capsys):
    out_dir = tmp_path / "sim"
    code, out, err = run(capsys, "search", NB201, *ALWAYS, "--early-stop", "simulate",
                         "--out", out_dir)
    assert code == 0, err
    recs = metrics(out_dir)
    assert [r["epoch"] for r in recs] == list(range(1, 9))
    # the first decision only (R-DARTS stops watching after it)
    assert [r["epoch"] for r in recs if "early_stop" in r] == [5]
    assert recs[4]["early_stop"]["action"] == "simulate"
    assert json.loads((out_dir / "genotype_es.json").read_text()) == recs[2]["genotype"]
    assert json.loads((out_dir / "genotype.json").read_text()) == recs[-1]["genotype"]
    assert "DARTS-ES would have stopped it after epoch 5" in out
    # the search itself is the plain one: simulating changes nothing
    assert run(capsys, "search", NB201, *ALWAYS, "--out", tmp_path / "plain")[0] == 0
    assert [r["alphas"] for r in recs] == [r["alphas"] for r in metrics(tmp_path / "plain")]


@pytest.mark.parametrize("sets, message", [
    (["--early-stop", "ada", "--set", "ada_factor=1"], "ada_factor must be a finite number > 1"),
    (["--early-stop", "ada", "--set", "ada_max_weight_decay=1e-4"],
     "ada_max_weight_decay (0.0001) must be finite and above w_weight_decay"),
    (["--set", "early_stop=sometimes"], "early_stop must be one of stop, simulate, ada or off"),
    (["--early-stop", "sometimes"], "--early-stop: expected one of stop, simulate, ada"),
    # no decay to multiply: it would roll back to the same state for ever
    (["--early-stop", "ada", "--set", "w_weight_decay=0"], "and that above 0"),
    (["--early-stop", "ada", "--set", "ada_factor=1.01"], "would raise w_weight_decay 391 times"),
])
def test_bad_ada_settings_exit_2(tmp_path, capsys, sets, message):
    code, _, err = run(capsys, "search", NB201, "--method", "darts", *sets, *TINY,
                       "--out", tmp_path / "r")
    assert code == 2 and message in err and "Traceback" not in err


def test_early_stop_before_the_space_takes_no_mode(tmp_path, capsys):
    code, _, err = run(capsys, "search", "--early-stop", NB201, "--method", "darts", "--epochs",
                       1, *TINY, "--out", tmp_path / "r")
    assert code == 0, err
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["method"]["schedule"]["early_stop"] == "stop"


def test_a_boolean_early_stop_still_reads_as_stop():
    from dslnas.methods.spec import Schedule
    assert Schedule(early_stop=True).early_stop == "stop"
    assert Schedule(early_stop=False).early_stop == ""
    assert Schedule(early_stop="off").early_stop == ""
