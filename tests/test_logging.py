"""metrics.csv, its truncation on resume, TensorBoard output, the progress bar and text tables."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from policygrad.errors import InputError
from policygrad.logging import MetricsLogger, ProgressBar, format_table

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


def test_tensorboard_scalars_use_the_step_column(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricsLogger(tmp_path, COLUMNS, tensorboard=True) as log:
        log.log({"step": 128, "episode_return_mean": 10.0, "loss": 1.0})
        log.log({"step": 256, "loss": 0.5})
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(128, 1.0), (256, 0.5)]
    assert [e.step for e in events.Scalars("episode_return_mean")] == [128]
    assert "step" not in events.Tags()["scalars"]


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


def test_tensorboard_resume_hides_events_after_the_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricsLogger(tmp_path, COLUMNS) as log:
        for step in (100, 200, 300, 400):
            log.log({"step": step, "loss": 1.0})
    with MetricsLogger(tmp_path, COLUMNS, resume=True, resume_step=200) as log:
        log.log({"step": 300, "loss": 2.0})
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(100, 1.0), (200, 1.0), (300, 2.0)]
