"""Creating the vector environments that training and evaluation step.

:func:`make_vec_env` turns what a user names on the command line into a Gymnasium vector
environment:

* a registered Gymnasium id (``"CartPole-v1"``), or Gymnasium's ``"module:EnvId"`` form, which
  imports ``module`` first so that it can register ``EnvId``;
* ``"module:attr"`` where ``attr`` is a user's ``gymnasium.Env`` subclass or a factory returning
  an env (called with no arguments, or with ``env_kwargs``);
* an ``EnvSpec`` or such a class or factory directly;
* a ``gymnasium.Env`` object, whose copies are deep copies of it (the object itself is not
  stepped, nor closed).

What a run directory records (:func:`describe_env`). A run's config.json names its environment
by a string that ``policygrad eval`` and ``--resume`` re-create it from: the id, or
``"module:attr"`` of an importable class or factory, with ``env_kwargs`` beside it. An env made
by ``gymnasium.make`` is recorded as its id and keyword arguments. Anything else (a lambda, a
function defined inside another, an object built by hand) is recorded as ``"<...>"``, which no
command re-creates: such a run is evaluated or continued from Python, passing the environment
again (``policygrad.load(run, env=...)``).

How the copies are stepped (``vectorization``):

==========  ===================================================================================
"vector"    the env's own NumPy-vectorised implementation (``vector_entry_point``; CartPole
            has one): all copies in one array program, the fastest on a CPU.
"sync"      ``SyncVectorEnv``: the copies one after another in this process.
"async"     ``AsyncVectorEnv``: one worker process per copy; worth it for slow simulators.
"auto"      "vector" when the env has a vector entry point, else "sync".
==========  ===================================================================================

Auto-reset. Gymnasium 1.x vector envs start a new episode by themselves after one ends, in one
of two ways (``env.metadata["autoreset_mode"]``): SAME_STEP returns the new episode's first
observation at once and the final one in ``info["final_obs"]``; NEXT_STEP returns the final
observation and spends the *next* step on the reset (a dummy transition that ignores its action).
Sync and async envs are built here with SAME_STEP, so no step is wasted; a vector entry point is
given SAME_STEP when it accepts an ``autoreset_mode`` argument and otherwise keeps its own mode
(CartPole's is NEXT_STEP). :class:`policygrad.rollout.RolloutCollector` handles both.

Rendering and wrappers. ``render_mode`` is given to each copy's constructor (``"rgb_array"`` for
recording video), after a check against the render modes the environment declares; ``wrappers``
wrap each copy (outside its time limit), which needs copies of their own: "auto" then means
"sync", and "vector" is refused.

Worker threads. Each worker process of an async vector environment limits its compute threads
(:func:`policygrad.threads.limit_threads`, ``worker_threads``) before it builds its copy, so that N
workers do not each start a pool as wide as the machine.

Per-step checks. Gymnasium's passive environment checker is left out, and NumPy-vectorised envs
built here skip their per-step ``action_space.contains`` assertion (about 15% of a vectorised
CartPole step): the collector only sends actions drawn from the policy's distribution over that
space, and clips Box actions to their bounds.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import inspect
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, Literal

import gymnasium as gym
from gymnasium.vector import AutoresetMode, VectorEnv

from policygrad.errors import InputError, describe_error, shown
from policygrad.seeding import env_seed
from policygrad.threads import ThreadLimited

if TYPE_CHECKING:
    from policygrad.atari import AtariOptions

__all__ = ["VECTORIZATIONS", "EnvRecord", "describe_env", "make_vec_env", "env_name", "resolve_env"]

VECTORIZATIONS = ("auto", "sync", "async", "vector")
"""The accepted values of ``vectorization``."""

Vectorization = Literal["auto", "sync", "async", "vector"]

EnvSource = gym.envs.registration.EnvSpec | Callable[..., gym.Env] | gym.Env


def env_name(env: str | EnvSource) -> str:
    """A short printable name of what :func:`make_vec_env` accepts."""
    if isinstance(env, str):
        return env
    if isinstance(env, gym.envs.registration.EnvSpec):
        return env.id
    if isinstance(env, gym.Env):
        return f"<{type(env).__name__} object>"
    return f"{getattr(env, '__module__', '?')}:{getattr(env, '__qualname__', repr(env))}"


@dataclasses.dataclass(frozen=True)
class EnvRecord:
    """An environment as a run records it (see the module docstring)."""

    name: str
    """What config.json holds under "env": an id, "module:attr", or "<...>" (not re-creatable)."""
    kwargs: dict[str, Any]
    """Keyword arguments of its constructor (config.json's "env_kwargs")."""
    source: Any
    """What :func:`make_vec_env` builds the copies from: ``name``, or the user's object."""

    @property
    def recreatable(self) -> bool:
        """Whether ``name`` alone re-creates the environment (in another process, later)."""
        return not self.name.startswith("<")


def describe_env(env: Any, env_kwargs: dict[str, Any] | None = None) -> EnvRecord:
    """How a run records ``env`` (an id, "module:attr", an ``EnvSpec``, a class or factory, or an
    env object) and what it builds from.

    Raises:
        InputError: a vector environment (policygrad builds the copies itself), an env object
            that cannot be copied, ``env_kwargs`` that is not a JSON object, or something that
            is no environment at all.
    """
    import json

    kwargs = dict(env_kwargs or {})
    try:
        json.dumps(kwargs, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise InputError(f"env_kwargs must be JSON values (a run directory records them): {err}") from None
    if isinstance(env, str):
        return EnvRecord(env, kwargs, env)
    if isinstance(env, VectorEnv):
        raise InputError(
            "a vector environment was given; pass one environment (or its id, or a function that makes one): "
            "policygrad builds num_envs copies itself"
        )
    if isinstance(env, gym.Env):
        spec = env.spec
        if spec is not None and not kwargs and _is_registered_as(spec):
            made = {k: v for k, v in spec.kwargs.items() if k != "render_mode"}
            try:
                json.dumps(made, allow_nan=False)
                return EnvRecord(spec.id, made, spec.id)
            except (TypeError, ValueError):
                pass
        if kwargs:
            raise InputError("env_kwargs apply to an id, a class or a factory, not to an environment object")
        try:
            copy.deepcopy(env)
        except Exception as err:
            raise InputError(
                f"cannot copy the environment object {type(env).__name__} ({_one_line(err)}); "
                "pass its id or a function that makes a new one"
            ) from None
        return EnvRecord(env_name(env), {}, env)
    if isinstance(env, gym.envs.registration.EnvSpec):
        return EnvRecord(env.id, {**env.kwargs, **kwargs}, env) if _is_registered_as(env) else EnvRecord(f"<{env.id}>", kwargs, env)
    if callable(env):
        module, qualname = getattr(env, "__module__", None), getattr(env, "__qualname__", None)
        if module and qualname and module != "__main__" and "<" not in qualname:
            try:
                found: Any = importlib.import_module(module)
                for part in qualname.split("."):
                    found = getattr(found, part)
            except Exception:
                found = None
            if found is env:
                return EnvRecord(f"{module}:{qualname}", kwargs, env)
        return EnvRecord(f"<{module or '?'}.{qualname or type(env).__name__}>", kwargs, env)
    raise InputError(
        f"env must be a Gymnasium id, 'module:attr', a gymnasium.Env, or a function that makes one; got a {type(env).__name__}"
    )


def _is_registered_as(spec: gym.envs.registration.EnvSpec) -> bool:
    """Whether ``spec`` is its registered id's spec up to constructor keywords (so that the id and
    the keywords re-create it)."""
    try:
        registered = gym.spec(spec.id)
    except gym.error.Error:
        return False
    return dataclasses.replace(spec, kwargs=registered.kwargs) == registered


def _one_line(err: BaseException) -> str:
    """The whole of ``err``'s message on one line, cut to about 600 characters (a binding's
    TypeError names the arguments it was given only after its first line)."""
    return describe_error(err)


def resolve_env(env: str | EnvSource) -> EnvSource:
    """The Gymnasium spec or the user's env class/factory that ``env`` names.

    Raises:
        InputError: an unknown id, a module that cannot be imported, a missing attribute, or an
            attribute that is neither an env class nor callable. One line each.
    """
    if isinstance(env, (gym.envs.registration.EnvSpec, gym.Env)) or (callable(env) and not isinstance(env, str)):
        return env
    if not isinstance(env, str) or not env.strip():
        raise InputError(f"an environment must be a Gymnasium id or module:attr, got {shown(env)}")
    env = env.strip()
    if env.startswith("<"):
        raise InputError(
            f"the environment {shown(env)} was an object given in Python, which a run directory cannot re-create; "
            "pass it again: policygrad.load(run_dir, env=...)"
        )
    if ":" in env:
        module_name, _, attr = env.partition(":")
        try:
            module = _import_user_module(module_name)
        except (Exception, SystemExit) as err:  # ImportError, or anything the module raises while importing
            if module_name == "ale_py" and isinstance(err, ImportError):
                raise InputError(f"environment {shown(env)} needs ale-py: {ATARI_EXTRA}") from None
            raise InputError(f"cannot import module {shown(module_name)} named by environment {shown(env)} ({_one_line(err)})") from None
        target: Any = module
        if all(part.isidentifier() for part in attr.split(".")):
            for part in attr.split("."):
                target = getattr(target, part, None)
                if target is None:
                    break
            if target is not None:
                if not callable(target):
                    raise InputError(
                        f"{shown(env)} is a {type(target).__name__}, not a gymnasium.Env class or a factory returning one"
                    )
                return target
        # Gymnasium's own "module:EnvId": the import may have registered the id.
        return _spec(attr, original=env)
    if env.startswith("policygrad/"):
        import policygrad.tasks  # noqa: F401  (registers the library's own ids)
    return _spec(env, original=env)


def _import_user_module(name: str) -> Any:
    """Import the module a user named, looking in the current directory too (as ``python -m``
    does, and the ``policygrad`` command otherwise would not): the directory is added to
    ``sys.path`` only when the module is not found without it."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        top = name.split(".")[0]
        cwd = os.getcwd()
        if err.name != top or cwd in sys.path or not (
            os.path.isfile(os.path.join(cwd, f"{top}.py")) or os.path.isdir(os.path.join(cwd, top))
        ):
            raise
        sys.path.append(cwd)
        return importlib.import_module(name)


ATARI_EXTRA = "pip install 'policygrad[atari]'"
"""What installs ale-py, which the ``ALE/...`` environments need."""


def _spec(env_id: str, original: str) -> gym.envs.registration.EnvSpec:
    try:
        return gym.spec(env_id)
    except gym.error.Error as err:
        if _namespace(env_id) == "ALE" and _register_ale(original):
            return _spec(env_id, original)
        raise InputError(f"unknown environment {shown(original)} ({_one_line(err)})") from None


def _namespace(env_id: str) -> str | None:
    """``"ALE"`` for ``"ALE/Pong-v5"``; None for an id without a namespace."""
    return env_id.split("/", 1)[0] if "/" in env_id else None


def _register_ale(original: str) -> bool:
    """Register ale-py's ``ALE/...`` ids with Gymnasium, which does not know them until ale_py is
    imported. False if they were registered already (the id is then unknown to ale-py too).

    Raises:
        InputError: ale-py is not installed (one line naming the extra that installs it).
    """
    if any(_namespace(env_id) == "ALE" for env_id in gym.registry):
        return False
    try:
        import ale_py
    except ImportError:
        raise InputError(f"environment {shown(original)} needs ale-py: {ATARI_EXTRA}") from None
    gym.register_envs(ale_py)
    return any(_namespace(env_id) == "ALE" for env_id in gym.registry)


def make_vec_env(
    env_id_or_spec: str | EnvSource,
    num_envs: int,
    seed: int | None = None,
    *,
    time_limit: int | None = None,
    vectorization: Vectorization = "auto",
    env_kwargs: dict[str, Any] | None = None,
    worker_threads: tuple[int, int] = (1, 1),
    render_mode: str | None = None,
    wrappers: Sequence[Callable[[gym.Env], gym.Env]] = (),
    atari: AtariOptions | None = None,
) -> VectorEnv:
    """Build ``num_envs`` copies of an environment as one Gymnasium vector environment.

    Args:
        env_id_or_spec: a Gymnasium id, ``"module:attr"``, an ``EnvSpec``, or an env class or
            factory (see the module docstring).
        num_envs: N ≥ 1.
        seed: if given, the environments are reset with it (copy i gets ``seed + i``, where a
            seed that would take a copy past 2³¹ − 1 is first mapped into range by
            :func:`policygrad.runconfig.env_seed`) and the action and observation spaces' samplers are seeded with it,
            so that the returned env is reproducible as it stands. A collector reseeds on its own
            reset.
        time_limit: the episode length at which an episode is truncated, replacing the
            registered ``max_episode_steps`` (None: keep the registered one; 0: no limit at all,
            the registered ``TimeLimit`` is left out, so a task without terminal states runs as
            one endless episode).
        vectorization: "auto", "sync", "async" or "vector" (see the module docstring).
        env_kwargs: keyword arguments of the environment's constructor.
        worker_threads: ``(torch_threads, blas_threads)`` that each async worker process limits
            itself to before building its copy (see :func:`policygrad.threads.limit_threads`).
        render_mode: passed to each copy's constructor (e.g. ``"rgb_array"``); None: the
            environment's default (no rendering).
        wrappers: applied to each copy in order, innermost first (not with "vector"
            vectorization; "auto" then means "sync").
        atari: the Atari preprocessing (:mod:`policygrad.atari`) of an ``ALE/...`` id; its
            episode time limit is ``atari.max_episode_frames``, so ``time_limit`` must be None.

    Returns:
        The vector environment; ``env.metadata["autoreset_mode"]`` says how it auto-resets.

    Raises:
        InputError: an invalid argument, an unknown id, an import failure, a render mode the
            environment does not declare, or an environment whose construction fails (one line
            naming it).
    """
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise InputError(f"num_envs must be a positive int, got {shown(num_envs)}")
    if time_limit is not None and (isinstance(time_limit, bool) or not isinstance(time_limit, int) or time_limit < 0):
        raise InputError(f"time_limit must be a positive int, 0 (no limit) or None, got {shown(time_limit)}")
    if vectorization not in VECTORIZATIONS:
        raise InputError(f"unknown vectorization {shown(vectorization)}; valid: {', '.join(VECTORIZATIONS)}")
    if not (
        isinstance(worker_threads, tuple)
        and len(worker_threads) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in worker_threads)
    ):
        raise InputError(f"worker_threads must be (torch_threads, blas_threads), two positive ints, got {shown(worker_threads)}")
    kwargs = dict(env_kwargs or {})
    source = resolve_env(env_id_or_spec)
    name = env_name(env_id_or_spec)
    wrappers = tuple(wrappers)
    if wrappers:
        if vectorization == "vector":
            raise InputError(f"environment {shown(name)}: wrapping each copy needs vectorization sync or async")
        if vectorization == "auto":
            vectorization = "sync"
    if render_mode is not None:
        modes = _render_modes(source)
        if modes is not None and render_mode not in modes:
            raise InputError(
                f"environment {shown(name)} does not render in mode {shown(render_mode)} (its render modes: "
                f"{', '.join(map(str, modes)) or 'none'})"
            )
        kwargs["render_mode"] = render_mode
    if atari is not None:
        from policygrad.atari import is_atari

        if not (isinstance(source, gym.envs.registration.EnvSpec) and is_atari(source)):
            raise InputError(f"atari_preprocessing applies to ale-py's ALE/... environments, not {name!r}")
        if time_limit is not None:
            raise InputError("with atari_preprocessing the time limit is max_episode_frames (emulator frames); "
                             "leave time_limit unset")
    try:
        if atari is not None:
            from policygrad.atari import make_atari_vec_env

            envs = make_atari_vec_env(source, num_envs, atari, vectorization, kwargs,
                                      functools.partial(_async, worker_threads=worker_threads), wrappers)
        elif isinstance(source, gym.envs.registration.EnvSpec):
            envs = _from_spec(source, num_envs, time_limit, vectorization, kwargs, worker_threads, wrappers)
        elif isinstance(source, gym.Env):
            if vectorization == "vector":
                raise InputError(f"environment {shown(name)} has no vectorised implementation; use sync or async")
            make_one = functools.partial(_copy_env, source, time_limit, wrappers)
            if vectorization == "async":
                envs = _async(make_one, num_envs, worker_threads)
            else:
                envs = gym.vector.SyncVectorEnv([make_one] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        else:
            if vectorization == "vector":
                raise InputError(f"environment {shown(name)} has no vectorised implementation; use sync or async")
            make_one = functools.partial(_make_user_env, source, name, time_limit, kwargs, wrappers)
            if vectorization == "async":
                envs = _async(make_one, num_envs, worker_threads)
            else:
                envs = gym.vector.SyncVectorEnv([make_one] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        if seed is not None:
            envs.action_space.seed(seed)
            envs.observation_space.seed(seed)
            envs.reset(seed=env_seed(seed, num_envs))
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"cannot create environment {shown(name)}: {_one_line(err)}") from None
    return envs


def _from_spec(
    spec: gym.envs.registration.EnvSpec,
    num_envs: int,
    time_limit: int | None,
    vectorization: str,
    kwargs: dict[str, Any],
    worker_threads: tuple[int, int],
    wrappers: tuple[Callable[[gym.Env], gym.Env], ...] = (),
) -> VectorEnv:
    if time_limit == 0:
        # No limit: drop the registered TimeLimit. A vector entry point that truncates by itself
        # (a max_episode_steps with a default other than None) cannot be told to stop.
        spec = dataclasses.replace(spec, max_episode_steps=None)
        built_in = spec.vector_entry_point is not None and _has_own_limit(spec.vector_entry_point)
        if vectorization == "auto" and built_in:
            vectorization = "sync"
        elif vectorization == "vector" and built_in:
            raise InputError(
                f"environment {shown(spec.id)}: its vectorised implementation has its own time limit, so "
                "time_limit=0 needs vectorization sync or async"
            )
        time_limit = None
    atari = _is_ale(spec)
    if vectorization == "auto":
        # ale-py's vector entry point preprocesses the frames: only with atari_preprocessing.
        vectorization = "vector" if spec.vector_entry_point is not None and not atari else "sync"
    if vectorization == "vector":
        if atari:
            raise InputError(f"environment {shown(spec.id)}: ale-py's vector env preprocesses the frames; "
                             "set atari_preprocessing, or use vectorization sync or async")
        if spec.vector_entry_point is None:
            raise InputError(f"environment {shown(spec.id)} has no vectorised implementation; use sync or async")
        if time_limit is not None:
            kwargs["max_episode_steps"] = time_limit
        if "autoreset_mode" not in kwargs and _accepts(spec.vector_entry_point, "autoreset_mode"):
            kwargs["autoreset_mode"] = AutoresetMode.SAME_STEP
        envs = gym.make_vec(spec, num_envs, vectorization_mode="vector_entry_point", **kwargs)
        _skip_action_check(envs)
        return envs
    if time_limit is not None:
        kwargs["max_episode_steps"] = time_limit
    if vectorization == "async":
        return _async(functools.partial(_make_from_spec, spec, kwargs, wrappers), num_envs, worker_threads)
    return gym.make_vec(
        spec,
        num_envs,
        vectorization_mode=vectorization,
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
        wrappers=list(wrappers),
        disable_env_checker=True,
        **kwargs,
    )


def _is_ale(spec: gym.envs.registration.EnvSpec) -> bool:
    from policygrad.atari import is_atari

    return is_atari(spec)


def _async(make_one: Callable[[], gym.Env], num_envs: int, worker_threads: tuple[int, int]) -> VectorEnv:
    """``AsyncVectorEnv`` of ``num_envs`` workers, each limiting its threads before ``make_one()``
    (see :class:`_Worker`)."""
    factory = ThreadLimited(make_one, *worker_threads)
    return gym.vector.AsyncVectorEnv([_Worker(factory, i) for i in range(num_envs)],
                                     autoreset_mode=AutoresetMode.SAME_STEP)


@dataclasses.dataclass(frozen=True)
class _Worker:
    """Builds copy ``index`` of an environment inside an async worker process, which

    * ignores SIGINT: a Ctrl-C reaches every process of the terminal's group, and the main
      process stops training by itself, then closes its workers (SIGTERM ends a worker, as
      ``close(terminate=True)`` expects);
    * ends by itself within a second when the main process is gone (killed by SIGKILL, say),
      instead of staying behind as an orphan;
    * labels what its environment raises with ``index``, so that an error names the copy.

    Picklable whenever ``factory`` is.
    """

    factory: Callable[[], gym.Env]
    index: int

    def __call__(self) -> gym.Env:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for name in ("SIGTERM", "SIGALRM"):  # a forked worker inherits the main process's handlers
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        _watch_parent()
        return _Labelled(self.factory(), self.index)


def _watch_parent(poll: float = 0.5) -> None:
    """Exit this process once its parent is gone (it is then re-parented, so its parent id
    changes), and say nothing on the way out: the pipe errors of an orphaned worker are not news
    on the terminal of a process that was killed."""
    import threading
    import time

    parent = os.getppid()
    sys.stderr = _OrphanQuiet(sys.stderr, parent)

    def watch() -> None:
        while True:
            time.sleep(poll)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="policygrad-parent-watch", daemon=True).start()


class _OrphanQuiet:
    """A text stream that writes through while the process's parent is ``parent``, and drops
    everything once it is gone."""

    def __init__(self, stream: Any, parent: int) -> None:
        self._stream, self._parent = stream, parent

    def write(self, text: str) -> int:
        if os.getppid() != self._parent:
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _Labelled(gym.Wrapper):
    """Sets ``env_index`` on anything the environment raises (read by the error message)."""

    def __init__(self, env: gym.Env, index: int) -> None:
        super().__init__(env)
        self._index = index

    def step(self, action: Any) -> Any:
        try:
            return self.env.step(action)
        except BaseException as err:
            raise _labelled(err, self._index) from None

    def reset(self, **kwargs: Any) -> Any:
        try:
            return self.env.reset(**kwargs)
        except BaseException as err:
            raise _labelled(err, self._index, whole=True) from None


def _labelled(err: BaseException, index: int, whole: bool = False) -> BaseException:
    """An exception that survives the trip to the main process (Gymnasium re-raises
    ``type(err)(str(err))`` there) and names the copy: a RuntimeError, or the original type when
    its message says where it came from. A step's error keeps its first line (as a sync env's
    does); a reset's (``whole``) all of its message, joined into one line."""
    return EnvCopyError(f"[environment {index}] {describe_error(err, 600 if whole else 200, first_line=not whole)}")


class EnvCopyError(RuntimeError):
    """What a copy of an async environment raised, as ``"[environment i] Type: message"``."""


def _make_from_spec(spec: gym.envs.registration.EnvSpec, kwargs: dict[str, Any],
                    wrappers: tuple[Callable[[gym.Env], gym.Env], ...] = ()) -> gym.Env:
    """One copy of a registered environment, as ``gym.make_vec`` builds the copies of a sync one."""
    env = gym.make(spec, disable_env_checker=True, **kwargs)
    for wrap in wrappers:
        env = wrap(env)
    return env


def _render_modes(source: EnvSource) -> list[str] | None:
    """The render modes an environment declares (``metadata["render_modes"]`` of its class), or
    None where they cannot be known before it is built (a factory function)."""
    try:
        if isinstance(source, gym.envs.registration.EnvSpec):
            entry = source.entry_point
            source = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
        metadata = getattr(source, "metadata", None)
    except (ImportError, AttributeError, ValueError, gym.error.Error):  # an entry point that does not load
        return None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("render_modes", []), (list, tuple)):
        return None
    return list(metadata.get("render_modes", []))


