"""The precision a run trains, evaluates and serves in: `amp: auto` takes bf16 on a CPU that computes it natively
(AVX512-BF16, AMX-BF16), fp32 on one that would emulate it, and says which in the run's plan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import trainer.predict as predict_module
from tests.trainer_fixtures import fast_config, synthetic_split, tiny_encoder  # noqa: F401 (fixture)
from trainer.errors import TrainerError
from trainer.predict import (
    RunPredictor,
    amp_dtype,
    cpu_flags_bf16,
    cpu_native_bf16,
    precision_reason,
    served_dtype,
)
from trainer.steps import prepare
from trainer.train import save_artifacts, train_model

CPU = torch.device("cpu")

X86_FLAGS = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 avx avx2 fma avx512f avx512bw avx512vl"


@pytest.fixture(autouse=True)
def flags_decide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the suite's AUGLOOP_CPU_BF16=0 (tests/conftest.py): here the CPU's flags decide, patched."""
    monkeypatch.delenv("AUGLOOP_CPU_BF16", raising=False)


def cpuinfo(tmp_path: Path, body: str) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(body)
    return str(path)


@pytest.mark.parametrize(
    ("body", "native"),
    [
        (f"processor\t: 0\nflags\t\t: {X86_FLAGS} avx512_bf16 avx512_vnni\n\nprocessor\t: 1\n", True),
        (f"processor\t: 0\nflags\t\t: {X86_FLAGS} amx_bf16 amx_tile amx_int8\n", True),
        (f"processor\t: 0\nflags\t\t: {X86_FLAGS} avx512_vnni\n", False),  # AVX-512 without bf16: emulated
        ("processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 bf16\n", False),  # not measured
        ("", False),
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path: Path, body: str, native: bool) -> None:
    assert cpu_flags_bf16(cpuinfo(tmp_path, body)) is native


def test_no_cpuinfo_means_full_precision(tmp_path: Path) -> None:
    assert cpu_flags_bf16(str(tmp_path / "missing")) is False


def test_the_environment_overrides_the_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """AUGLOOP_CPU_BF16: for a VM that hides the host's flags or reports ones it cannot run (the test suite
    sets 0, so that it runs alike on every CPU)."""
    for value, native in (("1", True), ("0", False)):
        monkeypatch.setenv("AUGLOOP_CPU_BF16", value)
        assert cpu_native_bf16() is native
        assert amp_dtype("auto", CPU) is (torch.bfloat16 if native else None)
        assert precision_reason("auto", CPU) == f"precision {'bf16' if native else 'fp32'}: AUGLOOP_CPU_BF16={value}"
    monkeypatch.setenv("AUGLOOP_CPU_BF16", "yes")
    with pytest.raises(TrainerError, match="AUGLOOP_CPU_BF16 must be 1 or 0"):
        amp_dtype("auto", CPU)
    monkeypatch.delenv("AUGLOOP_CPU_BF16")
    assert cpu_native_bf16() is (torch.backends.mkldnn.is_available() and cpu_flags_bf16())


def test_auto_takes_bf16_on_a_cpu_only_where_it_is_native(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(predict_module, "cpu_native_bf16", lambda: True)
    assert amp_dtype("auto", CPU) is torch.bfloat16
    assert precision_reason("auto", CPU).startswith("precision bf16 autocast: this CPU computes bf16 natively")
    assert amp_dtype("off", CPU) is None and precision_reason("off", CPU) == "precision fp32: amp 'off' as configured"
    monkeypatch.setattr(predict_module, "cpu_native_bf16", lambda: False)
    assert amp_dtype("auto", CPU) is None
    assert precision_reason("auto", CPU).startswith("precision fp32: this CPU has no native bf16")
    # asked for by name, on any processor
    assert amp_dtype("bf16", CPU) is torch.bfloat16 and amp_dtype("fp16", CPU) is torch.float16


def test_a_saved_run_serves_in_the_precision_it_evaluated_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever this machine would choose for a new run: a run evaluated in bf16 elsewhere serves in bf16."""
    for native in (True, False):
        monkeypatch.setattr(predict_module, "cpu_native_bf16", lambda native=native: native)
        assert served_dtype("bf16", CPU) is torch.bfloat16
        assert served_dtype("fp32", CPU) is None
        assert served_dtype("fp16", CPU) is None  # a GPU's fp16 run, on a CPU: fp32
        assert served_dtype(None, CPU) is None  # saved before the precision was kept: it evaluated in fp32 here


@pytest.mark.parametrize(
    ("native", "amp", "dtype"), [(True, "auto", "bf16"), (False, "auto", None), (True, "off", None)]
)
def test_a_run_trains_evaluates_and_serves_in_the_precision_its_plan_names(
    tiny_encoder: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    native: bool,
    amp: str,
    dtype: str | None,
) -> None:
    monkeypatch.setattr(predict_module, "cpu_native_bf16", lambda: native)
    config = fast_config(tiny_encoder, epochs=2, head_dropout=0.0, label_smoothing=0.0, device="cpu", amp=amp)
    data = synthetic_split()
    expected = torch.bfloat16 if dtype == "bf16" else None
    assert prepare(config, data).dtype is expected
    result = train_model(config, data)
    assert result.plan is not None
    precision = [r for r in result.plan.reasons if r.startswith("precision ")]
    assert precision == [precision_reason(amp, CPU)]
    assert precision[0].startswith("precision bf16" if dtype else "precision fp32")
    assert all(np.isfinite(epoch["train_loss"]) for epoch in result.curve)
    # What the run reports on test is what its saved model serves: the same precision both times.
    out = save_artifacts(result, tmp_path / "run")
    assert json.loads((out / "model" / "model.json").read_text())["precision"] == (dtype or "fp32")
    monkeypatch.setattr(predict_module, "cpu_native_bf16", lambda: not native)  # served on another kind of CPU
    loaded = RunPredictor(out / "model", device="cpu")
    assert loaded.dtype is expected
    saved = json.loads((out / "predictions_test.json").read_text())
    served = loaded.predict_proba([e.text for e in data.test])
    for task in data.tasks:
        np.testing.assert_allclose(served[task.name], np.array(saved["tasks"][task.name]["probs"]), atol=1e-6)
