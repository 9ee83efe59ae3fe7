"""Import contacts, companies or orders from a CSV file in three steps — upload (saying what the file holds), map
the columns (guessed from the header, shown with sample rows), watch the progress (htmx polls the job) and read the
summary — and export CSV files.

The import runs in a background thread of the web process through ``transfer.jobs`` (``importer.import_file`` with
a progress callback); its state lives in ``import_jobs`` so every request can show it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile

from suppilo.adapters.http.deps import DbSession, ReadSession, session_factory
from suppilo.adapters.web import csrf
from suppilo.adapters.web.auth import WebError, Workspace_
from suppilo.adapters.web.errors import coded_text, error_text
from suppilo.adapters.web.i18n import translations
from suppilo.adapters.web.templating import render
from suppilo.errors import DomainError, NotFound
from suppilo.transfer import exporter, jobs
from suppilo.transfer.models import ImportJob
from suppilo.transfer.readers import UnreadableFile

router = APIRouter()
EXPORT_KINDS = ("contacts", "companies")


def _job_or_404(session: DbSession | ReadSession, workspace_id: int, job_id: int) -> ImportJob:
    try:
        return jobs.get_job(session, workspace_id, job_id)
    except NotFound as exc:
        raise WebError(404, "not_found") from exc


def _upload_page(
    request: Request, ctx: Workspace_, session: ReadSession | DbSession, *, status_code: int = 200, **extra: object
) -> Response:
    return render(
        request,
        "imports.html",
        language=ctx.language,
        timezone=ctx.timezone,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        jobs=jobs.recent_jobs(session, ctx.workspace_id),
        is_stale=jobs.is_stale,
        errors=extra.pop("errors", {}),
        status_code=status_code,
        **extra,
    )


@router.get("/w/{slug}/imports")
def imports(request: Request, ctx: Workspace_, session: ReadSession) -> Response:
    ctx.require("view")
    return _upload_page(request, ctx, session)


@router.post("/w/{slug}/imports")
async def upload(request: Request, ctx: Workspace_, session: DbSession) -> Response:
    await csrf.check(request, ctx.user.info.csrf_token)
    ctx.require("edit")
    form = await request.form()
    tr = translations(ctx.language)
    kind = str(form.get("kind") or "contacts")
    if kind not in jobs.KINDS:
        return _upload_page(
            request, ctx, session, errors={"kind": tr.gettext("Choose one of the kinds offered.")}, status_code=422
        )
    upload_file = form.get("file")
    if not isinstance(upload_file, UploadFile) or not upload_file.filename:
        return _upload_page(
            request, ctx, session, errors={"file": tr.gettext("Choose a CSV file to upload.")}, status_code=422
        )
    data_dir = Path(request.app.state.settings.data_dir)
    target = jobs.new_upload_path(data_dir, ctx.workspace_id)
    size = 0
    with target.open("wb") as out:
        while chunk := await upload_file.read(1024 * 1024):
            size += len(chunk)
            if size > jobs.MAX_UPLOAD_BYTES:
                break
            out.write(chunk)
    if size > jobs.MAX_UPLOAD_BYTES:
        target.unlink(missing_ok=True)
        limit = jobs.MAX_UPLOAD_BYTES // (1024 * 1024)
        return _upload_page(
            request,
            ctx,
            session,
            errors={"file": tr.gettext("The file is larger than %(num)s MB.") % {"num": limit}},
            status_code=422,
        )
    try:
        job = jobs.create_job(
            session,
            ctx.workspace_id,
            filename=Path(upload_file.filename).name,
            stored_path=target,
            user_id=ctx.user.info.user_id,
            kind=kind,
        )
    except (UnreadableFile, DomainError) as exc:
        target.unlink(missing_ok=True)
        return _upload_page(request, ctx, session, errors={"file": error_text(exc, ctx.language)}, status_code=422)
    return RedirectResponse(f"{ctx.base}/imports/{job.id}", status_code=303)


def _mapping_page(
    request: Request,
    ctx: Workspace_,
    session: ReadSession | DbSession,
    job: ImportJob,
    chosen: list[str] | None = None,
    problems: jobs.MappingProblems | None = None,
) -> Response:
    properties = jobs.properties_of(session, ctx.workspace_id, job.kind)
    return render(
        request,
        "import_mapping.html",
        language=ctx.language,
        timezone=ctx.timezone,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        job=job,
        sample=jobs.sample_rows(job),
        chosen=chosen or jobs.guess(job.header, properties, job.kind),
        fields=jobs.FIELDS_OF[job.kind],
        properties=properties,
        problems={
            i: coded_text(*problems.codes[i], ctx.language, text) if i in problems.codes else text
            for i, text in problems.columns.items()
        }
        if problems
        else {},
        form_error=(
            coded_text(*problems.form_code, ctx.language, problems.form) if problems.form_code else problems.form
        )
        if problems
        else "",
        status_code=422 if problems else 200,
    )


def _row_error_words(language: str) -> Callable[[dict[str, Any]], str]:
    """A summary's refused row (``{"line", "error", "code", "params"}``) worded in ``language`` from its code
    (``row.<code>`` in ``errors.MESSAGES``); the English ``error`` for an unknown code or a summary without codes."""

    def words(error: dict[str, Any]) -> str:
        english = str(error.get("error", ""))
        code = error.get("code")
        if not code:
            return english
        params = {str(k): str(v) for k, v in (error.get("params") or {}).items() if k != "reason"}
        return coded_text(f"row.{code}", params, language, english)

    return words


@router.get("/w/{slug}/imports/{job_id}")
def job_page(request: Request, ctx: Workspace_, session: ReadSession, job_id: int) -> Response:
    ctx.require("view")
    job = _job_or_404(session, ctx.workspace_id, job_id)
    if job.status == "mapping":
        return _mapping_page(request, ctx, session, job)
    fragment = bool(request.headers.get("hx-request")) and request.query_params.get("part") == "progress"
    return render(
        request,
        "import_progress_part.html" if fragment else "import_progress.html",
        language=ctx.language,
        timezone=ctx.timezone,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        job=job,
        stale=jobs.is_stale(job),
        row_error=_row_error_words(ctx.language),
    )


@router.post("/w/{slug}/imports/{job_id}/start")
async def start(request: Request, ctx: Workspace_, session: DbSession, job_id: int) -> Response:
    await csrf.check(request, ctx.user.info.csrf_token)
    ctx.require("edit")
    job = _job_or_404(session, ctx.workspace_id, job_id)
    if job.status != "mapping":
        return RedirectResponse(f"{ctx.base}/imports/{job.id}", status_code=303)
    form = await request.form()
    chosen = [str(form.get(f"column_{i}", "")) for i in range(len(job.header))]
    properties = jobs.properties_of(session, ctx.workspace_id, job.kind)
    try:
        overrides = jobs.check_mapping(job.header, chosen, properties, job.kind)
    except jobs.MappingProblems as problems:
        return _mapping_page(request, ctx, session, job, chosen, problems)
    jobs.queue(session, job, overrides)
    session.commit()
    jobs.start_in_background(session_factory(request), ctx.workspace_id, job.id)
    return RedirectResponse(f"{ctx.base}/imports/{job.id}", status_code=303)


@router.get("/w/{slug}/imports/{job_id}/errors.csv")
def error_file(ctx: Workspace_, session: ReadSession, job_id: int) -> Response:
    ctx.require("view")
    job = _job_or_404(session, ctx.workspace_id, job_id)
    if not job.error_path or not Path(job.error_path).exists():
        raise WebError(404, "not_found")
    stem = Path(job.filename).stem or "import"
    return FileResponse(
        job.error_path,
        media_type="text/csv; charset=utf-8",
        filename=f"{stem}-refused-rows.csv",
        headers={"cache-control": "no-store"},
    )


@router.get("/w/{slug}/exports/{kind}.csv")
def export_csv(request: Request, ctx: Workspace_, kind: str) -> Response:
    ctx.require("view")
    if kind not in EXPORT_KINDS:
        raise WebError(404, "not_found")
    factory = request.app.state.read_session_factory
    workspace_id = ctx.workspace_id

    def body() -> Iterator[bytes]:
        with factory() as session:
            for chunk in exporter.export_stream(session, workspace_id, kind, "csv"):
                yield chunk.encode("utf-8")

    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{kind}.csv"', "cache-control": "no-store"},
    )
