"""A dataset's variants before review: protected terms, variant settings, calibrated auto-approval."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import CurrentUser, SessionDep
from api.json_body import StrictJSONRoute
from api.variant_schemas import (
    AutoApprovalApplied,
    AutoApprovalStatus,
    ProtectedTerms,
    ProtectedTermsEdit,
    ProtectedTermsSeed,
    VariantSettingsRead,
)
from services import auto_approval, protected_terms, variant_settings
from services.auto_approval import AutoApprovalRequest
from services.variant_settings import VariantSettingsUpdate

router = APIRouter(prefix="/datasets", tags=["variants"], route_class=StrictJSONRoute)


@router.get("/{name}/protected-terms", response_model=ProtectedTerms)
def terms(name: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """The words no augmenter replaces in this dataset (its topic words), seeded and added by hand."""
    return protected_terms.terms_of(session, name, user)


@router.post("/{name}/protected-terms", response_model=ProtectedTerms)
def edit_terms(name: str, body: ProtectedTermsEdit, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Add and remove protected terms (a word protects all its inflections; a phrase, each of its words);
    the project's leads."""
    return protected_terms.edit_terms(session, name, body.add, body.remove, user)


@router.post("/{name}/protected-terms/seed", response_model=ProtectedTerms)
def seed_terms(name: str, body: ProtectedTermsSeed, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Replace the seeded terms with the words most associated with each class now (hand-added ones stay);
    the project's leads."""
    return protected_terms.seed_terms(session, name, body.per_class, user)


@router.get("/{name}/variant-settings", response_model=VariantSettingsRead)
def settings(name: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """What happens to a new variant before review: label-model scoring, automatic rejection, auto-approval."""
    return variant_settings.settings_view(session, name, user)


@router.patch("/{name}/variant-settings", response_model=VariantSettingsRead)
def update_settings(name: str, body: VariantSettingsUpdate, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Send confident label changes to rejection (or not), set how confident, pin the label model (the
    project's leads)."""
    return variant_settings.update_named(session, name, body.model_dump(exclude_unset=True), user)


@router.get("/{name}/auto-approval", response_model=AutoApprovalStatus)
def approval(name: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """The auto-approval rule and its numbers, what the reviewed variants support now, and how often people
    agreed with it on the audited variants."""
    return auto_approval.status_of(session, name, user)


@router.put(
    "/{name}/auto-approval",
    response_model=AutoApprovalStatus,
    responses={409: {"description": "Not enough reviewed variants for a rule: the numbers say why"}},
)
def configure_approval(name: str, body: AutoApprovalRequest, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Switch auto-approval on (calibrating its threshold on the variants people reviewed) or off; the
    project's leads."""
    return auto_approval.configure_named(session, name, body, user)


@router.post(
    "/{name}/auto-approval/apply",
    response_model=AutoApprovalApplied,
    responses={409: {"description": "Auto-approval is off"}},
)
def apply_approval(name: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Run the active rule over the pending variants made before it was switched on (the project's leads)."""
    return auto_approval.apply_named(session, name, user)
