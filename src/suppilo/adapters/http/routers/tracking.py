"""HTTP routes: tracking."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["tracking"])
