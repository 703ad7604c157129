"""Put a benchmark's table into README.md between its two marker lines."""

from __future__ import annotations

import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def write_block(name: str, body: str, note: str) -> bool:
    """Replace the text between `<!-- benchmark:NAME:start/end -->`; False if missing."""
    start, end = f"<!-- benchmark:{name}:start -->", f"<!-- benchmark:{name}:end -->"
    text = README.read_text()
    if start not in text or end not in text:
        print(
            f"README.md was not modified: add a line {start} and a line {end} where the "
            "table should go, then run again with --write-readme.",
            file=sys.stderr,
        )
        return False
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    README.write_text(f"{head}{start}\n{body}\n\n{note}\n{end}{tail}")
    print("README.md updated", file=sys.stderr)
    return True
