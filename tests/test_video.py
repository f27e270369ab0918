"""Recording evaluation episodes (``policygrad eval --video``): one MP4 file per episode through
Gymnasium's RecordVideo, and one line with exit code 2 where video cannot be recorded."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import ClassVar

import gymnasium as gym
import imageio
import numpy as np
import pytest
from gymnasium import spaces

import policygrad as pg
from policygrad.cli import main
from policygrad.envs import make_vec_env
from policygrad.errors import InputError
from policygrad.evaluation import VideoRecorder
from policygrad.training import evaluate_run


class Blind(gym.Env):
    """An environment that declares no render mode."""

    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.zeros(2, np.float32), 1.0, True, False, {}


class Blank(Blind):
    """An environment that declares rgb_array rendering but renders nothing."""

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"]}

    def render(self) -> None:
        return None


@pytest.fixture(autouse=True)
def _no_display(monkeypatch: pytest.MonkeyPatch) -> None:
    # Frames are drawn off-screen; keep SDL from looking for a display (as the command does).
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")


def _saved(env: str, path: Path) -> Path:
    """A run directory of an untrained policy for ``env``."""
    return pg.PPO(env, seed=0, num_envs=2, minibatch_size=32, tensorboard=False).save(path)


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], pattern: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("policygrad: error: "), err
    assert pattern in err, err
    return err


@pytest.mark.slow
def test_eval_records_one_video_per_episode(tmp_path: Path, capsys) -> None:
    run_dir = _saved("CartPole-v1", tmp_path / "run")
    videos = tmp_path / "videos"
    assert main(["eval", str(run_dir), "--video", str(videos), "--episodes", "3", "--seed", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["episodes"] == 3
    files = sorted(videos.iterdir())
    assert [f.name for f in files] == [f"eval-episode-{i}.mp4" for i in range(3)]
    for f in files:
        head = f.read_bytes()[:12]
        assert f.stat().st_size > 1000 and head[4:8] == b"ftyp"  # an MP4 container
    # The same seed, the same episodes; their files are replaced. Each file holds its episode:
    # the first frame and one per step (CartPole's return is its length), less the last one
    # where moviepy rounds the clip's frame count (frames / fps · fps) down.
    again = evaluate_run(run_dir, 3, seed=1, video=videos)
    assert sorted(p.name for p in videos.iterdir()) == [f.name for f in files]
    assert len(again) == 3 and np.mean(again) == pytest.approx(result["mean_return"])
    for f, episode_return in zip(files, again):
        with imageio.get_reader(f) as reader:
            frames = [frame.shape for frame in reader]
        assert len(frames) in (episode_return, episode_return + 1) and frames[0] == (400, 600, 3)


def test_a_missing_moviepy_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    run_dir = _saved("CartPole-v1", tmp_path / "run")
    monkeypatch.setitem(sys.modules, "moviepy", None)  # `import moviepy` raises ImportError
    _fails(capsys, ["eval", str(run_dir), "--video", str(tmp_path / "v")], "pip install 'policygrad[video]'")
    assert not (tmp_path / "v").exists()


def test_a_missing_pygame_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    run_dir = _saved("CartPole-v1", tmp_path / "run")
    monkeypatch.setitem(sys.modules, "pygame", None)  # CartPole draws with pygame
    err = _fails(capsys, ["eval", str(run_dir), "--video", str(tmp_path / "v")], "cannot render a frame")
    assert "pygame" in err and "policygrad[video]" in err


@pytest.mark.parametrize("env, pattern", [
    ("Blind", "does not render in mode 'rgb_array' (its render modes: none)"),
    ("Blank", "renders NoneType, not an RGB frame"),
])
def test_an_environment_without_rgb_frames_is_one_line(env: str, pattern: str, tmp_path: Path, capsys) -> None:
    run_dir = _saved(f"{__name__}:{env}", tmp_path / "run")
    _fails(capsys, ["eval", str(run_dir), "--video", str(tmp_path / "v"), "--episodes", "2", "--trust-run-code"], pattern)
    assert not any((tmp_path / "v").glob("*.mp4"))


def test_video_goes_to_a_directory(tmp_path: Path, capsys) -> None:
    run_dir = _saved("CartPole-v1", tmp_path / "run")
    (tmp_path / "file").write_text("")
    _fails(capsys, ["eval", str(run_dir), "--video", str(tmp_path / "file")], "is not a directory")


def test_make_vec_env_renders_and_wraps_each_copy() -> None:
    seen: list[gym.Env] = []

    def wrap(env: gym.Env) -> gym.Env:
        seen.append(env)
        return env

    envs = make_vec_env("CartPole-v1", 2, 0, render_mode="rgb_array", wrappers=[wrap])
    assert envs.render_mode == "rgb_array" and len(seen) == 2  # "auto" became "sync"
    assert all(isinstance(env.unwrapped.render_mode, str) for env in seen)
    envs.close()
    with pytest.raises(InputError, match="wrapping each copy needs vectorization sync or async"):
        make_vec_env("CartPole-v1", 2, wrappers=[wrap], vectorization="vector")
    with pytest.raises(InputError, match=r"does not render in mode 'ansi' \(its render modes: human, rgb_array\)"):
        make_vec_env("CartPole-v1", 1, render_mode="ansi")


def test_a_recorder_counts_positive_episodes(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="positive int"):
        VideoRecorder(tmp_path, 0)
