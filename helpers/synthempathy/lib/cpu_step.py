"""A LoRA training step on the CPU without wasted work; the method unchanged.

- The loss where it is read. In supervised fine-tuning the loss reads the reply's tokens; the dialogue history
  before them is masked (-100). trl's fused head skips the masked positions on CUDA but scores every position on
  the CPU (and again in its backward), and the head of a small model is a fifth of its multiply-adds per token
  (49,152 words x 576 for SmolLM2-135M). `loss_on_labels` runs the head on the labelled positions only.
- No work on padding. A batch of 4 dialogues of unequal length is padded to its longest; `packed` lays the
  examples one after another in a single row instead, each attending to itself only (`packed_attention`): 1.3-1.4x
  a step, the same loss (tests/test_finetune.py).
- LoRA's dropout masks from a faster generator. torch's CPU `bernoulli_` draws the masks of a step's 210 LoRA
  inputs slowly; `NumpyDropout` draws the same Bernoulli(1 - p) masks with numpy's SFC64 (3-5% of a step), seeded
  from torch's generator (so a run resumed from a checkpoint, which restores torch's RNG, draws the same masks).
- The adapters in the computation's dtype. trl turns a quantized model's LoRA weights into bf16, as QLoRA does
  where it computes in bf16 (CUDA). On the CPU the 4-bit layers compute in fp32: bf16 adapters would cast every
  LoRA input to bf16, multiply in bf16 (without AVX-512-BF16 a slow path: on an AVX2 CPU the adapters' small
  products took 40% of a 4-bit step) and keep the optimizer's weights in bf16, where small updates round away.
  `adapters_in_fp32` restores fp32, QLoRA's rule of adapters in the compute dtype.

`bench/finetune.py` measures each; tests/test_finetune.py checks the loss and gradients are trl's and the adapters fp32.
"""

from __future__ import annotations

import functools


def loss_on_labels(model, inputs: dict, num_items_in_batch=None):
    """(loss, the logits at the labelled positions (detached), their labels). The loss is trl's: the summed
    cross-entropy of the labelled tokens over `num_items_in_batch` (the batch's labelled tokens when None); the
    output head runs on the labelled positions only, and the layers on the batch's real tokens only (`packed`)."""
    import torch
    import torch.nn.functional as F

    causal = _causal_lm(model)
    labels = inputs["labels"][:, 1:]
    labelled = labels != -100
    if "attention_mask" in inputs and "position_ids" not in inputs:
        tokens = inputs["attention_mask"].bool()
        hidden = causal.base_model(**packed(inputs, tokens), use_cache=False).last_hidden_state[0]
        reads = torch.zeros_like(tokens)
        reads[:, :-1] = labelled  # the positions whose next token is labelled, in the packed row's order
        hidden = hidden[reads[tokens]]
    else:
        kwargs = {k: v for k, v in inputs.items() if k != "labels"}
        hidden = causal.base_model(**kwargs, use_cache=False).last_hidden_state[:, :-1][labelled]
    logits = causal.get_output_embeddings()(hidden).float()
    targets = labels[labelled]
    count = labelled.sum() if num_items_in_batch is None else torch.as_tensor(num_items_in_batch)
    return F.cross_entropy(logits, targets, reduction="sum") / count.clamp(min=1), logits.detach(), targets


def packed(inputs: dict, tokens):
    """The batch's real tokens (`tokens`: its attention mask) as one row, one example after the other, each with its
    own positions, and where each example begins and ends (`cu_seq_lens_q`). Each example attends to itself only, as
    in the padded batch: by `packed_attention` where the model uses it, else by the block-diagonal causal mask
    transformers builds from the restarting positions. The layers no longer compute the padding (29% of a `tiny`
    batch's positions; bench/finetune.py)."""
    import torch

    positions = tokens.long().cumsum(-1) - 1
    lengths = tokens.sum(-1)
    bounds = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
    return {"input_ids": inputs["input_ids"][tokens][None], "position_ids": positions[tokens][None],
            "cu_seq_lens_q": bounds}


PACKED_ATTENTION = "sdpa_packed"


def packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     cu_seq_lens_q=None, **kwargs):
    """transformers' SDPA attention, except on a packed row: there each example's own causal attention, one after
    the other, instead of one attention over the whole row whose mask hides all but the examples' own blocks
    (4x the work for 4 examples: 16% of a step)."""
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if cu_seq_lens_q is None or query.shape[0] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    bounds = cu_seq_lens_q.tolist()
    out = [F.scaled_dot_product_attention(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], dropout_p=dropout,
                                          is_causal=True, scale=scaling, enable_gqa=True)
           for a, b in zip(bounds[:-1], bounds[1:])]
    return torch.cat(out, dim=2).transpose(1, 2).contiguous(), None


def use_packed_attention(model) -> None:
    """Let `model` (its language model) attend example by example on packed rows (`packed_attention`)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(PACKED_ATTENTION, packed_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(PACKED_ATTENTION, sdpa_mask)  # unpacked calls: transformers' own SDPA
    config = _causal_lm(model).config
    if config._attn_implementation == "sdpa":
        config._attn_implementation = PACKED_ATTENTION


def plain_head_on_cpu(model) -> bool:
    """Whether the output head is a plain projection (no scaling or soft-capping), on the CPU: where
    `loss_on_labels` applies. Elsewhere trl's fused head runs (on CUDA it too scores only the labelled positions)."""
    causal = _causal_lm(model)
    text = causal.config.get_text_config()
    scaled = any(getattr(text, k, None) is not None for k in ("final_logit_softcapping", "logit_scale",
                                                              "output_multiplier", "lm_head_multiplier", "logits_scaling"))
    return causal.device.type == "cpu" and not scaled


def adapters_in_fp32(model) -> int:
    """Cast `model`'s trainable bf16/fp16 weights (the LoRA adapters) to fp32, the CPU's compute dtype, before the
    optimizer holds them; returns how many."""
    import torch

    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype in (torch.bfloat16, torch.float16):
            param.data = param.data.float()
            cast += 1
    return cast


def _causal_lm(model):
    """The transformers model under a PEFT wrapper (LoRA's layers are inside it), or `model` itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def swap_lora_dropout(model) -> int:
    """Replace every LoRA dropout of `model` (a PEFT model) with `NumpyDropout` of the same p; returns how many."""
    import torch

    swapped = 0
    for module in model.modules():
        for name, drop in getattr(module, "lora_dropout", {}).items():
            if type(drop) is torch.nn.Dropout and drop.p > 0:
                module.lora_dropout[name] = numpy_dropout_class()(drop.p)
                swapped += 1
    return swapped


@functools.cache
def numpy_dropout_class():
    import numpy as np
    import torch

    class NumpyDropout(torch.nn.Dropout):
        """Inverted dropout, as torch.nn.Dropout: zero each input with probability p, scale the rest by 1/(1-p)."""

        def forward(self, x):
            if not self.training or self.p == 0:
                return x
            seed = int(torch.randint(0, 2**62, (1,)))  # torch's stream: seeded and checkpointed with the run
            u = np.random.Generator(np.random.SFC64(seed)).random(x.numel(), dtype=np.float32)
            keep = torch.from_numpy(u >= np.float32(self.p)).view(x.shape)
            return x * keep * (1.0 / (1.0 - self.p))

    return NumpyDropout
