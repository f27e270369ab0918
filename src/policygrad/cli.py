"""The ``policygrad`` command: ``train``, ``eval``, ``plot`` and ``verify``.

Heavy modules (torch, gymnasium) are imported inside each command so that ``policygrad --help``
stays instant. Every :class:`~policygrad.errors.PolicygradError` becomes one line on stderr and its
exit code; argument errors exit with code 2.
"""

from __future__ import annotations

import argparse
import gc
import sys
from typing import NoReturn, Sequence

from policygrad.errors import InputError, PolicygradError


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


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
        from policygrad.verify import main_verify

        _imported()
        return main_verify(args)
    if args.command == "train":
        import policygrad.algorithms  # noqa: F401  (torch, gymnasium)
        from policygrad.train import main_train

        _imported()
        return main_train(args)
    if args.command == "eval":
        import policygrad.algorithms  # noqa: F401  (torch, gymnasium)
        from policygrad.train import main_eval

        _imported()
        return main_eval(args)
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
        print(f"policygrad: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("policygrad: interrupted", file=sys.stderr)
        return 130
    finally:
        if enabled:
            gc.enable()


if __name__ == "__main__":
    sys.exit(main())
