"""Sampling throughput and the memory of token_log_probs for the built-in sequence transformer.

    python benchmarks/sequence_models.py throughput   # tokens/s, batch 64 x 16 new tokens, 1 thread
    python benchmarks/sequence_models.py memory CHUNK # peak RSS growth of one forward+backward pass
    python benchmarks/sequence_models.py update ALGO  # CPU s per update of ALGO's seq:count preset

Run ``memory`` once per chunk size (a fresh process each): the peak resident set size of a process
only grows, so each measurement needs its own process.
"""

from __future__ import annotations

import resource
import sys
import time

import torch

from policygrad.sequence.transformer import TransformerPolicy


def throughput(repeats: int = 20) -> None:
    torch.set_num_threads(1)
    policy = TransformerPolicy(32, d_model=128, n_layers=2, n_heads=4, max_context=64)
    prompts = torch.randint(2, 32, (64, 8), generator=torch.Generator().manual_seed(0))
    prompt_lengths = torch.randint(1, 9, (64,), generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(2)
    policy.sample(prompts, prompt_lengths, max_new_tokens=16, eos=None, generator=generator)  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        c = policy.sample(prompts, prompt_lengths, max_new_tokens=16, eos=None, generator=generator)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    tokens = c.tokens.numel()
    best_wall, median_wall, median_cpu = min(walls), sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]
    print(f"batch 64 x 16 new tokens: wall best {best_wall * 1e3:.1f} ms ({tokens / best_wall:,.0f} tokens/s), "
          f"median {median_wall * 1e3:.1f} ms ({tokens / median_wall:,.0f} tokens/s); "
          f"CPU median {median_cpu * 1e3:.1f} ms ({tokens / median_cpu:,.0f} tokens/s)")


def memory(chunk: int | None, batch: int = 64, width: int = 64, vocab: int = 32_000) -> None:
    torch.set_num_threads(1)
    policy = TransformerPolicy(vocab, d_model=64, n_layers=2, n_heads=4, max_context=256, chunk_size=chunk)
    prompts = torch.randint(2, vocab, (batch, 16), generator=torch.Generator().manual_seed(0))
    tokens = torch.randint(2, vocab, (batch, width), generator=torch.Generator().manual_seed(1))
    prompt_lengths, lengths = torch.full((batch,), 16), torch.full((batch,), width)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    log_probs, entropy = policy.token_log_probs(prompts, prompt_lengths, tokens, lengths, with_entropy=True)
    (log_probs.sum() + entropy.sum()).backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    logits_mb = batch * width * vocab * 4 / 2**20
    print(f"chunk_size {chunk}: B={batch} L={width} V={vocab} (one [B, L, V] float32 = {logits_mb:.0f} MB): "
          f"peak RSS grew {(after - before) / 1024:.0f} MB in forward+backward")


def update(algo: str, steps: int = 20) -> None:
    """CPU time of one RL update (sample, score, optimise) of ``algo``'s preset on ``seq:count``,
    pretraining off (its cost is apart), one thread: 3 warm-up updates, then ``steps`` measured."""
    from policygrad import sequence_training as st

    torch.set_num_threads(1)
    spec = st.resolve_sequence_run(algo, "seq:count", overrides={"pretrain_steps": 0, "tensorboard": False})
    session = st.build_sequence_session(spec, pretrain=False)
    for _ in range(3):
        st.sequence_update(session)
    cpus = []
    for _ in range(steps):
        cpu = time.process_time()
        st.sequence_update(session)
        cpus.append(time.process_time() - cpu)
    cpus.sort()
    print(f"{algo} on seq:count (its preset, no pretraining): CPU median {cpus[len(cpus) // 2] * 1e3:.1f} ms per "
          f"update (min {cpus[0] * 1e3:.1f}, max {cpus[-1] * 1e3:.1f}) over {steps} updates")


if __name__ == "__main__":
    if sys.argv[1] == "throughput":
        throughput()
    elif sys.argv[1] == "update":
        update(sys.argv[2])
    else:
        memory(None if sys.argv[2] == "none" else int(sys.argv[2]))
