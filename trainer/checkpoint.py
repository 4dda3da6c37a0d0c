"""Training checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint holds the model, the optimizer, the LR schedule's position, the loss scaler, the weights' moving
average (where the plan keeps one), the random number generators of every process, and the loop's own state
(epoch, batch within the epoch, steps made, the curve, the best epoch's weights, early-stopping patience used,
the half-finished epoch's loss sums). The epoch batches are drawn from `seed` and the epoch number
(trainer/data.py), so with the generators restored a resumed run makes the same steps as one never interrupted.

A checkpoint is taken only at an optimizer-step boundary (no half-accumulated gradient to lose) and written
atomically (a temporary file, then a rename): a process killed while writing leaves the previous checkpoint.
It is bound to the run's configuration and data by a fingerprint; a retry whose data changed meanwhile (a
variant approved between attempts) starts from scratch rather than continue a different run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import random
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import torch

from trainer.config import TrainConfig
from trainer.errors import unwritable_reason
from trainer.examples import SplitData
from trainer.group import Group
from trainer.plan import Throughput
from trainer.soup import Ingredient
from trainer.steps import Prepared, Stepper

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "checkpoint.pt"
# SHA-256 of the checkpoint beside it: torch's zip reader checks no CRC, so a file damaged in place (a disk, a
# partial copy between machines) loaded, and the resumed run went on from weights no attempt ever had.
DIGEST_FILE = CHECKPOINT_FILE + ".sha256"
RUNTIME_KEYS = {"checkpoint_every_steps", "num_threads", "device"}
# Keys added to the config after checkpoints were written: left at their default (None: planned), they leave the
# fingerprint as it was, so a run interrupted before an upgrade resumes after it (a planned moving average then
# starts from the resumed weights).
LATER_KEYS = {"ema_decay", "soup_size", "fixed_epochs"}
# Keys whose default became None (planned) later: at None they fingerprint as their earlier default, so a run
# whose checkpoint was written under that default resumes (the steps are the same; only where it may stop moved).
EARLIER_DEFAULTS = {"patience": 8}


@dataclass
class LoopState:
    """Where the loop is: `epoch` epochs complete, `batch` batches of the next one done."""

    epoch: int = 0
    batch: int = 0
    steps_done: int = 0
    total: int = 0
    eval_seconds: float = 0.0
    seconds_used: float = 0.0  # training wall time before this attempt (a budget's clock continues)
    curve: list[dict[str, Any]] = field(default_factory=list)
    best_f1: float = -1.0
    best_epoch: int = 0
    stale: int = 0
    # the current epoch's sums so far (a checkpoint within an epoch)
    seen: int = 0
    loss_sum: float = 0.0
    task_sums: dict[str, float] = field(default_factory=dict)
    epoch_seconds: float = 0.0
    epoch_cpu_seconds: float = 0.0
    stopped: str | None = None  # "early" (patience) or "deadline" (budget): the loop is over
    throughput: dict[str, float] | None = None  # a budgeted run's measurement: a resumed run keeps its plan
    precision: str | None = None  # what the attempt trained in (fp32, bf16, fp16); None in older checkpoints


def fingerprint(config: TrainConfig, data: SplitData) -> str:
    """What a checkpoint may be resumed with: the same config and the same examples in every split. Keys of
    the machine rather than the run (threads, which device, how often to checkpoint) may differ: a run stopped
    on one worker resumes on another."""
    digest = hashlib.sha256()
    settings = {
        k: EARLIER_DEFAULTS.get(k) if v is None and k in EARLIER_DEFAULTS else v
        for k, v in config.to_dict().items()
        if k not in RUNTIME_KEYS and not (k in LATER_KEYS and v is None)
    }
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(json.dumps([[t.name, t.labels] for t in data.tasks]).encode())
    for split in (data.train, data.val, data.test):
        for e in split:
            digest.update(json.dumps([e.sample_id, e.content_hash, e.text, sorted(e.labels.items())]).encode())
        digest.update(b"|")
    return digest.hexdigest()


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Checkpoint:
    fingerprint: str
    loop: LoopState
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None
    rng: list[dict[str, Any]]  # one per process (rank order)
    average: dict[str, Any] | None = None  # the weights' moving average (Stepper.average), its updates counted
    # the best epochs' weights, best first (more than one only for a soup): the first is the best epoch's
    ingredients: list[Ingredient] = field(default_factory=list)


def save(directory: Path, ckpt: Checkpoint) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FILE
    # Unique per writer: in a container every worker is pid 1, and two attempts of a run may share storage.
    tmp = directory / f".{CHECKPOINT_FILE}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        with tmp.open("wb") as raw_fh:
            fh = _Hashing(raw_fh)  # the digest as the bytes go out: reading a checkpoint of gigabytes back cost seconds
            _saved_through(
                fh,
                {
                    "fingerprint": ckpt.fingerprint,
                    "loop": asdict(ckpt.loop),
                    "model": ckpt.model,
                    "optimizer": ckpt.optimizer,
                    "scaler": ckpt.scaler,
                    "rng": ckpt.rng,
                    # for code that predates the soup; torch.save writes a storage shared by two entries once
                    "best_state": ckpt.ingredients[0].state if ckpt.ingredients else None,
                    "average": ckpt.average,
                    "ingredients": [{"epoch": i.epoch, "val_f1": i.val_f1, "state": i.state} for i in ckpt.ingredients],
                },
            )
            raw_fh.flush()
            os.fsync(raw_fh.fileno())  # on disk before the rename: a crash after it leaves no renamed, empty file
        # The digest file names this checkpoint's digest and the ones before it, and goes into place first: a
        # crash between the two renames leaves an earlier checkpoint, which it still names (several: crashes there
        # twice in a row each named a checkpoint that never replaced the one on disk).
        listed = _listed_digests(directory)
        digests = [fh.hexdigest(), *listed[: KEPT_DIGESTS - 1]]
        _write_atomically(directory / DIGEST_FILE, "".join(f"{d}\n" for d in digests))
        os.replace(tmp, path)  # atomic: a reader sees the previous checkpoint or this one, never half of one
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(directory)  # the rename itself survives a crash
    _drop_stale_writes(directory)
    return path


def _drop_stale_writes(directory: Path) -> None:
    """The temporary files of writers killed mid-save (kill -9, a lost machine), each up to the model and its
    optimizer's size: they piled up, one a kill, until the run ended. Once this save is in place, any other is
    stale: a writer that lost the run to this one, whose rename then fails, as it should."""
    for stale in directory.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


KEPT_DIGESTS = 8  # a run's checkpoints, newest first, that its digest file names


def _saved_through(fh: _Hashing, payload: dict[str, Any]) -> None:
    """torch.save into `fh`, a write the file system refused raised as its OSError: torch reports it as a
    RuntimeError of its own ("unexpected pos 704 vs 598"), which says nothing of a full disk."""
    try:
        torch.save(payload, cast("IO[bytes]", fh))  # write and flush are all torch.save asks of a file
    except RuntimeError as err:
        if fh.refused is not None:
            raise fh.refused from err
        raise


class _Hashing:
    """A binary file that hashes what is written to it (torch.save writes its zip archive in order)."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh
        self._sha = hashlib.sha256()
        self.refused: OSError | None = None  # the file system's refusal of a write

    def write(self, data: Any) -> int:
        self._sha.update(data)
        try:
            return int(self._fh.write(data))
        except OSError as err:
            self.refused = err
            raise

    def flush(self) -> None:
        self._fh.flush()

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def file_digest(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _listed_digests(directory: Path) -> list[str]:
    """The digests DIGEST_FILE names, newest first; none where there is no such file (a checkpoint written
    before 12-06 is resumed unchecked, as it was)."""
    try:
        return (directory / DIGEST_FILE).read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return []


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("w", encoding="ascii") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # a platform that cannot open a directory (Windows): nothing to sync
        return
    try:
        os.fsync(fd)
    except OSError:  # a filesystem that does not sync directories
        pass
    finally:
        os.close(fd)


# What reading a damaged checkpoint raises: torch's zip reader (RuntimeError: "PytorchStreamReader failed reading
# zip archive: failed finding central directory" for a truncated file), the unpickler (EOFError for an empty file,
# UnpicklingError and the like for garbage), the file system, or a payload of another shape.
UNREADABLE = (  # not OSError: a file system that failed for a moment must not cost a run its progress
    EOFError,
    RuntimeError,
    ValueError,
    pickle.UnpicklingError,
    AttributeError,
    ImportError,
    IndexError,
    KeyError,
    TypeError,
)


def load(directory: Path | None, expected_fingerprint: str) -> tuple[Checkpoint | None, str | None]:
    """The directory's checkpoint, when there is one for this config and data; else (None, why not). A file
    that cannot be read (truncated, empty, not a checkpoint) is no checkpoint: the run starts from the beginning
    and says why, rather than fail the same way on every retry."""
    if directory is None:
        return None, None
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        return None, None
    listed = _listed_digests(Path(directory))
    if listed and file_digest(path) not in listed:
        log.warning("checkpoint %s does not match its digest (%s)", path, DIGEST_FILE)
        return None, "the checkpoint does not match its checksum (a damaged file): training from the start"
    try:
        # Our own file, written by save() above (RNG states are numpy/Python objects, not tensors only).
        raw = torch.load(path, map_location="cpu", weights_only=False)
        if raw.get("fingerprint") != expected_fingerprint:
            return None, "the run's config or data changed since the checkpoint: training from the start"
        return (
            Checkpoint(
                fingerprint=raw["fingerprint"],
                loop=LoopState(**raw["loop"]),
                model=raw["model"],
                optimizer=raw["optimizer"],
                scaler=raw["scaler"],
                rng=raw["rng"],
                average=raw.get("average"),
                ingredients=ingredients_of(raw),
            ),
            None,
        )
    except UNREADABLE as err:
        log.warning("checkpoint %s cannot be read: %s: %s", path, type(err).__name__, err)
        return None, f"the checkpoint could not be read ({type(err).__name__}): training from the start"


def ingredients_of(raw: dict[str, Any]) -> list[Ingredient]:
    """A checkpoint's soup ingredients; one written before the soup holds the best epoch's weights alone."""
    if raw.get("ingredients"):
        return [Ingredient(int(i["epoch"]), float(i["val_f1"]), i["state"]) for i in raw["ingredients"]]
    loop, best = raw["loop"], raw["best_state"]
    return [Ingredient(int(loop["best_epoch"]), float(loop["best_f1"]), best)] if best is not None else []


class Checkpointer:
    """Saves the loop's state (rank 0 writes; every rank takes part, to gather the generators' states).
    `before_save` runs on rank 0 right before each write: it raises to keep the checkpoint unwritten (the caller's
    check that the directory is still its own: trainer.train.LoopControl.before_save).

    A write the file system refuses (a full disk, a read-only or vanished directory, an I/O error) does not end
    the run: a checkpoint is there to resume after a lost worker, and failing to write one costs a healthy run
    nothing but that. It is logged and reported (`emit`: a `checkpoint_failed` event; a `checkpoint_saved` one
    when a later write succeeds again), and the run goes on. `save` leaves no partial file, and the checkpoint
    before it (if any) stays in place with its digest: a resume reads that one and makes the steps since again."""

    def __init__(
        self,
        directory: Path | None,
        group: Group,
        stepper: Stepper,
        model: torch.nn.Module,
        fp: str,
        throughput: Throughput | None,
        every_steps: int | None,
        *,
        precision: str | None = None,
        before_save: Callable[[], None] | None = None,
        emit: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.before_save = before_save
        self.emit = emit or (lambda _event: None)
        self.failures = 0  # writes the file system refused
        self.last_failure: str | None = None  # the latest refusal, None once a later write succeeded
        self.saved_step: int | None = None  # the step of the last checkpoint this attempt wrote
        self.directory, self.group, self.stepper, self.model, self.fp = directory, group, stepper, model, fp
        self.throughput = throughput
        self.every_steps = every_steps
        self.precision = precision

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def due(self, steps_done: int) -> bool:
        every = self.every_steps
        return self.enabled and every is not None and steps_done % every == 0

    def save(self, state: LoopState, ingredients: list[Ingredient]) -> bool:
        """Whether a checkpoint of `state` was written (False: none to write, another rank's to write, or the
        file system refused it)."""
        if not self.enabled:
            return False
        group = self.group
        rngs = group.gather(rng_state())
        # the half-finished epoch's sums over every rank (rank 0 carries them on resume)
        seen, loss_sum, *task_values = group.sum([state.seen, state.loss_sum, *state.task_sums.values()])
        if not group.is_main:
            return False
        assert self.directory is not None
        if self.before_save is not None:
            self.before_save()
        try:
            self._write(state, ingredients, rngs, int(seen), loss_sum, task_values)
        except OSError as err:
            self.failures += 1
            self.last_failure = (
                f"the checkpoint at step {state.steps_done} could not be written: {unwritable_reason(err)}; training "
                + (
                    f"goes on (a retry would resume from step {self.saved_step})"
                    if self.saved_step is not None
                    else "goes on (a retry would resume from an earlier checkpoint, if any, or start over)"
                )
            )
            log.warning("checkpoint in %s not written at step %s: %s", self.directory, state.steps_done, err)
            self.emit(
                {
                    "event": "checkpoint_failed",
                    "steps_done": state.steps_done,
                    "failures": self.failures,
                    "error": self.last_failure,
                }
            )
            return False
        if self.last_failure is not None:
            self.last_failure = None
            self.emit({"event": "checkpoint_saved", "steps_done": state.steps_done, "failures": self.failures})
        self.saved_step = state.steps_done
        return True

    def _write(
        self,
        state: LoopState,
        ingredients: list[Ingredient],
        rngs: list[dict[str, Any]],
        seen: int,
        loss_sum: float,
        task_values: list[float],
    ) -> None:
        assert self.directory is not None
        scaler, average = self.stepper.scaler, self.stepper.average
        save(
            self.directory,
            Checkpoint(
                fingerprint=self.fp,
                loop=replace(
                    state,
                    curve=list(state.curve),
                    seen=seen,
                    loss_sum=loss_sum,
                    task_sums=dict(zip(state.task_sums, task_values, strict=True)),
                    throughput=self.throughput.to_dict() if self.throughput else None,
                    precision=self.precision,
                ),
                model={k: v.detach().to("cpu") for k, v in self.model.state_dict().items()},
                optimizer=self.stepper.optimizer.state_dict(),
                scaler=scaler.state_dict() if scaler is not None else None,
                rng=rngs,
                ingredients=ingredients,
                average=(
                    {k: v.detach().to("cpu") for k, v in average.state_dict().items()} if average is not None else None
                ),
            ),
        )


def restore(resume: Checkpoint, run: Prepared, stepper: Stepper, group: Group) -> None:
    """Model, optimizer, scaler, schedule position and this rank's generators from a checkpoint."""
    run.model.load_state_dict(resume.model)
    stepper.optimizer.load_state_dict(resume.optimizer)
    if stepper.scaler is not None and resume.scaler is not None:
        stepper.scaler.load_state_dict(resume.scaler)
    if stepper.average is not None and resume.average is not None:
        stepper.average.load_state_dict(resume.average)
    if resume.loop.steps_done:
        stepper.retarget(resume.loop.total, resume.loop.steps_done)
    set_rng_state(resume.rng[group.rank])
