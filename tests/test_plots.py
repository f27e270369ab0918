"""Learning-curve plots: metrics are read back, images are valid PNGs, errors are one line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from policygrad.errors import InputError
from policygrad.logging import MetricsLogger
from policygrad.plots import _aggregate, _figure, _style, main_plot, plot_learning_curve, plot_runs, read_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLUMNS = ["step", "episode_return_mean", "reward_per_step", "loss"]


def _make_run(run_dir: Path, seed: int, algo: str | None = "ppo", steps: int = 10, rate: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    with MetricsLogger(run_dir, COLUMNS, tensorboard=False) as log:
        for i in range(1, steps + 1):
            row = {"step": 128 * i, "loss": float(rng.random())}
            if i % 3 != 0:  # some updates finish no episode
                row["episode_return_mean"] = 10.0 * i + float(rng.normal())
            if rate:
                row["reward_per_step"] = 0.1 * i
            log.log(row)
    if algo is not None:
        (run_dir / "config.json").write_text(json.dumps({"algo": algo, "env": "CartPole-v1", "seed": seed}))
    return run_dir


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG_SIGNATURE


def test_read_metrics(tmp_path: Path) -> None:
    _make_run(tmp_path, seed=0, steps=3)
    metrics = read_metrics(tmp_path)
    assert list(metrics) == COLUMNS
    np.testing.assert_array_equal(metrics["step"], [128, 256, 384])
    assert np.isnan(metrics["episode_return_mean"][2]) and np.isfinite(metrics["episode_return_mean"][:2]).all()
    assert np.isnan(metrics["reward_per_step"]).all()


def test_read_metrics_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_metrics(tmp_path / "missing")
    with pytest.raises(InputError, match="has no metrics.csv"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.csv").write_text("")
    with pytest.raises(InputError, match="is empty"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.csv").write_text("step,loss\n")
    with pytest.raises(InputError, match="no rows"):
        read_metrics(tmp_path)


def test_learning_curve_png(tmp_path: Path) -> None:
    _make_run(tmp_path, seed=0)
    out = plot_learning_curve(tmp_path)
    assert out == tmp_path / "learning_curve.png" and _is_png(out)


def test_learning_curve_with_reward_per_step_and_custom_out(tmp_path: Path) -> None:
    _make_run(tmp_path / "run", seed=0, rate=True)
    out = plot_learning_curve(tmp_path / "run", out=tmp_path / "figs" / "curve.png")
    assert _is_png(out)
    assert not any(".tmp-" in p.name for p in out.parent.iterdir())


def test_learning_curve_without_values_is_an_error(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path, ["step", "loss"], tensorboard=False) as log:
        log.log({"step": 1, "loss": 0.5})
    with pytest.raises(InputError, match="no values"):
        plot_learning_curve(tmp_path)


@pytest.mark.parametrize("panels", [1, 2])
def test_fixed_margins_keep_every_label_inside_the_figure(panels: int) -> None:
    # The figure has fixed margins (no layout engine): wide tick labels ("−1500", "−0.0020"),
    # the offset text of large steps ("1e6"), the axis labels and the title must still fit.
    fig = _figure(panels)
    steps = np.linspace(0, 2e6, 50)
    for ax, (column, y) in zip(fig.axes, [("episode_return_mean", -1600 + 1400 * steps / 2e6),
                                         ("reward_per_step", -0.00123 * (1 + steps / 2e6))]):
        ax.plot(steps, y)
        _style(ax, column)
    fig.axes[0].set_title("reinforce HalfCheetah-v5")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        box = ax.get_tightbbox(renderer)
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1, box
    boxes = [ax.get_tightbbox(renderer) for ax in fig.axes]
    for upper, lower in zip(boxes, boxes[1:]):  # panels do not overlap
        assert lower.y1 <= upper.y0 + 1


def test_plot_runs_groups_seeds(tmp_path: Path) -> None:
    runs = [_make_run(tmp_path / f"ppo{s}", seed=s, steps=8 + s) for s in range(3)]
    runs += [_make_run(tmp_path / "a2c0", seed=5, algo="a2c")]
    runs += [_make_run(tmp_path / "bare", seed=6, algo=None, rate=True)]
    out = plot_runs(runs, tmp_path / "cmp.png")
    assert out == tmp_path / "cmp.png" and _is_png(out)


def test_aggregate_on_a_common_grid() -> None:
    # Run a covers steps 0..10 with y = step; run b covers 0..20 with y = 2.
    # Grid = union of logged steps {0, 5, 10, 20}, kept where both runs have a value: {0, 5, 10}
    # (at 20 only run b would count, and the mean would jump to b's value).
    #   a: 0, 5, 10      b: 2, 2, 2
    #   mean: 1, 3.5, 6   min: 0, 2, 2   max: 2, 5, 10
    a = (np.array([0.0, 10.0]), np.array([0.0, 10.0]))
    b = (np.array([0.0, 5.0, 20.0]), np.array([2.0, 2.0, 2.0]))
    grid, mean, low, high = _aggregate([a, b])
    np.testing.assert_array_equal(grid, [0, 5, 10])
    np.testing.assert_allclose(mean, [1, 3.5, 6])
    np.testing.assert_allclose(low, [0, 2, 2])
    np.testing.assert_allclose(high, [2, 5, 10])


def test_blank_rows_keep_the_last_return_so_seeds_stay_aligned(tmp_path: Path) -> None:
    # Three seeds logged to step 400; two have blank returns at the end (no episode finished in
    # those rollouts), one keeps a low value there. Carried forward, every seed covers step 400
    # and the mean there is over all three: (370 + 380 + 53) / 3, not the one seed's 53.
    from policygrad.plots import _curves

    rows = {"a": [10, 370, "", ""], "b": [20, 380, "", ""], "c": [5, 40, 60, 53]}
    curves = []
    for name, returns in rows.items():
        run = tmp_path / name
        run.mkdir()
        lines = ["step,episode_return_mean"] + [f"{100 * (i + 1)},{r}" for i, r in enumerate(returns)]
        (run / "metrics.csv").write_text("\n".join(lines) + "\n")
        curves.append(_curves(read_metrics(run), run)["episode_return_mean"])
    np.testing.assert_array_equal(curves[0][0], [100, 200, 300, 400])
    np.testing.assert_array_equal(curves[0][1], [10, 370, 370, 370])
    grid, mean, _, _ = _aggregate(curves)
    assert grid[-1] == 400
    assert mean[-1] == pytest.approx((370 + 380 + 53) / 3)


def test_plot_runs_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="at least one"):
        plot_runs([], tmp_path / "x.png")
    with pytest.raises(InputError, match="does not exist"):
        plot_runs([tmp_path / "nope"], tmp_path / "x.png")
    _make_run(tmp_path / "run", seed=0)
    with pytest.raises(InputError, match="unknown format"):
        plot_runs([tmp_path / "run"], tmp_path / "x.notanimage")


def test_main_plot_prints_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    run = _make_run(tmp_path / "run", seed=0)
    monkeypatch.chdir(tmp_path)
    assert main_plot(argparse.Namespace(run_dirs=[str(run)], out=None)) == 0
    assert capsys.readouterr().out.strip() == "learning_curves.png"
    assert _is_png(tmp_path / "learning_curves.png")
