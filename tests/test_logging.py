"""metrics.csv, its truncation on resume, TensorBoard output (read back with tensorboard's reader), the
progress bar and text tables."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from policygrad.errors import InputError
from policygrad.logging import TENSORBOARD_TAGS, MetricsLogger, ProgressBar, format_table, tensorboard_tag

COLUMNS = ["step", "episode_return_mean", "loss"]


def _rows(run_dir: Path) -> list[list[str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.reader(f))


def test_csv_header_rows_and_blanks(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path, COLUMNS, tensorboard=False) as log:
        log.log({"step": 100, "episode_return_mean": 12.5, "loss": 0.25})
        log.log({"step": 200, "loss": None})  # no episode finished, no loss
        log.log({"step": np.int64(300), "episode_return_mean": np.float32(1.5), "loss": torch.tensor(0.1)})
        # Flushed at once: readable while the logger is still open.
        assert _rows(tmp_path)[1] == ["100", "12.5", "0.25"]
    rows = _rows(tmp_path)
    assert rows[0] == COLUMNS
    assert rows[2] == ["200", "", ""]
    assert rows[3][:2] == ["300", "1.5"]
    assert float(rows[3][2]) == torch.tensor(0.1).item()  # full float32 -> float precision
    assert len(rows) == 4


def test_unknown_column_is_an_error(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path, COLUMNS, tensorboard=False) as log:
        with pytest.raises(ValueError, match="unknown columns \\['kl'\\]"):
            log.log({"step": 1, "kl": 0.1})
        with pytest.raises(ValueError, match="not a scalar"):
            log.log({"step": 1, "loss": [1, 2]})
    assert _rows(tmp_path) == [COLUMNS]


def test_columns_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="repeat"):
        MetricsLogger(tmp_path, ["step", "step"], tensorboard=False)
    with pytest.raises(ValueError, match="'step'"):
        MetricsLogger(tmp_path, ["loss"], tensorboard=True)


def test_resume_truncates_rows_after_the_checkpoint(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path, COLUMNS, tensorboard=False) as log:
        for step in (100, 200, 300, 400):
            log.log({"step": step, "loss": step / 1000})
    # The checkpoint was taken at step 200; rows 300 and 400 are logged again by the resumed run.
    with MetricsLogger(tmp_path, COLUMNS, tensorboard=False, resume=True, resume_step=200) as log:
        log.log({"step": 300, "loss": 9.0})
    steps = [r[0] for r in _rows(tmp_path)[1:]]
    assert steps == ["100", "200", "300"]
    assert _rows(tmp_path)[3][2] == "9.0"


def test_resume_drops_a_line_cut_short_by_a_crash(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text("step,episode_return_mean,loss\n100,1.0,0.5\n200,2.")
    with MetricsLogger(tmp_path, COLUMNS, tensorboard=False, resume=True) as log:
        log.log({"step": 200, "episode_return_mean": 2.0})
    assert _rows(tmp_path)[1:] == [["100", "1.0", "0.5"], ["200", "2.0", ""]]


def test_resume_with_other_columns_is_refused(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text("step,other\n1,2\n")
    with pytest.raises(InputError, match="columns"):
        MetricsLogger(tmp_path, COLUMNS, tensorboard=False, resume=True, resume_step=1)


def test_fresh_logger_overwrites_and_resume_without_file_starts_new(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text("old,stuff\n1,2\n")
    MetricsLogger(tmp_path, COLUMNS, tensorboard=False).close()
    assert _rows(tmp_path) == [COLUMNS]
    other = tmp_path / "other"
    with MetricsLogger(other, COLUMNS, tensorboard=False, resume=True, resume_step=5) as log:
        log.log({"step": 10})
    assert _rows(other) == [COLUMNS, ["10", "", ""]]


def test_progress_bar_disabled_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with ProgressBar(1000, enabled=False) as bar:
        bar.update(100, episode_return=5.0, extra={"kl": 0.01})
        bar.write("hello")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_progress_bar_shows_steps_and_return_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    with ProgressBar(1000, initial=200) as bar:
        bar.update(300, episode_return=123.456)
        bar.update(500, extra={"kl": 0.0125})
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "1000/1000" in captured.err or "1.00k/1.00k" in captured.err
    assert "return=123.5" in captured.err and "kl=0.0125" in captured.err and "step/s" in captured.err


def test_format_table_aligns_columns() -> None:
    table = format_table(
        [{"algo": "ppo", "return": 487.3, "steps": 100000}, {"algo": "reinforce", "return": np.float32(21.5)}],
        ["algo", "return", "steps"],
    )
    assert table.splitlines() == [
        "algo       return   steps",
        "---------  ------  ------",
        "ppo         487.3  100000",
        "reinforce    21.5",
    ]


# The columns of the training loop's metrics.csv, plus update metrics outside the table and an
# evaluation column: every kind of tag.
RUN_COLUMNS = [
    "step", "wall_time", "episode_return_mean", "episode_length_mean", "policy_loss", "value_loss", "entropy",
    "approx_kl", "clip_fraction", "explained_variance", "grad_norm", "learning_rate", "steps_per_second",
    "reward_per_step", "rho", "eval_return_mean",
]


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag in ``run_dir/tb`` with its ``(step, value)`` pairs, as TensorBoard reads them."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_tags() -> None:
    assert tensorboard_tag("step") is None
    assert tensorboard_tag("episode_return_mean") == "rollout/ep_return_mean"
    assert tensorboard_tag("episode_length_mean") == "rollout/ep_len_mean"
    assert tensorboard_tag("steps_per_second") == "time/steps_per_second"
    assert tensorboard_tag("policy_loss") == "train/policy_loss"
    assert tensorboard_tag("kl_beta") == "train/kl_beta"  # an update metric outside the table
    assert tensorboard_tag("eval_return_mean") == "eval/return_mean"
    tags = [t for t in TENSORBOARD_TAGS.values() if t is not None]
    assert len(set(tags)) == len(tags)
    assert all(t.split("/")[0] in {"train", "rollout", "time", "eval"} for t in tags)


def test_tensorboard_scalars_have_tags_steps_and_values(tmp_path: Path) -> None:
    # Values exact in float32, TensorBoard's scalar type.
    first = {name: 0.25 * i for i, name in enumerate(RUN_COLUMNS)}
    first["step"] = 128
    with MetricsLogger(tmp_path, RUN_COLUMNS, continuing=True) as log:
        log.log(first)
        # No episode finished (None), a failed statistic (nan) and an infinite one are skipped.
        log.log({"step": 256, "episode_return_mean": None, "policy_loss": math.nan, "grad_norm": math.inf,
                 "value_loss": np.float32(0.5), "entropy": torch.tensor(1.5)})
    scalars = _scalars(tmp_path)
    assert set(scalars) == {tensorboard_tag(c) for c in RUN_COLUMNS} - {None}
    assert {"rollout/ep_return_mean", "rollout/ep_len_mean", "rollout/reward_per_step", "time/steps_per_second",
            "time/time_elapsed", "train/policy_loss", "train/learning_rate", "train/rho",
            "eval/return_mean"} <= set(scalars)
    for name in RUN_COLUMNS[1:]:
        expected = [(128, first[name])] + ([(256, {"value_loss": 0.5, "entropy": 1.5}[name])]
                                           if name in ("value_loss", "entropy") else [])
        assert scalars[tensorboard_tag(name)] == expected, name
    # metrics.csv keeps its columns and every value
    rows = _rows(tmp_path)
    assert rows[0] == RUN_COLUMNS
    assert rows[2][RUN_COLUMNS.index("policy_loss")] == "nan"


def test_reward_per_step_goes_to_tensorboard_only_for_continuing_tasks(tmp_path: Path) -> None:
    columns = ["step", "episode_return_mean", "reward_per_step"]
    for continuing in (False, True):
        run_dir = tmp_path / str(continuing)
        with MetricsLogger(run_dir, columns, continuing=continuing) as log:
            log.log({"step": 10, "episode_return_mean": 3.0, "reward_per_step": 0.5})
        scalars = _scalars(run_dir)
        assert scalars["rollout/ep_return_mean"] == [(10, 3.0)]
        assert ("rollout/reward_per_step" in scalars) is continuing
        if continuing:
            assert scalars["rollout/reward_per_step"] == [(10, 0.5)]
        assert _rows(run_dir) == [columns, ["10", "3.0", "0.5"]]  # the CSV has it either way


def test_tensorboard_every_thins_the_points_and_keeps_the_last_row(tmp_path: Path) -> None:
    columns = ["step", "policy_loss"]
    with MetricsLogger(tmp_path, columns, tensorboard_every=100) as log:
        for step in range(40, 521, 40):  # A2C's rows: one every 40 steps
            log.log({"step": step, "policy_loss": step / 1000})
    # the first row, then each row at least 100 steps past the last one written, then the last row
    assert [step for step, _ in _scalars(tmp_path)["train/policy_loss"]] == [40, 160, 280, 400, 520]
    assert len(_rows(tmp_path)) == 1 + 13  # metrics.csv keeps every row
    every = tmp_path / "every"
    with MetricsLogger(every, columns, tensorboard_every=0) as log:
        for step in (40, 80, 120):
            log.log({"step": step, "policy_loss": 0.5})
    assert [step for step, _ in _scalars(every)["train/policy_loss"]] == [40, 80, 120]


def test_tensorboard_resume_hides_events_after_the_checkpoint(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path, COLUMNS) as log:
        for step in (100, 200, 300, 400):
            log.log({"step": step, "loss": 1.0})
    # The checkpoint was taken at step 200: the crashed run's 300 and 400 are hidden, 300 is logged again.
    with MetricsLogger(tmp_path, COLUMNS, resume=True, resume_step=200) as log:
        log.log({"step": 300, "loss": 2.0})
    assert len(list((tmp_path / "tb").iterdir())) == 2  # one event file per invocation
    assert _scalars(tmp_path) == {"train/loss": [(100, 1.0), (200, 1.0), (300, 2.0)]}


def test_a_resume_in_the_same_second_still_hides_the_events_after_the_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.summary.writer import event_file_writer

    # The event files are named ...<second>.<host>.<pid>.<n>, n counting the writers of the process:
    # make the crashed run's n = 9 and the resumed run's n = 10, which sorts first by name.
    while event_file_writer._global_uid.get() % 10 != 8:
        pass
    with MetricsLogger(tmp_path, COLUMNS) as log:
        log.log({"step": 100, "loss": 1.0})
        log.log({"step": 200, "loss": 1.0})
    with MetricsLogger(tmp_path, COLUMNS, resume=True, resume_step=100) as log:
        log.log({"step": 200, "loss": 2.0})
    assert _scalars(tmp_path) == {"train/loss": [(100, 1.0), (200, 2.0)]}


def test_without_tensorboard_no_events_and_no_writer_imported(tmp_path: Path) -> None:
    code = f"""
import sys
from policygrad.logging import MetricsLogger
with MetricsLogger({str(tmp_path)!r}, ["step", "loss"], tensorboard=False) as log:
    log.log({{"step": 1, "loss": 0.5}})
print(sorted(m for m in sys.modules if m.startswith(("tensorboard", "torch.utils.tensorboard"))))
"""
    import policygrad

    env = {**os.environ, "PYTHONPATH": str(Path(policygrad.__file__).parents[1])}  # the policygrad under test
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "[]"
    assert not (tmp_path / "tb").exists()
    assert _rows(tmp_path) == [["step", "loss"], ["1", "0.5"]]
