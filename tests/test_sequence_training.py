"""``policygrad train --env seq:TASK``: metrics, determinism, exact resume, greedy evaluation, and
bad input (one line, exit 2, no run directory) or a failing reward (exit 1, checkpoint intact)."""

from __future__ import annotations

import csv
import json
import sys
import textwrap
from pathlib import Path

import pytest

from policygrad.checkpoint import latest_checkpoint, load_checkpoint
from policygrad.cli import main
from policygrad.sequence_training import SEQUENCE_ALGOS, SEQUENCE_COLUMNS

# A small run: few prompts, short pretraining, no TensorBoard.
QUICK = ["--quiet", "--set", "tensorboard=false", "--set", "pretrain_steps=5", "--set", "prompts_per_step=2",
         "--set", "group_size=4", "--set", "eval_prompts=16", "--set", "d_model=16", "--set", "n_heads=2",
         "--set", "n_layers=1"]


def _train(out: Path, *extra: str, steps: int = 4) -> int:
    return main(["train", "--env", "seq:count", "--out", str(out), "--steps", str(steps), *QUICK, *extra])


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _without_wall_time(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "wall_time"} for row in rows]


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], code: int, pattern: str) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("policygrad: error: "), lines[0]
    assert pattern in lines[0], lines[0]
    return lines[0]


def test_a_run_writes_its_metrics_and_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert _train(run) == 0
    rows = _rows(run)
    assert list(rows[0]) == list(SEQUENCE_COLUMNS)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    for row in rows:
        assert 0.0 <= float(row["success_rate"]) <= 1.0
        assert float(row["completion_length"]) >= 1
    config = json.loads((run / "config.json").read_text())
    assert config["kind"] == "sequence" and config["algo"] == "grpo" and config["env"] == "seq:count"
    tensors, meta = load_checkpoint(latest_checkpoint(run))
    assert meta["step"] == 4 and len(meta["reference_sha256"]) == 64
    assert any(k.startswith("reference.") for k in tensors) and any(k.startswith("optim.") for k in tensors)
    assert main(["eval", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"mean_return", "success_rate"} <= set(result) and result["prompts"] == 16


def test_seeds_are_the_single_runs_of_those_seeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "seeds"
    assert main(["train", "--env", "seq:count", "--out", str(base), "--steps", "3", "--seeds", "0,5", "--jobs", "2",
                 *[a for a in QUICK if a != "--quiet"]]) == 0
    out = capsys.readouterr().out
    assert "success_rate" in out and "seed 5:" in out
    assert _train(tmp_path / "five", "--seed", "5", steps=3) == 0
    assert _without_wall_time(_rows(base / "seed_5")) == _without_wall_time(_rows(tmp_path / "five"))
    assert _without_wall_time(_rows(base / "seed_0")) != _without_wall_time(_rows(base / "seed_5"))
    assert json.loads((base / "seed_0" / "config.json").read_text())["config"]["seed"] == 0
    capsys.readouterr()
    assert main(["eval", str(base / "seed_0"), "--json"]) == 0


def test_eval_every_logs_held_out_success_without_changing_the_run(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(tmp_path / "plain", steps=4) == 0
    assert _train(tmp_path / "evaluated", "--eval-every", "2", steps=4) == 0
    plain, evaluated = _rows(tmp_path / "plain"), _rows(tmp_path / "evaluated")
    assert [row["eval_success_rate"] for row in plain] == ["", "", "", ""]
    assert [row["eval_success_rate"] != "" for row in evaluated] == [False, True, False, True]
    # the evaluations draw nothing from the training's generator
    def training(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        return [{k: v for k, v in row.items() if k not in ("wall_time", "eval_success_rate")} for row in rows]

    assert training(evaluated) == training(plain)
    # the last one is the final evaluation's (the same held-out prompts, the same policy)
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "evaluated"), "--json"]) == 0
    assert float(evaluated[-1]["eval_success_rate"]) == json.loads(capsys.readouterr().out)["success_rate"]
    # a resume may change it; 0 is refused
    assert main(["train", "--resume", str(tmp_path / "plain"), "--steps", "6", "--eval-every", "3", "--quiet"]) == 0
    assert [row["eval_success_rate"] != "" for row in _rows(tmp_path / "plain")][4:] == [False, True]
    _fails(capsys, ["train", "--env", "seq:count", "--out", str(tmp_path / "bad"), "--eval-every", "0", *QUICK], 2,
           "--eval-every must be")
    assert not (tmp_path / "bad").exists()


