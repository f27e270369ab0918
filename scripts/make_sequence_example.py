"""Writes src/policygrad/sequence/examples/tabular.json, the built-in ``verify --sequence`` example.

V = 4 tokens, eos = 3, at most L = 6 tokens, 3 prompts, groups of G = 4, β = 0.1. Logits at prefixes
of up to 2 tokens are drawn from N(0, 0.7²) with a fixed seed (deeper prefixes are uniform), and so
are the reference's. Rewards: prompt 0 binary (1 when the tokens before eos are sorted and at least
3), prompt 1 graded (the fraction of the completion's tokens equal to 2), prompt 2 binary (1 when
the completion starts with 1 and ends with eos).

Run: python scripts/make_sequence_example.py
"""

import itertools
import json
import random
from pathlib import Path

V, L, EOS, P, G, BETA = 4, 6, 3, 3, 4, 0.1
OUT = Path(__file__).resolve().parents[1] / "src" / "policygrad" / "sequence" / "examples" / "tabular.json"


def completions():
    for n in range(1, L + 1):
        for body in itertools.product([t for t in range(V) if t != EOS], repeat=n - 1):
            yield body + (EOS,)
            if n == L:
                for last in range(V):
                    if last != EOS:
                        yield body + (last,)


def reward(p, y):
    body = y[:-1] if y[-1] == EOS else y
    if p == 0:
        return 1.0 if len(body) >= 3 and list(body) == sorted(body) else 0.0
    if p == 1:
        return round(y.count(2) / len(y), 6)
    return 1.0 if y[0] == 1 and y[-1] == EOS else 0.0


def main():
    rng = random.Random(11)
    prefixes = [h for k in range(3) for h in itertools.product([t for t in range(V) if t != EOS], repeat=k)]

    def table():
        return [{" ".join(map(str, h)): [round(rng.gauss(0, 0.7), 3) for _ in range(V)] for h in prefixes}
                for _ in range(P)]

    logits, reference = table(), table()
    rewards = [{" ".join(map(str, y)): reward(p, y) for y in completions() if reward(p, y)} for p in range(P)]
    estimators = [
        ("reinforce", "none", "sum"), ("reinforce", "k1_reward", "sum"), ("rloo", "k1_reward", "sum"),
        ("remax", "k1_reward", "sum"), ("dr_grpo", "k1_reward", "sum"), ("grpo", "none", "sum"),
        ("grpo", "k1_reward", "sum"), ("rloo", "k1_loss", "sum"), ("rloo", "k2_loss", "sum"),
        ("rloo", "k3_loss", "sum"), ("rloo", "k3_ratio_loss", "sum"), ("grpo", "k3_ratio_loss", "token_mean"),
        ("rloo", "k1_reward", "sequence_mean"), ("rloo", "k1_reward", "token_mean"),
    ]
    spec = {
        "vocab_size": V, "max_length": L, "eos": EOS, "prompts": P, "group_size": G, "beta": BETA,
        "logits": logits, "reference_logits": reference, "rewards": rewards,
        "estimators": [{"name": f"{a}/{k}/{g}", "advantage": a, "kl": k, "aggregation": g} for a, k, g in estimators],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(spec, indent=None, separators=(",", ":")) + "\n")
    print(OUT)


if __name__ == "__main__":
    main()
