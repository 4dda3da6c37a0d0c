"""The trainer's own error: bad configuration or data, raised before or during training.

The trainer stands alone (it imports nothing of the app); the app maps this error to HTTP 422 and to the CLI's
exit code 2 the same way as its domain errors."""

from __future__ import annotations


class TrainerError(ValueError):
    """Input the trainer cannot use; `field` names what is wrong (e.g. `config.lr`)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class TrainingStopped(Exception):
    """The run stopped on request (its worker is shutting down) at an optimizer-step boundary, after saving a
    checkpoint when it has somewhere to save one: not a failure, and not the trainer's input's fault."""

    def __init__(self, steps_done: int, *, saved: bool) -> None:
        super().__init__(
            f"training stopped on request after {steps_done} optimizer steps{' (checkpoint saved)' if saved else ''}"
        )
        self.steps_done = steps_done
        self.saved = saved