def test_a_tasks_settings_are_recorded_and_used_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import policygrad as pg
    from policygrad.sequence_training import build_sequence_session, read_sequence_config

    run = tmp_path / "run"
    assert _train(run, "--env", "seq:count", "--env-kwargs", '{"letters": "wxyz", "max_count": 8}', steps=2) == 0
    spec = read_sequence_config(run)
    assert spec.env_kwargs == {"letters": "wxyz", "max_count": 8}
    task = build_sequence_session(spec, pretrain=False).task
    assert task.letters == "wxyz" and task.vocab_size == 2 + 4 + 11
    assert main(["train", "--resume", str(run), "--steps", "3", "--quiet"]) == 0  # rebuilt with the settings
    capsys.readouterr()
    assert main(["eval", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["prompts"] == 16
    # --set env.KEY=VALUE and the Python API name the same settings
    assert main(["train", "--env", "seq:add", "--set", "env.max_digits=1", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["env_kwargs"] == {"max_digits": 1}
    assert pg.GRPO("seq:add", env_kwargs={"max_digits": 1}).spec.env_kwargs == {"max_digits": 1}
    _fails(capsys, ["train", "--resume", str(run), "--env-kwargs", '{"max_count": 2}', "--quiet"], 2,
           "drop --env-kwargs")


def test_same_seed_same_metrics(tmp_path: Path) -> None:
    assert _train(tmp_path / "a", "--seed", "3") == 0
    assert _train(tmp_path / "b", "--seed", "3") == 0
    assert _train(tmp_path / "c", "--seed", "4") == 0
    a, b, c = (_without_wall_time(_rows(tmp_path / x)) for x in "abc")
    assert a == b
    assert a != c


def test_resume_continues_bit_identically(tmp_path: Path) -> None:
    assert _train(tmp_path / "whole", steps=6) == 0
    assert _train(tmp_path / "split", steps=3) == 0
    assert main(["train", "--resume", str(tmp_path / "split"), "--steps", "6", "--quiet"]) == 0
    whole, split = _rows(tmp_path / "whole"), _rows(tmp_path / "split")
    assert _without_wall_time(split) == _without_wall_time(whole)
    t1, _ = load_checkpoint(latest_checkpoint(tmp_path / "whole"))
    t2, m2 = load_checkpoint(latest_checkpoint(tmp_path / "split"))
    assert m2["step"] == 6
    assert all(bool((t1[k] == t2[k]).all()) for k in t1 if k.startswith(("policy.", "reference.")))


@pytest.mark.parametrize("algo", [a for a in SEQUENCE_ALGOS if a != "grpo"])
def test_every_algorithm_trains(algo: str, tmp_path: Path) -> None:
    run = tmp_path / algo
    assert _train(run, "--algo", algo, "--set", "beta=0.05", steps=2) == 0
    rows = _rows(run)
    assert len(rows) == 2 and all(row["loss"] != "" for row in rows)


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["--env", "seq:nosuch"], "unknown sequence task 'seq:nosuch'"),
        (["--env", "seq:count", "--algo", "a2c"], "does not train on sequences"),
        (["--env", "seq:count", "--set", "no_such_key=1"], "unknown sequence hyperparameter 'no_such_key'"),
        (["--env", "seq:count", "--set", "group_size=0"], "group_size must be >= 1"),
        (["--env", "seq:count", "--set", "kl=k9"], "kl must be one of"),
        (["--env", "seq:count", "--set", "max_context=4"], "more than the model's context of 4 tokens"),
        (["--env", "seq:count", "--reward", "no_such_module_xyz:f"], "cannot import the reward's module"),
        (["--env", "seq:count", "--target-return", "1"], "not supported for sequence tasks"),
        (["--env", "seq:add", "--env-kwargs", '{"max_digit": 3}'], "bad settings for seq:add"),
        (["--env", "seq:add", "--env-kwargs", '{"max_digits": 10}'], "max_digits must be an integer in [1, 9]"),
        (["--env", "seq:count", "--set", "env.letters=5"], "letters must be distinct characters"),
        (["--env", "seq:count", "--env-kwargs", '{"letters": "ab1"}'], "letters must be distinct characters"),
        (["--env", "seq:sort", "--env-kwargs", '{"min_digits": 4, "max_digits": 3}'], "min_digits ≤ max_digits"),
        (["--env", "seq:count", "--env-kwargs", "[1]"], "--env-kwargs must be a JSON object"),
        (["--env", "seq:count", "--seeds", "0,1", "--seed", "2"], "--seed and --seeds are mutually exclusive"),
        (["--env", "seq:count", "--seeds", "0,1", "--jobs", "0"], "--jobs must be at least 1"),
        (["--env", "seq:count", "--seeds", "0,1", "--set", "group_size=0"], "group_size"),
        (["--env", "CartPole-v1", "--algo", "grpo"], "unknown algorithm 'grpo'"),
        (["--env", "CartPole-v1", "--reward", "m:f"], "--reward applies to sequence tasks"),
    ],
)
def test_bad_input_exits_2_without_a_run_directory(argv: list[str], pattern: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    _fails(capsys, ["train", "--out", str(out), "--quiet", "--set", "tensorboard=false", *argv], 2, pattern)
    assert not out.exists()


def test_a_model_directory_that_does_not_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{not json")
    out = tmp_path / "run"
    line = _fails(capsys, ["train", "--env", "seq:count", "--out", str(out), "--model", str(model), *QUICK], 2, "model")
    assert "Traceback" not in line
    assert not out.exists()


def _save_gpt2(directory: Path, vocab_size: int) -> None:
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=1, n_head=2, n_positions=64,
                                     bos_token_id=1, eos_token_id=1, pad_token_id=0)
    transformers.GPT2LMHeadModel(config).save_pretrained(directory)


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_a_model_directory_trains_resumes_and_evaluates(algo: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from policygrad.sequence.tasks import CountTask

    model = tmp_path / "model"
    _save_gpt2(model, CountTask().vocab_size)
    before = sorted((p.name, p.stat().st_size) for p in model.iterdir())
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert _train(whole, "--algo", algo, "--model", str(model), steps=4) == 0
    assert _train(split, "--algo", algo, "--model", str(model), steps=2) == 0
    assert main(["train", "--resume", str(split), "--steps", "4", "--quiet"]) == 0
    assert _without_wall_time(_rows(split)) == _without_wall_time(_rows(whole))
    tensors, meta = load_checkpoint(latest_checkpoint(whole))
    assert json.loads((whole / "config.json").read_text())["config"]["model"] == str(model)
    assert any(k.startswith("policy.model.") for k in tensors)
    assert any(k.startswith("policy.value_head.") for k in tensors) == (algo == "ppo")
    initial = pytest.importorskip("transformers").GPT2LMHeadModel.from_pretrained(model).state_dict()
    trained = {k.removeprefix("policy.model."): v for k, v in tensors.items() if k.startswith("policy.model.")}
    assert not torch_equal(trained["transformer.h.0.mlp.c_fc.weight"], initial["transformer.h.0.mlp.c_fc.weight"])
    assert sorted((p.name, p.stat().st_size) for p in model.iterdir()) == before  # the directory is only read
    capsys.readouterr()
    assert main(["eval", str(whole), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.0 <= result["success_rate"] <= 1.0 and result["prompts"] == 16


@pytest.mark.parametrize("extra", [-1, 3])
def test_a_model_whose_vocabulary_is_not_the_tasks(extra: int, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from policygrad.sequence.tasks import CountTask

    size = CountTask().vocab_size
    _save_gpt2(tmp_path / "model", size + extra)
    capsys.readouterr()  # transformers' own progress bar while saving
    out = tmp_path / "run"
    line = _fails(capsys, ["train", "--env", "seq:count", "--out", str(out), "--model", str(tmp_path / "model"),
                           *QUICK], 2, f"has {size + extra} tokens and seq:count's tokenizer {size}")
    assert f"vocab_size={size}" in line
    assert not out.exists()


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


@pytest.mark.parametrize("body, pattern", [
    ("raise ValueError('boom')", "step 3: the reward function raised on prompt"),
    ("return float('nan')", "a reward must be a finite number"),
])
def test_a_failing_reward_exits_1_with_the_checkpoint_intact(
    body: str, pattern: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "user_reward_mod.py").write_text(textwrap.dedent(f"""
        calls = []
        def reward(prompt, completion):
            calls.append(1)
            if len(calls) > 16:
                {body}
            return 1.0
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("user_reward_mod", None)
    run = tmp_path / "run"
    argv = ["train", "--env", "seq:count", "--out", str(run), "--steps", "4", "--reward", "user_reward_mod:reward",
            *QUICK, "--set", "checkpoint_every=1"]
    _fails(capsys, argv, 1, pattern)
    _, meta = load_checkpoint(latest_checkpoint(run))
    assert meta["step"] == 2
    assert len(_rows(run)) == 2


def test_resume_refuses_new_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(tmp_path / "run", steps=1) == 0
    _fails(capsys, ["train", "--resume", str(tmp_path / "run"), "--algo", "rloo"], 2, "drop --algo")


def test_the_python_api(tmp_path: Path) -> None:
    import policygrad as pg

    settings = dict(seed=1, tensorboard=False, pretrain_steps=2, prompts_per_step=2, group_size=2, eval_prompts=4,
                    d_model=16, n_heads=2, n_layers=1)
    seen: list[int] = []
    model = pg.GRPO("seq:count", **settings).learn(2, tmp_path / "grpo", progress_bar=False,
                                                   callback=lambda row: seen.append(row["step"]))
    assert seen == [1, 2]  # the first learn() calls back too
    assert model.num_timesteps == 2 and 0.0 <= model.summary["success_rate"] <= 1.0
    model.learn(1, progress_bar=False)
    assert model.num_timesteps == 3 and len(_rows(tmp_path / "grpo")) == 3
    assert set(model.evaluate()) >= {"success_rate", "mean_return"}
    for cls, algo in ((pg.PPO, "ppo"), (pg.REINFORCE, "reinforce"), (pg.RLOO, "rloo"), (pg.DrGRPO, "dr_grpo"),
                      (pg.ReMax, "remax"), (pg.ReinforcePP, "reinforce_pp")):
        m = cls("seq:count", **settings)
        assert isinstance(m, pg.SequenceModel) and m.spec.algo == algo
    with pytest.raises(pg.InputError, match="unknown sequence task"):
        pg.GRPO("seq:nosuch")
    with pytest.raises(pg.InputError, match="trains on sequence tasks"):
        pg.GRPO("CartPole-v1")


def test_tensorboard_print_config_and_an_interrupt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import signal

    run = tmp_path / "run"
    argv = ["train", "--env", "seq:count", "--out", str(run), "--steps", "3", *QUICK, "--set", "tensorboard=true"]
    assert main(argv) == 0
    assert any((run / "tb").iterdir())
    capsys.readouterr()
    assert main(["train", "--env", "seq:count", "--algo", "rloo", "--print-config", "--set", "beta=0.1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["algo"] == "rloo" and printed["config"]["beta"] == 0.1 and printed["config"]["kl"] == "k1_reward"

    # SIGINT during training: the update finishes, a checkpoint is saved, exit 130; resume goes on.
    stopped = tmp_path / "stopped"

    def interrupt(row: dict) -> None:
        if row["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    import policygrad.sequence_training as st

    original = st.sequence_update

    def update(session):  # type: ignore[no-untyped-def]
        metrics = original(session)
        interrupt({"step": session.step + 1})
        return metrics

    st.sequence_update = update
    try:
        code = main(["train", "--env", "seq:count", "--out", str(stopped), "--steps", "5", *QUICK])
    finally:
        st.sequence_update = original
    assert code == 130
    assert "stopped by SIGINT at step 2" in capsys.readouterr().err
    _, meta = load_checkpoint(latest_checkpoint(stopped))
    assert meta["step"] == 2
    assert main(["train", "--resume", str(stopped), "--quiet"]) == 0
    assert [int(r["step"]) for r in _rows(stopped)] == [1, 2, 3, 4, 5]


def test_a_config_file_names_the_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "run.toml"
    config.write_text('algo = "dr_grpo"\nenv = "seq:count"\nbeta = 0.02\n')
    assert main(["train", "--config", str(config), "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["algo"], printed["env"], printed["config"]["beta"]) == ("dr_grpo", "seq:count", 0.02)


def test_the_pad_and_eos_ids_are_the_tasks() -> None:
    from policygrad import sequence_training
    from policygrad.sequence import tasks

    assert (sequence_training.PAD, sequence_training.EOS) == (tasks.PAD, tasks.EOS)


def test_resume_takes_the_newest_checkpoint_by_step_as_classic_runs_do(tmp_path: Path) -> None:
    # A kill between a kept step_N and the rewrite of last can leave last older than step_N: the
    # resume continues from the checkpoint whose meta has the largest step.
    import shutil

    run = tmp_path / "run"
    assert main(["train", "--env", "seq:count", "--out", str(run), "--steps", "5", *QUICK,
                 "--set", "checkpoint_every=2"]) == 0
    checkpoints = run / "checkpoints"
    assert {"last", "step_2", "step_4"} <= {p.name for p in checkpoints.iterdir()}
    shutil.rmtree(checkpoints / "last")
    shutil.copytree(checkpoints / "step_2", checkpoints / "last")  # last is now older than step_4
    before = _rows(run)
    assert main(["train", "--resume", str(run), "--steps", "6", "--quiet"]) == 0
    _, meta = load_checkpoint(latest_checkpoint(run))
    assert meta["step"] == 6
    # Rows 1-4 were kept as they were, wall times included (the resume started at step_4, not at
    # last's step 2, which would have trained steps 3 and 4 again); 5 and 6 were written again.
    after = _rows(run)
    assert [int(r["step"]) for r in after] == [1, 2, 3, 4, 5, 6]
    assert after[:4] == before[:4]


def test_a_failed_write_names_the_newest_intact_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import errno

    from policygrad import checkpoint

    run = tmp_path / "run"
    assert _train(run, steps=2) == 0
    real = checkpoint.save_checkpoint

    def full_disk(path, tensors, meta):  # noqa: ANN001, ANN202
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint, "save_checkpoint", full_disk)
    line = _fails(capsys, ["train", "--resume", str(run), "--steps", "3", "--quiet"], 1, "No space left on device")
    assert "the newest intact checkpoint is" in line and "(step 2)" in line
    monkeypatch.setattr(checkpoint, "save_checkpoint", real)


def test_a_task_preset_changes_its_algorithm_on_that_task_only() -> None:
    from policygrad.sequence_training import SEQUENCE_PRESETS, SEQUENCE_TASK_PRESETS, resolve_sequence_run

    assert SEQUENCE_TASK_PRESETS[("grpo", "count")] == {"prompts_per_step": 32}
    assert resolve_sequence_run("grpo", "seq:count").config.prompts_per_step == 32
    assert resolve_sequence_run("grpo", "seq:sort").config.prompts_per_step == SEQUENCE_PRESETS["grpo"]["prompts_per_step"]
    assert resolve_sequence_run("rloo", "seq:count").config.prompts_per_step == SEQUENCE_PRESETS["rloo"]["prompts_per_step"]
    # --set still wins over the task's preset
    assert resolve_sequence_run("grpo", "seq:count", overrides={"prompts_per_step": 8}).config.prompts_per_step == 8
