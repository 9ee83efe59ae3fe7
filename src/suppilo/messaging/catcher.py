"""The built-in mail catcher: an SMTP server (aiosmtpd) that keeps every message it receives so a user can read
what suppilo sent without a real mail server. Messages are stored as ``<data_dir>/mailcatcher/<id>.eml`` with
one JSON line per message in ``index.jsonl`` (id, received time, envelope from and to, subject, Message-ID)."""

from __future__ import annotations

import builtins
import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

log = logging.getLogger("suppilo.mailcatcher")


@dataclass(frozen=True, slots=True)
class CaughtMessage:
    """One received message as listed in the index."""

    id: int
    received_at: str
    envelope_from: str
    envelope_to: list[str]
    subject: str
    message_id: str
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "received_at": self.received_at,
            "from": self.envelope_from,
            "to": self.envelope_to,
            "subject": self.subject,
            "message_id": self.message_id,
            "size": self.size,
        }


class MailStore:
    """The stored messages of a data directory; safe to read while a catcher writes."""

    def __init__(self, data_dir: str | Path) -> None:
        self.directory = Path(data_dir) / "mailcatcher"
        self.index_path = self.directory / "index.jsonl"
        self._lock = threading.Lock()
        self._next_id: int | None = None

    def _read_index(self) -> list[CaughtMessage]:
        if not self.index_path.exists():
            return []
        out: list[CaughtMessage] = []
        for line in self.index_path.read_text(encoding="utf-8").splitlines():
            try:
                d = json.loads(line)
                out.append(
                    CaughtMessage(
                        id=int(d["id"]),
                        received_at=d["received_at"],
                        envelope_from=d["from"],
                        envelope_to=list(d["to"]),
                        subject=d.get("subject", ""),
                        message_id=d.get("message_id", ""),
                        size=int(d.get("size", 0)),
                    )
                )
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash
        return out

    def list(self, *, limit: int | None = None) -> list[CaughtMessage]:
        """Messages, newest first."""
        rows = sorted(self._read_index(), key=lambda m: m.id, reverse=True)
        return rows[:limit] if limit else rows

    def path_of(self, message_id: int) -> Path:
        """The .eml file of a message (it may not exist)."""
        return self.directory / f"{int(message_id)}.eml"

    def read(self, message_id: int) -> bytes:
        """The raw message; KeyError when there is none with this id."""
        path = self.path_of(message_id)
        if not path.exists():
            raise KeyError(message_id)
        return path.read_bytes()

    def store(self, envelope_from: str, envelope_to: builtins.list[str], data: bytes) -> CaughtMessage:
        """Keep a received message: the .eml is written and synced before its index line is appended."""
        headers = BytesHeaderParser(policy=policy.default).parsebytes(data)
        subject = " ".join(str(headers.get("subject", "") or "").split())
        msg_id = str(headers.get("message-id", "") or "").strip()
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            if self._next_id is None:
                existing = self._read_index()
                self._next_id = max((m.id for m in existing), default=0) + 1
            number = self._next_id
            self._next_id += 1
            tmp = self.directory / f".{number}.eml.tmp"
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path_of(number))
            caught = CaughtMessage(
                id=number,
                received_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
                envelope_from=envelope_from,
                envelope_to=list(envelope_to),
                subject=subject,
                message_id=msg_id,
                size=len(data),
            )
            with open(self.index_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(caught.as_dict(), ensure_ascii=False) + "\n")
        return caught


class _Handler:
    def __init__(self, store: MailStore) -> None:
        self.store = store

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content or b""
        if isinstance(data, str):
            data = data.encode("utf-8")
        try:
            self.store.store(envelope.mail_from or "", list(envelope.rcpt_tos), data)
        except OSError as exc:
            log.error("mail catcher cannot store a message: %s", exc)
            return "451 4.3.0 cannot store the message now"
        return "250 2.0.0 OK: message caught"


class MailCatcher:
    """An SMTP server on ``host:port`` that stores what it receives under ``<data_dir>/mailcatcher``."""

    def __init__(self, data_dir: str | Path, host: str = "127.0.0.1", port: int = 2525) -> None:
        self.store = MailStore(data_dir)
        self.host = host
        self.port = port
        self._controller: Controller | None = None

    def start(self) -> None:
        """Start listening (in a thread of its own); returns when the server accepts connections."""
        controller = Controller(
            _Handler(self.store),
            hostname=self.host,
            port=self.port,
            enable_SMTPUTF8=True,
            decode_data=False,
            ready_timeout=10.0,
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Stop listening."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    def list(self, *, limit: int | None = None) -> list[CaughtMessage]:
        """Messages received so far, newest first."""
        return self.store.list(limit=limit)

    def read(self, message_id: int) -> bytes:
        """A received message's raw bytes."""
        return self.store.read(message_id)
