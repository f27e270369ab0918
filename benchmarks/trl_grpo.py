"""policygrad's sequence training step against TRL's GRPOTrainer, on identical settings.

    python benchmarks/trl_grpo.py                                  # 5 runs of each, the table
    python benchmarks/trl_grpo.py --runs 1 --steps 2 --warmup 1    # a quick look

Both sides train the same GPT-2-style ``transformers`` model (GPT2Config: vocabulary 32, n_embd
128, 2 layers, 4 heads, n_positions 64; initialised with seed 0 and saved with save_pretrained to
a temporary directory that both load), one step being 8 prompts × 8 completions × 16 new tokens
(no early stop), GRPO advantages (group std + 1e-4), ε = 0.2 clipping, β = 0.04 with TRL's default
KL term (k3 times the importance ratio, ``use_bias_correction_kl``: policygrad's
``k3_ratio_loss``), TRL's ``loss_type="grpo"`` (per-sequence token mean, then the batch mean:
policygrad's ``sequence_mean``), Adam(W) at 1e-3 without weight decay, gradient norm clipped at 1,
dropout off in the training pass (HFPolicy keeps the model in eval mode; TRL's
``disable_dropout=True``), one torch thread. The prompts are the same 4-token strings ``x×n=`` of a count task with 19
letters (30 symbols + pad + end = 32 tokens); the reward is the number of times the prompt's
letter appears in the completion.

policygrad's side is the library's own update, :func:`policygrad.sequence_training.sequence_update`
on a session of :func:`~policygrad.sequence_training.build_sequence_session` (``--set
model=DIR``), the per-step logging and checkpoints of ``train_sequence`` left out. To sample all 16
tokens the benchmark sets the end token that ``sequence_update`` passes to the sampler to None.
TRL's side is ``GRPOTrainer.train`` with ``generation_kwargs={"min_new_tokens": 16}``; its
``on_step_end`` callback marks the measured steps.

A third row, the floor, times the model's own calls alone for the same step (16 cached decoding
calls, a no-grad forward and a forward + backward of the 64 sequences; :func:`run_floor`), with
GPT-2's ``gelu_new`` in the fused kernel of the same function (``transformers``' own
``gelu_pytorch_tanh``), as policygrad's ``HFPolicy`` runs it: TRL's time over it bounds the ratio any
library that runs this ``transformers`` model's code in float32 can reach.

Each run is a fresh subprocess (TRL, policygrad, floor, TRL, ...): ``--warmup`` optimiser steps, then
``--steps`` measured ones; it reports the process's CPU seconds (``time.process_time``) per
measured step and its peak resident set size (``ru_maxrss``, imports included) at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LETTERS = "abcdefghijklmnopqrs"  # 19 letters + "123456789×=" + pad + end = 32 token ids
MODEL = {"vocab_size": 32, "n_embd": 128, "n_layer": 2, "n_head": 4, "n_positions": 64}
PROMPTS, GROUP, NEW_TOKENS, BETA, LR = 8, 8, 16, 0.04, 1e-3


def letter_count(prompt: str, completion: str) -> float:
    """The reward of both sides: how often the prompt's letter occurs in the completion."""
    prompt, completion = prompt.replace(" ", ""), completion.replace(" ", "")
    return float(completion.count(prompt[0])) if prompt else 0.0


def count_task():
    """The count task with 19 letters whose training prompts are TRL's dataset (the same 8 prompts
    every step); its completions' texts skip the end token instead of stopping there (the sampler
    does not stop at it either), as TRL's decoding skips special tokens."""
    from policygrad.sequence.tasks import EOS, PAD, CountTask

    fixed = prompt_texts(PROMPTS)

    class FullTextCount(CountTask):
        def sample_prompts(self, n, generator=None, split="train"):
            return fixed[:n] if split == "train" and n <= len(fixed) else super().sample_prompts(n, generator, split)

        def texts(self, completions):
            prompts, _ = super().texts(completions)
            symbols = self.tokenizer.symbols
            texts = ["".join(symbols[i - 2] for i in row[:n].tolist() if i not in (PAD, EOS))
                     for row, n in zip(completions.tokens, completions.lengths.tolist())]
            return prompts, texts

    return FullTextCount(letters=LETTERS)


def save_model(directory: str) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(**MODEL, bos_token_id=1, eos_token_id=1, pad_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(directory)


def prompt_texts(n: int, seed: int = 0) -> list[str]:
    import torch

    from policygrad.sequence.tasks import CountTask

    return CountTask(letters=LETTERS).sample_prompts(n, torch.Generator().manual_seed(seed))


def finish(cpu: float, steps: int, extra: dict) -> dict:
    import resource
    import threading

    import torch

    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"cpu_s_per_step": cpu / steps, "peak_rss_mb": peak_kb / 1024, "torch_threads": torch.get_num_threads(),
            "python_threads": threading.active_count(), **extra}


