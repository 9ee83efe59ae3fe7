"""HTTP routes: transfer."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["transfer"])
