"""The trainer's own error: bad configuration or data, raised before or during training.

The trainer stands alone (it imports nothing of the app); the app maps this error to HTTP 422 and to the CLI's
exit code 2 the same way as its domain errors."""

from __future__ import annotations

import errno
import re
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
    Unlike a checkpoint, which a run can do without, the artifacts are the run's outcome. `reason`: what the file
    system said, without the path."""

    def __init__(self, reason: str) -> None:
        message = (
            f"the trained model and its results could not be saved: {reason}; free space in the data directory "
            "(or make it writable) and train again"
        )
        super().__init__(message)
        self.reason = reason
        self.message = message


def unwritable_reason(err: OSError) -> str:
    """What the file system said, without the path (a server's path is not the project's to read)."""
    code = errno.errorcode.get(err.errno or 0)
    said = err.strerror or type(err).__name__
    return f"{said} ({code})" if code else said


@contextmanager
def artifacts_written() -> Iterator[None]:
    """Writing a run's artifacts: a write the file system refused raised as ArtifactWriteError. Not OSError alone:
    the libraries that write the weights report a full disk in their own words (safetensors' SafetensorError "I/O
    error: No space left on device (os error 28)", torch's RuntimeError with the OSError as its context). Any other
    error (a bug: a value json cannot write) passes as it is: "free space and train again" would send the user
    to train the whole run again into the same failure."""
    try:
        yield
    except ArtifactWriteError:
        raise
    except Exception as err:
        reason = _write_failure(err)
        if reason is None:
            raise
        raise ArtifactWriteError(reason) from err


# Rust's io::Error in safetensors' words: "Error while serializing: I/O error: File too large (os error 27)"
_OS_ERROR_SAID = re.compile(r"I/O error: (.+?) \(os error (\d+)\)")


def _write_failure(err: BaseException) -> str | None:
    """What the file system said, if `err` is (or was raised from) its refusal of a write; None otherwise."""
    link: BaseException | None = err
    for _ in range(10):  # the OSError it is, or was raised from
        if link is None:
            break
        if isinstance(link, OSError):
            return unwritable_reason(link)
        if said := _OS_ERROR_SAID.search(str(link)):  # safetensors: an OSError of Rust's, in words
            code = errno.errorcode.get(int(said[2]))
            return f"{said[1]} ({code})" if code else said[1]
        link = link.__cause__ or link.__context__
    return None
