"""Checkpoints: round trips, atomic replacement, refusal of damaged or foreign files, exact resume."""

from __future__ import annotations

import json
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from policygrad.checkpoint import (
    FORMAT_VERSION,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    load_module_state,
    load_optimizer_state,
    module_state,
    optimizer_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from policygrad.errors import InputError


def _sample_tensors() -> dict[str, torch.Tensor]:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    return {
        "policy.weight": torch.randn(4, 3, generator=torch.Generator().manual_seed(0)),
        "policy.view": base[:, 1],  # a non-contiguous view sharing storage with the next one
        "policy.base": base,
        "counts": torch.tensor([1, 2, 3], dtype=torch.int64),
        "mask": torch.tensor([True, False]),
        "half": torch.tensor([0.5, -2.0], dtype=torch.bfloat16),
        "empty": torch.zeros(0, 5),
        "scalar": torch.tensor(3.25, dtype=torch.float64),
    }


def _tensors_file(path: Path) -> Path:
    return path / json.loads((path / "meta.json").read_text())["tensors_file"]


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert torch.equal(a[name], b[name]), name


# --- round trip ---------------------------------------------------------------------------------


def test_round_trip_keeps_tensors_and_meta(tmp_path: Path) -> None:
    tensors = _sample_tensors()
    meta = {"config": {"algo": "ppo", "lr": 3e-4, "hidden": [64, 64]}, "step": 12345,
            "obs_mean": [0.1, -0.2], "best": float("-inf"), "note": "ünïcode", "none": None}
    save_checkpoint(tmp_path / "ck", tensors, meta)
    loaded, loaded_meta = load_checkpoint(tmp_path / "ck")
    _assert_same(tensors, loaded)
    assert loaded_meta == meta
    record = json.loads((tmp_path / "ck" / "meta.json").read_text())
    assert record["library"] == "policygrad" and record["format_version"] == FORMAT_VERSION
    assert len(record["tensors_sha256"]) == 64


def test_overwrite_replaces_and_leaves_no_stale_files(tmp_path: Path) -> None:
    path = tmp_path / "ck"
    save_checkpoint(path, {"x": torch.zeros(3)}, {"step": 1})
    save_checkpoint(path, {"x": torch.ones(3)}, {"step": 2})
    tensors, meta = load_checkpoint(path)
    assert meta == {"step": 2} and torch.equal(tensors["x"], torch.ones(3))
    assert sorted(p.name for p in path.iterdir()) == sorted(["meta.json", _tensors_file(path).name])


def test_save_refuses_a_foreign_directory_and_a_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a checkpoint"):
        save_checkpoint(tmp_path, {}, {})
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        save_checkpoint(tmp_path / "file", {}, {})


def test_save_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a torch.Tensor"):
        save_checkpoint(tmp_path / "a", {"x": np.zeros(2)}, {})
    with pytest.raises(InputError, match="JSON"):
        save_checkpoint(tmp_path / "b", {}, {"f": object()})
    assert not (tmp_path / "a" / "meta.json").exists() and not (tmp_path / "b" / "meta.json").exists()


# --- atomicity ----------------------------------------------------------------------------------


def _crash_on_replace(monkeypatch: pytest.MonkeyPatch, target_name: str, truncate: bool) -> None:
    """Make the rename onto ``target_name`` fail as a crash would, optionally after a partial write."""
    real_replace = os.replace

    def replace(src, dst):  # noqa: ANN001
        if Path(dst).name.startswith(target_name):
            if truncate:
                with open(src, "r+b") as f:
                    f.truncate(10)
            raise OSError("simulated crash")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("target_name, truncate", [("tensors-", True), ("meta.json", False)])
def test_crash_during_save_keeps_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target_name: str, truncate: bool
) -> None:
    path = tmp_path / "ck"
    old = {"w": torch.arange(6.0)}
    save_checkpoint(path, old, {"step": 100})
    names_before = [p.name for p in path.iterdir()]
    with monkeypatch.context() as m:
        _crash_on_replace(m, target_name, truncate)
        with pytest.raises(OSError, match="simulated crash"):
            save_checkpoint(path, {"w": torch.full((6,), 7.0)}, {"step": 200})
    tensors, meta = load_checkpoint(path)
    _assert_same(tensors, old)
    assert meta == {"step": 100}
    # A write that fails (a full disk) removes its temporary and uncommitted files ...
    assert sorted(p.name for p in path.iterdir()) == sorted(names_before)
    # ... and what a killed process leaves behind, the next save removes.
    (path / f"tensors-0123456789abcdef.safetensors.tmp-{os.getpid() + 1}").write_bytes(b"debris")
    save_checkpoint(path, {"w": torch.ones(2)}, {"step": 300})
    assert not any(".tmp-" in p.name for p in path.iterdir())  # ... which the next save removes
    assert load_checkpoint(path)[1] == {"step": 300}


