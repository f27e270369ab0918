"""The ``policygrad`` command: ``train``, ``eval``, ``export``, ``plot`` and ``verify``.

Heavy modules (torch, gymnasium) are imported inside each command so that ``policygrad --help``
stays instant. Every :class:`~policygrad.errors.PolicygradError` becomes one line on stderr and its
exit code; argument errors exit with code 2.

``policygrad train`` resolves the run (:mod:`policygrad.runconfig`: preset < ``--config`` <
``--set`` < flags), builds its session (:mod:`policygrad.training`) before it creates the run
directory (:mod:`policygrad.rundir`), so bad input leaves no trace, then trains; ``--resume``
continues a run directory from its last checkpoint with its saved settings; ``--seeds`` trains
one run per seed, in processes of their own (:mod:`policygrad.seeds`).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

from policygrad.errors import SHOWN_CHARS, InputError, Interrupted, PolicygradError, one_line, shown, signal_name

DEFAULT_EVAL_STEPS = 10_000
"""Environment steps over which ``policygrad eval`` measures the reward per step of a continuing run."""


MAX_ERROR_CHARS = 2000
"""Longest error line printed; a longer message is cut (its sources cut the values they echo)."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``policygrad: error: ...``, and exit code 2."""

    def error(self, message: str) -> NoReturn:
        # argparse quotes the value it rejects ("invalid int value: '...'"), whatever its length.
        message = re.sub(r"'([^'\n]{%d})[^'\n]{4,}'" % SHOWN_CHARS, r"'\1...'", message)
        self.exit(2, f"policygrad: error: {one_line(message, MAX_ERROR_CHARS)}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="policygrad", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true",
                        help="on an error, also print what caused it (e.g. an environment's own traceback)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    # --- verify ---------------------------------------------------------------------------
    p = sub.add_parser("verify", help="compare policy-gradient estimators with the exact gradient of a finite MDP")
    p.add_argument("--mdp", metavar="FILE.json", help="a finite MDP as JSON (default: a built-in example)")
    p.add_argument("--setting", choices=["episodic", "discounted", "average"], default=None,
                   help="objective (default: episodic if the MDP has terminal states, else discounted)")
    p.add_argument("--episodes", type=int, default=20000, help="sampled episodes (default 20000)")
    p.add_argument("--horizon", type=int, default=None, help="steps per episode (default: chosen from the MDP)")
    p.add_argument("--lam", type=float, default=0.9, help="GAE lambda (default 0.9)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--sequence", metavar="SPEC.json", default=None,
                   help="check the sequence (token) estimators of a spec instead of an MDP's (docs/sequences.md)")
    p.add_argument("--samples", type=int, default=20000,
                   help="with --sequence: sampled completions (default 20000)")
    _lag_flags(p)

    # --- train / eval / plot ------------------------------------------------------------
    p = sub.add_parser(
        "train",
        help="train a policy on a Gymnasium environment",
        description="Train a policy. Hyperparameters: the preset of (algo, env) < --config < --set < flags.",
    )
    p.add_argument("--algo", choices=["reinforce", "a2c", "ppo", "npg", "trpo", "impala", "rloo", "grpo", "dr_grpo",
                                      "remax", "reinforce_pp"], default=None,
                   help="algorithm (default: the config file's algo, else ppo; on a seq: task, grpo); rloo, grpo, "
                        "dr_grpo, remax and reinforce_pp train only on sequences")
    p.add_argument("--env", default=None,
                   help="a Gymnasium id, or module:attr naming an env class or factory (default: CartPole-v1); "
                        "seq:count, seq:sort, seq:reverse, seq:add: a sequence task")
    p.add_argument("--reward", metavar="MODULE:FUNCTION", default=None,
                   help="sequence tasks: score completions with this function instead of the task's reward")
    p.add_argument("--model", metavar="DIR", default=None,
                   help="sequence tasks: train this Hugging Face model directory instead of the small transformer")
    p.add_argument("--env-kwargs", metavar="JSON", default=None,
                   help='keyword arguments of the environment, a JSON object, e.g. \'{"is_slippery": false}\' '
                        "(also --set env.KEY=VALUE, or an [env_kwargs] table in --config)")
    p.add_argument("--steps", type=int, default=None, help="environment steps in total (default: the preset's)")
    p.add_argument("--seed", type=int, default=None, help="seed of everything (default: the config's, 0)")
    p.add_argument("--seeds", metavar="K,K,...", default=None,
                   help="train one run per seed, e.g. 0,1,2, into DIR/seed_K (DIR: --out, else runs/<algo>-<env>-<time>)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="with --seeds: run up to N seeds at once, each in its own process (default 1)")
    p.add_argument("--config", metavar="FILE.toml", help="hyperparameters from a TOML file of key = value lines")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one hyperparameter, the value a TOML literal, e.g. hidden_sizes=[64,64] (repeatable)")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<algo>-<env>-<time>/)")
    p.add_argument("--target-return", type=float, default=None,
                   help="evaluate periodically and stop once the deterministic return reaches this")
    p.add_argument("--eval-every", type=int, default=None, metavar="N",
                   help="evaluate the deterministic policy every N environment steps: metrics.csv's eval_return "
                        "column and checkpoints/best (as --set eval_every=N); on a seq: task, greedily on the "
                        "held-out prompts every N updates: the eval_success_rate column")
    workers = p.add_argument_group("rollout workers on Ray (pip install 'policygrad[ray]'; docs/scaling-out.md)")
    workers.add_argument("--workers", type=int, default=None, metavar="N",
                         help="step the environments in N Ray worker processes (they share num_envs); "
                              "a resumed run may change it")
    workers.add_argument("--envs-per-worker", type=int, default=None, metavar="M",
                         help="environment copies per worker (default num_envs / N; given, num_envs = N x M)")
    workers.add_argument("--address", default=None, metavar="local|auto|HOST:PORT",
                         help="the Ray cluster: local (default: a private one on this machine), auto (the one "
                              "this machine belongs to) or a head's HOST:PORT")
    workers.add_argument("--mode", choices=["sync", "async"], default=None,
                         help="sync (default): every update on fragments of the current policy, as one process; "
                              "async: workers never wait for the learner (ppo, impala)")
    workers.add_argument("--max-lag", type=int, default=None, metavar="K",
                         help="async: no fragment more than K policy versions old is trained on (default 2)")
    workers.add_argument("--restart-failed-workers", action="store_true", default=None,
                         help="replace a worker whose environment raised instead of stopping the run")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--trust-run-code", action="store_true",
                   help="with --resume: import what the run's config.json names (a module:attr environment) "
                        "without naming it again with --env")
    p.add_argument("--device", default=None, help="cpu (default), cuda, cuda:1, ...")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.add_argument("--print-config", action="store_true",
                   help="print the fully resolved run configuration as JSON (with --seeds, a list: one per "
                        "seed) and exit without training")

    p = sub.add_parser("eval", help="evaluate a trained policy")
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="a run directory (its last checkpoint) or a checkpoint in one, e.g. RUN_DIR/checkpoints/best")
    _run_code_flags(p, "evaluate on this environment instead of the recorded one (same spaces)")
    p.add_argument("--episodes", type=int, default=None,
                   help="episodes to run (default 20; a sequence run: held-out prompts, default its eval_prompts)")
    p.add_argument("--deterministic", action="store_true", help="take the most likely action instead of sampling")
    p.add_argument("--seed", type=int, default=None, help="seed of the environments and the sampling")
    p.add_argument("--steps", type=int, default=None, metavar="K",
                   help="also measure the reward per step over K environment steps (default 10000 on a "
                        "continuing run, time_limit=0)")
    p.add_argument("--json", action="store_true",
                   help='print {"mean_return", "std_return", "episodes"} (+ "reward_per_step", "steps")')
    p.add_argument("--video", metavar="DIR", default=None,
                   help="also record every episode as DIR/eval-episode-<i>.mp4 (one environment copy, episode "
                        "after episode; needs pip install 'policygrad[video]')")

    p = sub.add_parser(
        "export",
        help="write a trained policy's deterministic actor, with its preprocessing, as ONNX or TorchScript",
        description="Write the deterministic actor of RUN_DIR's last checkpoint as one graph: raw observations "
                    "[n, *obs_shape] -> the actions predict(obs, deterministic=True) returns (encoding, frozen "
                    "observation normaliser, mode, clipping to the action bounds).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory, or a path inside one")
    _run_code_flags(p, "build the environment from this instead of the recorded one (same spaces)")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx",
                   help="onnx (default; needs pip install 'policygrad[export]') or torchscript (deprecated in "
                        "PyTorch, still loads with torch.jit.load)")
    p.add_argument("--out", metavar="FILE", required=True, help="the file to write (atomically)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")

    p = sub.add_parser("presets", help="list the (algorithm, environment) presets")
    p.add_argument("--algo", choices=["reinforce", "a2c", "ppo", "npg", "trpo", "impala", "rloo", "grpo", "dr_grpo",
                                      "remax", "reinforce_pp"], default=None,
                   help="only this algorithm's presets")
    p.add_argument("--json", action="store_true", help="print every preset's settings as JSON")

    p = sub.add_parser("plot", help="overlay learning curves of runs")
    p.add_argument("run_dirs", metavar="RUN_DIR", nargs="+",
                   help="run directories; a directory of seed runs (train --seeds) stands for all of them")
    p.add_argument("--out", metavar="FILE.png", default=None)
    return parser


