"""Import (multipart CSV upload) and export (streamed CSV or JSON lines)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import StreamingResponse

from suppilo.adapters.http.deps import Reader, Writer, session_factory
from suppilo.transfer import exporter, importer
from suppilo.transfer.mapping import parse_overrides

router = APIRouter(prefix="/api/v1", tags=["transfer"])

KindParam = Literal["contacts", "companies", "products", "orders"]
MAX_INLINE_ERRORS = 1000


@router.post("/imports/{kind}")
def import_upload(
    kind: KindParam,
    principal: Writer,
    request: Request,
    file: UploadFile = File(..., description="The CSV file."),
    mapping: list[str] = Form(default=[], alias="map", description="'Column=field' overrides."),
    channel: str = Form("offline", description="Channel of the import touch when the file has no source column."),
) -> dict[str, Any]:
    """Import a CSV file; the response is the summary with the refused rows (first 1,000) inline."""
    overrides = parse_overrides(mapping)
    with tempfile.NamedTemporaryFile(suffix=".csv") as tmp:
        shutil.copyfileobj(file.file, tmp, length=1024 * 1024)
        tmp.flush()
        summary = importer.import_file(
            session_factory(request),
            principal.workspace_id,
            kind,
            tmp.name,
            filename=file.filename or "upload.csv",
            overrides=overrides,
            channel=channel,
            keep_errors=MAX_INLINE_ERRORS,
        )
    return summary.to_dict(max_errors=MAX_INLINE_ERRORS)


@router.get("/exports/{kind}")
def export_download(
    kind: KindParam,
    principal: Reader,
    request: Request,
    fmt: Literal["csv", "json"] = Query("csv", alias="format"),
) -> StreamingResponse:
    """Stream the workspace's records as CSV (formula cells neutralised) or JSON lines."""
    factory = request.app.state.read_session_factory
    workspace_id = principal.workspace_id

    def body() -> Iterator[bytes]:
        with factory() as session:
            for chunk in exporter.export_stream(session, workspace_id, kind, fmt):
                yield chunk.encode("utf-8")

    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    ext = "csv" if fmt == "csv" else "jsonl"
    return StreamingResponse(
        body(), media_type=media, headers={"Content-Disposition": f'attachment; filename="{kind}.{ext}"'}
    )
