"""Import jobs: an uploaded CSV file waits for its column mapping, then runs through ``importer.import_file`` off
the request thread while its progress is written to ``import_jobs`` (so any request of any process can show it).

The runner writes progress in its own short transactions after each batch the importer commits; the import itself
commits once per batch and is idempotent (upserts on the email), so a job interrupted by a restart can be started
again from a new upload without duplicates.
"""

from __future__ import annotations

import csv
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from suppilo.contacts.models import PropertyDefinition
from suppilo.db.base import utcnow
from suppilo.errors import DomainError, NotFound
from suppilo.transfer import importer
from suppilo.transfer.mapping import FIELDS, REQUIRED, header_key
from suppilo.transfer.models import ImportJob
from suppilo.transfer.readers import UnreadableFile, open_table

# The contact fields the web mapping offers, in the order of its select.
WEB_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "phone",
    "mobile_phone",
    "job_title",
    "company_name",
    "company_domain",
    "country",
    "region",
    "city",
    "language",
    "timezone",
    "tags",
    "lifecycle_stage",
    "source",
    "owner",
    "external_id",
    "created_at",
)
# The kinds of record the web import takes, and the fields its mapping offers for each (contacts: the list above;
# companies and orders: every field the importer reads).
KINDS = ("contacts", "companies", "orders")
FIELDS_OF: dict[str, tuple[str, ...]] = {
    "contacts": WEB_FIELDS,
    "companies": tuple(FIELDS["companies"]),
    "orders": tuple(FIELDS["orders"]),
}
IGNORE = "ignore"
PROPERTY_PREFIX = "properties."
MAX_UPLOAD_BYTES = 512 * 1024 * 1024
SAMPLE_ROWS = 5
MAX_COLUMNS = 200
# A running job whose progress has not moved for this long is shown as interrupted (its process is gone).
STALE_SECONDS = 15 * 60


class ImportJobError(DomainError):
    """A refused upload or mapping."""

    default_code = "invalid_import"


def upload_dir(data_dir: Path, workspace_id: int) -> Path:
    path = Path(data_dir) / "imports" / f"workspace-{workspace_id}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_upload_path(data_dir: Path, workspace_id: int) -> Path:
    """A fresh, unguessable file name for an upload of this workspace."""
    return upload_dir(data_dir, workspace_id) / f"{secrets.token_hex(16)}.csv"


def contact_properties(session: Session, workspace_id: int) -> list[str]:
    """Names of the custom contact properties a column may fill."""
    return properties_of(session, workspace_id, "contacts")


def properties_of(session: Session, workspace_id: int, kind: str) -> list[str]:
    """Names of the custom properties of ``kind`` a column may fill (orders have none)."""
    types = {"contacts": ["contacts", "contact"], "companies": ["companies", "company"]}.get(kind)
    if not types:
        return []
    return list(
        session.scalars(
            select(PropertyDefinition.name)
            .where(PropertyDefinition.workspace_id == workspace_id, PropertyDefinition.object_type.in_(types))
            .order_by(PropertyDefinition.name)
        )
    )


def create_job(
    session: Session,
    workspace_id: int,
    *,
    filename: str,
    stored_path: Path,
    user_id: int | None,
    kind: str = "contacts",
) -> ImportJob:
    """Register an uploaded file; reads its header (UnreadableFile on ``file`` when it is not a table)."""
    with open_table(stored_path) as table:
        header = list(table.header)
        total = table.total_bytes
    if len(header) > MAX_COLUMNS:
        raise ImportJobError(
            "file",
            f"the file has {len(header)} columns; at most {MAX_COLUMNS} can be mapped",
            code="too_many_columns",
            params={"columns": str(len(header)), "most": str(MAX_COLUMNS)},
        )
    if kind not in KINDS:
        raise ImportJobError("kind", f"unknown import kind {kind!r}; choose one of {', '.join(KINDS)}")
    job = ImportJob(
        workspace_id=workspace_id,
        kind=kind,
        filename=filename[:255] or "upload.csv",
        stored_path=str(stored_path),
        status="mapping",
        header=header,
        mapping={},
        total_bytes=total,
        created_by=user_id,
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, workspace_id: int, job_id: int) -> ImportJob:
    job = session.scalar(select(ImportJob).where(ImportJob.workspace_id == workspace_id, ImportJob.id == job_id))
    if job is None:
        raise NotFound("import", f"import {job_id} not found")
    return job


