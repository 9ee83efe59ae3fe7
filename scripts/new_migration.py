"""Autogenerate the next Alembic revision from the models: ``python scripts/new_migration.py "what changed"``.

Migration 0001 is frozen since the first landing (databases exist that were built from it); every schema change
gets its own revision, which `tests/integration/test_migrations.py` checks against the models on both databases.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory

from suppilo.db.migrate import MIGRATIONS_DIR, alembic_config, upgrade
from suppilo.db.session import make_engine

if len(sys.argv) != 2 or not sys.argv[1].strip():
    sys.exit('usage: new_migration.py "what changed"')
message = sys.argv[1].strip()
with tempfile.TemporaryDirectory() as tmp:
    url = f"sqlite:///{Path(tmp) / 'gen.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine)  # the database at the current head, so autogenerate sees only the new changes
    engine.dispose()
    cfg = alembic_config(url)
    head = ScriptDirectory.from_config(cfg).get_current_head() or "0000"
    rev_id = f"{int(head) + 1:04d}"
    script = command.revision(cfg, message=message, autogenerate=True, rev_id=rev_id)
path = Path(script.path) if script is not None and not isinstance(script, list) else None
if path is None:
    sys.exit("alembic produced no revision")
text = path.read_text()
extra = ""
if "postgresql." in text and "from sqlalchemy.dialects import postgresql" not in text:
    extra += "from sqlalchemy.dialects import postgresql\n"
if "Text()" in text and "from sqlalchemy import Text" not in text:
    extra += "from sqlalchemy import Text\n"
path.write_text(text.replace("from alembic import op\n", "from alembic import op\n" + extra, 1))
bin_dir = Path(sys.executable).parent
subprocess.run([str(bin_dir / "ruff"), "format", "-q", str(path)], check=True)
subprocess.run([str(bin_dir / "ruff"), "check", "--fix", "-q", str(path)], check=True)
print(f"wrote {path.relative_to(MIGRATIONS_DIR.parent.parent.parent)}")
