"""The trainer the package fine-tunes with: trl's SFTTrainer, counting what it consumes, with a lean CPU step.

`counting_trainer(SFTTrainer)` makes trainers that count the examples of each source the optimizer actually
consumed (trl shuffles, truncates, and drops examples that truncation leaves without a completion token), and that
on the CPU keep LoRA's weights in fp32, compute the loss on the labelled positions only and draw LoRA's dropout
masks from numpy (lib/cpu_step.py).
"""

from __future__ import annotations

from pathlib import Path

from ..chain.store import read_json, write_json
from .cpu_step import (
    adapters_in_fp32,
    loss_on_labels,
    plain_head_on_cpu,
    swap_lora_dropout,
    use_packed_attention,
)


class ConsumptionCount:
    """How many examples of each source the optimizer actually consumed: counted on the batches that reach the
    loss in training mode, matched back to their rows by token ids (trl shuffles, truncates, and drops examples
    that truncation leaves without a completion token). Kept in every checkpoint, so a resumed run counts on."""

    FILE = "consumed.json"

    def __init__(self, prepared_dataset):
        self.source_of = {tuple(ids): src for ids, src in zip(prepared_dataset["input_ids"], prepared_dataset["source"])}
        self.counts: dict[str, int] = {}

    def add(self, inputs) -> None:
        mask = inputs.get("attention_mask")
        for i, row in enumerate(inputs["input_ids"].tolist()):
            n = int(mask[i].sum()) if mask is not None else len(row)
            source = self.source_of.get(tuple(row[:n]), "unmatched")
            self.counts[source] = self.counts.get(source, 0) + 1

    def save(self, folder: Path) -> None:
        write_json(folder / self.FILE, self.counts)

    def restore(self, checkpoint: str | None) -> None:
        path = Path(checkpoint or "") / self.FILE
        self.counts = read_json(path) if checkpoint and path.exists() else {}


def counting_trainer(base):
    """`base` (trl's SFTTrainer) with a ConsumptionCount on its training batches, and on the CPU LoRA's weights in
    fp32, the loss on the labelled positions only of the batch packed without padding, and LoRA's dropout masks from
    numpy (lib/cpu_step.py)."""
    from transformers import TrainerCallback

    class Counting(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                self.consumption.add(inputs)
            if return_outputs or not self.loss_on_labels:
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            loss, logits, targets = loss_on_labels(model, inputs, num_items_in_batch)
            self._log_token_metrics(model, inputs, logits, targets)
            return loss

        def _log_token_metrics(self, model, inputs, logits, targets) -> None:
            """What trl logs beside the loss (entropy, top-1 accuracy, tokens seen), from the same logits."""
            mode = "train" if model.training else "eval"
            log_p = logits.log_softmax(-1)
            n = max(len(targets), 1)
            self._metrics[mode]["entropy"].append(float(-(log_p.exp() * log_p).sum() / n))
            self._metrics[mode]["mean_token_accuracy"].append(float((logits.argmax(-1) == targets).sum() / n))
            if mode == "train":
                self._total_train_tokens += int(inputs["attention_mask"].sum())
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]

    class SaveCounts(TrainerCallback):
        def __init__(self, trainer):
            self.trainer = trainer

        def on_save(self, args, state, control, **kw):
            self.trainer.consumption.save(Path(args.output_dir) / f"checkpoint-{state.global_step}")

    def make(**kw):
        trainer = Counting(**kw)
        trainer.loss_on_labels = plain_head_on_cpu(trainer.model)  # decided once: the model does not move
        if trainer.model.device.type == "cpu":
            adapters_in_fp32(trainer.model)
            swap_lora_dropout(trainer.model)
        if trainer.loss_on_labels:
            use_packed_attention(trainer.model)
        trainer.consumption = ConsumptionCount(trainer.train_dataset)
        trainer.add_callback(SaveCounts(trainer))
        return trainer

    return make
