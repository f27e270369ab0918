"""The ``policygrad`` command: ``train``, ``eval``, ``plot`` and ``verify``.

Heavy modules (torch, gymnasium) are imported inside each command so that ``policygrad --help``
stays instant. Every :class:`~policygrad.errors.PolicygradError` becomes one line on stderr and its
exit code; argument errors exit with code 2.

``policygrad train`` resolves the run (:mod:`policygrad.runconfig`: preset < ``--config`` <
``--set`` < flags), builds its session (:mod:`policygrad.training`) before it creates the run
directory (:mod:`policygrad.rundir`), so bad input leaves no trace, then trains; ``--resume``
continues a run directory from its last checkpoint with its saved settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import re
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

from policygrad.errors import SHOWN_CHARS, InputError, PolicygradError, one_line, shown

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

    # --- train / eval / plot ------------------------------------------------------------
    p = sub.add_parser(
        "train",
        help="train a policy on a Gymnasium environment",
        description="Train a policy. Hyperparameters: the preset of (algo, env) < --config < --set < flags.",
    )
    p.add_argument("--algo", choices=["reinforce", "a2c", "ppo", "npg", "trpo"], default=None,
                   help="algorithm (default: the config file's algo, else ppo)")
    p.add_argument("--env", default=None,
                   help="a Gymnasium id, or module:attr naming an env class or factory (default: CartPole-v1)")
    p.add_argument("--env-kwargs", metavar="JSON", default=None,
                   help='keyword arguments of the environment, a JSON object, e.g. \'{"is_slippery": false}\' '
                        "(also --set env.KEY=VALUE, or an [env_kwargs] table in --config)")
    p.add_argument("--steps", type=int, default=None, help="environment steps in total (default: the preset's)")
    p.add_argument("--seed", type=int, default=None, help="seed of everything (default: the config's, 0)")
    p.add_argument("--config", metavar="FILE.toml", help="hyperparameters from a TOML file of key = value lines")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one hyperparameter, the value a TOML literal, e.g. hidden_sizes=[64,64] (repeatable)")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<algo>-<env>-<time>/)")
    p.add_argument("--target-return", type=float, default=None,
                   help="evaluate periodically and stop once the deterministic return reaches this")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--device", default=None, help="cpu (default), cuda, cuda:1, ...")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.add_argument("--print-config", action="store_true",
                   help="print the fully resolved run configuration as JSON and exit without training")

    p = sub.add_parser("eval", help="evaluate a trained policy")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--episodes", type=int, default=20, help="episodes to run (default 20)")
    p.add_argument("--deterministic", action="store_true", help="take the most likely action instead of sampling")
    p.add_argument("--seed", type=int, default=None, help="seed of the environments and the sampling")
    p.add_argument("--steps", type=int, default=None, metavar="K",
                   help="also measure the reward per step over K environment steps (default 10000 on a "
                        "continuing run, time_limit=0)")
    p.add_argument("--json", action="store_true",
                   help='print {"mean_return", "std_return", "episodes"} (+ "reward_per_step", "steps")')

    p = sub.add_parser("presets", help="list the (algorithm, environment) presets")
    p.add_argument("--algo", choices=["reinforce", "a2c", "ppo", "npg", "trpo"], default=None,
                   help="only this algorithm's presets")
    p.add_argument("--json", action="store_true", help="print every preset's settings as JSON")

    p = sub.add_parser("plot", help="overlay learning curves of runs")
    p.add_argument("run_dirs", metavar="RUN_DIR", nargs="+")
    p.add_argument("--out", metavar="FILE.png", default=None)
    return parser


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
        return main_verify(args)
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
    if args.command == "presets":
        import policygrad.algorithms  # noqa: F401  (torch, gymnasium)

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
    try:
        return _dispatch(args)
    except PolicygradError as err:
        print(f"policygrad: error: {one_line(str(err), MAX_ERROR_CHARS)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("policygrad: interrupted", file=sys.stderr)
        return 130
    finally:
        if enabled:
            gc.enable()


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def main_train(args: argparse.Namespace) -> int:
    """``policygrad train``: see the module docstring."""
    from policygrad.rundir import default_run_dir, start_run
    from policygrad.runconfig import parse_env_kwargs, parse_set, resolve_run

    if args.steps is not None and args.steps < 1:
        raise InputError(f"--steps must be a positive number of environment steps, got {shown(args.steps)}")
    flags = {"total_steps": args.steps, "target_return": args.target_return}
    if args.resume is not None:
        conflicting = [
            name
            for name, value in (("--algo", args.algo), ("--env", args.env), ("--config", args.config),
                                ("--set", args.overrides), ("--seed", args.seed), ("--out", args.out),
                                ("--env-kwargs", args.env_kwargs))
            if value
        ]
        if conflicting:
            raise InputError(f"--resume continues a run with its saved settings; drop {', '.join(conflicting)}")
        if args.print_config:
            from policygrad.runconfig import read_run_config

            args_spec = read_run_config(Path(args.resume))
            data = args_spec.to_json()
            data.pop("versions", None)
            print(json.dumps(data, indent=2))
            return 0
        return _resume(Path(args.resume), flags, args.device, args.quiet)

    spec = resolve_run(
        args.algo,
        args.env,
        config_file=args.config,
        overrides=parse_set(args.overrides),
        flags={"seed": args.seed, **flags},
        env_kwargs=None if args.env_kwargs is None else parse_env_kwargs(args.env_kwargs),
    )
    if args.print_config:
        data = spec.to_json()
        data.pop("versions", None)
        print(json.dumps(data, indent=2))
        return 0
    run_dir = Path(args.out) if args.out else default_run_dir(spec.algo, spec.env)
    session, summary = start_run(spec, run_dir, args.device, quiet=args.quiet)
    session.close()
    _finish(run_dir, summary, args.quiet)
    return 0


def _resume(run_dir: Path, flags: dict[str, Any], device: str | None, quiet: bool) -> int:
    from policygrad.rundir import reopen_run, write_run_config
    from policygrad.runconfig import read_run_config
    from policygrad.training import train

    spec = read_run_config(run_dir)
    changed = {k: v for k, v in flags.items() if v is not None}
    if changed:
        spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, **changed))
    session = reopen_run(run_dir, spec, device)
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
    _finish(run_dir, summary, quiet)
    return 0


def _finish(run_dir: Path, summary: dict[str, Any], quiet: bool) -> None:
    import numpy as np

    from policygrad.plots import plot_learning_curve

    try:
        plot_learning_curve(run_dir)
    except PolicygradError as err:
        if not quiet:
            print(f"policygrad: note: no learning curve ({err})", file=sys.stderr)
    if quiet:
        return
    returns = summary["eval_returns"]
    how = " (target return reached)" if summary["stopped_early"] else ""
    print(
        f"{run_dir}: {summary['step']} steps in {summary['seconds']:.1f} s{how}; deterministic evaluation "
        f"return {np.mean(returns):.2f} ± {np.std(returns):.2f} over {len(returns)} episodes"
    )


def main_eval(args: argparse.Namespace) -> int:
    """``policygrad eval RUN_DIR``: a table, or one JSON object with ``--json``.

    On a continuing run (``time_limit = 0``) or with ``--steps K``, the reward per step over K
    environment steps (default :data:`DEFAULT_EVAL_STEPS`) is measured as well and reported as
    ``reward_per_step``: ``--episodes`` environment copies (at most 32) each run K / copies steps
    from a seeded reset, as they run one window each in the episode evaluation.
    """
    import numpy as np

    from policygrad.logging import format_table
    from policygrad.runconfig import read_run_config
    from policygrad.training import evaluate_run, evaluate_run_steps

    steps = getattr(args, "steps", None)
    if steps is not None and steps < 1:
        raise InputError(f"--steps must be a positive number of environment steps, got {shown(steps)}")
    returns = evaluate_run(args.run_dir, args.episodes, deterministic=args.deterministic, seed=args.seed)
    mean, std = float(np.mean(returns)), float(np.std(returns))
    rate: tuple[float, int] | None = None
    if steps is not None or read_run_config(Path(args.run_dir)).train.time_limit == 0:
        rate = evaluate_run_steps(args.run_dir, steps or DEFAULT_EVAL_STEPS, min(args.episodes, 32),
                                  deterministic=args.deterministic, seed=args.seed)
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
    return 0


def main_verify(args: argparse.Namespace) -> int:
    """``policygrad verify``: the built-in examples, or a user's MDP from JSON."""
    from policygrad.tabular import example_mdp, load_mdp_json
    from policygrad.threads import limit_threads
    from policygrad.verify import SETTINGS, format_report, verify

    limit_threads(1, 1)
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


def main_presets(args: argparse.Namespace) -> int:
    """``policygrad presets``: every (algorithm, environment) preset, as a table or JSON."""
    from policygrad.algorithms import PRESETS
    from policygrad.logging import format_table

    algos = [args.algo] if args.algo else list(PRESETS)
    presets = {algo: PRESETS[algo] for algo in algos}
    if args.json:
        print(json.dumps(presets, indent=2, default=list))
        return 0
    rows = [
        {"algo": algo, "env": env, "total_steps": p.get("total_steps", ""), "num_envs": p.get("num_envs", ""),
         "num_steps": p.get("num_steps", ""), "other keys": ", ".join(k for k in p if k not in
                                                                    ("total_steps", "num_envs", "num_steps"))}
        for algo, envs in presets.items() for env, p in envs.items()
    ]
    print(format_table(rows, ["algo", "env", "total_steps", "num_envs", "num_steps", "other keys"]))
    return 0

if __name__ == "__main__":
    sys.exit(main())

