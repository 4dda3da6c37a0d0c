"""Loss per task (focal, label smoothing global and per class, class weights, missing labels) and R-Drop.

Focal loss with smoothing uses the smoothed target distribution q (1 − ε_y on the true class y plus ε_y / K on
every class, as torch's cross_entropy does): loss = −Σ_k q_k (1 − p_k)^γ log p_k. At γ = 0 it is exactly the
label-smoothed cross-entropy. A class weight w_y scales each sample's loss, and the batch loss is the weighted
mean Σ w_y·l / Σ w_y (torch's convention for weighted cross-entropy).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from trainer.examples import IGNORE, TaskSpec


def inverse_frequency_weights(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """w_k = N / (K · n_k) over the labelled samples: 1 for every class when balanced, and for absent ones."""
    valid = labels[labels != IGNORE]
    counts = torch.bincount(valid, minlength=n_classes).float()
    weights = torch.ones(n_classes)
    present = counts > 0
    weights[present] = valid.numel() / (n_classes * counts[present])
    return weights


def smoothing_vector(task: TaskSpec, global_eps: float, per_class: Mapping[str, float] | None) -> torch.Tensor:
    """ε per true class: the global value unless the config names the class (e.g. noisy `other`: more)."""
    per_class = per_class or {}
    return torch.tensor([float(per_class.get(label, global_eps)) for label in task.labels])


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    gamma: float = 0.0,
    smoothing: torch.Tensor | float = 0.0,
    class_weights: torch.Tensor | None = None,
    denominator: float | None = None,
) -> torch.Tensor:
    """Mean focal loss over samples whose target is not IGNORE; 0 (with a graph) when none is labelled.
    `denominator`: divide the (weighted) sum by this instead of this batch's own Σ w (a distributed process's
    slice of a global batch: the global batch's, so that the slices' losses add up to the global loss)."""
    mask = targets != IGNORE
    if not bool(mask.any()):
        return logits.sum() * 0.0
    logits = logits[mask].float()
    y = targets[mask]
    n_classes = logits.shape[-1]
    log_p = F.log_softmax(logits, dim=-1)
    eps = (
        smoothing[y].to(logits)
        if isinstance(smoothing, torch.Tensor)
        else torch.full_like(y, smoothing, dtype=logits.dtype)
    )
    q = F.one_hot(y, n_classes).to(logits) * (1 - eps).unsqueeze(-1) + (eps / n_classes).unsqueeze(-1)
    modulator = (1 - log_p.exp()).clamp(min=0).pow(gamma) if gamma else 1.0
    per_sample = -(q * modulator * log_p).sum(dim=-1)
    if class_weights is None:
        return per_sample.mean() if denominator is None else per_sample.sum() / denominator
    w = class_weights.to(logits)[y]
    return (per_sample * w).sum() / (w.sum() if denominator is None else denominator)


def loss_denominator(targets: torch.Tensor, class_weights: torch.Tensor | None) -> float:
    """What focal_loss divides by for these targets: Σ w_y over the labelled ones (their count unweighted)."""
    y = targets[targets != IGNORE]
    if class_weights is None:
        return float(y.numel())
    return float(class_weights[y.to(class_weights.device)].sum())


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor, count: int | None = None) -> torch.Tensor:
    """R-Drop's regulariser: ½ (KL(p_a‖p_b) + KL(p_b‖p_a)), summed over classes, mean over samples.

    It needs no label, so it also regularises samples whose label is missing for this task.
    """
    log_a = F.log_softmax(logits_a.float(), dim=-1)
    log_b = F.log_softmax(logits_b.float(), dim=-1)
    kl_ab = (log_a.exp() * (log_a - log_b)).sum(dim=-1)
    kl_ba = (log_b.exp() * (log_b - log_a)).sum(dim=-1)
    both = 0.5 * (kl_ab + kl_ba)
    return both.mean() if count is None else both.sum() / count


class MultiTaskLoss:
    """Σ_tasks weight_t · (focal loss_t [+ α · symmetric KL_t when two dropout passes are given])."""

    def __init__(
        self,
        tasks: list[TaskSpec],
        *,
        gamma: float,
        smoothing: dict[str, torch.Tensor],
        class_weights: dict[str, torch.Tensor] | None,
        task_weights: Mapping[str, float],
        rdrop_alpha: float,
    ) -> None:
        self.tasks = tasks
        self.gamma = gamma
        self.smoothing = smoothing
        self.class_weights = class_weights or {}
        self.task_weights = {t.name: float(task_weights.get(t.name, 1.0)) for t in tasks}
        self.rdrop_alpha = rdrop_alpha

    def to(self, device: torch.device) -> MultiTaskLoss:
        self.smoothing = {k: v.to(device) for k, v in self.smoothing.items()}
        self.class_weights = {k: v.to(device) for k, v in self.class_weights.items()}
        return self

    def task_loss(
        self, name: str, logits: torch.Tensor, targets: torch.Tensor, denominator: float | None = None
    ) -> torch.Tensor:
        return focal_loss(
            logits,
            targets,
            gamma=self.gamma,
            smoothing=self.smoothing[name],
            class_weights=self.class_weights.get(name),
            denominator=denominator,
        )

    def denominators(self, labels: torch.Tensor) -> dict[str, float]:
        """A global batch's normalisers (its labels: every process holds them): per task, the focal loss's;
        under "": the sample count R-Drop's KL averages over. With them each process's slice gives its share
        of the global batch's loss, exactly, whatever the classes and missing labels in the slice."""
        out = {t.name: loss_denominator(labels[:, j], self.class_weights.get(t.name)) for j, t in enumerate(self.tasks)}
        out[""] = float(labels.shape[0])
        return out

    def __call__(
        self,
        outputs: dict[str, torch.Tensor],
        labels: torch.Tensor,
        second: dict[str, torch.Tensor] | None = None,
        denominators: dict[str, float] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        total = torch.zeros((), device=labels.device)
        parts: dict[str, float] = {}
        norm = denominators or {}
        for j, task in enumerate(self.tasks):
            targets = labels[:, j]
            denominator = norm.get(task.name)
            if denominator == 0.0:  # no labelled text for this task in the whole global batch
                denominator = None
            loss = self.task_loss(task.name, outputs[task.name], targets, denominator)
            if second is not None:
                loss = 0.5 * (loss + self.task_loss(task.name, second[task.name], targets, denominator))
                if self.rdrop_alpha:
                    count = int(norm[""]) if "" in norm else None
                    loss = loss + self.rdrop_alpha * symmetric_kl(outputs[task.name], second[task.name], count)
            parts[task.name] = float(loss.detach())
            total = total + self.task_weights[task.name] * loss
        return total, parts
