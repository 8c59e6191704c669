"""Nucleus (top-p) sampling's filter without sorting the vocabulary.

transformers' top-p filter sorts every row's 49,152 logits at each generated token: at a batch of 32 on 2 cores,
a sixth of a decoding step (bench/README.md). The nucleus at p = 0.9 holds a few dozen to a few hundred tokens,
so `nucleus_filter` finds it among each row's most probable `k` tokens (torch.topk); where some row's `k` tokens do
not reach p, it sorts the batch's rows whole instead. It keeps the same tokens as transformers' filter, up to the rounding of the summed
probabilities at the nucleus's edge (tests/test_generate.py).
"""

from __future__ import annotations

import functools

TOP = 512  # candidates read per row; at p = 0.9 the packaged model's nucleus is rarely larger


def nucleus_filter(logits, temperature: float, top_p: float, top: int = TOP):
    """`logits` / temperature, with every token outside the nucleus (the most probable tokens whose probabilities
    sum to `top_p`, the token that crosses it included) at -inf."""
    import torch

    scores = logits / temperature
    if top_p >= 1.0:
        return scores
    probs = scores.softmax(-1)
    k = min(top, probs.shape[-1])
    p, idx = probs.topk(k, dim=-1)
    if k < probs.shape[-1] and not bool((p.sum(-1) >= top_p).all()):
        p, idx = probs.sort(dim=-1, descending=True)  # a nucleus wider than `top`: every row whole
    keep = (p.cumsum(-1) - p) < top_p  # the mass above a token is below p: it is in the nucleus
    keep[..., 0] = True
    out = torch.full_like(scores, float("-inf"))
    return out.scatter(-1, idx, torch.where(keep, scores.gather(-1, idx), out.gather(-1, idx)))


@functools.cache
def nucleus_processor_class():
    from transformers import LogitsProcessor

    class Nucleus(LogitsProcessor):
        """Temperature, then the nucleus, as one logits processor (generate gets temperature 1 and top-p 1)."""

        def __init__(self, temperature: float, top_p: float):
            self.temperature, self.top_p = temperature, top_p

        def __call__(self, input_ids, scores):
            return nucleus_filter(scores, self.temperature, self.top_p)

    return Nucleus
