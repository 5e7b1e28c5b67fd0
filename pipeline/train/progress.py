"""Training progress outside a terminal: Lightning's bar redraws become a line every few seconds
(pipeline/run/output.py), or JSON events, counted in optimizer steps."""

from __future__ import annotations

import lightning as L

from pipeline.run import output


class ProgressLines(L.Callback):
    """One progress line now and then on the first rank: steps done of all epochs', the rate, the
    ETA, the epoch and the last epoch's training figure, in the task's words (`figure_words`:
    "agreement", "within tolerance", ...)."""

    def __init__(self, figure_words: str = "agreement"):
        self.progress: output.Progress | None = None
        self.label = f"train {figure_words}"

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.is_global_zero:
            steps = getattr(pl_module, "steps_per_epoch", None)
            total_steps = steps * trainer.max_epochs if steps else None
            self.progress = output.Progress("train", total_steps, "step", initial=trainer.global_step)
            self._seen = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.progress is not None:
            self.progress.update(trainer.global_step - self._seen, epoch=trainer.current_epoch + 1)
            self._seen = trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        agreement = trainer.callback_metrics.get("train/agreement")
        if self.progress is not None and agreement is not None:
            self.progress.extra[self.label] = float(agreement)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None
