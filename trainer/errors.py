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
