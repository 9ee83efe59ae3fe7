"""Regenerate migration 0001 from the models (only while suppilo has no release to upgrade from)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from alembic import command

from suppilo.db.migrate import MIGRATIONS_DIR, alembic_config

target = MIGRATIONS_DIR / "versions" / "0001_initial_schema.py"
target.unlink(missing_ok=True)
with tempfile.TemporaryDirectory() as tmp:
    command.revision(
        alembic_config(f"sqlite:///{Path(tmp) / 'gen.sqlite3'}"),
        message="initial schema",
        autogenerate=True,
        rev_id="0001",
    )
text = target.read_text()
extra = ""
if "from sqlalchemy.dialects import postgresql" not in text:
    extra += "from sqlalchemy.dialects import postgresql\n"
if "from sqlalchemy import Text" not in text:
    extra += "from sqlalchemy import Text\n"
text = text.replace("from alembic import op\n", "from alembic import op\n" + extra, 1)
target.write_text(text)
print(f"wrote {target}")

import subprocess  # noqa: E402
import sys  # noqa: E402

bin_dir = Path(sys.executable).parent
subprocess.run([str(bin_dir / "ruff"), "format", "-q", str(target)], check=True)
subprocess.run([str(bin_dir / "ruff"), "check", "--fix", "-q", str(target)], check=True)
