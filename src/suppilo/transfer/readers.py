"""Reading CSV files of unknown origin: encoding (UTF-8 with or without BOM, else cp1252), delimiter, line numbers."""

from __future__ import annotations

import codecs
import csv
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from suppilo.errors import DomainError

DELIMITERS = (",", ";", "\t", "|")
_SNIFF_BYTES = 64 * 1024
_CHUNK = 1024 * 1024

csv.field_size_limit(16 * 1024 * 1024)


class UnreadableFile(DomainError):
    """The file cannot be read as a table at all (nothing is imported)."""

    status = 422
    default_code = "unreadable_file"


def detect_encoding(path: Path) -> str:
    """``utf-8-sig`` (BOM), ``utf-8``, or ``cp1252`` when the bytes are not UTF-8 (``latin-1`` as the last resort).

    The whole file is decoded once in chunks, so memory stays constant and a bad byte at the end is still seen.
    """
    with path.open("rb") as fh:
        head = fh.read(3)
        bom = head == codecs.BOM_UTF8
        fh.seek(0)
        decoder: codecs.IncrementalDecoder = codecs.getincrementaldecoder("utf-8")()
        try:
            while chunk := fh.read(_CHUNK):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
            return "utf-8-sig" if bom else "utf-8"
        except UnicodeDecodeError:
            pass
        fh.seek(0)
        decoder = codecs.getincrementaldecoder("cp1252")()
        try:
            while chunk := fh.read(_CHUNK):
                decoder.decode(chunk)
            return "cp1252"
        except UnicodeDecodeError:
            return "latin-1"


def sniff_delimiter(sample: str) -> str:
    """The delimiter of the header line: the most frequent of , ; tab | outside quotes (',' when none)."""
    counts = dict.fromkeys(DELIMITERS, 0)
    in_quotes = False
    for ch in sample:
        if ch == '"':
            in_quotes = not in_quotes
        elif not in_quotes:
            if ch in ("\n", "\r"):
                break
            if ch in counts:
                counts[ch] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


class _CountingReader(io.RawIOBase):
    """A raw binary reader that counts the bytes handed out (progress without ``tell()`` on a text stream)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


@dataclass
class CsvTable:
    """An open CSV file: its header, encoding and delimiter, and an iterator over ``(line, cells)``."""

    path: Path
    encoding: str
    delimiter: str
    header: list[str]
    total_bytes: int
    _counter: _CountingReader
    _text: IO[str]
    _reader: Any
    _header_end_line: int = 1
    blank_lines: int = field(default=0)

    @property
    def bytes_read(self) -> int:
        """Bytes consumed so far (for progress bars)."""
        return self._counter.count

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """Data rows with the physical line number where each starts (embedded newlines counted)."""
        reader = self._reader
        previous_end = self._header_end_line
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise UnreadableFile("file", f"line {previous_end + 1}: {exc}") from exc
            start = previous_end + 1
            previous_end = reader.line_num
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                self.blank_lines += 1
                continue
            yield start, cells

    def close(self) -> None:
        """Close the file."""
        self._text.close()

    def __enter__(self) -> CsvTable:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def open_table(path: str | os.PathLike[str], *, encoding: str | None = None, delimiter: str | None = None) -> CsvTable:
    """Open ``path`` as a CSV table; raises UnreadableFile when it is empty, binary or has no header."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise UnreadableFile("file", f"cannot open {p.name}: {exc.strerror or exc}") from exc
    if size == 0:
        raise UnreadableFile("file", f"{p.name} is empty", params={"reason": "empty"})
    with p.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if b"\x00" in head:
        raise UnreadableFile(
            "file",
            f"{p.name} is not a text file (it contains NUL bytes; UTF-16 is not supported)",
            params={"reason": "not_text"},
        )
    enc = encoding or detect_encoding(p)
    sample = head.decode(enc, errors="replace")
    if sample.startswith("\ufeff"):
        sample = sample[1:]
    delim = delimiter or sniff_delimiter(sample)
    counter = _CountingReader(p.open("rb"))
    text = io.TextIOWrapper(io.BufferedReader(counter, buffer_size=_CHUNK), encoding=enc, newline="")
    reader = csv.reader(text, delimiter=delim, quotechar='"', doublequote=True, strict=False)
    try:
        header: list[str] = []
        while not header or all(not h.strip() for h in header):
            header = next(reader)
    except StopIteration:
        text.close()
        raise UnreadableFile("file", f"{p.name} has no header row", params={"reason": "no_header"}) from None
    except csv.Error as exc:
        text.close()
        raise UnreadableFile("file", f"{p.name}: {exc}") from exc
    header = [h.strip().lstrip("\ufeff").strip() for h in header]
    if len(header) == 1 and len(header[0]) > 200:
        text.close()
        raise UnreadableFile(
            "file", f"{p.name} does not look like a CSV file (no delimiter in the header)", params={"reason": "not_csv"}
        )
    return CsvTable(p, enc, delim, header, size, counter, text, reader, reader.line_num)