def _run_code_flags(p: argparse.ArgumentParser, env_help: str) -> None:
    """``--env`` and ``--trust-run-code`` of the commands that read a run directory: a run whose
    environment imports a module (``module:attr``) runs only if the user names it again or
    trusts the run (:func:`policygrad.runconfig.check_run_code`)."""
    p.add_argument("--env", default=None, help=env_help)
    p.add_argument("--trust-run-code", action="store_true",
                   help="import what the run's config.json names (a module:attr environment) without naming it again")


def _lag_flags(p: argparse.ArgumentParser) -> None:
    """``verify``'s off-policy flags: data from a behaviour policy that lags the target
    (:mod:`policygrad.verify_lagged`)."""
    p.add_argument("--lag", type=int, default=None, metavar="K",
                   help="sample with a behaviour policy K exact gradient steps behind the target and check the "
                        "off-policy estimators (per-decision IS, V-trace); discounted setting")
    p.add_argument("--lag-step", type=float, default=None, metavar="ALPHA",
                   help="with --lag: step size of the exact gradient steps (default 0.1)")
    p.add_argument("--rho-bar", type=float, default=None, metavar="R",
                   help="with --lag: V-trace's truncation of rho, a positive number or inf (default 1)")
    p.add_argument("--c-bar", type=float, default=None, metavar="C",
                   help="with --lag: V-trace's truncation of c, a positive number or inf (default 1)")


