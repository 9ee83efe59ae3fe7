"""Every API router, in the order they are mounted."""

from fastapi import APIRouter

from suppilo.adapters.http.routers import workspace

ROUTERS: list[APIRouter] = [workspace.router]
