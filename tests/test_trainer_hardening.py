"""Inputs that used to fail a run, or its saved model, with no fault in the request: a max_length above what the
encoder embeds, an encoder without a pad token, a damaged checkpoint, and tiny data for the TF-IDF member; and
encoders the trainer cannot fine-tune, refused at load with a message instead of a crash mid-run."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from tests.trainer_fixtures import fast_config, synthetic_split, tiny_encoder  # noqa: F401 (fixture)
from trainer import checkpoint
from trainer.checkpoint import CHECKPOINT_FILE
from trainer.errors import TrainerError
from trainer.examples import Example, SplitData, TaskSpec
from trainer.predict import RunPredictor, encoder_max_length, pad_token_id, predict_texts
from trainer.train import LoopControl, TrainResult, save_artifacts, train_model

POSITIONS = 24  # the short BERT's position embeddings
LONG_TEXT = " ".join(["tax vote school health jobs border farm veterans energy trade"] * 12) + " red small"


@pytest.fixture(scope="module")
def short_bert(tiny_encoder: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny BERT with POSITIONS position embeddings, where a real one has 512."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("short_bert")
    config = BertConfig.from_pretrained(tiny_encoder)
    config.max_position_embeddings = POSITIONS
    torch.manual_seed(0)
    BertModel(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_encoder).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def padless_encoder(tiny_encoder: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny BERT whose tokenizer has no pad token (as GPT-2's has none)."""
    from transformers import AutoModel, AutoTokenizer

    out = tmp_path_factory.mktemp("padless")
    AutoModel.from_pretrained(tiny_encoder).save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(out)
    assert AutoTokenizer.from_pretrained(out).pad_token_id is None
    return str(out)


def with_long_train_text(data: SplitData) -> SplitData:
    long = Example(LONG_TEXT, {"color": "red", "size": "small"}, 999, "h-long")
    return dataclasses.replace(data, train=[*data.train, long])


# 1. max_length above the encoder's positions ------------------------------------------------------------------


def test_encoders_the_trainer_cannot_fine_tune_are_refused_at_load_naming_why(
    tiny_encoder: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An ML engineer's encoder folders that crashed a run with a TypeError (retried as a crash: no tokenizer
    files), a ValueError about decoder inputs (T5) or an IndexError at the first batch (another model's
    tokenizer): each is a TrainerError at load, before a step is trained."""
    import shutil

    from transformers import AutoTokenizer, BertConfig, BertModel, T5Config, T5Model

    from trainer.model import load_encoder

    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    no_tokenizer = tmp_path / "no_tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(Path(tiny_encoder) / name, no_tokenizer / name)
    with pytest.raises(TrainerError, match="cannot load encoder") as err:
        load_encoder(no_tokenizer)
    assert err.value.field == "config.encoder"
    truncated = tmp_path / "truncated"  # a copy cut short: safetensors' own error was retried as a crash
    shutil.copytree(tiny_encoder, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    with pytest.raises(TrainerError, match="cannot load encoder"):
        load_encoder(truncated)

    t5 = tmp_path / "t5"
    T5Model(
        T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    ).save_pretrained(t5)
    tokenizer.save_pretrained(t5)
    with pytest.raises(TrainerError, match="is an encoder-decoder model \\(t5\\)"):
        load_encoder(t5)

    small_vocab = tmp_path / "small_vocab"
    config = BertConfig.from_pretrained(tiny_encoder)
    config.vocab_size = 50
    BertModel(config).save_pretrained(small_vocab)
    tokenizer.save_pretrained(small_vocab)
    with pytest.raises(TrainerError, match=f"tokenizer has {len(tokenizer):,} tokens and the model embeds 50"):
        load_encoder(small_vocab)
    no_config = tmp_path / "no_config"  # the cause is logged for the operator, in a line, not transformers' 5 KB
    tokenizer.save_pretrained(no_config)
    with caplog.at_level("WARNING", logger="trainer.model"), pytest.raises(TrainerError, match="cannot load encoder"):
        load_encoder(no_config)
    assert caplog.records and all(len(r.getMessage()) < 700 for r in caplog.records)
    encoder, _ = load_encoder(tiny_encoder)  # the encoder they were made from loads
    assert encoder.get_input_embeddings().num_embeddings >= len(tokenizer)


def test_a_max_train_samples_draw_of_one_class_is_refused_not_trained(tiny_encoder: str) -> None:
    """`--max-train-samples 1` trained a run on one text (one class per task) and called it a success; the
    request's two-class check had read the whole training view."""
    with pytest.raises(TrainerError, match="max_train_samples 1 drew 1 training text") as err:
        train_model(fast_config(tiny_encoder, epochs=1, max_train_samples=1), synthetic_split())
    assert err.value.field == "config.max_train_samples" and "a classifier needs two classes" in err.value.message
    result = train_model(fast_config(tiny_encoder, epochs=1, max_train_samples=12), synthetic_split())
    assert result.metrics["test"]["overall_macro_f1"] >= 0  # a draw holding both classes of each task trains


