"""HTTP routes: forms."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["capture"])