def _lagged(args: argparse.Namespace) -> bool:
    """Any of ``verify``'s off-policy flags given."""
    return any(getattr(args, name, None) is not None for name in ("lag", "lag_step", "rho_bar", "c_bar"))


def _imported() -> None:
    """Called once a command's heavy imports are done (the cyclic garbage collector is off until
    then): the imported modules' objects move to a generation no collection scans again, and the
    collector comes back on. Importing torch and gymnasium with it on costs three full
    collections, about 0.2 s of a short run; nothing those imports allocate is garbage."""
    gc.freeze()
    gc.enable()


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "verify":
        import policygrad.verify  # noqa: F401  (torch)

        _imported()
        if _lagged(args) and args.sequence is not None:
            raise InputError("--lag, --lag-step, --rho-bar and --c-bar apply to an MDP's off-policy data, not to "
                             "--sequence")
        return main_verify_lagged(args) if _lagged(args) else main_verify(args)
    if args.command == "train":
        import policygrad.algorithms  # noqa: F401  (torch, gymnasium)
        import policygrad.training  # noqa: F401

        _imported()
        return main_train(args)
    if args.command == "eval":
        import policygrad.algorithms  # noqa: F401  (torch, gymnasium)
        import policygrad.training  # noqa: F401

        _imported()
        return main_eval(args)
    if args.command == "export":
        import policygrad.algorithms  # torch, gymnasium
        import policygrad.training

        _imported()
        return main_export(args)
    if args.command == "presets":
        import policygrad.algorithms  # noqa: F401  (torch, gymnasium)
        import policygrad.sequence_training  # noqa: F401

        _imported()
        return main_presets(args)
    if args.command == "plot":
        from policygrad.plots import main_plot

        _imported()
        return main_plot(args)
    raise InputError(f"unknown command {args.command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    enabled = gc.isenabled()
    gc.disable()  # re-enabled by _imported() after the command's imports
    previous = _terminate_as_interrupt()
    try:
        return _dispatch(args)
    except PolicygradError as err:
        if getattr(args, "debug", False) and err.detail:
            print(err.detail.rstrip(), file=sys.stderr)
        print(f"policygrad: error: {one_line(str(err), MAX_ERROR_CHARS)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("policygrad: interrupted", file=sys.stderr)
        return 130
    except Interrupted as err:
        print(f"policygrad: interrupted by {signal_name(err.signum)}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:
        # whoever read stdout stopped (`policygrad presets | head`): what is left is not wanted, and
        # the interpreter's final flush must not fail on the closed pipe either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if enabled:
            gc.enable()


def _terminate_as_interrupt() -> Any:
    """SIGTERM raises :class:`Interrupted` (cleanup runs, one line, exit 143) instead of killing
    the process silently; training handles it itself (it stops at the next safe point and saves).
    Returns the previous handler (None where signals cannot be set: not the main thread)."""

    def terminate(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    try:
        return signal.signal(signal.SIGTERM, terminate)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def main_train(args: argparse.Namespace) -> int:
    """``policygrad train``: see the module docstring."""
    from policygrad.runconfig import parse_env_kwargs, parse_set, resolve_run
    from policygrad.rundir import default_run_dir, start_run

    if args.steps is not None and args.steps < 1:
        raise InputError(f"--steps must be a positive number of environment steps, got {shown(args.steps)}")
    if args.eval_every is not None and args.eval_every < 1:
        raise InputError(f"--eval-every must be a positive number of environment steps, got {shown(args.eval_every)}")
    if args.jobs is not None and args.seeds is None:
        raise InputError("--jobs runs several --seeds at once; give --seeds too")
    flags = {"total_steps": args.steps, "target_return": args.target_return, "eval_every": args.eval_every,
             "workers": args.workers, "envs_per_worker": args.envs_per_worker, "address": args.address,
             "worker_mode": args.mode, "max_lag": args.max_lag, "restart_failed_workers": args.restart_failed_workers}
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    if args.max_lag is not None and args.max_lag < 0:
        raise InputError(f"--max-lag must be >= 0, got {args.max_lag}")
    if _is_sequence_train(args):
        return _train_sequence(args)
    for name, value in (("--reward", args.reward), ("--model", args.model)):
        if value is not None:
            raise InputError(f"{name} applies to sequence tasks (--env seq:...)")
    if args.resume is not None:
        conflicting = [
            name
            for name, value in (("--algo", args.algo), ("--config", args.config),
                                ("--set", args.overrides), ("--seed", args.seed), ("--out", args.out),
                                ("--env-kwargs", args.env_kwargs), ("--seeds", args.seeds))
            if value is not None and value != []
        ]
        if conflicting:
            raise InputError(f"--resume continues a run with its saved settings; drop {', '.join(conflicting)}")
        if args.print_config:
            from policygrad.runconfig import read_run_config

            print(json.dumps(_printable(read_run_config(Path(args.resume))), indent=2))
            return 0
        return _resume(Path(args.resume), flags, args.device, args.quiet, args.env, args.trust_run_code)

    if args.seeds is not None:
        from policygrad.training import build_session

        overrides = parse_set(args.overrides)
        env_kwargs = None if args.env_kwargs is None else parse_env_kwargs(args.env_kwargs)
        specs = [resolve_run(args.algo, args.env, config_file=args.config, overrides=overrides,
                             flags={**flags, "seed": seed}, env_kwargs=env_kwargs) for seed in _seeds(args)]
        return _train_seeds(args, specs, lambda spec: build_session(spec, args.device).close())
    spec = resolve_run(
        args.algo,
        args.env,
        config_file=args.config,
        overrides=parse_set(args.overrides),
        flags={"seed": args.seed, **flags},
        env_kwargs=None if args.env_kwargs is None else parse_env_kwargs(args.env_kwargs),
    )
    if args.print_config:
        print(json.dumps(_printable(spec), indent=2))
        return 0
    run_dir = Path(args.out) if args.out else default_run_dir(spec.algo, spec.env)
    session, summary = start_run(spec, run_dir, args.device, quiet=args.quiet)
    session.close()
    return _finish(run_dir, summary, args.quiet)


def _is_sequence_train(args: argparse.Namespace) -> bool:
    """Whether ``policygrad train`` trains on a sequence task (``--env seq:...``, or ``--resume`` of
    a sequence run)."""
    from policygrad.sequence_training import is_sequence_env, is_sequence_run

    if args.resume is not None:
        return is_sequence_run(Path(args.resume))
    if args.env is None and args.config is not None:
        from policygrad.runconfig import read_toml

        return is_sequence_env(read_toml(args.config).get("env"))
    return is_sequence_env(args.env)


def _train_sequence(args: argparse.Namespace) -> int:
    """``policygrad train --env seq:TASK`` and ``--resume`` of a sequence run
    (:mod:`policygrad.sequence_training`)."""
    from policygrad.runconfig import parse_env_kwargs, parse_set, read_toml, split_env_keys
    from policygrad.rundir import default_run_dir
    from policygrad.sequence_training import (
        build_sequence_session,
        read_sequence_config,
        reopen_sequence_run,
        resolve_sequence_run,
        start_sequence_run,
        train_sequence,
    )

    unsupported = [name for name, value in (("--target-return", args.target_return),
                                            ("--device", args.device), ("--workers", args.workers),
                                            ("--envs-per-worker", args.envs_per_worker), ("--address", args.address),
                                            ("--mode", args.mode), ("--max-lag", args.max_lag),
                                            ("--restart-failed-workers", args.restart_failed_workers))
                   if value is not None]
    if unsupported:
        raise InputError(f"{', '.join(unsupported)}: not supported for sequence tasks")
    if args.resume is not None:
        conflicting = [name for name, value in (("--algo", args.algo), ("--config", args.config),
                                                ("--set", args.overrides), ("--seed", args.seed),
                                                ("--out", args.out), ("--reward", args.reward),
                                                ("--model", args.model), ("--seeds", args.seeds),
                                                ("--env-kwargs", args.env_kwargs))
                       if value is not None and value != []]
        if conflicting:
            raise InputError(f"--resume continues a run with its saved settings; drop {', '.join(conflicting)}")
        run_dir = Path(args.resume)
        spec = read_sequence_config(run_dir)
        if args.env is not None and args.env != spec.env:
            raise InputError(f"--resume continues the run on its environment {spec.env!r}; --env may only name that one")
        if spec.config.reward is not None and not args.trust_run_code:
            raise InputError(f"this run's reward {spec.config.reward!r} would import a module named by the run "
                             "directory and not by you; pass --trust-run-code to run it")
        changed = {k: v for k, v in (("total_steps", args.steps), ("eval_every", args.eval_every)) if v is not None}
        if changed:
            spec = dataclasses.replace(spec, config=dataclasses.replace(spec.config, **changed))
        if args.print_config:
            print(json.dumps(_printable(spec), indent=2))
            return 0
        session = reopen_sequence_run(run_dir, spec, lock=True)
        try:
            if session.step >= spec.config.total_steps:
                if not args.quiet:
                    print(f"{run_dir}: already trained for {session.step} steps; pass --steps to train longer")
                return 0
            if changed:
                from policygrad.sequence_training import write_sequence_config

                write_sequence_config(run_dir, spec)
            summary = train_sequence(session, run_dir, resumed=True, quiet=args.quiet)
        finally:
            session.close()
        return _finish_sequence(run_dir, summary, args.quiet)
    overrides = dict(read_toml(args.config)) if args.config is not None else {}
    algo, env = args.algo or overrides.pop("algo", None), args.env or overrides.pop("env", None)
    overrides.pop("algo", None)
    overrides.pop("env", None)
    overrides.update(parse_set(args.overrides))
    overrides, env_kwargs = split_env_keys(overrides)  # the task's settings: [env_kwargs], --set env.KEY=...
    if args.env_kwargs is not None:
        env_kwargs.update(parse_env_kwargs(args.env_kwargs))
    flags = {"seed": args.seed, "total_steps": args.steps, "reward": args.reward, "model": args.model,
             "eval_every": args.eval_every}
    if args.seeds is not None:
        specs = [resolve_sequence_run(algo, env, overrides=overrides, flags={**flags, "seed": seed},
                                      env_kwargs=env_kwargs) for seed in _seeds(args)]
        return _train_seeds(args, specs, lambda spec: build_sequence_session(spec, pretrain=False).close())
    spec = resolve_sequence_run(algo, env, overrides=overrides, flags=flags, env_kwargs=env_kwargs)
    if args.print_config:
        print(json.dumps(_printable(spec), indent=2))
        return 0
    run_dir = Path(args.out) if args.out else default_run_dir(spec.algo, spec.env)
    session, summary = start_sequence_run(spec, run_dir, quiet=args.quiet)
    session.close()
    return _finish_sequence(run_dir, summary, args.quiet)


def _finish_sequence(run_dir: Path, summary: dict[str, Any], quiet: bool) -> int:
    if summary.get("interrupted"):
        signum = summary["interrupted"]
        print(f"policygrad: stopped by {signal_name(signum)} at step {summary['step']}; checkpoint saved in "
              f"{run_dir / 'checkpoints' / 'last'}; continue with: policygrad train --resume {run_dir}",
              file=sys.stderr)
        return 128 + signum
    if not quiet:
        print(f"{run_dir}: {summary['step']} steps in {summary['seconds']:.1f} s; greedy evaluation on "
              f"{summary['prompts']} held-out prompts: success rate {summary['success_rate']:.3f}, "
              f"mean reward {summary['mean_return']:.3f}")
    return 0


def _printable(spec: Any) -> dict[str, Any]:
    """What ``--print-config`` prints of a run: its config.json without the library versions."""
    data = spec.to_json()
    data.pop("versions", None)
    return data


def _seeds(args: argparse.Namespace) -> list[int]:
    """``--seeds`` parsed, with ``--seed`` and ``--jobs`` checked."""
    from policygrad.seeds import parse_seeds

    if args.seed is not None:
        raise InputError("--seed and --seeds are mutually exclusive: --seeds sets the seed of each run")
    if args.jobs is not None and args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}")
    return parse_seeds(args.seeds)


def _train_seeds(args: argparse.Namespace, specs: list[Any], check: Any) -> int:
    """``policygrad train --seeds K,K,... [--jobs N]``: one run per seed (:mod:`policygrad.seeds`),
    of classic runs or of sequence runs; ``check(spec)`` builds and closes the first seed's session
    (the environment or task, model, backend and device) before any directory is created.

    Exit code 0 if every run succeeded, else the code of the first failed seed (in the order of
    ``--seeds``), with one line naming the failed seeds.
    """
    from policygrad.rundir import CreatedPaths, default_run_dir
    from policygrad.seeds import check_seed_run_dirs, format_results, run_seeds
    from policygrad.sequence_training import SequenceSpec

    jobs = 1 if args.jobs is None else args.jobs
    if args.print_config:
        print(json.dumps([_printable(spec) for spec in specs], indent=2))
        return 0
    base = Path(args.out) if args.out else default_run_dir(specs[0].algo, specs[0].env)
    run_dirs = check_seed_run_dirs(base, [spec.seed for spec in specs])
    check(specs[0])

    created = CreatedPaths(base)
    try:
        created.create()  # before the runs start, so that a run's clean-up never removes base
    except OSError as err:
        raise InputError(f"cannot create run directory {base}: {err}") from None
    try:
        results = run_seeds(specs, run_dirs, args.device, jobs, quiet=args.quiet)
    finally:
        if base.is_dir() and not any(base.iterdir()):  # nothing started: no trace
            created.undo()
    if not args.quiet:
        print(format_results(results, sequence=isinstance(specs[0], SequenceSpec)))
    failed = [r for r in results if r.exit_code]
    if failed:
        named = ", ".join(f"{r.seed} (exit {r.exit_code})" for r in failed)
        print(f"policygrad: error: {len(failed)} of {len(results)} seeds failed: {named}", file=sys.stderr)
        return failed[0].exit_code
    if not args.quiet:
        print(f"plot them: policygrad plot {base}")
    return 0


def _resume(run_dir: Path, flags: dict[str, Any], device: str | None, quiet: bool, env: str | None = None,
            trust: bool = False) -> int:
    from policygrad.rundir import reopen_run, write_run_config
    from policygrad.runconfig import check_run_code, read_run_config
    from policygrad.training import train

    spec = read_run_config(run_dir)
    if env is not None and env != spec.env:
        raise InputError(f"--resume continues the run on its environment {spec.env!r}; --env may only name that one")
    check_run_code(spec, env, trust)
    changed = {k: v for k, v in flags.items() if v is not None}
    if "workers" in changed and "envs_per_worker" not in changed:
        changed["envs_per_worker"] = None  # the new workers share num_envs
    if changed:
        spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, **changed))
    session = reopen_run(run_dir, spec, device, lock=True)
    try:
        if changed:
            write_run_config(run_dir, spec, session.algorithm.backend)
        if session.step >= spec.train.total_steps:
            if not quiet:
                print(f"{run_dir}: already trained for {session.step} steps (total_steps {spec.train.total_steps}); pass --steps to train longer")
            return 0
        summary = train(session, run_dir, resumed=True, quiet=quiet)
    finally:
        session.close()
    return _finish(run_dir, summary, quiet)


def _finish(run_dir: Path, summary: dict[str, Any], quiet: bool) -> int:
    """The learning curve and the summary line of a finished run; the exit code (128 + the
    signal's number for a run stopped by SIGINT or SIGTERM, which says where it stopped)."""
    import numpy as np

    from policygrad.plots import plot_learning_curve

    if summary.get("interrupted"):
        signum = summary["interrupted"]
        for number in (signal.SIGINT, signal.SIGTERM):  # another signal now: leave at once, quietly
            signal.signal(number, lambda n, frame: os._exit(128 + n))
        print(f"policygrad: stopped by {signal_name(signum)} at step {summary['step']}; checkpoint saved in "
              f"{run_dir / 'checkpoints' / 'last'}; continue with: policygrad train --resume {run_dir}",
              file=sys.stderr)
        return 128 + signum

    try:
        plot_learning_curve(run_dir)
    except PolicygradError as err:
        if not quiet:
            print(f"policygrad: note: no learning curve ({err})", file=sys.stderr)
    if quiet:
        return 0
    returns = summary["eval_returns"]
    how = " (target return reached)" if summary["stopped_early"] else ""
    policy = "deterministic" if summary.get("eval_deterministic", True) else "stochastic"
    print(
        f"{run_dir}: {summary['step']} steps in {summary['seconds']:.1f} s{how}; {policy} evaluation "
        f"return {np.mean(returns):.2f} ± {np.std(returns):.2f} over {len(returns)} episodes"
    )
    ledger = summary.get("ledger")
    if ledger is not None:  # rollout workers: what the learner accepted from them
        lags = ", ".join(f"{count} at lag {lag}" for lag, count in ledger["lags"].items())
        print(f"rollout workers: {ledger['fragments']} fragments accepted ({lags}), "
              f"{ledger['replaced']} workers replaced")
    return 0


def main_eval(args: argparse.Namespace) -> int:
    """``policygrad eval RUN_DIR``: a table, or one JSON object with ``--json``, of the policy in
    the run's last checkpoint, or in the checkpoint of a run that RUN_DIR names (``RUN/checkpoints/best``).

    With ``--video DIR`` the episodes are recorded there (:func:`policygrad.training.evaluate_run`).
    On a continuing run (``time_limit = 0``) or with ``--steps K``, the reward per step over K
    environment steps (default :data:`DEFAULT_EVAL_STEPS`) is measured as well and reported as
    ``reward_per_step``: ``--episodes`` environment copies (at most 32) each run K / copies steps
    from a seeded reset, as they run one window each in the episode evaluation.
    """
    import numpy as np

    from policygrad.logging import format_table
    from policygrad.runconfig import read_run_config
    from policygrad.errors import check_seed
    from policygrad.sequence_training import evaluate_sequence_run, is_sequence_run
    from policygrad.training import evaluate_run, evaluate_run_steps, locate_checkpoint

    if args.episodes is not None and args.episodes < 1:
        raise InputError(f"--episodes must be a positive int, got {shown(args.episodes)}")
    if args.seed is not None:
        check_seed(args.seed, "--seed")  # before the run directory is looked at, as for every command
    if is_sequence_run(locate_checkpoint(args.run_dir)[0]):
        if getattr(args, "video", None) is not None or getattr(args, "steps", None) is not None:
            raise InputError("--video and --steps do not apply to a sequence run")
        result = evaluate_sequence_run(Path(args.run_dir), args.episodes, seed=args.seed)
        if args.json:
            print(json.dumps(result))
        else:
            print(format_table([{**result, "policy": "greedy"}], [*result, "policy"]))
        return 0
    args.episodes = 20 if args.episodes is None else args.episodes
    steps = getattr(args, "steps", None)
    if steps is not None and steps < 1:
        raise InputError(f"--steps must be a positive number of environment steps, got {shown(steps)}")
    video = getattr(args, "video", None)
    if video is not None:
        # Frames are drawn off-screen (render_mode rgb_array): without this, SDL looks for a
        # display and an audio device, and prints errors on a machine that has neither.
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    returns = evaluate_run(args.run_dir, args.episodes, deterministic=args.deterministic, seed=args.seed,
                           video=video, env=args.env, trust=args.trust_run_code)
    mean, std = float(np.mean(returns)), float(np.std(returns))
    rate: tuple[float, int] | None = None
    if steps is not None or read_run_config(locate_checkpoint(args.run_dir)[0]).train.time_limit == 0:
        rate = evaluate_run_steps(args.run_dir, steps or DEFAULT_EVAL_STEPS, min(args.episodes, 32),
                                  deterministic=args.deterministic, seed=args.seed, env=args.env,
                                  trust=args.trust_run_code)
    if args.json:
        payload: dict[str, Any] = {"mean_return": mean, "std_return": std, "episodes": len(returns)}
        if rate is not None:
            payload.update({"reward_per_step": rate[0], "steps": rate[1]})
        print(json.dumps(payload))
    else:
        row: dict[str, Any] = {
            "episodes": len(returns),
            "mean_return": mean,
            "std_return": std,
            "min_return": float(np.min(returns)),
            "max_return": float(np.max(returns)),
        }
        if rate is not None:
            row.update({"reward_per_step": rate[0], "steps": rate[1]})
        row["policy"] = "deterministic" if args.deterministic else "stochastic"
        print(format_table([row], list(row)))
        if video is not None:
            print(f"recorded {len(returns)} episodes in {video}")
    return 0


def main_export(args: argparse.Namespace) -> int:
    """``policygrad export RUN_DIR --out FILE``: :meth:`policygrad.Model.export` of the run's last
    checkpoint, and one line saying what the graph reads and writes."""
    from policygrad.api import load
    from policygrad.export import check_format, describe

    from policygrad.runconfig import check_run_code, read_run_config
    from policygrad.training import locate_checkpoint

    check_format(args.format)  # a missing extra fails before the run is loaded
    check_run_code(read_run_config(locate_checkpoint(args.run_dir)[0]), args.env, args.trust_run_code)
    model = load(args.run_dir, device="cpu", env=args.env, trust_run_code=True)
    try:
        path = model.export(args.out, args.format, overwrite=args.force)
        print(f"{path}: {args.format}, {describe(model.observation_space, model.action_space)}")
    finally:
        model._close()
    return 0


def main_verify(args: argparse.Namespace) -> int:
    """``policygrad verify``: the built-in examples, or a user's MDP from JSON."""
    from policygrad.tabular import example_mdp, load_mdp_json
    from policygrad.threads import limit_threads
    from policygrad.verify import SETTINGS, format_report, verify

    limit_threads(1, 1)
    if args.sequence is not None:
        return _verify_sequence(args)
    if args.mdp is None:
        settings = [args.setting] if args.setting else list(SETTINGS)
        cases = [(example_mdp(s), None, s) for s in settings]
    else:
        mdp, theta = load_mdp_json(args.mdp)
        cases = [(mdp, theta, args.setting)]
    reports = [
        verify(mdp, theta, setting, episodes=args.episodes, horizon=args.horizon, lam=args.lam, seed=args.seed)
        for mdp, theta, setting in cases
    ]
    if args.json:
        out = reports[0].to_json() if len(reports) == 1 else {"reports": [r.to_json() for r in reports]}
        print(json.dumps(out))
    else:
        print("\n\n".join(format_report(r) for r in reports))
        print(
            "\nmax|z|: largest |mean − exact| / stderr over the gradient's components; an unbiased "
            "estimator stays below ~4.\nvar/total: total variance relative to the total-return estimator."
        )
    return 0


def _verify_sequence(args: argparse.Namespace) -> int:
    """``policygrad verify --sequence SPEC.json``: group estimators on an enumerated sequence space."""
    from policygrad.sequence.exact import load_spec
    from policygrad.verify import format_sequence_report, verify_sequence

    if args.mdp is not None or args.setting is not None:
        raise InputError("--sequence checks a sequence spec; drop --mdp and --setting")
    report = verify_sequence(load_spec(args.sequence), samples=args.samples, seed=args.seed)
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(format_sequence_report(report))
        print(
            "\ncosine, rel.err, scale: the estimator's exact expectation against the exact gradient of J_beta "
            "(scale = <g, grad J>/|grad J|^2).\nmax|z|: sampled mean against that expectation; s.cos: the "
            "sampled mean's cosine with grad J."
        )
    return 0


def main_verify_lagged(args: argparse.Namespace) -> int:
    """``policygrad verify --lag K``: off-policy estimators on data from a lagging behaviour policy."""
    from policygrad.tabular import load_mdp_json
    from policygrad.threads import limit_threads
    from policygrad.verify_lagged import (
        LAG_STEP,
        check_lag_arguments,
        format_lagged_report,
        lagged_example_mdp,
        verify_lagged,
    )

    if args.lag is None:
        given = [flag for flag, value in (("--lag-step", args.lag_step), ("--rho-bar", args.rho_bar),
                                          ("--c-bar", args.c_bar)) if value is not None]
        raise InputError(f"{', '.join(given)} only apply to off-policy data; give --lag K too")
    if args.setting not in (None, "discounted"):
        raise InputError(f"--lag samples the discounted setting; drop --setting {shown(args.setting)} or use discounted")
    lag_step = LAG_STEP if args.lag_step is None else args.lag_step
    rho_bar = 1.0 if args.rho_bar is None else args.rho_bar
    c_bar = 1.0 if args.c_bar is None else args.c_bar
    check_lag_arguments(args.lag, lag_step, rho_bar, c_bar)  # before an MDP file is read
    limit_threads(1, 1)
    mdp, theta = (lagged_example_mdp(), None) if args.mdp is None else load_mdp_json(args.mdp)
    report = verify_lagged(mdp, theta, lag=args.lag, lag_step=lag_step, rho_bar=rho_bar, c_bar=c_bar,
                           episodes=args.episodes, horizon=args.horizon, seed=args.seed)
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(format_lagged_report(report))
        print(
            "\nmax|z|: largest |mean − predicted| / stderr over the gradient's components (predicted: ∇J(π) for "
            "per-decision IS, V-trace's closed-form expectation for V-trace); stays below ~4 when the prediction "
            "holds.\npred.err: ‖predicted − ∇J(π)‖ / ‖∇J(π)‖, V-trace's bias.  max|z| ∇J, cosine, rel.err: the "
            "sampled mean against ∇J(π)."
        )
    return 0


def all_presets() -> dict[str, dict[str, dict[str, Any]]]:
    """Every preset as ``{algo: {env: settings}}``: the environment presets, then those of the
    sequence tasks under ``seq:*`` (every task) and ``seq:TASK`` (the algorithm's preset with that
    task's changes applied)."""
    from policygrad.algorithms import PRESETS
    from policygrad.sequence_training import SEQUENCE_PRESETS, SEQUENCE_TASK_PRESETS

    presets = {algo: dict(envs) for algo, envs in PRESETS.items()}
    for algo, preset in SEQUENCE_PRESETS.items():
        presets.setdefault(algo, {})["seq:*"] = dict(preset)
    for (algo, task), changes in SEQUENCE_TASK_PRESETS.items():
        presets[algo][f"seq:{task}"] = {**SEQUENCE_PRESETS[algo], **changes}
    return presets


def main_presets(args: argparse.Namespace) -> int:
    """``policygrad presets``: every (algorithm, environment) preset, as a table or JSON; the
    sequence tasks' presets in a second table (their ``total_steps`` counts updates)."""
    from policygrad.logging import format_table

    presets = all_presets()
    if args.algo:
        presets = {args.algo: presets[args.algo]}
    if args.json:
        print(json.dumps(presets, indent=2, default=list))
        return 0
    classic = [(algo, env, p) for algo, envs in presets.items() for env, p in envs.items() if not env.startswith("seq:")]
    sequence = [(algo, env, p) for algo, envs in presets.items() for env, p in envs.items() if env.startswith("seq:")]
    tables = []
    if classic:
        shown_keys = ("total_steps", "num_envs", "num_steps")
        rows = [{"algo": algo, "env": env, **{k: p.get(k, "") for k in shown_keys},
                 "other keys": ", ".join(k for k in p if k not in shown_keys)} for algo, env, p in classic]
        tables.append(format_table(rows, ["algo", "env", *shown_keys, "other keys"]))
    if sequence:
        shown_keys = ("total_steps", "group_size", "prompts_per_step", "learning_rate", "aggregation")
        rows = [{"algo": algo, "env": env, **{k: p.get(k, "") for k in shown_keys},
                 "other keys": ", ".join(f"{k}={p[k]}" for k in p if k not in shown_keys)} for algo, env, p in sequence]
        tables.append("sequence tasks (total_steps: updates; seq:* applies to every task):\n"
                      + format_table(rows, ["algo", "env", *shown_keys, "other keys"]))
    print("\n\n".join(tables))
    return 0

if __name__ == "__main__":
    sys.exit(main())

