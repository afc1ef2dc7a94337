"""RFC 9457 problem details for every refusal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi.responses import JSONResponse

from services.intake.adapters.base import FieldError

PROBLEM_TYPE = "https://ticketflow.dev/problems/"


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    errors: Sequence[FieldError] = (),
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    if errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=dict(headers or {})
    )
