"""A Hugging Face ``transformers`` causal language model as a
:class:`~policygrad.sequence.base.SequencePolicy` (the ``lm`` extra: ``pip install policygrad[lm]``).

``transformers`` is imported inside the constructors below, never when this module is imported.
The adapter splits the model into its trunk (``model.base_model``: ids, attention mask and position
ids to hidden states) and its output head (``model.get_output_embeddings()``), and hands both to
:mod:`policygrad.sequence.decoding`, so that sampling (through the model's own key/value cache,
``past_key_values``) and chunked log-probabilities are the same code as for
:class:`~policygrad.sequence.transformer.TransformerPolicy`. Prompts are left-padded: the attention
mask hides the padding and position ids count real tokens only.

A model whose causal-LM head does more than its output embedding is supported only for Gemma-style
final logit soft-capping (``config.final_logit_softcapping``); the adapter refuses other extras it
knows of (``config.logit_scale``) rather than compute different log-probabilities.

The model is put in eval mode (dropout off): the log-probabilities that training differentiates
must be those of sampling.

The tanh approximation of GELU that GPT-2-style configs name ``gelu_new`` (and ``gelu_fast``) is
written in ``transformers`` as seven element-wise tensor operations; ``transformers``' own
``gelu_pytorch_tanh`` computes the same function, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))),
in one fused PyTorch kernel (``F.gelu(x, approximate="tanh")``, :class:`TanhGELU`; it differs by
float rounding: at most 2.4e-7 in float32 for inputs in [−12, 12]). The adapter puts the fused
module in their place (``fuse_gelu=True``, the default), which makes a GPT-2 training step about
20% cheaper on a CPU (``benchmarks/trl_grpo.py``); the config, the weights and what
``save_pretrained`` writes are unchanged.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policygrad.errors import InputError, describe_error, shown
from policygrad.sequence.base import Completions
from policygrad.sequence.decoding import (
    check_prompts,
    check_sampling,
    decode,
    policy_scores_and_values,
    policy_token_scores,
    policy_values,
    positions_of,
)

__all__ = ["HFPolicy"]


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise InputError("HFPolicy needs the transformers package: pip install 'policygrad[lm]'") from err
    return transformers


class TanhGELU(nn.Module):
    """0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) in one kernel: ``F.gelu(x, approximate="tanh")``,
    what ``transformers`` calls ``gelu_pytorch_tanh``."""

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate="tanh")


def fuse_tanh_gelu(model: nn.Module) -> int:
    """Replace, in place, every ``transformers`` ``NewGELUActivation`` (``gelu_new``) and
    ``FastGELUActivation`` (``gelu_fast``) module of ``model`` by :class:`TanhGELU`: the same
    function in one fused kernel instead of seven element-wise operations. Returns how many modules
    were replaced."""
    activations = _transformers().activations
    slow = (activations.NewGELUActivation, activations.FastGELUActivation)
    targets = [(parent, name) for parent in model.modules() for name, child in parent.named_children()
               if type(child) in slow]
    for parent, name in targets:
        setattr(parent, name, TanhGELU())
    return len(targets)


class HFPolicy(nn.Module):
    """A ``transformers`` causal LM (an ``AutoModelForCausalLM`` instance) as a sequence policy.

    Args:
        model: the causal language model; put in eval mode.
        pad_id: the id that pads prompts (on the left) and completions (on the right).
        chunk_size: rows per pass of :meth:`token_log_probs` (None: the whole batch at once).
        max_context: the most tokens a sequence may hold; None: the config's ``n_positions`` or
            ``max_position_embeddings`` when it has one.
        value_head: add a scalar head on the base model's last hidden state for :meth:`values`
            (PPO's critic on the same trunk; weights N(0, 0.02) from torch's global generator, bias 0).
        fuse_gelu: replace the model's ``gelu_new``/``gelu_fast`` activation modules, in place, by
            the fused kernel of the same function (see the module's docstring); False: leave the
            model's modules as they are.
    """

    def __init__(self, model: nn.Module, *, pad_id: int = 0, chunk_size: int | None = 16,
                 max_context: int | None = None, value_head: bool = False, fuse_gelu: bool = True) -> None:
        super().__init__()
        config = getattr(model, "config", None)
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if config is None or head is None or not hasattr(model, "base_model") or model.base_model is model:
            raise InputError(f"HFPolicy needs a transformers causal language model, got {type(model).__name__}")
        if getattr(config, "logit_scale", None) not in (None, 1, 1.0):
            raise InputError("HFPolicy does not support models that scale their logits (config.logit_scale)")
        self.model = model.eval()
        self.vocab_size = int(head.weight.shape[0])
        if isinstance(pad_id, bool) or not isinstance(pad_id, int) or not 0 <= pad_id < self.vocab_size:
            raise InputError(f"pad_id must be a token id in [0, {self.vocab_size}), got {shown(pad_id)}")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
            raise InputError(f"chunk_size must be None or a positive integer, got {shown(chunk_size)}")
        self.pad_id = pad_id
        self.chunk_size = chunk_size
        if max_context is None:
            max_context = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
        self.max_context = max_context
        self._softcap = getattr(config, "final_logit_softcapping", None)
        self.value_head = None
        if value_head:
            weight = head.weight
            self.value_head = nn.Linear(weight.shape[1], 1, dtype=weight.dtype, device=weight.device)
            nn.init.normal_(self.value_head.weight, std=0.02)
            nn.init.zeros_(self.value_head.bias)
        # transformers 5.x renamed the cache argument `past_key_values` to `cache`
        parameters = inspect.signature(model.base_model.forward).parameters
        self._cache_argument = "cache" if "cache" in parameters else "past_key_values"
        self.fused_gelu = fuse_tanh_gelu(model) if fuse_gelu else 0  # last: bad arguments leave the model as it was

    def train(self, mode: bool = True) -> "HFPolicy":
        """Set the adapter's training flag; the wrapped model stays in eval mode (dropout off), so
        that the log-probabilities training differentiates are those of sampling."""
        super().train(mode)
        self.model.eval()
        return self

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> "HFPolicy":
        """A freshly initialised model from a ``transformers`` config, or from a dict of its fields
        with ``model_type`` (e.g. ``{"model_type": "gpt2", "vocab_size": 32, "n_layer": 2}``);
        ``kwargs`` go to :class:`HFPolicy`."""
        transformers = _transformers()
        if isinstance(config, dict):
            fields = dict(config)
            model_type = fields.pop("model_type", None)
            if not isinstance(model_type, str):
                raise InputError("a config given as a dict needs a 'model_type' (e.g. 'gpt2')")
            try:
                config = transformers.AutoConfig.for_model(model_type, **fields)
            except (ValueError, TypeError, KeyError) as err:
                raise InputError(f"cannot build a transformers config: {describe_error(err, first_line=True)}") from err
        try:
            model = transformers.AutoModelForCausalLM.from_config(config)
        except (ValueError, TypeError, KeyError) as err:
            raise InputError(f"cannot build a causal LM from this config: {describe_error(err, first_line=True)}") from err
        return cls(model, **kwargs)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, dtype: torch.dtype | None = None, **kwargs: Any) -> "HFPolicy":
        """The causal LM saved in the local directory ``path`` (``save_pretrained``); nothing is
        downloaded (``local_files_only=True``). A directory that does not load: InputError."""
        transformers = _transformers()
        if not os.path.isdir(path):
            raise InputError(f"no model directory at {shown(str(path))}")
        extra = {} if dtype is None else {"dtype": dtype}
        bars = transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.disable_progress_bar()  # its "Loading weights" bar on stderr
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(os.fspath(path), local_files_only=True, **extra)
        except Exception as err:  # transformers raises OSError, ValueError, KeyError, json errors, ...
            raise InputError(f"cannot load a causal LM from {shown(str(path))}: "
                             f"{describe_error(err, limit=300, first_line=True)}") from err
        finally:
            if bars:
                transformers.utils.logging.enable_progress_bar()
        return cls(model, **kwargs)

    def _cached(self, ids: Tensor, real: Tensor, positions: Tensor, cache: Any) -> tuple[Tensor, Any]:
        """The base model on ``ids [B, T]`` after the columns ``cache`` holds (None: none); its
        ``[B, T, D]`` hidden states and the cache with these columns added."""
        out = self.model.base_model(input_ids=ids, attention_mask=real.long(), position_ids=positions,
                                    use_cache=True, **{self._cache_argument: cache})
        new_cache = out.cache if "cache" in out else out.past_key_values
        return out.last_hidden_state, new_cache

    def hidden(self, ids: Tensor, real: Tensor, positions: Tensor) -> Tensor:
        """``[B, T, D]`` the base model's last hidden states of ``ids [B, T]`` (no cache)."""
        return self.model.base_model(input_ids=ids, attention_mask=real.long(), position_ids=positions,
                                     use_cache=False).last_hidden_state

    def logits(self, hidden: Tensor) -> Tensor:
        """``[..., V]`` logits from ``[..., D]`` hidden states (the output embedding, soft-capped
        when the config says so)."""
        logits = self.model.get_output_embeddings()(hidden)
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits

    @torch.no_grad()
    def sample(self, prompts: Tensor, prompt_lengths: Tensor, *, max_new_tokens: int, eos: int | None,
               temperature: float = 1.0, greedy: bool = False, generator: torch.Generator | None = None) -> Completions:
        """Sample one completion per prompt (see :class:`~policygrad.sequence.base.SequencePolicy`)
        through the model's key/value cache."""
        check_prompts(prompts, prompt_lengths, self.vocab_size, self.max_context)
        check_sampling(prompt_lengths, max_new_tokens, eos, temperature, self.vocab_size, self.max_context)
        batch, width = prompts.shape
        real = torch.cat([
            torch.arange(width, device=prompts.device)[None, :] >= (width - prompt_lengths)[:, None],
            torch.ones(batch, max_new_tokens, dtype=torch.bool, device=prompts.device),
        ], dim=1)
        hidden, cache = self._cached(prompts, real[:, :width], positions_of(real[:, :width]), None)
        state = {"cache": cache}

        def step(token: Tensor, t: int) -> Tensor:
            position = (prompt_lengths + t)[:, None]
            hidden, state["cache"] = self._cached(token[:, None], real[:, :width + t + 1], position, state["cache"])
            return self.logits(hidden[:, -1])

        return decode(self.logits(hidden[:, -1]), step, prompts, prompt_lengths, max_new_tokens=max_new_tokens,
                      eos=eos, temperature=float(temperature), greedy=greedy, generator=generator, pad_id=self.pad_id)

    def token_log_probs(self, prompts: Tensor, prompt_lengths: Tensor, tokens: Tensor, lengths: Tensor, *,
                        temperature: float = 1.0, with_entropy: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """``[B, L]`` log π(y_t | x, y_<t) of the given completions, 0 beyond ``lengths``
        (differentiable), and with ``with_entropy`` the ``[B, L]`` entropies; ``chunk_size`` rows
        at a time (:func:`policygrad.sequence.decoding.token_scores`)."""
        return policy_token_scores(self, prompts, prompt_lengths, tokens, lengths, temperature, with_entropy)

    def values(self, prompts: Tensor, prompt_lengths: Tensor, tokens: Tensor, lengths: Tensor) -> Tensor:
        """``[B, L]`` V(x, y_<t), the value head on the state before each completion token, 0 beyond
        ``lengths`` (differentiable; :func:`policygrad.sequence.decoding.policy_values`)."""
        return policy_values(self, prompts, prompt_lengths, tokens, lengths)

    def scores_and_values(self, prompts: Tensor, prompt_lengths: Tensor, tokens: Tensor, lengths: Tensor, *,
                          temperature: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
        """``(log π, entropy, V)``, each ``[B, L]``: :meth:`token_log_probs` with entropies and
        :meth:`values` from one pass of the shared trunk
        (:func:`policygrad.sequence.decoding.policy_scores_and_values`)."""
        return policy_scores_and_values(self, prompts, prompt_lengths, tokens, lengths, temperature)
