"""A batch of prompts that share their beginning, encoded so that the shared part is computed once.

Generation (the system prompt and the one-shot example are ~60% of every prompt) and the judge (one reply's
three rubrics share instruction, dialogue and reply) both lay their batches out this way; it is what makes
batching pay on a CPU (bench/generation.py).
"""

from __future__ import annotations

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


def shared_prefix_batch(model, ids: list[list[int]], pad_id: int):
    """A batch ready for the model: (input_ids, attention mask, shared prefix length, the prefix's KV cache or
    None). The prefix is encoded once, on one row, and its cache repeated for the batch."""
    import torch

    rows, masks, shared = shared_prefix_layout(ids, pad_id)
    input_ids = torch.tensor(rows, device=model.device)
    mask = torch.tensor(masks, device=model.device)
    if not shared:
        return input_ids, mask, 0, None
    cache = model(input_ids=input_ids[:1, :shared], use_cache=True, logits_to_keep=1).past_key_values  # no head needed
    cache.batch_repeat_interleave(len(ids))
    return input_ids, mask, shared, cache


def common_prefix_len(seqs: list[list[int]]) -> int:
    n = min(map(len, seqs))
    for i in range(n):
        if any(x[i] != seqs[0][i] for x in seqs):
            return i
    return n