def test_the_trainer_refuses_a_task_no_val_example_labels(tiny_encoder: str) -> None:
    """Used as a library, the trainer trained a task without a labelled val example (or with no val at all): it
    "chose" epoch 1 on a val macro-F1 of 0.0 at every epoch and still counted the task in the test figure. The
    app refuses such a request before; the trainer (transformer and TF-IDF member alike) refuses it too."""
    from trainer.classical import ClassicalConfig, train_classical

    data = synthetic_split()
    no_size = dataclasses.replace(
        data, val=[Example(e.text, {"color": e.labels["color"]}, e.sample_id) for e in data.val]
    )
    unknown_size = dataclasses.replace(  # labels the task does not have: ignored by the trainer, so none
        data, val=[Example(e.text, {**e.labels, "size": "gigantic"}, e.sample_id) for e in data.val]
    )
    cases = (
        (no_size, "['size']"),
        (unknown_size, "['size']"),
        (dataclasses.replace(data, val=[]), "['color', 'size']"),
    )
    for broken, named in cases:
        with pytest.raises(TrainerError, match=re.escape(f"no labelled validation example for task(s) {named}")) as err:
            train_model(fast_config(tiny_encoder, epochs=1), broken)
        assert err.value.field == "data.val"
        with pytest.raises(TrainerError, match="no labelled validation example"):
            train_classical(ClassicalConfig(), broken, n_jobs=1)


def test_a_max_length_above_the_encoders_positions_is_cut_to_them_and_the_plan_says_so(short_bert: str) -> None:
    result = train_model(fast_config(short_bert, max_length=64, epochs=1), with_long_train_text(synthetic_split()))
    reasons = result.metrics["plan"]["reasons"]
    assert f"max_length {POSITIONS}: the most tokens the encoder can take (config.max_length 64 is more)" in reasons
    assert result.metrics["test"] is not None


def test_a_saved_model_predicts_a_long_text_whatever_max_length_its_model_json_says(
    short_bert: str, tmp_path: Path
) -> None:
    # short training texts only: nothing long is seen before the model is saved
    result = train_model(fast_config(short_bert, max_length=64, epochs=1), synthetic_split())
    save_artifacts(result, tmp_path / "run")
    model_json = tmp_path / "run" / "model" / "model.json"
    assert json.loads(model_json.read_text())["max_length"] == POSITIONS  # the length it serves at
    # a model saved before the cut was recorded (or edited by hand) says more
    model_json.write_text(json.dumps({**json.loads(model_json.read_text()), "max_length": 4096}))

    predictor = RunPredictor(tmp_path / "run" / "model", device="cpu")
    assert predictor.max_length == POSITIONS
    probs = predictor.predict_proba([LONG_TEXT, "red small"])
    assert probs["color"].shape == (2, 2) and np.allclose(probs["size"].sum(axis=1), 1.0)
    # what variant scoring and pseudo-labels call with the run's config.max_length
    direct = predict_texts(result.model, result.tokenizer, [LONG_TEXT], max_length=1024)
    assert direct["size"].shape == (1, 3)


