"""The plateau stop waits for the learning rate to anneal: a stall at the peak rate is the schedule's."""

from __future__ import annotations

from types import SimpleNamespace

from lightning.pytorch.callbacks import EarlyStopping

from pipeline.train.trainer import PlateauStop


def checks(monkeypatch, schedule: str, rates: list[float]) -> list[float]:
    """The learning rates at which the stop looked at the monitored figure."""
    seen = []
    monkeypatch.setattr(EarlyStopping, "on_train_epoch_end", lambda self, trainer, module: seen.append(
        trainer.optimizers[0].param_groups[0]["lr"]))
    stop = PlateauStop(1e-2, schedule == "constant", monitor="train/agreement", mode="max", patience=2,
                       check_on_train_epoch_end=True)
    for lr in rates:
        stop.on_train_epoch_end(SimpleNamespace(optimizers=[SimpleNamespace(param_groups=[{"lr": lr}])]), None)
    return seen


def test_an_annealing_schedule_is_watched_only_once_the_rate_is_low(monkeypatch):
    rates = [4e-3, 1e-2, 8e-3, 3e-3, 1e-3, 2e-4, 1e-6]  # one-cycle: up, then annealed
    assert checks(monkeypatch, "onecycle", rates) == [1e-3, 2e-4, 1e-6]


def test_a_constant_rate_is_watched_from_the_start(monkeypatch):
    assert checks(monkeypatch, "constant", [1e-2, 1e-2]) == [1e-2, 1e-2]
