"""Request and response bodies of a dataset's variant settings, protected terms and auto-approval."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.schemas import RequestBody


class ProtectedTermRead(BaseModel):
    term: str
    origin: str = Field(description="seeded (most associated with a class) or manual")
    task: str | None = Field(description="seeded: the task of the class it marks")
    label: str | None
    score: float | None = Field(description="seeded: its chi² with that class")
    created_at: datetime


class ProtectedTerms(BaseModel):
    dataset: str
    seeded_at: str | None = Field(description="when the seeded terms were computed; null: never")
    terms: list[ProtectedTermRead]


class ProtectedTermsEdit(RequestBody):
    add: list[str] = Field(default_factory=list, max_length=5000, description="words or phrases to protect")
    remove: list[str] = Field(default_factory=list, max_length=5000)


class ProtectedTermsSeed(RequestBody):
    per_class: int = Field(default=10, ge=1, le=200, description="the strongest words per task × class")


class VariantSettingsRead(BaseModel):
    auto_reject_label_changed: bool = Field(
        description='send variants the label model is confident change a label to rejection (reviewer "auto")'
    )
    label_change_confidence: float = Field(description="the other label's probability that makes it confident")
    label_model_id: int | None = Field(description="the run or ensemble that scores new variants; null: latest")
    label_model_in_use: int | None = Field(description="the model new variants are scored with now, if any")
    auto_approval_enabled: bool
    protected_terms_seeded_at: str | None


class AutoApprovalAgreement(BaseModel):
    auto_approved: int
    auto_rejected: int
    audit_total: int = Field(description="variants the rule would have approved, left to people as an audit")
    audit_decided: int
    audit_approved: int
    agreement: float | None = Field(description="share of decided audits people approved")
    agreement_ci95: tuple[float, float] | None = Field(description="exact (Clopper–Pearson) 95% interval")
    auto_approved_later_rejected: int


class AutoApprovalStatus(BaseModel):
    dataset: str
    enabled: bool
    rule: dict[str, Any] | None = Field(description="the stored rule with its numbers (threshold, lower bound...)")
    preview: dict[str, Any] | None = Field(description="what the reviewed variants support now")
    agreement: AutoApprovalAgreement


class AutoApprovalApplied(BaseModel):
    considered: int
    approved: int
    audit: int
    outside_scope: int = Field(description="left to people: outside what the reviewed variants showed the rule")
    below_threshold: int = Field(description="left to people: an approval score below the rule's threshold")
