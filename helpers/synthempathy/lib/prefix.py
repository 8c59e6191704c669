"""A batch of prompts that share their beginning, encoded so that the shared part is computed once.

Generation (the system prompt and the one-shot example are ~60% of every prompt) and the judge (one reply's
three rubrics share instruction, dialogue and reply) both lay their batches out this way; it is what makes
batching pay on a CPU (bench/generation.py).
"""

from __future__ import annotations

import functools

MIN_SHARED_PREFIX = 16


def shared_prefix_layout(ids: list[list[int]], pad_id: int, min_shared: int = MIN_SHARED_PREFIX):
    """Token rows laid out as [shared prefix, padding, own suffix], their attention masks, and the prefix length.

    Padding sits between prefix and suffix, so the prefix's KV cache can be computed once for the batch
    (shared_prefix_batch). The mask hides the padding and the position ids, taken from the mask's running sum (as
    `generate` does, or as the caller passes them), continue the prefix, so every row sees exactly its own
    prompt. Each row keeps >= 1 token after the prefix; below `min_shared` shared tokens, or for a single row,
    this is plain left padding (prefix length 0)."""
    shared = min(common_prefix_len(ids), min(map(len, ids)) - 1)
    if len(ids) < 2 or shared < min_shared:
        shared = 0
    width = max(map(len, ids)) - shared
    rows = [x[:shared] + [pad_id] * (width - len(x) + shared) + x[shared:] for x in ids]
    masks = [[1] * shared + [0] * (width - len(x) + shared) + [1] * (len(x) - shared) for x in ids]
    return rows, masks, shared


def shared_prefix_batch(model, ids: list[list[int]], pad_id: int, reserve: int = 0):
    """A batch ready for the model: (input_ids, attention mask, shared prefix length, its KV cache). The prefix is
    encoded once, on one row, and its cache repeated for the batch; the cache (`reserved_cache`) keeps room for the
    prompts' own tokens and `reserve` more (the tokens generation will add)."""
    import torch

    rows, masks, shared = shared_prefix_layout(ids, pad_id)
    input_ids = torch.tensor(rows, device=model.device)
    mask = torch.tensor(masks, device=model.device)
    cache = reserved_cache(reserve)
    if shared:
        model(input_ids=input_ids[:1, :shared], use_cache=True, logits_to_keep=1, past_key_values=cache)  # no head
        cache.batch_repeat_interleave(len(ids))
    return input_ids, mask, shared, cache


def reserved_cache(reserve: int):
    """An empty KV cache that writes each new position in place, into room for `reserve` more positions kept ahead.

    transformers' DynamicCache concatenates every new position onto the whole cache, copying every layer's keys and
    values into fresh memory at each generated token; writing in place makes generation 1.18x faster on 2 cores
    (bench/generation.py --cache). The same keys and values, so the same tokens (tests/test_generate.py)."""
    return _reserved_cache_class()(reserve)


@functools.cache
def _reserved_cache_class():
    from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

    class ReservedLayer(DynamicLayer):
        """`keys` and `values` are views of the first positions of larger buffers. A layer whose tensors were
        replaced (repeated for the batch, reordered, selected) is copied into new buffers at its next update."""

        def __init__(self, reserve: int):
            super().__init__()
            self.reserve, self._k, self._v = reserve, None, None

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self.keys = key_states[:, :, :0]
                self.values = value_states[:, :, :0]
            n, add = self.keys.shape[-2], key_states.shape[-2]
            if not self._holds(n + add):
                self._seat(n + add + self.reserve)
            self._k[:, :, n: n + add] = key_states
            self._v[:, :, n: n + add] = value_states
            self.keys, self.values = self._k[:, :, : n + add], self._v[:, :, : n + add]
            return self.keys, self.values

        def _holds(self, length: int) -> bool:
            return (self._k is not None and self.keys.data_ptr() == self._k.data_ptr()
                    and self.keys.shape[:2] == self._k.shape[:2] and length <= self._k.shape[-2])

        def _seat(self, room: int) -> None:
            b, h, n, d = self.keys.shape
            self._k, self._v = self.keys.new_empty((b, h, room, d)), self.values.new_empty((b, h, room, d))
            self._k[:, :, :n], self._v[:, :, :n] = self.keys, self.values
            self.keys, self.values = self._k[:, :, :n], self._v[:, :, :n]

    class ReservedCache(DynamicCache):
        def __init__(self, reserve: int):  # noqa: D107 - DynamicCache's own __init__ would build plain layers
            Cache.__init__(self, layer_class_to_replicate=lambda: ReservedLayer(reserve))

    return ReservedCache


def common_prefix_len(seqs: list[list[int]]) -> int:
    n = min(map(len, seqs))
    for i in range(n):
        if any(x[i] != seqs[0][i] for x in seqs):
            return i
    return n
