"""The hyperparameters every policy-gradient algorithm shares, and their validation.

Each algorithm's ``Config`` is a frozen dataclass that extends :class:`BaseConfig` with the
fields of its own Ψ and surrogate. Every field carries a one-line docstring (the string literal
under it); types are checked against the annotations and ranges in ``__post_init__``, so a bad
value fails at construction with one :class:`~policygrad.errors.InputError` line.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from policygrad.errors import InputError, check_seed, shown

__all__ = [
    "ACTIVATION_NAMES", "BaseConfig", "config_from_dict", "field_docs", "parse_value", "check_types", "positive",
    "non_negative", "unit_interval", "in_range", "at_most", "MAX_NUM_ENVS",
    "MAX_BATCH_SIZE", "MAX_HIDDEN_SIZE", "MAX_HIDDEN_LAYERS", "MAX_HIDDEN_WEIGHTS", "LOG_STD_RANGE",
    "MAX_VALUE_CHARS",
]

ACTIVATION_NAMES = ("tanh", "relu", "elu", "gelu")
"""The hidden-layer activations by name (``policygrad.policies.ACTIVATIONS`` maps each to its function)."""

MAX_NUM_ENVS = 4096
"""Most environment copies of one run (num_envs)."""
MAX_BATCH_SIZE = 2**20
"""Most transitions per rollout, num_envs · num_steps (1,048,576)."""
MAX_HIDDEN_SIZE = 65536
"""Widest hidden layer."""
MAX_HIDDEN_LAYERS = 64
"""Most hidden layers."""
MAX_HIDDEN_WEIGHTS = 2**26
"""Most weights between consecutive hidden layers, Σ_i h_i · h_{i+1}, of one network (67,108,864)."""
LOG_STD_RANGE = (-20.0, 2.0)
"""Range of log_std_init: σ from 2e-9 to 7.4."""
MAX_VALUE_CHARS = 10_000
"""Longest string value of a hyperparameter (``--set KEY=VALUE``) that is parsed."""


@dataclass(frozen=True)
class BaseConfig:
    """Hyperparameters shared by every algorithm (data collection, network, optimiser)."""

    num_envs: int = 8
    """Parallel environments stepped in one vector environment (N), 1 to 4096 (each copy is an
    environment object, a process under vectorization=async)."""
    num_steps: int = 128
    """Steps collected per environment per rollout (T); one update per rollout. num_envs · num_steps
    is at most 1,048,576 (2**20): the rollout and a full-batch update hold every transition."""
    learning_rate: float = 3e-4
    """Optimiser step size (of the critic only, for NPG and TRPO); finite, > 0."""
    optimizer: Literal["adam", "rmsprop"] = "adam"
    """Gradient optimiser: adam, or rmsprop (α = 0.99, the A2C reference's choice)."""
    anneal_lr: bool = False
    """Decay the learning rate linearly from learning_rate to 0 over the run's updates."""
    optim_eps: float = 1e-5
    """The optimiser's ε (1e-5 as in the reference implementations, not PyTorch's 1e-8)."""
    gamma: float = 0.99
    """Discount factor γ in (0, 1]."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus in the loss."""
    vf_coef: float = 0.5
    """Weight of the critic's squared-error loss in the joint loss."""
    max_grad_norm: float | None = 0.5
    """Clip the global gradient norm to this (None: no clipping)."""
    normalize_advantages: bool = True
    """Standardise Ψ (zero mean, unit std) before the policy step."""
    normalize_obs: bool = False
    """Normalise observations by a running mean and std (kept in the checkpoint)."""
    normalize_reward: bool = False
    """Scale rewards by a running std of the discounted return (kept in the checkpoint)."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the hidden layers of the actor and of the critic: 1 to 64 layers, each 1 to 65,536
    wide, with Σ_i h_i · h_{i+1} ≤ 2**26 weights between them (256 MiB of float32 per network)."""
    activation: str = "tanh"
    """Hidden-layer nonlinearity: one of policygrad.policies.ACTIVATIONS (tanh, relu, elu, gelu)."""
    ortho_init: bool = True
    """Orthogonal initialisation of the built-in networks (gain √2 hidden, 0.01 actor output, 1
    critic output, biases 0); false: PyTorch's default initialisation (SB3's ortho_init=False)."""
    log_std_init: float = 0.0
    """Box actions: the initial log σ (every entry of gSDE's L under use_sde), in [-20, 2]: σ from 2e-9
    (no exploration left) to 7.4 (noise that swamps a unit action range); Stable-Baselines3 clamps log σ
    to the same range."""
    use_sde: bool = False
    """Box actions: explore with gSDE (noise φ(s)ᵀM from the actor's last hidden layer, M kept for
    sde_sample_freq steps) instead of independent Gaussian noise at every step."""
    sde_sample_freq: int = -1
    """use_sde: draw new noise matrices every this many steps of a rollout (-1: once per rollout)."""
    image_obs: Literal["auto", "yes", "no"] = "auto"
    """Which Box observations are images for a convolutional encoder: auto (3-D uint8, bounds 0..255, 1/3/4
    channels first or last), yes (every 3-D Box with 1/3/4 channels first or last), no (flatten into the MLP)."""
    share_encoder: bool = True
    """Image observations: actor and critic share the convolutional encoder (false: each has its own)."""
    seed: int = 0
    """Seed of torch, NumPy and the environments, in [0, 2**63)."""
    backend: Literal["auto", "torch", "numpy"] = "auto"
    """Where the networks run: torch (autograd, any network or device), numpy (small tanh/ReLU MLPs on
    the CPU, fastest there), or auto (numpy where it can serve the run, else torch; the choice and its
    reason are logged and written to config.json)."""
    criterion: Literal["discounted", "average"] = "discounted"
    """Objective: "discounted" return (γ), or "average" reward per step of a continuing task (no γ;
    differential advantages, see policygrad.algorithms.average)."""
    rho_lr: float = 1.0
    """criterion="average": step size η in (0, 1] of the average-reward estimate ρ ← ρ + η (mean batch reward − ρ);
    1 takes each batch's own mean (ATRPO), which suits batches of thousands of steps."""
    value_center_coef: float = 0.1
    """criterion="average": fraction in [0, 1] of the batch mean of V subtracted from the critic's targets
    (keeps V centred)."""

    @property
    def batch_size(self) -> int:
        """Transitions per rollout: num_envs · num_steps."""
        return self.num_envs * self.num_steps

    def __post_init__(self) -> None:
        if isinstance(self.seed, int) and not isinstance(self.seed, bool):
            check_seed(self.seed)  # before check_types, which refuses ints beyond 64 bits in general words
        check_types(self)
        self._validate()

    def _validate(self) -> None:
        """Range checks; subclasses extend it (and call ``super()._validate()``)."""
        positive(self, "num_envs", "num_steps", "learning_rate", "optim_eps")
        at_most(self, MAX_NUM_ENVS, "num_envs")
        if self.batch_size > MAX_BATCH_SIZE:
            raise InputError(
                f"num_envs · num_steps = {self.num_envs} · {self.num_steps} = {self.batch_size:,} transitions "
                f"per rollout exceeds the limit of {MAX_BATCH_SIZE:,}"
            )
        non_negative(self, "ent_coef", "vf_coef")
        unit_interval(self, "gamma", allow_zero=False)
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise InputError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")
        _check_hidden_sizes(self.hidden_sizes)
        in_range(self, "log_std_init", *LOG_STD_RANGE)
        check_seed(self.seed)
        if self.activation not in ACTIVATION_NAMES:
            raise InputError(f"unknown activation {shown(self.activation)}; valid: {', '.join(ACTIVATION_NAMES)}")
        if self.sde_sample_freq != -1 and self.sde_sample_freq < 1:
            raise InputError(f"sde_sample_freq must be -1 (once per rollout) or a positive int, got {self.sde_sample_freq}")
        unit_interval(self, "value_center_coef")
        unit_interval(self, "rho_lr", allow_zero=False)
        if self.criterion == "average" and self.normalize_reward:
            raise InputError(
                "normalize_reward scales rewards by the std of a discounted return and cannot be combined "
                "with criterion='average'; set normalize_reward=false"
            )

    def to_dict(self) -> dict[str, Any]:
        """Field values as plain JSON-able Python values (tuples become lists)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a config class (for ``--help`` texts and docs)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(inspect.getsource(klass))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, nxt in zip(body, body[1:]):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[stmt.target.id] = nxt.value.value.strip()
    return docs


def config_from_dict(cls: type, algo: str, overrides: Mapping[str, Any]) -> Any:
    """Build ``cls`` from ``overrides``, naming an unknown key and converting strings.

    Strings (as given on a command line, ``--set gamma=0.99``) are converted to the field's
    type; any other value must already have it.
    """
    if not isinstance(overrides, Mapping):
        raise InputError(f"overrides must be a mapping of hyperparameters, got {type(overrides).__name__}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    values: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in hints or key not in valid:
            raise InputError(f"unknown {algo} hyperparameter {shown(key)}; valid: {', '.join(sorted(valid))}")
        values[key] = parse_value(key, value, hints[key]) if isinstance(value, str) else value
    return cls(**values)


# --- range checks for _validate, and helpers --------------------------------------------------


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def positive(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not value > 0:
            raise InputError(f"{name} must be > 0, got {value}")


def non_negative(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not value >= 0:
            raise InputError(f"{name} must be >= 0, got {value}")


def at_most(cfg: Any, limit: int, *names: str) -> None:
    """InputError unless each field is at most ``limit``."""
    for name in names:
        value = getattr(cfg, name)
        if value > limit:
            raise InputError(f"{name} must be at most {limit:,}, got {value:,}")


def in_range(cfg: Any, name: str, low: float, high: float) -> None:
    """InputError unless the field lies in [low, high]."""
    value = getattr(cfg, name)
    if not low <= value <= high:
        raise InputError(f"{name} must lie in [{low:g}, {high:g}], got {value}")


def _check_hidden_sizes(sizes: tuple[int, ...]) -> None:
    if not sizes or any(h < 1 for h in sizes):
        raise InputError(f"hidden_sizes must be a non-empty tuple of positive ints, got {shown(sizes)}")
    if len(sizes) > MAX_HIDDEN_LAYERS:
        raise InputError(f"hidden_sizes has {len(sizes)} layers; at most {MAX_HIDDEN_LAYERS} are allowed")
    if max(sizes) > MAX_HIDDEN_SIZE:
        raise InputError(f"hidden_sizes: a layer of width {max(sizes):,} exceeds the limit of {MAX_HIDDEN_SIZE:,}")
    weights = sum(a * b for a, b in zip(sizes, sizes[1:]))
    if weights > MAX_HIDDEN_WEIGHTS:
        raise InputError(
            f"hidden_sizes {shown(sizes)} has {weights:,} weights between hidden layers, above the limit "
            f"of {MAX_HIDDEN_WEIGHTS:,} per network"
        )


def unit_interval(cfg: Any, name: str, *, allow_zero: bool = True) -> None:
    """InputError unless the field lies in [0, 1] (or (0, 1] without ``allow_zero``)."""
    value = getattr(cfg, name)
    if not ((value >= 0.0 if allow_zero else value > 0.0) and value <= 1.0):
        raise InputError(f"{name} must lie in {'[0, 1]' if allow_zero else '(0, 1]'}, got {value}")


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "None"
    origin = typing.get_origin(hint)
    if origin is tuple:
        return "a tuple of ints"
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if origin is not None and type(None) in typing.get_args(hint):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return " or ".join(_type_name(a) for a in inner) + " or None"
    return {bool: "a bool", int: "an int", float: "a number", str: "a string"}.get(hint, str(hint))


class _OutOfRange(InputError):
    """A value of the right type outside what the type allows (a non-finite float, an int beyond
    64 bits): reported as it is, not as "must be X or None"."""


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` converted to ``hint`` if it fits without loss, else InputError.

    Floats must be finite and ints fit in 64 bits, whatever the field: no hyperparameter means
    anything at infinity, and a NaN passes every comparison of a range check.
    """
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType) and args:
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except _OutOfRange:
                raise
            except InputError:
                pass
        raise InputError(f"{name} must be {_type_name(hint)}, got {shown(value)}")
    if origin is tuple:
        if isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return tuple(value)
        raise InputError(f"{name} must be {_type_name(hint)}, got {shown(value)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise InputError(f"{name} must be one of {', '.join(repr(a) for a in args)}, got {shown(value)}")
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if not -(2**63) <= value < 2**63:
                raise _OutOfRange(f"{name} must be an int of at most 64 bits, got {shown(value)}")
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int beyond the float range
                number = math.inf
            if not math.isfinite(number):
                raise _OutOfRange(f"{name} must be a finite number, got {shown(value)}")
            return number
    elif hint is str:
        if isinstance(value, str):
            return value
    raise InputError(f"{name} must be {_type_name(hint)}, got {shown(value)}")


def check_types(cfg: Any) -> None:
    """Coerce every field of the dataclass ``cfg`` to its annotated type where that loses nothing
    (an int for a float, a list for a tuple), else InputError naming the field."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        coerced = _coerce(f.name, value, hints[f.name])
        if coerced is not value:
            object.__setattr__(cfg, f.name, coerced)


_INT = re.compile(r"[+-]?[0-9](?:_?[0-9])*")


def parse_value(name: str, text: str, hint: Any) -> Any:
    """Parse a command-line string (``--set name=text``) for a field of type ``hint``; InputError
    naming the field if it does not fit, or if the string is longer than :data:`MAX_VALUE_CHARS`.

    Numbers are read by ``int`` or ``float`` (``3e-4``, ``100_000``, ``inf``; the range checks
    refuse what is not finite), which take time linear in the length of the text.
    """
    if len(text) > MAX_VALUE_CHARS:
        raise InputError(f"{name}: a value of {len(text):,} characters exceeds the limit of {MAX_VALUE_CHARS:,}")
    stripped = text.strip()
    lowered = stripped.lower()
    args = typing.get_args(hint)
    if lowered in ("none", "null") and type(None) in args:
        return None
    if hint is str or (typing.get_origin(hint) is typing.Literal) or str in args:
        return stripped
    if hint is bool or bool in args:
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise InputError(f"{name} must be true or false, got {shown(text)}")
    if typing.get_origin(hint) is tuple:
        parts = [p for p in stripped.strip("()[]").replace(" ", ",").split(",") if p]
        if all(_INT.fullmatch(p) and len(p) <= _MAX_INT_CHARS for p in parts):
            return tuple(int(p) for p in parts)
        raise InputError(f"{name} must be a tuple of ints such as 64,64, got {shown(text)}")
    if _INT.fullmatch(stripped):
        if len(stripped) <= _MAX_INT_CHARS:
            return int(stripped)
        if not (hint is float or float in args):  # beyond 64 bits, and int() refuses > 4300 digits
            raise _OutOfRange(f"{name} must be an int of at most 64 bits, got {shown(text)}")
    try:
        return float(stripped)
    except ValueError:
        raise InputError(f"{name} must be {_type_name(hint)}, got {shown(text)}") from None


_MAX_INT_CHARS = 100
"""Longer digit strings are refused before ``int()`` reads them (every int field fits in 64 bits)."""
