"""A dataset's variant settings: what happens to a new variant before anyone reviews it.

Stored in `datasets.variant_settings` (JSON), read and written through this one model so that every door sees
the same defaults and bounds:
- `auto_reject_label_changed`: variants the dataset's label model is confident change a label go straight to
  rejection (audited: reviewer "auto", reason "label changed (model)");
- `label_change_confidence`: how sure the model must be of the other label (its probability) to call it a
  change; below it a disagreement is only flagged;
- `label_model_id`: the run or ensemble that scores new variants; empty: the dataset's latest finished one;
- `auto_approval`: the calibrated rule (services/auto_approval.py writes it); `protected_terms_seeded_at`:
  when the protected terms were seeded (services/protected_terms.py), so that a lead's deletions stay deleted.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from core.errors import ValidationFailed
from core.inputs import MAX_ID, InputModel
from db.datasets import locked_variant_settings
from db.models import Dataset, User
from services.access import Need

AUTO_REJECT_REASON = "label changed (model)"


class VariantSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    auto_reject_label_changed: bool = False
    label_change_confidence: float = Field(default=0.8, ge=0.5, le=1.0)
    label_model_id: int | None = Field(default=None, ge=1)
    auto_approval: dict[str, Any] | None = None
    protected_terms_seeded_at: str | None = None


class VariantSettingsUpdate(InputModel):
    """What a lead may change directly (the auto-approval rule changes through its own endpoint)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    auto_reject_label_changed: bool | None = None
    label_change_confidence: float | None = Field(default=None, ge=0.5, le=1.0)
    label_model_id: int | None = Field(default=None, ge=0, le=MAX_ID, description="0 clears the pin (the latest model)")


def variant_settings(dataset: Dataset) -> VariantSettings:
    return VariantSettings.model_validate(dataset.variant_settings or {})


def locked_settings(session: Session, dataset: Dataset) -> VariantSettings:
    """The dataset's settings as last committed, its row held until the caller commits: what a change reads
    before it stores, so that two changes at once (a lead's setting, a plan's first seeding of the protected
    terms) take turns and neither writes back what the other replaced."""
    raw = locked_variant_settings(session, dataset.id)
    set_committed_value(dataset, "variant_settings", raw)  # what later reads of this object see, unchanged
    return variant_settings(dataset)


def store(session: Session, dataset: Dataset, settings: VariantSettings) -> VariantSettings:
    dataset.variant_settings = settings.model_dump()
    session.flush()
    return settings


def update_variant_settings(
    session: Session, dataset: Dataset, changes: dict[str, Any], user: User | None = None
) -> VariantSettings:
    """Apply the given keys; a pinned label model must be a finished run or ensemble of this dataset."""
    current = locked_settings(session, dataset)
    updated = current.model_copy(update={k: v for k, v in changes.items() if v is not None})
    if changes.get("label_model_id") == 0:
        updated.label_model_id = None
    elif changes.get("label_model_id"):
        from services.prediction import check_label_sets, model_spec

        spec = model_spec(session, int(changes["label_model_id"]), user, field_name="label_model_id")
        if spec.dataset_id != dataset.id:
            raise ValidationFailed(f"run {spec.id} was trained on another dataset", field="label_model_id")
        check_label_sets(spec, dataset, "label_model_id")
    return store(session, dataset, updated)


def settings_view(session: Session, name: str, user: User | None) -> dict[str, Any]:
    from services.datasets import dataset_named
    from services.variant_scoring import label_model_for

    dataset = dataset_named(session, name, user)
    current = variant_settings(dataset)
    model = label_model_for(session, dataset, current.label_model_id)
    return {
        "auto_reject_label_changed": current.auto_reject_label_changed,
        "label_change_confidence": current.label_change_confidence,
        "label_model_id": current.label_model_id,
        "label_model_in_use": model.id if model else None,
        "auto_approval_enabled": bool(current.auto_approval and current.auto_approval.get("enabled")),
        "protected_terms_seeded_at": current.protected_terms_seeded_at,
    }


def update_named(session: Session, name: str, changes: dict[str, Any], user: User | None) -> dict[str, Any]:
    """The project's leads."""
    from services.datasets import dataset_named

    update_variant_settings(session, dataset_named(session, name, user, Need.lead), changes, user)
    return settings_view(session, name, user)