def recent_jobs(session: Session, workspace_id: int, limit: int = 20) -> list[ImportJob]:
    return list(
        session.scalars(
            select(ImportJob).where(ImportJob.workspace_id == workspace_id).order_by(ImportJob.id.desc()).limit(limit)
        )
    )


def sample_rows(job: ImportJob, limit: int = SAMPLE_ROWS) -> list[tuple[int, list[str]]]:
    """The first data rows of the stored file with their line numbers (empty when the file is gone)."""
    out: list[tuple[int, list[str]]] = []
    try:
        with open_table(job.stored_path) as table:
            for line, cells in table.rows():
                out.append((line, cells))
                if len(out) >= limit:
                    break
    except (UnreadableFile, UnicodeDecodeError):
        return out
    return out


def guess(header: list[str], properties: list[str], kind: str = "contacts") -> list[str]:
    """A target per column from its header (aliases of ``transfer.mapping``): a field, ``properties.<name>`` or
    ``ignore``; the first column claiming a field wins."""
    alias: dict[str, str] = {}
    fields = FIELDS_OF[kind]
    for name in fields:
        alias.setdefault(header_key(name), name)
    for name in fields:
        for a in FIELDS[kind].get(name, ()):
            alias.setdefault(a, name)
    props = {header_key(p): p for p in properties}
    taken: set[str] = set()
    out = []
    for column in header:
        key = header_key(column)
        target = alias.get(key)
        if target is not None and target not in taken:
            taken.add(target)
            out.append(target)
        elif key in props and PROPERTY_PREFIX + props[key] not in taken:
            taken.add(PROPERTY_PREFIX + props[key])
            out.append(PROPERTY_PREFIX + props[key])
        else:
            out.append(IGNORE)
    return out


@dataclass
class MappingProblems(Exception):
    """Per-column problems of a submitted mapping (column index → message), plus one for the whole form; ``codes``
    and ``form_code`` name the same problems as (code, parameters), for an interface that words them itself."""

    columns: dict[int, str]
    form: str = ""
    codes: dict[int, tuple[str, dict[str, str]]] = field(default_factory=dict)
    form_code: tuple[str, dict[str, str]] | None = None


def check_mapping(
    header: list[str], targets: list[str], properties: list[str], kind: str = "contacts"
) -> dict[str, str]:
    """Validate the chosen targets; returns the importer's overrides ``{column: target}`` or raises
    MappingProblems naming each offending column."""
    problems: dict[int, str] = {}
    codes: dict[int, tuple[str, dict[str, str]]] = {}

    def problem(i: int, code: str, params: dict[str, str], message: str) -> None:
        if i not in problems:
            problems[i] = message
            codes[i] = (code, params)

    if len(targets) != len(header):
        raise MappingProblems(
            {}, "the form does not match the file's columns; upload the file again", form_code=("mapping_stale", {})
        )
    allowed = {*FIELDS_OF[kind], IGNORE, *(PROPERTY_PREFIX + p for p in properties)}
    seen: dict[str, int] = {}
    for i, target in enumerate(targets):
        if target not in allowed:
            problem(i, "unknown_target", {"target": target}, f"{target!r} is not a field you can map to")
        elif target != IGNORE:
            if target in seen:
                column = header[seen[target]]
                problem(i, "target_taken", {"column": column}, f"column {column!r} is already mapped to this field")
            else:
                seen[target] = i
    folded: dict[str, int] = {}
    for i, column in enumerate(header):
        key = header_key(column)
        if key in folded and targets[i] != IGNORE:
            problem(
                i,
                "duplicate_column",
                {"column": column},
                f"two columns are named {column!r}; rename one in the file or ignore it",
            )
        folded.setdefault(key, i)
    if kind == "contacts" and "email" not in seen and not problems:
        raise MappingProblems(
            {},
            "map one column to Email: contacts are matched and updated by their email",
            form_code=("email_unmapped", {}),
        )
    key = REQUIRED[kind][0]
    if key not in seen and not problems:
        raise MappingProblems(
            {},
            f"map one column to {key}: {kind} are matched and updated by it",
            form_code=("key_unmapped", {"field": key}),
        )
    if problems:
        raise MappingProblems(problems, codes=codes)
    return {
        column: targets[i] for i, column in enumerate(header) if header_key(column) and folded[header_key(column)] == i
    }


