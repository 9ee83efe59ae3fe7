"""Fail unless the test report shows a run with passing tests and no failures on every named database."""

from __future__ import annotations

import json
import sys
from pathlib import Path

report_dir = Path(".test-report")
ok = True
for dialect in sys.argv[1:]:
    files = sorted(report_dir.glob(f"{dialect}-*.json"))
    if not files:
        print(f"no test report for {dialect}: that part did not run", file=sys.stderr)
        ok = False
        continue
    passed = sum(json.loads(f.read_text())["passed"] for f in files)
    failed = sum(json.loads(f.read_text())["failed"] for f in files)
    print(f"{dialect}: {passed} passed, {failed} failed")
    if passed == 0 or failed:
        ok = False
sys.exit(0 if ok else 1)
