"""Checkpoints and resume in the training loop: a run interrupted after an epoch, or stopped mid-epoch on request,
continues from its checkpoint and ends where an uninterrupted run with the same seed ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.trainer_fixtures import fast_config, synthetic_split, tiny_encoder  # noqa: F401 (fixture)
from trainer.checkpoint import CHECKPOINT_FILE
from trainer.errors import TrainingStopped
from trainer.train import LoopControl, TrainResult, train_model


class Crash(Exception):
    pass


def config(encoder: str, **overrides: Any) -> Any:
    # dropout on, R-Drop on, class weights on, a soup of the best 4 epochs: the generators and every piece of
    # state must be restored
    return fast_config(encoder, epochs=4, rdrop_alpha=1.0, soup_size=4, **overrides)


@pytest.fixture(scope="module")
def uninterrupted(tiny_encoder: str) -> TrainResult:
    return train_model(config(tiny_encoder), synthetic_split())


def same_run(a: TrainResult, b: TrainResult) -> None:
    assert [e["epoch"] for e in a.curve] == [e["epoch"] for e in b.curve]
    np.testing.assert_allclose([e["train_loss"] for e in a.curve], [e["train_loss"] for e in b.curve], rtol=1e-5)
    np.testing.assert_allclose([e["val_macro_f1"] for e in a.curve], [e["val_macro_f1"] for e in b.curve], atol=1e-9)
    assert a.best_epoch == b.best_epoch
    # the soup's ingredients are in the checkpoint: the resumed run makes the same soup of the same epochs
    assert a.metrics["soup"]["epochs"] == b.metrics["soup"]["epochs"] and len(a.metrics["soup"]["candidates"]) == 3
    assert a.metrics["test"]["overall_macro_f1"] == pytest.approx(b.metrics["test"]["overall_macro_f1"], abs=1e-9)
    np.testing.assert_allclose(
        a.predictions["test"]["tasks"]["size"]["probs"], b.predictions["test"]["tasks"]["size"]["probs"], atol=1e-5
    )


def test_a_retry_resumes_after_the_last_epoch_and_ends_like_an_uninterrupted_run(
    tiny_encoder: str, uninterrupted: TrainResult, tmp_path: Path
) -> None:
    control = LoopControl(checkpoint_dir=tmp_path / "ckpt")

    def crash_after_epoch_two(event: dict[str, Any]) -> None:  # two epochs' weights kept for the soup by then
        if event["event"] == "epoch" and event["epoch"] == 2:
            raise Crash("the worker died")

    with pytest.raises(Crash):
        train_model(config(tiny_encoder), synthetic_split(), progress=crash_after_epoch_two, control=control)
    assert (tmp_path / "ckpt" / CHECKPOINT_FILE).is_file()

    events: list[dict[str, Any]] = []
    resumed = train_model(config(tiny_encoder), synthetic_split(), progress=events.append, control=control)
    start = next(e for e in events if e["event"] == "start")
    assert start["resumed_from_step"] == uninterrupted.curve[1]["steps"] and start["resumed_at_epoch"] == 3
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [3, 4]  # epochs 1 and 2 are not trained again
    assert resumed.metrics["resumed_from_step"] == start["resumed_from_step"]
    same_run(resumed, uninterrupted)


def test_a_stop_request_checkpoints_mid_epoch_and_the_next_attempt_finishes_the_run(
    tiny_encoder: str, uninterrupted: TrainResult, tmp_path: Path
) -> None:
    asked = {"n": 0}

    def stop_at_step_7() -> bool:  # asked once per optimizer step; epochs have 5 steps here
        asked["n"] += 1
        return asked["n"] == 7

    control = LoopControl(checkpoint_dir=tmp_path / "ckpt", should_stop=stop_at_step_7)
    with pytest.raises(TrainingStopped) as stopped:
        train_model(config(tiny_encoder), synthetic_split(), control=control)
    assert stopped.value.steps_done == 7 and stopped.value.saved

    events: list[dict[str, Any]] = []
    resumed = train_model(
        config(tiny_encoder),
        synthetic_split(),
        progress=events.append,
        control=LoopControl(checkpoint_dir=tmp_path / "ckpt"),
    )
    start = next(e for e in events if e["event"] == "start")
    assert start["resumed_from_step"] == 7 and start["resumed_at_epoch"] == 2
    first_batch = next(e for e in events if e["event"] == "batch")
    assert (first_batch["epoch"], first_batch["batch"]) == (2, 3)  # the batches before the stop are not redone
    same_run(resumed, uninterrupted)


def test_steps_checkpoints_and_a_changed_dataset_starts_from_scratch(tiny_encoder: str, tmp_path: Path) -> None:
    control = LoopControl(checkpoint_dir=tmp_path / "ckpt")

    def crash_mid_epoch_two(event: dict[str, Any]) -> None:
        if event["event"] == "batch" and event["epoch"] == 2 and event["batch"] == 4:
            raise Crash("killed")

    with pytest.raises(Crash):
        train_model(
            config(tiny_encoder, checkpoint_every_steps=2),
            synthetic_split(),
            progress=crash_mid_epoch_two,
            control=control,
        )
    events: list[dict[str, Any]] = []
    changed = synthetic_split()
    changed.train = changed.train[:-1]  # a text left the training view between attempts
    train_model(config(tiny_encoder, checkpoint_every_steps=2), changed, progress=events.append, control=control)
    assert "changed since the checkpoint" in next(e["phase"] for e in events if e["event"] == "phase")
    start = next(e for e in events if e["event"] == "start")
    assert "resumed_from_step" not in start

    # the same data resumes from the last every-2-steps checkpoint: step 8, epoch 2's third batch
    with pytest.raises(Crash):
        train_model(
            config(tiny_encoder, checkpoint_every_steps=2),
            synthetic_split(),
            progress=crash_mid_epoch_two,
            control=LoopControl(checkpoint_dir=tmp_path / "c2"),
        )
    events.clear()
    train_model(
        config(tiny_encoder, checkpoint_every_steps=2),
        synthetic_split(),
        progress=events.append,
        control=LoopControl(checkpoint_dir=tmp_path / "c2"),
    )
    start = next(e for e in events if e["event"] == "start")
    assert start["resumed_from_step"] == 8 and start["resumed_at_epoch"] == 2
    first_batch = next(e for e in events if e["event"] == "batch")
    assert (first_batch["epoch"], first_batch["batch"]) == (2, 4)


def test_a_stop_asked_at_the_last_step_lets_the_run_finish(tiny_encoder: str, tmp_path: Path) -> None:
    asked = {"n": 0}

    def stop_at_the_end() -> bool:
        asked["n"] += 1
        return asked["n"] == 20  # 4 epochs × 5 steps

    result = train_model(
        config(tiny_encoder),
        synthetic_split(),
        control=LoopControl(checkpoint_dir=tmp_path / "ckpt", should_stop=stop_at_the_end),
    )
    assert [e["epoch"] for e in result.curve] == [1, 2, 3, 4] and result.metrics["plan"]["steps_done"] == 20


def test_a_checkpoint_written_before_a_config_key_was_added_still_resumes() -> None:
    """The fingerprint 337aaa3 (before `ema_decay` existed) computed for this config and data: a run that an
    upgrade interrupted resumes instead of training again from step 0. A key added to TrainConfig later must
    leave it unchanged at its default (checkpoint.LATER_KEYS), or this fails; set, it changes the fingerprint."""
    from trainer.checkpoint import fingerprint
    from trainer.config import TrainConfig

    config = TrainConfig(encoder="enc", epochs=3, max_length=32)
    before = "c53cfc737c4d0a6eaf5cf60dc0c55c31030c5ba259b22f44488af6ccabaa08ba"
    assert fingerprint(config, synthetic_split()) == before
    assert fingerprint(config.with_overrides({"ema_decay": 0.99}), synthetic_split()) != before
    assert fingerprint(config.with_overrides({"soup_size": 2}), synthetic_split()) != before
    assert fingerprint(config.with_overrides({"fixed_epochs": 2.5}), synthetic_split()) != before
    # patience was 8 by default then, planned now: left to the plan it fingerprints as the 8 it was
    assert config.patience is None and fingerprint(config.with_overrides({"patience": 8}), synthetic_split()) == before
    assert fingerprint(config.with_overrides({"patience": 5}), synthetic_split()) != before


def test_a_run_resumed_on_a_cpu_that_takes_another_precision_says_so(
    tiny_encoder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """amp auto: the attempt trained in bf16 on a CPU with native bf16, the retry lands on one without."""
    control = LoopControl(checkpoint_dir=tmp_path / "ckpt")
    short = fast_config(tiny_encoder, epochs=2)

    def crash_after_epoch_one(event: dict[str, Any]) -> None:
        if event["event"] == "epoch" and event["epoch"] == 1:
            raise Crash("the worker died")

    monkeypatch.setenv("AUGLOOP_CPU_BF16", "1")
    with pytest.raises(Crash):
        train_model(short, synthetic_split(), progress=crash_after_epoch_one, control=control)
    monkeypatch.setenv("AUGLOOP_CPU_BF16", "0")
    events: list[dict[str, Any]] = []
    resumed = train_model(short, synthetic_split(), progress=events.append, control=control)
    phases = [e["phase"] for e in events if e["event"] == "phase"]
    assert (
        "resuming in fp32: the interrupted attempt trained in bf16 (amp auto on another kind of CPU or GPU)" in phases
    )
    assert resumed.metrics["precision"] == "fp32" and resumed.metrics["resumed_from_step"] > 0


class Lost(Exception):
    pass


@pytest.mark.parametrize("refused", ["mid_epoch", "epoch_end", "stop"])
def test_a_checkpoint_is_written_only_after_before_save_allows_it(
    tiny_encoder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused: str
) -> None:
    """A worker whose job was taken over by another (its lease ran out while it stalled) overwrote the new
    owner's checkpoint: every epoch's save comes before the epoch's lease-checked record, and the every-N-steps
    and the stop's saves had no check at all. `before_save` is asked right before each write; when it raises,
    nothing is written and its exception ends the run (no epoch reported, no TrainingStopped)."""
    import trainer.checkpoint as checkpoint

    log: list[str] = []
    real_save = checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda *a, **k: (log.append("save"), real_save(*a, **k))[1])
    # 5 optimizer steps an epoch: with a save every 2 steps, the first is mid-epoch (step 2), the third the epoch's
    refuse_at = {"mid_epoch": 1, "epoch_end": 3, "stop": 1}[refused]
    path = tmp_path / "ckpt" / CHECKPOINT_FILE
    held: dict[str, bytes | None] = {}

    def before_save() -> None:
        log.append("check")
        if log.count("check") == refuse_at:
            held["bytes"] = path.read_bytes() if path.exists() else None
            raise Lost("the job is another worker's now")

    asked = {"n": 0}

    def stop_at_step_3() -> bool:
        asked["n"] += 1
        return refused == "stop" and asked["n"] == 3

    control = LoopControl(checkpoint_dir=tmp_path / "ckpt", should_stop=stop_at_step_3, before_save=before_save)
    events: list[dict[str, Any]] = []
    overrides = {} if refused == "stop" else {"checkpoint_every_steps": 2}
    with pytest.raises(Lost):
        train_model(config(tiny_encoder, **overrides), synthetic_split(), progress=events.append, control=control)
    assert log == ["check", "save"] * (refuse_at - 1) + ["check"], "a checkpoint written without asking first"
    assert (path.read_bytes() if path.exists() else None) == held["bytes"], "the refused checkpoint was written"
    assert not [e for e in events if e["event"] == "epoch"], "an epoch reported after its refused checkpoint"


def test_a_checkpoint_the_disk_refuses_costs_the_run_nothing_says_so_and_leaves_the_last_one_whole(
    tiny_encoder: str, uninterrupted: TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk (or a read-only directory) failed the run at its first checkpoint, on every retry: a checkpoint
    is there to resume after a lost worker, and a run that cannot write one is otherwise fine. The failed write is
    reported and the run goes on; no partial file is left, and the checkpoint before it still resumes."""
    import errno

    import trainer.checkpoint as checkpoint

    real_init = checkpoint._Hashing.__init__
    saves = {"n": 0}

    class FullDisk:  # takes a few bytes of each checkpoint after the first, then refuses, as a full disk does
        def __init__(self, fh: Any) -> None:
            self.fh, self.written = fh, 0

        def write(self, data: Any) -> int:
            self.written += len(data)
            if self.written > 4096:
                raise OSError(errno.ENOSPC, "No space left on device")
            return int(self.fh.write(data))

        def flush(self) -> None:
            self.fh.flush()

    def init(self: Any, fh: Any) -> None:
        saves["n"] += 1
        real_init(self, fh if saves["n"] == 1 else FullDisk(fh))

    monkeypatch.setattr(checkpoint._Hashing, "__init__", init)
    events: list[dict[str, Any]] = []
    control = LoopControl(checkpoint_dir=tmp_path / "ckpt")
    result = train_model(config(tiny_encoder), synthetic_split(), progress=events.append, control=control)
    same_run(result, uninterrupted)
    failed = [e for e in events if e["event"] == "checkpoint_failed"]
    assert [e["steps_done"] for e in failed] == [10, 15, 20] and result.metrics["checkpoint_failures"] == 3
    assert failed[0]["error"] == (
        "the checkpoint at step 10 could not be written: No space left on device (ENOSPC); training goes on "
        "(a retry would resume from step 5)"
    )
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [CHECKPOINT_FILE, checkpoint.DIGEST_FILE]
    kept, why_not = checkpoint.load(tmp_path / "ckpt", checkpoint.fingerprint(result.config, synthetic_split()))
    assert why_not is None and kept is not None and (kept.loop.epoch, kept.loop.steps_done) == (1, 5)

    # a stop whose checkpoint the disk refuses says none was saved
    saves["n"] = 1
    with pytest.raises(TrainingStopped) as stopped:
        train_model(
            config(tiny_encoder, seed=3),
            synthetic_split(),
            control=LoopControl(checkpoint_dir=tmp_path / "other", should_stop=lambda: True),
        )
    assert stopped.value.steps_done == 1 and not stopped.value.saved
    assert not (tmp_path / "other" / CHECKPOINT_FILE).exists()


def test_only_a_write_the_file_system_refused_reads_as_a_full_disk() -> None:
    """A run's artifacts: a refused write (an OSError, or safetensors' words for one) fails the run saying what to
    free; any other error (a bug) passes as it is, where "free space and train again" sent the user to train the
    whole run again into the same failure (a reviewer's find)."""
    import errno

    from trainer.errors import ArtifactWriteError, artifacts_written

    class SafetensorError(Exception):  # safetensors' own type, raised from Rust: no OSError in its chain
        pass

    for raised, reason in (
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device (ENOSPC)"),
        (SafetensorError("Error while serializing: I/O error: File too large (os error 27)"), "File too large (EFBIG)"),
    ):
        with pytest.raises(ArtifactWriteError) as err, artifacts_written():
            raise raised
        assert err.value.reason == reason and "free space in the data directory" in err.value.message
    with pytest.raises(TypeError, match="not JSON serializable"), artifacts_written():
        raise TypeError("Object of type int64 is not JSON serializable")
