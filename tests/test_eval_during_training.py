"""Evaluation during training (``eval_every``): the ``eval_return`` column and ``eval/return`` tag,
``checkpoints/best`` and its evaluation, resuming, callbacks, and that evaluating changes nothing
of the training."""

from __future__ import annotations

import csv
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import policygrad as pg
from policygrad.checkpoint import best_checkpoint_path, load_checkpoint
from policygrad.cli import main
from policygrad.logging import MetricsLogger
from policygrad.training import (
    EVAL_COLUMN,
    METRIC_COLUMNS,
    WALL_CLOCK_COLUMNS,
    evaluation_seed,
)

EVERY = 300  # not a multiple of the 128 steps of a rollout: evaluations at 384, 640, 1024, ...
SMALL = ["--set", "num_envs=4", "--set", "num_steps=32", "--set", "minibatch_size=64", "--set", "num_epochs=2",
         "--set", "eval_episodes=3"]
SMALL_KW = {"num_envs": 4, "num_steps": 32, "minibatch_size": 64, "num_epochs": 2, "eval_episodes": 3,
            "tensorboard": False}


def _train(out: Path, steps: int, *extra: str) -> None:
    assert main(["train", "--out", str(out), "--steps", str(steps), "--seed", "3", "--quiet", *SMALL, *extra]) == 0


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _evaluated(rows: list[dict[str, str]]) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[EVAL_COLUMN])) for r in rows if r[EVAL_COLUMN]]