def test_the_encoder_limit_leaves_out_the_positions_roberta_reserves_and_reads_the_tokenizer_otherwise() -> None:
    from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

    shape = {"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
    no_limit = SimpleNamespace(model_max_length=int(1e30))  # transformers' "unset"
    roberta = RobertaModel(RobertaConfig(**shape, intermediate_size=32, max_position_embeddings=26)).eval()
    assert encoder_max_length(roberta, no_limit) == 24  # 26 less padding_idx + 1 (XLM-R: 514 → 512)
    with torch.no_grad():
        roberta(input_ids=torch.full((1, 24), 5))  # the limit fits
        with pytest.raises(IndexError):
            roberta(input_ids=torch.full((1, 25), 5))  # one more does not
    bert = BertModel(BertConfig(**shape, intermediate_size=32, max_position_embeddings=30))
    assert encoder_max_length(bert, no_limit) == 30
    relative = SimpleNamespace(config=SimpleNamespace())  # no position table (T5's kind)
    assert encoder_max_length(relative, SimpleNamespace(model_max_length=128)) == 128
    assert encoder_max_length(relative, no_limit) is None


# 2. an encoder without a pad token -----------------------------------------------------------------------------


def test_an_encoder_without_a_pad_token_trains_and_its_saved_model_predicts(
    padless_encoder: str, tmp_path: Path
) -> None:
    result = train_model(fast_config(padless_encoder, epochs=1), synthetic_split())
    assert result.tokenizer.pad_token_id is None and pad_token_id(result.tokenizer) == 0
    texts = ["red small tax", "blue huge vote school health jobs"]  # two lengths: the batch is padded
    assert predict_texts(result.model, result.tokenizer, texts, max_length=32)["color"].shape == (2, 2)
    save_artifacts(result, tmp_path / "run")
    probs = RunPredictor(tmp_path / "run" / "model", device="cpu").predict_proba(texts)
    assert probs["size"].shape == (2, 3)


# 3. a damaged checkpoint ---------------------------------------------------------------------------------------


class Crash(Exception):
    pass


@pytest.mark.parametrize("damage", ["truncated", "flipped", "empty"])
def test_an_unreadable_checkpoint_is_no_checkpoint_the_run_starts_over_and_says_why(
    tiny_encoder: str, tmp_path: Path, damage: str
) -> None:
    config, control = fast_config(tiny_encoder, epochs=2), LoopControl(checkpoint_dir=tmp_path / "ckpt")
    path = tmp_path / "ckpt" / CHECKPOINT_FILE
    if damage in ("truncated", "flipped"):  # a real checkpoint, cut in half or overwritten in place

        def crash_after_epoch_one(event: dict[str, Any]) -> None:
            if event["event"] == "epoch":
                raise Crash("the worker died")

        with pytest.raises(Crash):
            train_model(config, synthetic_split(), progress=crash_after_epoch_one, control=control)
        whole = path.read_bytes()
        if damage == "truncated":
            path.write_bytes(whole[: len(whole) // 2])
        else:  # 4 KiB of a tensor's bytes: torch's zip reader checks no CRC and loaded it (a disk's damage)
            middle = len(whole) // 2
            path.write_bytes(whole[:middle] + bytes(4096) + whole[middle + 4096 :])
    else:
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")

    events: list[dict[str, Any]] = []
    result = train_model(config, synthetic_split(), progress=events.append, control=control)
    phases = [e["phase"] for e in events if e["event"] == "phase"]
    # a checkpoint with its digest file is checked against it; one without (empty here, or written before the
    # digests) is read as it stands
    reason = "the checkpoint could not be read" if damage == "empty" else "the checkpoint does not match its checksum"
    assert any(p.startswith(reason) and p.endswith("training from the start") for p in phases), phases
    start = next(e for e in events if e["event"] == "start")
    assert "resumed_from_step" not in start and "resumed_from_step" not in result.metrics
    assert result.metrics["checkpoint_discarded"].startswith(reason)  # kept with the run, not only said
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2]
    assert isinstance(result, TrainResult) and result.metrics["test"] is not None
    # and the run's own checkpoint replaced the damaged one
    assert checkpoint.load(tmp_path / "ckpt", "another run")[1] == (
        "the run's config or data changed since the checkpoint: training from the start"
    )


def test_a_checkpoint_is_synced_before_and_after_its_rename_under_a_name_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each file (the checkpoint, its digest) is on disk before its rename; the digest goes into place first,
    naming the new checkpoint and the one it replaces (a crash between the renames leaves a checkpoint it
    names); the directory is synced after."""
    synced: list[int] = []
    renamed: list[str] = []
    real_fsync, real_replace = checkpoint.os.fsync, checkpoint.os.replace

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        assert len(synced) == 2 + 3 * (len(renamed) // 2)  # both files synced before the first rename
        renamed.append(Path(src).name)
        if Path(dst).name == CHECKPOINT_FILE:  # a crash here: the digest file already names this one
            assert checkpoint.file_digest(Path(src)) in (Path(dst).parent / checkpoint.DIGEST_FILE).read_text()
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    monkeypatch.setattr(checkpoint.os, "replace", replace)
    ckpt = checkpoint.Checkpoint("fp", checkpoint.LoopState(), {"w": torch.zeros(2)}, {}, None, [{}])
    checkpoint.save(tmp_path, ckpt)
    first = checkpoint.file_digest(tmp_path / CHECKPOINT_FILE)
    ckpt.model = {"w": torch.ones(2)}
    checkpoint.save(tmp_path, ckpt)
    assert len(synced) == 6  # each time the two files, then the directory
    # two writers in one process (or two containers, each pid 1) never share a temporary file
    assert len(set(renamed)) == 4 and renamed[0].endswith(".tmp") and renamed[0].startswith(".checkpoint.pt.sha256")
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE, checkpoint.DIGEST_FILE]
    listed = (tmp_path / checkpoint.DIGEST_FILE).read_text().split()
    assert listed == [checkpoint.file_digest(tmp_path / CHECKPOINT_FILE), first]
    loaded, why = checkpoint.load(tmp_path, "fp")
    assert why is None and loaded is not None and torch.equal(loaded.model["w"], torch.ones(2))


def test_a_save_clears_what_killed_saves_left(tmp_path: Path) -> None:
    """A worker killed while it wrote a checkpoint left its temporary file (up to the model and its optimizer's
    size), one more each kill, until the run ended; the next save that lands clears them."""
    killed = [tmp_path / f".{CHECKPOINT_FILE}.1.{n}.tmp" for n in ("a" * 32, "b" * 32)]
    killed.append(tmp_path / f".{checkpoint.DIGEST_FILE}.1.{'c' * 32}.tmp")
    for stale in killed:
        stale.write_bytes(b"half a checkpoint")
    ckpt = checkpoint.Checkpoint("fp", checkpoint.LoopState(), {"w": torch.zeros(2)}, {}, None, [{}])
    checkpoint.save(tmp_path, ckpt)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE, checkpoint.DIGEST_FILE]
    loaded, why = checkpoint.load(tmp_path, "fp")
    assert why is None and loaded is not None


def test_crashes_between_the_two_renames_leave_a_checkpoint_its_digest_file_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each save puts the digest file into place before the checkpoint. Killed twice in a row between the two
    renames, the digest file named only the two checkpoints that never replaced the one on disk, and a good
    checkpoint was thrown away. A checkpoint written before the digests (no digest file) resumes as it did."""
    ckpt = checkpoint.Checkpoint("fp", checkpoint.LoopState(), {"w": torch.zeros(2)}, {}, None, [{}])
    checkpoint.save(tmp_path, ckpt)
    real_replace = checkpoint.os.replace

    def killed_before_the_checkpoint(src: Any, dst: Any) -> None:
        if Path(dst).name == CHECKPOINT_FILE:
            raise Crash("kill -9")
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", killed_before_the_checkpoint)
    for value in (1.0, 2.0):
        ckpt.model = {"w": torch.full((2,), value)}
        with pytest.raises(Crash):
            checkpoint.save(tmp_path, ckpt)
    monkeypatch.setattr(checkpoint.os, "replace", real_replace)
    loaded, why = checkpoint.load(tmp_path, "fp")
    assert why is None and loaded is not None and torch.equal(loaded.model["w"], torch.zeros(2))
    (tmp_path / checkpoint.DIGEST_FILE).unlink()  # as a checkpoint of the code before 12-06
    loaded, why = checkpoint.load(tmp_path, "fp")
    assert why is None and loaded is not None and torch.equal(loaded.model["w"], torch.zeros(2))


# 4. the TF-IDF member on tiny data -----------------------------------------------------------------------------

TASKS = [TaskSpec("stance", ["pro", "con"])]


def split(train: list[tuple[str, str]]) -> SplitData:
    examples = [Example(text, {"stance": label}, i + 1, f"h{i}") for i, (text, label) in enumerate(train)]
    val = [Example("apples oranges", {"stance": "pro"}, 101, "v1"), Example("rain snow", {"stance": "con"}, 102, "v2")]
    test = [Example("kiwi pears", {"stance": "pro"}, 201, "t1"), Example("hail fog", {"stance": "con"}, 202, "t2")]
    return SplitData(TASKS, examples, val, test, "tiny")


SIX_DISTINCT = [  # no word occurs in two texts
    ("apples", "pro"),
    ("bananas", "pro"),
    ("cherries", "pro"),
    ("storms", "con"),
    ("thunder", "con"),
    ("lightning", "con"),
]


def test_the_tfidf_member_trains_on_six_texts_that_share_no_word() -> None:
    from trainer.classical import ClassicalConfig, train_classical

    result = train_classical(ClassicalConfig(decision="none"), split(SIX_DISTINCT), n_jobs=1)
    assert result.chosen_c["stance"] > 0 and result.metrics["test"] is not None
    assert result.models["stance"].predict_proba(["bananas and apples"]).shape == (1, 2)


def test_the_tfidf_features_keep_what_tiny_texts_have() -> None:
    from trainer.baselines import fit_tfidf_features, tfidf_logreg_probs

    words = fit_tfidf_features([t for t, _ in SIX_DISTINCT])
    assert [name for name, _ in words.transformer_list] == ["word", "char"]
    assert "thunder" in words.transformer_list[0][1].vocabulary_  # every word kept: none is in two texts
    letters = fit_tfidf_features(["a b", "c d", "e f"])  # no word token (two characters at least): characters only
    assert [name for name, _ in letters.transformer_list] == ["char"]
    with pytest.raises(TrainerError, match="no word or character n-gram"):
        fit_tfidf_features(["", " "])
    gold = np.array([[0], [0], [0], [1], [1], [1]])
    probs = tfidf_logreg_probs([t for t, _ in SIX_DISTINCT], gold, ["apples", "storms"], TASKS)
    assert probs["stance"].shape == (2, 2)
    with pytest.raises(TrainerError, match="'stance' has only one class"):
        tfidf_logreg_probs([t for t, _ in SIX_DISTINCT], np.zeros((6, 1), dtype=int), ["apples"], TASKS)


def test_the_tfidf_member_refuses_two_texts_with_a_trainer_error_naming_the_task() -> None:
    from trainer.classical import ClassicalConfig, train_classical

    with pytest.raises(TrainerError, match=r"task 'stance': the TF-IDF member's cross-validation needs two texts"):
        train_classical(ClassicalConfig(), split([("apples bananas", "pro"), ("storms thunder", "con")]), n_jobs=1)


def test_the_tfidf_member_refuses_a_task_with_one_class_with_a_trainer_error_naming_the_task() -> None:
    from trainer.classical import ClassicalConfig, train_classical

    one_class = [(text, "pro") for text, _ in SIX_DISTINCT]
    with pytest.raises(TrainerError, match=r"task 'stance' has only one class among its 6 labelled text\(s\)"):
        train_classical(ClassicalConfig(), split(one_class), n_jobs=1)


def test_a_model_loading_does_not_hold_up_the_models_already_loaded(monkeypatch) -> None:
    """The predictor cache loaded under its one lock: a large encoder's load (seconds) held up every request,
    those for models already in memory too."""
    import threading

    from trainer import predict

    monkeypatch.setattr(predict, "_cache", type(predict._cache)())
    assert predict.cached_predictor("a", lambda: "model a") == "model a"
    loading, release = threading.Event(), threading.Event()

    def slow_load() -> str:
        loading.set()
        release.wait(10)
        return "model b"

    loader = threading.Thread(target=predict.cached_predictor, args=("b", slow_load))
    loader.start()
    assert loading.wait(5)
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(predict.cached_predictor("a", lambda: "loaded again")))
    reader.start()
    reader.join(2)
    try:
        assert found == ["model a"], "the look-up of a loaded model waited for another model's load"
    finally:
        release.set()
        loader.join(10)
        reader.join(10)
    assert predict.cached_predictor("b", lambda: "loaded twice") == "model b"


def test_predictions_computing_at_once_are_bounded(monkeypatch, admin) -> None:
    """Any member may ask for predictions, which run a model on the API's CPU: past the bound a request waits
    its turn briefly, then is told to come back (503, Retry-After) rather than slowing every other request."""
    import threading

    from core.errors import ServerBusy
    from services import prediction

    monkeypatch.setattr(prediction, "PREDICTION_WAIT_SECONDS", 0.2)
    holding, release = threading.Barrier(3), threading.Event()

    def hold() -> None:
        with prediction._prediction_turn(2):
            holding.wait(5)
            release.wait(10)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for t in holders:
        t.start()
    holding.wait(5)
    try:
        with pytest.raises(ServerBusy) as busy, prediction._prediction_turn(2):
            pass
        assert busy.value.field == "texts" and "AUGLOOP_TRAINER_PREDICT_CONCURRENCY" in busy.value.message
    finally:
        release.set()
        for t in holders:
            t.join(10)
    with prediction._prediction_turn(2):  # turns given back
        pass

    def busy_predict(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ServerBusy("busy", field="texts")

    monkeypatch.setattr(prediction, "predict", busy_predict)
    r = admin.post("/api/v1/models/1/predict", json={"texts": ["a text"]})
    assert r.status_code == 503 and r.headers["Retry-After"] == "5" and r.json()["field"] == "texts"


def test_a_prediction_from_a_loaded_model_does_not_wait_for_other_models_loading(monkeypatch, settings) -> None:
    """Two requests loading models nobody had loaded took both turns of the gate while they loaded, and a
    request for a model in memory waited, then got 503: the load now waits for other loads only, and a turn is
    taken to compute."""
    import threading
    import time

    import numpy as np

    from services import prediction
    from trainer import predict
    from trainer.examples import TaskSpec

    class Loaded:  # what load_predictor returns for model 1, already in memory
        def __init__(self) -> None:
            self.tasks = [TaskSpec("bias", ["a", "b"])]

        def predict_proba(self, texts):  # type: ignore[no-untyped-def]
            return {"bias": np.tile([0.25, 0.75], (len(texts), 1))}

        def decide(self, probs):  # type: ignore[no-untyped-def]
            return {"bias": probs["bias"].argmax(1)}

    release = threading.Event()

    def load(spec):  # type: ignore[no-untyped-def]
        if spec.id != 1:
            release.wait(10)  # a large encoder loading
        return Loaded()

    monkeypatch.setattr(predict, "_cache", type(predict._cache)())
    monkeypatch.setattr(
        prediction, "model_spec", lambda session, model_id, user: prediction.ModelSpec(model_id, "single", 1, [])
    )
    monkeypatch.setattr(prediction, "load_predictor", load)
    monkeypatch.setattr(prediction, "PREDICTION_WAIT_SECONDS", 1.0)

    class NoSession:
        def commit(self) -> None:
            pass

    loading = [
        threading.Thread(target=prediction.predict, args=(NoSession(), i, ["a text"], settings, None)) for i in (2, 3)
    ]
    for t in loading:
        t.start()
    time.sleep(0.3)  # both are loading
    try:
        answer = prediction.predict(NoSession(), 1, ["a text"], settings, None)  # type: ignore[arg-type]
        assert answer["labels"] == [{"bias": "b"}]
    finally:
        release.set()
        for t in loading:
            t.join(10)


def test_the_test_labels_choose_nothing(tiny_encoder: str) -> None:
    """What a run chooses (the epoch kept, the decision rule, TF-IDF's C) and what it predicts on test must not
    depend on the test labels: with them shuffled, every choice and every test probability is the same; only the
    test scores move. The README's quality study says so; this holds it."""
    from trainer.classical import ClassicalConfig, train_classical

    data = synthetic_split(n_train=36, n_val=12, n_test=24)
    rng = np.random.default_rng(5)
    shuffled = [dict(e.labels) for e in data.test]
    for task in ("color", "size"):
        values = [labels[task] for labels in shuffled]
        for labels, value in zip(shuffled, rng.permutation(values), strict=True):
            labels[task] = str(value)
    other = dataclasses.replace(
        data, test=[dataclasses.replace(e, labels=labels) for e, labels in zip(data.test, shuffled, strict=True)]
    )
    runs = [train_model(fast_config(tiny_encoder, epochs=3, decision="prior"), d) for d in (data, other)]
    assert runs[0].metrics["best_epoch"] == runs[1].metrics["best_epoch"]
    assert runs[0].metrics["decision"] == runs[1].metrics["decision"]
    assert runs[0].metrics["val"] == runs[1].metrics["val"]
    assert runs[0].metrics["test"] != runs[1].metrics["test"]  # the shuffle moved what test scores
    for task in ("color", "size"):
        assert (
            runs[0].predictions["test"]["tasks"][task]["probs"] == runs[1].predictions["test"]["tasks"][task]["probs"]
        )
    members = [train_classical(ClassicalConfig(), d, n_jobs=1) for d in (data, other)]
    assert members[0].chosen_c == members[1].chosen_c
    assert members[0].metrics["decision"] == members[1].metrics["decision"]
    for task in ("color", "size"):
        assert (
            members[0].predictions["test"]["tasks"][task]["probs"]
            == members[1].predictions["test"]["tasks"][task]["probs"]
        )