def queue(session: Session, job: ImportJob, overrides: dict[str, str]) -> None:
    """Keep the mapping and mark the job queued (409-style DomainError when it is not waiting for a mapping)."""
    if job.status != "mapping":
        raise ImportJobError("import", "this import has already been started", code="already_started")
    job.mapping = overrides
    job.status = "queued"
    session.flush()


def refused_so_far(error_path: str) -> int:
    """Rows the importer has written to its error file so far (the file is written as rows are refused; a row
    still in its write buffer is counted at the next batch)."""
    p = Path(error_path)
    try:
        if not p.exists() or p.stat().st_size > 64 * 1024 * 1024:
            return 0
        with p.open(encoding="utf-8", newline="") as fh:
            return max(0, sum(1 for _ in csv.reader(fh)) - 1)
    except (OSError, csv.Error, UnicodeDecodeError):
        return 0


def is_stale(job: ImportJob) -> bool:
    """A running job whose runner stopped reporting (its process ended)."""
    return job.status in ("queued", "running") and (utcnow() - job.updated_at).total_seconds() > STALE_SECONDS


def run(factory: sessionmaker[Session], workspace_id: int, job_id: int, *, batch_size: int | None = None) -> None:
    """Run a queued job to its end: progress after each committed batch, then the summary (or the error)."""
    with factory() as session:
        job = get_job(session, workspace_id, job_id)
        if job.status != "queued":
            return
        job.status = "running"
        job.started_at = utcnow()
        path, filename, overrides, kind = job.stored_path, job.filename, dict(job.mapping), job.kind
        error_path = str(Path(path).with_suffix(".errors.csv"))
        session.commit()

    def progress(rows: int, read: int, total: int) -> None:
        with factory() as s:
            s.execute(
                update(ImportJob)
                .where(ImportJob.workspace_id == workspace_id, ImportJob.id == job_id)
                .values(
                    rows_done=rows,
                    bytes_read=read,
                    total_bytes=total,
                    failed=refused_so_far(error_path),
                    updated_at=utcnow(),
                )
            )
            s.commit()

    values: dict[str, Any]
    try:
        kwargs: dict[str, Any] = {"batch_size": batch_size} if batch_size else {}
        summary = importer.import_file(
            factory,
            workspace_id,
            kind,
            path,
            filename=filename,
            overrides=overrides,
            channel="offline",
            error_path=error_path,
            progress=progress,
            **kwargs,
        )
        data = summary.to_dict(max_errors=1000)
        values = {
            "status": "done",
            "summary": data,
            "rows_done": summary.rows,
            "failed": summary.failed,
            "bytes_read": Path(path).stat().st_size,
            "error_path": summary.error_file,
        }
    except DomainError as exc:
        values = {"status": "failed", "error": exc.message}
    except Exception as exc:
        values = {"status": "failed", "error": f"the import stopped: {type(exc).__name__}: {exc}"[:2000]}
    values["finished_at"] = utcnow()
    values["updated_at"] = utcnow()
    with factory() as session:
        session.execute(
            update(ImportJob).where(ImportJob.workspace_id == workspace_id, ImportJob.id == job_id).values(**values)
        )
        session.commit()
    Path(path).unlink(missing_ok=True)


def start_in_background(factory: sessionmaker[Session], workspace_id: int, job_id: int) -> threading.Thread:
    """Run the job in a thread of this process (the request answers at once; progress is read from the table)."""
    thread = threading.Thread(
        target=run, args=(factory, workspace_id, job_id), name=f"suppilo-import-{job_id}", daemon=True
    )
    thread.start()
    return thread
