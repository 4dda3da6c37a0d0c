from fastapi import APIRouter

from api.json_body import StrictJSONRoute

router = APIRouter(route_class=StrictJSONRoute)


@router.get("/healthz", tags=["health"])
def healthz() -> dict[str, str]:
    """Liveness probe (no authentication)."""
    return {"status": "ok"}