def test_checkpoint_is_complete_at_every_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ck"
    save_checkpoint(path, {"w": torch.zeros(4)}, {"step": 1})
    real_replace = os.replace
    seen = []

    def replace(src, dst):  # noqa: ANN001
        seen.append(load_checkpoint(path)[1]["step"])  # just before the rename
        real_replace(src, dst)
        seen.append(load_checkpoint(path)[1]["step"])  # just after

    monkeypatch.setattr(os, "replace", replace)
    save_checkpoint(path, {"w": torch.ones(4)}, {"step": 2})
    assert set(seen) == {1, 2} and seen[0] == 1 and seen[-1] == 2


# --- damaged, foreign, missing ------------------------------------------------------------------


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope")


def test_truncated_tensors_file(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ck", _sample_tensors(), {})
    f = _tensors_file(tmp_path / "ck")
    f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(InputError, match="truncated"):
        load_checkpoint(tmp_path / "ck")


def test_corrupt_tensors_file(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ck", _sample_tensors(), {})
    f = _tensors_file(tmp_path / "ck")
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(InputError, match="corrupt.*sha256"):
        load_checkpoint(tmp_path / "ck")


def test_unparseable_tensors_file_with_matching_hash(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "ck"
    save_checkpoint(path, {"x": torch.zeros(2)}, {})
    garbage = b"\xff" * 64
    _tensors_file(path).write_bytes(garbage)
    record = json.loads((path / "meta.json").read_text())
    record.update(tensors_sha256=hashlib.sha256(garbage).hexdigest(), tensors_bytes=len(garbage))
    (path / "meta.json").write_text(json.dumps(record))
    with pytest.raises(InputError, match="cannot parse"):
        load_checkpoint(path)


def test_invalid_json(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ck", {}, {"a": 1})
    (tmp_path / "ck" / "meta.json").write_text('{"library": "policygrad", ')
    with pytest.raises(InputError, match="not valid JSON"):
        load_checkpoint(tmp_path / "ck")


def test_unknown_format_version(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ck", {}, {})
    record = json.loads((tmp_path / "ck" / "meta.json").read_text())
    record["format_version"] = FORMAT_VERSION + 1
    (tmp_path / "ck" / "meta.json").write_text(json.dumps(record))
    with pytest.raises(InputError, match="unknown format version 2"):
        load_checkpoint(tmp_path / "ck")


def test_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "meta.json").write_text(json.dumps({"library": "something-else", "format_version": 1}))
    with pytest.raises(InputError, match="not a policygrad checkpoint"):
        load_checkpoint(tmp_path / "other")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a policygrad checkpoint"):
        load_checkpoint(tmp_path / "empty")


def test_tensors_file_name_cannot_escape_the_directory(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ck", {}, {})
    record = json.loads((tmp_path / "ck" / "meta.json").read_text())
    record["tensors_file"] = "../../etc/passwd"
    (tmp_path / "ck" / "meta.json").write_text(json.dumps(record))
    with pytest.raises(InputError, match="corrupt"):
        load_checkpoint(tmp_path / "ck")


class _Payload:
    """Unpickling this creates the sentinel file: proof that code ran."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.sentinel,))


def test_pickle_disguised_as_checkpoint_never_executes(tmp_path: Path) -> None:
    sentinel = tmp_path / "code-was-executed"
    payload = pickle.dumps(_Payload(sentinel))
    assert not sentinel.exists()

    (tmp_path / "as_file").write_bytes(payload)  # a pickle where the checkpoint should be
    with pytest.raises(InputError, match="not a policygrad checkpoint"):
        load_checkpoint(tmp_path / "as_file")

    save_checkpoint(tmp_path / "ck", {"x": torch.zeros(2)}, {})
    (tmp_path / "ck" / "meta.json").write_bytes(payload)  # a pickle as meta.json
    with pytest.raises(InputError, match="not valid JSON"):
        load_checkpoint(tmp_path / "ck")

    save_checkpoint(tmp_path / "ck2", {"x": torch.zeros(2)}, {})
    _tensors_file(tmp_path / "ck2").write_bytes(payload)  # a pickle as the tensors file
    with pytest.raises(InputError):
        load_checkpoint(tmp_path / "ck2")

    assert not sentinel.exists()


# --- latest_checkpoint --------------------------------------------------------------------------


def test_latest_checkpoint(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    save_checkpoint(checkpoint_path(tmp_path, 100), {}, {"step": 100})
    save_checkpoint(checkpoint_path(tmp_path, 2000), {}, {"step": 2000})
    save_checkpoint(checkpoint_path(tmp_path, 300), {}, {"step": 300})
    (tmp_path / "checkpoints" / "step_9999.tmp-123").mkdir()  # debris of a crash
    (tmp_path / "checkpoints" / "step_5000").mkdir()  # never committed
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_2000"
    save_checkpoint(checkpoint_path(tmp_path), {}, {"step": 2500})
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "last"


# --- modules ------------------------------------------------------------------------------------


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))


def test_module_round_trip(tmp_path: Path) -> None:
    src, dst = _net(0), _net(1)
    save_checkpoint(tmp_path / "ck", module_state(src, "policy"), {})
    tensors, _ = load_checkpoint(tmp_path / "ck")
    load_module_state(dst, tensors, "policy")
    _assert_same(src.state_dict(), dst.state_dict())


def test_module_mismatch_is_reported(tmp_path: Path) -> None:
    tensors = module_state(_net(0), "policy")
    wider = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.LayerNorm(16), torch.nn.Linear(16, 2))
    with pytest.raises(InputError, match="shape"):
        load_module_state(wider, tensors, "policy")
    with pytest.raises(InputError, match="missing"):
        load_module_state(_net(0), tensors, "value")
    deeper = torch.nn.Sequential(torch.nn.Linear(3, 8))
    with pytest.raises(InputError, match="unexpected"):
        load_module_state(deeper, tensors, "policy")


# --- optimizers: resuming continues bit for bit -------------------------------------------------


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(42)
    return [(torch.randn(16, 3, generator=g), torch.randn(16, 2, generator=g)) for _ in range(n)]


def _train(net: torch.nn.Module, opt: torch.optim.Optimizer, batches) -> None:  # noqa: ANN001
    for x, y in batches:
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()


def _adam(net: torch.nn.Module) -> torch.optim.Optimizer:
    # Two parameter groups with their own settings, amsgrad for an extra state tensor.
    return torch.optim.Adam(
        [{"params": net[0].parameters(), "lr": 1e-2},
         {"params": list(net[2].parameters()) + list(net[3].parameters())}],
        lr=3e-3, betas=(0.8, 0.99), weight_decay=1e-4, amsgrad=True,
    )


def test_adam_resume_is_bit_identical(tmp_path: Path) -> None:
    batches = _batches(10)
    net = _net(0)
    opt = _adam(net)
    _train(net, opt, batches[:5])

    opt_tensors, opt_meta = optimizer_state(opt)
    assert "optim.state.0.exp_avg" in opt_tensors and "optim.state.0.step" in opt_tensors
    save_checkpoint(tmp_path / "ck", {**module_state(net, "policy"), **opt_tensors}, {"optim": opt_meta})

    resumed = _net(7)
    resumed_opt = _adam(resumed)
    tensors, meta = load_checkpoint(tmp_path / "ck")
    load_module_state(resumed, tensors, "policy")
    load_optimizer_state(resumed_opt, tensors, meta["optim"])
    assert resumed_opt.param_groups[0]["betas"] == (0.8, 0.99)

    _train(net, opt, batches[5:])
    _train(resumed, resumed_opt, batches[5:])
    _assert_same(net.state_dict(), resumed.state_dict())


def test_optimizer_state_errors(tmp_path: Path) -> None:
    net = _net(0)
    opt = _adam(net)
    _train(net, opt, _batches(1))
    tensors, meta = optimizer_state(opt)
    del tensors["optim.state.0.exp_avg"]
    with pytest.raises(InputError, match="lacks tensor 'optim.state.0.exp_avg'"):
        load_optimizer_state(_adam(_net(0)), tensors, meta)
    tensors, meta = optimizer_state(opt)
    one_group = torch.optim.Adam(_net(0).parameters())
    with pytest.raises(InputError, match="does not fit"):
        load_optimizer_state(one_group, tensors, meta)


# --- random generators --------------------------------------------------------------------------


def _draw() -> tuple[torch.Tensor, np.ndarray, float, float, float]:
    return torch.rand(5), np.random.standard_normal(5), np.random.normal(), random.random(), random.gauss(0, 1)


def test_rng_round_trip_repeats_draws(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.normal()  # leave a cached Gaussian in NumPy's state
    random.gauss(0, 1)  # and in Python's
    tensors, meta = rng_state()
    save_checkpoint(tmp_path / "ck", tensors, {"rng": meta})
    expected = _draw()

    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    loaded, loaded_meta = load_checkpoint(tmp_path / "ck")
    set_rng_state(loaded, loaded_meta["rng"])
    again = _draw()
    assert torch.equal(expected[0], again[0])
    np.testing.assert_array_equal(expected[1], again[1])
    assert expected[2:] == again[2:]


def test_rng_state_missing_is_reported() -> None:
    tensors, meta = rng_state()
    del tensors["rng.numpy.key"]
    with pytest.raises(InputError, match="random-generator state"):
        set_rng_state(tensors, meta)