def run_policygrad(model_dir: str, warmup: int, steps: int) -> dict:
    import torch

    from policygrad import sequence_training as st

    torch.set_num_threads(1)
    spec = st.resolve_sequence_run("grpo", "seq:count", overrides={
        "model": model_dir, "group_size": GROUP, "prompts_per_step": PROMPTS, "max_new_tokens": NEW_TOKENS,
        "beta": BETA, "kl": "k3_ratio_loss", "aggregation": "sequence_mean", "clip_eps": 0.2,
        "learning_rate": LR, "max_grad_norm": 1.0, "pretrain_steps": 0, "tensorboard": False, "torch_threads": 1,
    })
    task = count_task()  # 32 token ids, as the model's vocabulary: every id the model samples decodes
    st._task = lambda env, settings=None: task
    session = st.build_sequence_session(spec, pretrain=False)
    session.reward = letter_count
    st.EOS = None  # no early stop: every completion is 16 tokens
    for _ in range(warmup):
        st.sequence_update(session)
    rows = []
    cpu = time.process_time()
    for _ in range(steps):
        rows.append(st.sequence_update(session))
    cpu = time.process_time() - cpu
    return finish(cpu, steps, {
        "completion_length": statistics.mean(r["completion_length"] for r in rows),
        "reward": statistics.mean(r["reward"] for r in rows),
    })


def run_trl(model_dir: str, warmup: int, steps: int) -> dict:
    import torch
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from policygrad.sequence.tasks import CountTask

    torch.set_num_threads(1)
    symbols = CountTask(letters=LETTERS).symbols
    vocab = {"<pad>": 0, "<eos>": 1, **{s: i + 2 for i, s in enumerate(symbols)}}
    assert len(vocab) == MODEL["vocab_size"]
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>",
                                        bos_token="<eos>", unk_token="<pad>")
    tokenizer.padding_side = "left"
    dataset = Dataset.from_dict({"prompt": [" ".join(p) for p in prompt_texts(PROMPTS)]})
    lengths, rewards = [], []

    def reward(prompts, completions, completion_ids=None, **_):
        out = [letter_count(p, c) for p, c in zip(prompts, completions)]
        if completion_ids is not None:
            lengths.extend(len(ids) for ids in completion_ids)
        rewards.extend(out)
        return out

    marks: dict[int, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks[state.global_step] = time.process_time()

    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out, per_device_train_batch_size=PROMPTS * GROUP, num_generations=GROUP,
            gradient_accumulation_steps=1, max_completion_length=NEW_TOKENS, beta=BETA, loss_type="grpo",
            epsilon=0.2, scale_rewards="group", num_iterations=1, learning_rate=LR, weight_decay=0.0,
            max_grad_norm=1.0, temperature=1.0, max_steps=warmup + steps, generation_kwargs={"min_new_tokens": NEW_TOKENS},
            use_cpu=True, bf16=False, report_to="none", logging_strategy="no", save_strategy="no",
            disable_tqdm=True, seed=0, dataloader_num_workers=0, disable_dropout=True,
        )
        trainer = GRPOTrainer(model=model_dir, reward_funcs=reward, args=config, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=[Clock()])
        trainer.train()
    start = marks[warmup] if warmup else None
    if start is None:
        raise SystemExit("TRL runs need --warmup >= 1 (the first step's start is not marked)")
    cpu = marks[warmup + steps] - start
    measured = lengths[warmup * PROMPTS * GROUP:]
    return finish(cpu, steps, {
        "completion_length": statistics.mean(measured) if measured else None,
        "reward": statistics.mean(rewards[warmup * PROMPTS * GROUP:]),
    })


def run_floor(model_dir: str, warmup: int, steps: int) -> dict:
    """What one step costs in the model's own forward and backward calls alone, with nothing around
    them: 16 cached decoding calls on the 64 rows (greedy, no sampling code), one no-grad
    teacher-forced forward of prompt and completion (the reference's scores), and one forward and
    backward of the same (the policy's), the activation in its fused kernel. A library that trains
    this ``transformers`` model in float32 cannot spend less per step; TRL's time over this one is
    the most any ratio can be."""
    import torch
    from transformers import GPT2LMHeadModel

    from policygrad.sequence.hf import fuse_tanh_gelu

    torch.set_num_threads(1)
    model = GPT2LMHeadModel.from_pretrained(model_dir).eval()
    fuse_tanh_gelu(model)
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(2, MODEL["vocab_size"], (PROMPTS * GROUP, 4), generator=generator)
    whole = torch.randint(2, MODEL["vocab_size"], (PROMPTS * GROUP, 4 + NEW_TOKENS - 1), generator=generator)

    def step() -> None:
        with torch.no_grad():
            out = model(prompts, use_cache=True)
            for _ in range(NEW_TOKENS - 1):
                token = out.logits[:, -1].argmax(-1, keepdim=True)
                out = model(token, past_key_values=out.past_key_values, use_cache=True)
            model(whole).logits
        model.zero_grad()
        model(whole).logits.log_softmax(-1).sum().backward()

    for _ in range(warmup):
        step()
    cpu = time.process_time()
    for _ in range(steps):
        step()
    return finish(time.process_time() - cpu, steps, {"completion_length": NEW_TOKENS, "reward": float("nan")})


