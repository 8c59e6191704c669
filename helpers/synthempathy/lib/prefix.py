"""A batch of prompts that share their beginning, encoded so that the shared part is computed once.

Generation (the system prompt and the one-shot example are ~60% of every prompt) lays its batches out this way;
it is what makes batching pay on a CPU (bench/generation.py). The judge's prompts share more than one beginning
(the instruction; one dialogue, whichever model replied; one reply, whichever criterion is asked): they are encoded
as a tree of shared segments (`prefix_tree`, `last_logits`).
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


def prefix_tree(ids: list[list[int]], min_shared: int = MIN_SHARED_PREFIX) -> list[list[tuple[int, int, int, int]]]:
    """The prompts as a tree of shared segments, level by level. levels[k] lists nodes (parent: index in
    levels[k-1], row: a prompt holding the segment, start, end); the segment is ids[row][start:end]. Every prompt
    reads its path of segments from the root to the last level, whose nodes are the prompts' own suffixes (>= 1
    token each), one per prompt and in order. A segment shared by several prompts is one node when it has at least
    `min_shared` tokens; a path shorter than the others gets empty segments (end = start) before its suffix."""
    paths: list[list[tuple[int, int, int]]] = [[] for _ in ids]

    def split(rows: list[int], start: int) -> None:
        if len(rows) == 1:
            paths[rows[0]].append((rows[0], start, len(ids[rows[0]])))
            return
        end = min(common_prefix_len([ids[r] for r in rows]), min(len(ids[r]) for r in rows) - 1)
        if end - start >= min_shared:
            for r in rows:
                paths[r].append((rows[0], start, end))
            start = end
        groups: dict[int, list[int]] = {}
        for r in rows:  # the prompts part at `end`, each group sharing at least one more token
            groups.setdefault(ids[r][end], []).append(r)
        if len(groups) == 1:  # the shortest prompt's last token: nothing more to share
            for r in rows:
                paths[r].append((r, start, len(ids[r])))
            return
        for group in groups.values():
            split(group, start)

    split(list(range(len(ids))), 0)
    depth = max(map(len, paths))
    for path in paths:
        row, start, _ = path[-1]
        path[-1:-1] = [(row, start, start)] * (depth - len(path))
    levels: list[list[tuple[int, int, int, int]]] = []
    index: list[dict[tuple, int]] = []
    for k in range(depth):  # a node is its path from the root: equal paths, one node
        nodes, seen = [], {}
        for path in paths:
            key = tuple(path[: k + 1])
            if key not in seen:
                seen[key] = len(nodes)
                nodes.append((index[k - 1][key[:-1]] if k else -1, *path[k]))
        levels.append(nodes)
        index.append(seen)
    return levels


def last_logits(model, ids: list[list[int]], pad_id: int, min_shared: int = MIN_SHARED_PREFIX):
    """The next-token logits after each prompt (rows of a float tensor), every shared segment of `prefix_tree`
    encoded once. A level is one forward pass: its segments left-padded to the longest, each row continuing its
    parent's KV cache, the mask hiding the padding and the position ids counting only real tokens."""
    import torch

    cache, mask, logits = reserved_cache(0), None, None
    for k, nodes in enumerate(prefix_tree(ids, min_shared)):
        if k:
            parents = torch.tensor([parent for parent, *_ in nodes], device=model.device)
            cache.batch_select_indices(parents)
            mask = mask[parents]
        width = max(end - start for _, _, start, end in nodes)
        if not width:
            continue
        rows = [[pad_id] * (width - end + start) + ids[r][start:end] for _, r, start, end in nodes]
        own = torch.tensor([[0] * (width - end + start) + [1] * (end - start) for _, _, start, end in nodes],
                           device=model.device)
        mask = own if mask is None else torch.cat([mask, own], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -width:]
        logits = model(input_ids=torch.tensor(rows, device=model.device), attention_mask=mask, position_ids=positions,
                       past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1, :]
    return logits
