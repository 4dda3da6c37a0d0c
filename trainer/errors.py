"""The trainer's own error: bad configuration or data, raised before or during training.

The trainer stands alone (it imports nothing of the app); the app maps this error to HTTP 422 and to the CLI's
exit code 2 the same way as its domain errors."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager


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


class ArtifactWriteError(Exception):
    """The run trained, but its model and results could not be written (a full disk, a read-only directory): it
    fails saying so, where the file system's bare words ("[Errno 28] No space left on device") named no part of it.
    Unlike a checkpoint, which a run can do without, the artifacts are the run's outcome."""

    def __init__(self, reason: str) -> None:
        message = (
            f"the trained model and its results could not be saved: {reason}; free space in the data directory "
            "(or make it writable) and train again"
        )
        super().__init__(message)
        self.message = message


def unwritable_reason(err: OSError) -> str:
    """What the file system said, without the path (a server's path is not the project's to read)."""
    code = errno.errorcode.get(err.errno or 0)
    said = err.strerror or type(err).__name__
    return f"{said} ({code})" if code else said


@contextmanager
def artifacts_written() -> Iterator[None]:
    """Writing a run's artifacts: a failure raised as ArtifactWriteError. Not OSError alone: the libraries that
    write the weights report a full disk in their own words (safetensors' SafetensorError "I/O error: No space
    left on device (os error 28)", torch's RuntimeError with the OSError as its context)."""
    try:
        yield
    except ArtifactWriteError:
        raise
    except Exception as err:
        raise ArtifactWriteError(_write_failure(err)) from err


def _write_failure(err: BaseException) -> str:
    link: BaseException | None = err
    for _ in range(10):  # the OSError it is, or was raised from
        if isinstance(link, OSError):
            return unwritable_reason(link)
        link = None if link is None else (link.__cause__ or link.__context__)
    return f"{type(err).__name__}: {err}"
