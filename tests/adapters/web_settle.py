"""Following a page's "being computed" state the way its polling does: ask again once the background work is done."""

from __future__ import annotations

from typing import Any

from suppilo.adapters.web.background import wait_idle

COMPUTING = "data-computing"


def settled(client: Any, url: str, **kwargs: Any) -> Any:
    """The page as a user sees it once the figures it is computing in the background are there."""
    res = client.get(url, **kwargs)
    for _ in range(3):  # a page may compute two things in turn (e.g. a snapshot, then its stale refresh)
        if COMPUTING not in res.text:
            return res
        assert wait_idle(120), "the page's background computation did not finish"
        res = client.get(url, **kwargs)
    return res
