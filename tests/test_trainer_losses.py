"""Losses against hand computations: focal, label smoothing, class weights, missing labels, R-Drop."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainer.examples import IGNORE, TaskSpec
from trainer.losses import (
    MultiTaskLoss,
    focal_loss,
    inverse_frequency_weights,
    smoothing_vector,
    symmetric_kl,
)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(7, 4, generator=g), torch.tensor([0, 3, 1, 1, 2, 0, 3])


def test_focal_equals_cross_entropy_at_gamma_zero(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, y = batch
    assert torch.allclose(focal_loss(logits, y, gamma=0.0), F.cross_entropy(logits, y), atol=1e-6)
    assert torch.allclose(
        focal_loss(logits, y, gamma=0.0, smoothing=0.1),
        F.cross_entropy(logits, y, label_smoothing=0.1),
        atol=1e-6,
    )
    w = torch.tensor([0.5, 2.0, 1.0, 3.0])
    assert torch.allclose(
        focal_loss(logits, y, gamma=0.0, class_weights=w), F.cross_entropy(logits, y, weight=w), atol=1e-6
    )


def test_focal_loss_by_hand_and_down_weights_easy_samples() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.5]])
    y = torch.tensor([0, 1])
    p = torch.softmax(logits, dim=-1)
    p0, p1 = float(p[0, 0]), float(p[1, 1])
    expected = ((1 - p0) ** 2 * -math.log(p0) + (1 - p1) ** 2 * -math.log(p1)) / 2
    assert float(focal_loss(logits, y, gamma=2.0)) == pytest.approx(expected, rel=1e-6)
    assert float(focal_loss(logits, y, gamma=2.0)) < float(focal_loss(logits, y, gamma=0.0))


def test_label_smoothing_by_hand_global_and_per_class() -> None:
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.2, 0.1, 0.3]])
    y = torch.tensor([0, 2])
    log_p = torch.log_softmax(logits, dim=-1)
    eps = torch.tensor([0.1, 0.1, 0.3])  # class 2 ("c") is noisier: more smoothing
    task = TaskSpec("t", ["a", "b", "c"])
    assert torch.equal(smoothing_vector(task, 0.1, {"c": 0.3}), eps)
    losses = []
    for i, yi in enumerate(y.tolist()):
        e = float(eps[yi])
        q = [e / 3 + (1 - e if k == yi else 0) for k in range(3)]
        losses.append(-sum(q[k] * float(log_p[i, k]) for k in range(3)))
    assert float(focal_loss(logits, y, smoothing=eps)) == pytest.approx(sum(losses) / 2, rel=1e-6)


def test_inverse_frequency_weights_by_hand() -> None:
    labels = torch.tensor([0, 0, 0, 1, IGNORE, 2, 0, IGNORE])  # 6 labelled: counts 4, 1, 1; class 3 absent
    w = inverse_frequency_weights(labels, 4)
    assert w.tolist() == pytest.approx([6 / (4 * 4), 6 / (4 * 1), 6 / (4 * 1), 1.0])


def test_missing_labels_train_nothing(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, y = batch
    masked = y.clone()
    masked[[1, 4]] = IGNORE
    keep = masked != IGNORE
    assert torch.allclose(focal_loss(logits, masked, gamma=2.0), focal_loss(logits[keep], y[keep], gamma=2.0))
    # A head whose batch has no label at all gets a zero loss and zero gradients, not NaN.
    leaf = logits.clone().requires_grad_(True)
    loss = focal_loss(leaf, torch.full_like(y, IGNORE), gamma=2.0)
    loss.backward()
    assert float(loss.detach()) == 0.0 and leaf.grad is not None and torch.count_nonzero(leaf.grad) == 0
    # Masked samples get no gradient through the task loss.
    leaf = logits.clone().requires_grad_(True)
    focal_loss(leaf, masked).backward()
    assert torch.count_nonzero(leaf.grad[[1, 4]]) == 0 and torch.count_nonzero(leaf.grad[keep]) > 0


def test_symmetric_kl_by_hand() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    pa, pb = torch.softmax(a, -1), torch.softmax(b, -1)
    kl_ab = float((pa[0] * (pa[0].log() - pb[0].log())).sum())
    kl_ba = float((pb[0] * (pb[0].log() - pa[0].log())).sum())
    # Second row identical: KL 0. Mean over two samples of ½(KL_ab + KL_ba).
    assert float(symmetric_kl(a, b)) == pytest.approx(0.5 * (kl_ab + kl_ba) / 2, rel=1e-6)
    assert float(symmetric_kl(a, a)) == pytest.approx(0.0, abs=1e-7)


def test_multitask_loss_combines_tasks_with_weights_and_rdrop() -> None:
    tasks = [TaskSpec("x", ["a", "b"]), TaskSpec("y", ["p", "q", "r"])]
    g = torch.Generator().manual_seed(1)
    first = {"x": torch.randn(4, 2, generator=g), "y": torch.randn(4, 3, generator=g)}
    second = {"x": torch.randn(4, 2, generator=g), "y": torch.randn(4, 3, generator=g)}
    labels = torch.tensor([[0, 2], [1, IGNORE], [IGNORE, 0], [1, 1]])
    loss_fn = MultiTaskLoss(
        tasks,
        gamma=1.0,
        smoothing={"x": torch.zeros(2), "y": torch.zeros(3)},
        class_weights=None,
        task_weights={"y": 0.5},
        rdrop_alpha=2.0,
    )
    total, parts = loss_fn(first, labels, second)
    expected = 0.0
    for j, (task, weight) in enumerate((("x", 1.0), ("y", 0.5))):
        ce = 0.5 * (
            focal_loss(first[task], labels[:, j], gamma=1.0) + focal_loss(second[task], labels[:, j], gamma=1.0)
        )
        part = ce + 2.0 * symmetric_kl(first[task], second[task])
        assert parts[task] == pytest.approx(float(part), rel=1e-6)
        expected += weight * float(part)
    assert float(total) == pytest.approx(expected, rel=1e-6)
    # Without a second pass there is no R-Drop term.
    single, _ = loss_fn(first, labels)
    assert float(single) == pytest.approx(
        float(focal_loss(first["x"], labels[:, 0], gamma=1.0))
        + 0.5 * float(focal_loss(first["y"], labels[:, 1], gamma=1.0)),
        rel=1e-6,
    )