def _has_own_limit(entry_point: Any) -> bool:
    """Whether a vector entry point truncates episodes by itself (a ``max_episode_steps`` whose
    default is not None, e.g. CartPole's 500)."""
    try:
        creator = gym.envs.registration.load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
        parameter = inspect.signature(creator).parameters.get("max_episode_steps")
    except Exception:
        return True
    return parameter is not None and parameter.default is not None


def _accepts(entry_point: Any, name: str) -> bool:
    """Whether the vector entry point's constructor has a parameter ``name`` (not via **kwargs)."""
    try:
        creator = gym.envs.registration.load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
        return name in inspect.signature(creator).parameters
    except Exception:
        return False


def _make_user_env(factory: Callable[..., Any], name: str, time_limit: int | None, kwargs: dict[str, Any],
                   wrappers: tuple[Callable[[gym.Env], gym.Env], ...] = ()) -> gym.Env:
    env = factory(**kwargs)
    if not isinstance(env, gym.Env):
        raise InputError(f"{shown(name)} returned a {type(env).__name__}, not a gymnasium.Env")
    if time_limit:  # 0 and None: the env as the factory made it
        env = gym.wrappers.TimeLimit(env, max_episode_steps=time_limit)
    for wrap in wrappers:
        env = wrap(env)
    return env


def _copy_env(env: gym.Env, time_limit: int | None,
              wrappers: tuple[Callable[[gym.Env], gym.Env], ...] = ()) -> gym.Env:
    """A deep copy of a user's env object (the object itself is neither stepped nor closed)."""
    env = copy.deepcopy(env)
    if time_limit:
        env = gym.wrappers.TimeLimit(env, max_episode_steps=time_limit)
    for wrap in wrappers:
        env = wrap(env)
    return env


@functools.lru_cache(maxsize=None)
def _trusting(space_class: type) -> type:
    """A subclass of ``space_class`` whose ``contains`` accepts anything."""
    return type(f"Unchecked{space_class.__name__}", (space_class,), {"contains": lambda self, x: True, "__module__": __name__})


def _skip_action_check(envs: VectorEnv) -> None:
    """Make the batched action space's ``contains`` free (see the module docstring).

    Only the vector env's own copy of the space changes class; its bounds, sampling and equality
    are those of the original.
    """
    space = envs.unwrapped.action_space
    try:
        space.__class__ = _trusting(type(space))
    except TypeError:
        pass