def _due(rows: list[dict[str, str]], every: int) -> list[int]:
    """The steps of the rows that reach a multiple of ``every`` the row before had not reached."""
    steps = [0] + [int(r["step"]) for r in rows]
    return [s for p, s in itertools.pairwise(steps) if s // every > p // every]


def _best_meta(run_dir: Path) -> dict:
    return json.loads((best_checkpoint_path(run_dir) / "meta.json").read_text())["meta"]


def _policy(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in tensors.items() if k.startswith("policy.")}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short run that evaluates every EVERY steps, with TensorBoard at its default cadence."""
    out = tmp_path_factory.mktemp("eval") / "run"
    _train(out, 2048, "--eval-every", str(EVERY))
    return out


# --------------------------------------------------------------------------------------------
# Whole runs
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_column_is_filled_at_each_multiple_and_blank_elsewhere(run: Path) -> None:
    rows = _rows(run)
    assert list(rows[0]) == list(METRIC_COLUMNS) and METRIC_COLUMNS[-1] == EVAL_COLUMN
    evaluated = _evaluated(rows)
    assert [s for s, _ in evaluated] == _due(rows, EVERY) == [384, 640, 1024, 1280, 1536, 1920]
    assert all(0 < value <= 500 for _, value in evaluated)
    assert sum(1 for r in rows if r[EVAL_COLUMN] == "") == len(rows) - len(evaluated)


@pytest.mark.slow
def test_every_evaluation_reaches_tensorboard(run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    points = [(e.step, e.value) for e in events.Scalars("eval/return")]
    # every one, although TensorBoard takes the other rows only every 1000 steps
    expected = [(s, float(np.float32(v))) for s, v in _evaluated(_rows(run))]
    assert points == expected
    assert len(events.Scalars("rollout/ep_return_mean")) < len(_rows(run))


@pytest.mark.slow
def test_the_best_checkpoint_holds_the_best_evaluation(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evaluated = _evaluated(_rows(run))
    best_step, best_return = max(evaluated, key=lambda e: e[1])  # max keeps the first of equals
    meta = _best_meta(run)
    assert meta["kind"] == "policygrad-run" and meta["algo"] == "ppo"
    assert (meta["step"], meta["eval_return"]) == (best_step, best_return)
    assert meta["eval_seed"] == evaluation_seed(3, best_step)
    # `policygrad eval` of the best checkpoint on the same episodes reproduces its evaluation.
    argv = ["eval", str(best_checkpoint_path(run)), "--deterministic", "--episodes", "3", "--json"]
    assert main([*argv, "--seed", str(meta["eval_seed"])]) == 0
    assert json.loads(capsys.readouterr().out)["mean_return"] == best_return
    assert main([*argv, "--steps", "300"]) == 0  # --steps as well
    # The valid steps of 3 copies x 100: 300 less one dummy step (CartPole's next-step auto-reset)
    # after each episode that ends inside them, which depends on the policy and the seeds.
    assert 250 <= json.loads(capsys.readouterr().out)["steps"] <= 300


@pytest.mark.slow
def test_load_of_the_best_checkpoint_loads_it(run: Path, tmp_path: Path) -> None:
    best = best_checkpoint_path(run)
    expected, meta = load_checkpoint(best)
    for path in (best, best / "meta.json"):
        model = pg.load(path)
        assert model.num_timesteps == meta["step"] and model.run_dir == run
        state = {f"policy.{k}": v for k, v in model.policy.net.state_dict().items()}  # the actor-critic
        assert state.keys() == _policy(expected).keys()
        assert all(torch.equal(state[k], expected[k]) for k in state)
    assert pg.load(run).num_timesteps == 2048  # the run itself: its last checkpoint
    # It acts at once; it does not continue the run (learn continues from the last checkpoint).
    obs = np.zeros((2, 4), dtype=np.float32)
    assert model.predict(obs)[0].shape == (2,)
    with pytest.raises(pg.InputError, match="not from its run's last checkpoint"):
        model.learn(128, progress_bar=False)
    with pytest.raises(pg.InputError, match="would replace the run's last checkpoint"):
        model.save(run)
    copy = model.save(tmp_path / "from_best")  # a new run that starts where the best one was
    again = pg.load(copy)
    again.learn(128, progress_bar=False)
    assert again.num_timesteps == meta["step"] + 128


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_evaluating_changes_nothing_of_the_training(tmp_path: Path, backend: str) -> None:
    common = ("--set", f"backend={backend}", "--set", "normalize_obs=true", "--set", "tensorboard=false")
    _train(tmp_path / "plain", 1024, *common)
    _train(tmp_path / "evaluated", 1024, *common, "--eval-every", "256")
    ignored = {*WALL_CLOCK_COLUMNS, EVAL_COLUMN}
    plain, evaluated = _rows(tmp_path / "plain"), _rows(tmp_path / "evaluated")
    assert len(_evaluated(evaluated)) == 4 and not _evaluated(plain)
    assert [{k: v for k, v in r.items() if k not in ignored} for r in plain] == \
           [{k: v for k, v in r.items() if k not in ignored} for r in evaluated]
    a, _ = load_checkpoint(tmp_path / "plain" / "checkpoints" / "last")
    b, _ = load_checkpoint(tmp_path / "evaluated" / "checkpoints" / "last")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # policy, optimiser, normaliser, RNGs


@pytest.mark.slow
def test_resuming_keeps_the_best_so_far(tmp_path: Path) -> None:
    first = tmp_path / "first"
    _train(first, 1024, "--eval-every", "256", "--set", "tensorboard=false")
    assert _best_meta(first)["step"] <= 1024
    resumed, unbeaten = tmp_path / "resumed", tmp_path / "unbeaten"
    shutil.copytree(first, resumed)
    shutil.copytree(first, unbeaten)
    record = best_checkpoint_path(unbeaten) / "meta.json"
    data = json.loads(record.read_text())
    data["meta"]["eval_return"] = 10_000.0  # a best no evaluation of CartPole can beat
    record.write_text(json.dumps(data))
    for run_dir in (resumed, unbeaten):
        assert main(["train", "--resume", str(run_dir), "--steps", "2048", "--quiet"]) == 0
        rows = _rows(run_dir)
        assert [s for s, _ in _evaluated(rows)] == _due(rows, 256)  # 1024 is not evaluated twice
    best_step, best_return = max(_evaluated(_rows(resumed)), key=lambda e: e[1])
    assert (_best_meta(resumed)["step"], _best_meta(resumed)["eval_return"]) == (best_step, best_return)
    assert (_best_meta(unbeaten)["step"], _best_meta(unbeaten)["eval_return"]) == (data["meta"]["step"], 10_000.0)


@pytest.mark.slow
def test_on_eval_sees_every_evaluation_shared_with_the_target_check(tmp_path: Path) -> None:
    seen: list[tuple[int, list[float]]] = []

    class Record(pg.Callback):
        def on_eval(self, step: int, returns: list[float]) -> bool | None:
            seen.append((step, returns))
            return None

    # An unreachable target: its checks are the evaluations every 256 steps, nothing more.
    model = pg.PPO("CartPole-v1", seed=0, eval_every=256, target_return=1e9, **SMALL_KW)
    model.learn(1024, run_dir=tmp_path / "run", callback=Record(), progress_bar=False)
    assert [(s, float(np.mean(r))) for s, r in seen] == _evaluated(_rows(tmp_path / "run"))
    assert [s for s, _ in seen] == [256, 512, 768, 1024] and all(len(r) == 3 for _, r in seen)

    class Stop(pg.Callback):
        def on_eval(self, step: int, returns: list[float]) -> bool | None:
            return False

    model = pg.PPO("CartPole-v1", seed=0, eval_every=300, **SMALL_KW)
    model.learn(4096, run_dir=tmp_path / "stopped", callback=Stop(), progress_bar=False)
    assert model.num_timesteps == 384  # the first update at or past 300 steps
    assert _best_meta(tmp_path / "stopped")["step"] == 384


@pytest.mark.slow
def test_a_run_without_the_column_resumes_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = tmp_path / "old"
    _train(old, 512, "--set", "tensorboard=false")
    # metrics.csv as a version without eval_return wrote it
    with open(old / "metrics.csv", newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0][-1] == EVAL_COLUMN
    (old / "metrics.csv").write_text("".join(",".join(line[:-1]) + "\n" for line in lines))
    before = (old / "metrics.csv").read_text().splitlines()
    copy = tmp_path / "copy"
    shutil.copytree(old, copy)

    assert main(["train", "--resume", str(old), "--steps", "1024", "--eval-every", "256", "--quiet"]) == 0
    after = (old / "metrics.csv").read_text().splitlines()
    assert after[0] == before[0] + "," + EVAL_COLUMN
    assert after[1 : len(before)] == [line + "," for line in before[1:]]  # the old rows kept, the new column blank
    assert [s for s, _ in _evaluated(_rows(old))] == [768, 1024]
    assert json.loads((old / "config.json").read_text())["train"]["eval_every"] == 256
    assert main(["plot", str(old), "--out", str(tmp_path / "curves.png")]) == 0
    assert (old / "learning_curve.png").is_file() and (tmp_path / "curves.png").is_file()

    model = pg.load(copy)  # the Python way: learn on a loaded run
    model.learn(256, progress_bar=False)
    rows = _rows(copy)
    assert [r["step"] for r in rows] == [line.split(",")[0] for line in before[1:]] + ["640", "768"]
    assert all(r[EVAL_COLUMN] == "" for r in rows)


# --------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------


def test_a_metrics_file_without_a_newer_column_is_rewritten_with_it(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text("step,loss\n1,0.5\n2,0.25\n3,0.125\n")
    with MetricsLogger(tmp_path, ["step", "loss", "eval_return"], tensorboard=False, resume=True,
                       resume_step=2) as logger:
        logger.log({"step": 3, "loss": 0.0625, "eval_return": 9.5})
    assert (tmp_path / "metrics.csv").read_text() == "step,loss,eval_return\n1,0.5,\n2,0.25,\n3,0.0625,9.5\n"
    assert not list(tmp_path.glob("*.tmp-*"))


def test_a_metrics_file_with_a_foreign_column_is_left_alone(tmp_path: Path) -> None:
    text = "step,loss,other\n1,0.5,7\n"
    (tmp_path / "metrics.csv").write_text(text)
    with pytest.raises(pg.InputError, match="cannot resume"):
        MetricsLogger(tmp_path, ["step", "loss", "eval_return"], tensorboard=False, resume=True, resume_step=1)
    (tmp_path / "metrics.csv").write_text("loss\n0.5\n")  # no step to resume from
    with pytest.raises(pg.InputError, match="cannot resume"):
        MetricsLogger(tmp_path, ["step", "loss"], tensorboard=False, resume=True, resume_step=1)
    assert (tmp_path / "metrics.csv").read_text() == "loss\n0.5\n"


def test_rows_with_an_evaluation_always_reach_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricsLogger(tmp_path, ["step", "loss", "eval_return"], tensorboard_every=1000) as logger:
        for step in range(100, 1100, 100):
            logger.log({"step": step, "loss": 1.0, "eval_return": 5.0 if step in (300, 700) else None})
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/return")] == [300, 700]
    assert [e.step for e in events.Scalars("train/loss")] == [100, 300, 700, 1000]


@pytest.mark.parametrize("argv, message", [
    (["--eval-every", "0"], "--eval-every must be a positive number of environment steps, got 0"),
    (["--set", "eval_every=-5"], "eval_every must be > 0 or None, got -5"),
    (["--set", "eval_every=1.5"], "eval_every"),
])
def test_a_bad_eval_every_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                      message: str) -> None:
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--quiet", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("policygrad: error: ") and message in err[0]
    assert not out.exists()
    with pytest.raises(pg.InputError, match="eval_every"):
        pg.PPO("CartPole-v1", eval_every=0)


def test_eval_every_is_a_flag_a_key_and_a_keyword() -> None:
    from policygrad.runconfig import resolve_run

    assert resolve_run("ppo", "CartPole-v1", flags={"eval_every": 500}).train.eval_every == 500
    assert resolve_run("ppo", "CartPole-v1", overrides={"eval_every": "500"}).train.eval_every == 500
    assert pg.PPO("CartPole-v1", eval_every=500).spec.train.eval_every == 500


def test_a_path_under_checkpoints_that_holds_none_is_refused(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    (run / "checkpoints" / "best").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    with pytest.raises(pg.InputError, match="is not a checkpoint"):
        pg.load(run / "checkpoints" / "best")
    assert main(["eval", str(run / "checkpoints" / "best")]) == 2
    assert "is not a checkpoint" in capsys.readouterr().err


def test_the_learning_curve_shows_the_evaluations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from policygrad import plots

    with MetricsLogger(tmp_path, ["step", "episode_return_mean", "eval_return"], tensorboard=False) as logger:
        for step in range(100, 1100, 100):
            logger.log({"step": step, "episode_return_mean": step / 10, "eval_return": step / 5 if step % 300 == 0 else None})
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, out: figures.append(fig) or out)
    plots.plot_learning_curve(tmp_path)
    (ax,) = figures[0].axes
    _, evaluations = ax.get_lines()  # the training episodes, then the evaluations
    assert list(evaluations.get_xdata()) == [300, 600, 900] and list(evaluations.get_ydata()) == [60, 120, 180]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["training episodes", "evaluation (deterministic)"]