LIBRARIES = {"trl": "TRL GRPOTrainer", "policygrad": "policygrad sequence_update",
             "floor": "the model's calls alone (floor)"}


def child(lib: str, model_dir: str, warmup: int, steps: int) -> None:
    result = {"trl": run_trl, "policygrad": run_policygrad, "floor": run_floor}[lib](model_dir, warmup, steps)
    print("RESULT " + json.dumps({"lib": lib, **result}), flush=True)


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("policygrad", "torch", "transformers", "trl", "datasets"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each library (alternating, fresh processes)")
    parser.add_argument("--steps", type=int, default=10, help="measured optimiser steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="optimiser steps before the measured ones (>= 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "trl_grpo.md",
                        help="the Markdown table; the JSON record goes beside it (.json)")
    parser.add_argument("--child", choices=tuple(LIBRARIES), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or args.runs < 1:
        parser.error("--runs, --steps and --warmup must be >= 1")
    if args.child:
        child(args.child, args.model_dir, args.warmup, args.steps)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as model_dir:
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
                        f"import trl_grpo; trl_grpo.save_model({model_dir!r})"], env=env, check=True)
        for run in range(args.runs):
            for lib in LIBRARIES:
                proc = subprocess.run([sys.executable, __file__, "--child", lib, "--model-dir", model_dir,
                                       "--warmup", str(args.warmup), "--steps", str(args.steps)],
                                      env=env, capture_output=True, text=True)
                lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
                if proc.returncode or not lines:
                    sys.stderr.write(proc.stderr[-4000:])
                    raise SystemExit(f"{lib} run {run + 1} failed (exit {proc.returncode})")
                record = {"run": run + 1, **json.loads(lines[-1][len("RESULT "):])}
                results.append(record)
                print(f"run {run + 1} {lib:10s} {record['cpu_s_per_step']:.3f} CPU s/step  "
                      f"{record['peak_rss_mb']:.0f} MB peak  length {record['completion_length']}  "
                      f"reward {record['reward']:.2f}", flush=True)
    summary = {}
    for lib in LIBRARIES:
        mine = [r for r in results if r["lib"] == lib]
        summary[lib] = {"cpu_s_per_step": spread([r["cpu_s_per_step"] for r in mine]),
                        "peak_rss_mb": spread([r["peak_rss_mb"] for r in mine])}
    cpu_ratio = summary["trl"]["cpu_s_per_step"]["median"] / summary["policygrad"]["cpu_s_per_step"]["median"]
    rss_ratio = summary["policygrad"]["peak_rss_mb"]["median"] / summary["trl"]["peak_rss_mb"]["median"]
    floor_ratio = summary["trl"]["cpu_s_per_step"]["median"] / summary["floor"]["cpu_s_per_step"]["median"]
    record = {
        "settings": {"model": MODEL, "prompts": PROMPTS, "group_size": GROUP, "new_tokens": NEW_TOKENS, "beta": BETA,
                     "learning_rate": LR, "loss_type": "grpo / sequence_mean", "kl": "k3 x ratio / k3_ratio_loss",
                     "runs": args.runs, "warmup": args.warmup, "steps": args.steps, "threads": 1},
        "versions": versions(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPUs", "runs": results, "summary": summary,
        "trl_over_policygrad_cpu": cpu_ratio, "policygrad_over_trl_rss": rss_ratio, "trl_over_floor_cpu": floor_ratio,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    v = record["versions"]
    lines = [
        "# policygrad vs TRL GRPOTrainer: CPU time and peak memory per step",
        "",
        f"{record['when']}, {record['machine']}, one torch thread; policygrad {v['policygrad']}, TRL {v['trl']}, "
        f"transformers {v['transformers']}, torch {v['torch']}. GPT-2 (vocab 32, n_embd 128, 2 layers, 4 heads), "
        f"{PROMPTS} prompts × {GROUP} completions × {NEW_TOKENS} new tokens, β = {BETA}, GRPO loss; "
        f"{args.runs} alternating runs of each in fresh processes, {args.warmup} warm-up then {args.steps} measured "
        "steps each. Median (min–max) over the runs. Command: "
        f"`python benchmarks/trl_grpo.py --runs {args.runs} --warmup {args.warmup} --steps {args.steps}`.",
        "",
        "| library | CPU s / step | peak RSS (MB) |",
        "|---|---|---|",
    ]
    for lib, name in LIBRARIES.items():
        c, m = summary[lib]["cpu_s_per_step"], summary[lib]["peak_rss_mb"]
        lines.append(f"| {name} | {c['median']:.3f} ({c['min']:.3f}–{c['max']:.3f}) "
                     f"| {m['median']:.0f} ({m['min']:.0f}–{m['max']:.0f}) |")
    lines += ["", f"TRL / policygrad CPU time per step: {cpu_ratio:.2f}× (target ≥ 2×); "
              f"policygrad / TRL peak RSS: {rss_ratio:.2f}× (target ≤ 0.85×). TRL / the floor: {floor_ratio:.2f}×, "
              "the largest CPU ratio any library running this model's own calls in float32 could reach.", ""]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
