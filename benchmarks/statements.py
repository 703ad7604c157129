"""Cost of judging one statement: routerkit's write classifier beside its 0.1 regex.

`routerkit.statements.may_write()` runs on every statement a connection executes,
so it must cost little next to the statement's round trip (tens of microseconds at
best). Run with `bash benchmarks/run.sh`; `--write-readme` puts the table into
README.md.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

from _readme import write_block

ROOT = Path(__file__).resolve().parent.parent

STATEMENTS = {
    "ORM SELECT (quoted names, %s)": (
        'SELECT "notes_note"."id", "notes_note"."title", "notes_note"."body", '
        '"notes_note"."created_at" FROM "notes_note" WHERE ("notes_note"."author_id" = %s '
        'AND "notes_note"."created_at" > %s) ORDER BY "notes_note"."created_at" DESC LIMIT 21'
    ),
    "ORM INSERT ... RETURNING": (
        'INSERT INTO "notes_note" ("title", "body", "author_id", "created_at") '
        'VALUES (%s, %s, %s, %s) RETURNING "notes_note"."id"'
    ),
    "union() of two SELECTs": (
        '(SELECT "notes_note"."id" FROM "notes_note" WHERE "notes_note"."author_id" = %s) '
        'UNION (SELECT "notes_note"."id" FROM "notes_note" WHERE "notes_note"."title" = %s)'
    ),
    "raw SELECT with a literal and a comment": (
        "/* report */ SELECT count(*) FROM notes_note WHERE title <> 'a; b' -- daily"
    ),
}

# routerkit 0.1's classifier, kept here as the yardstick.
_OLD_READ_ONLY = re.compile(
    r"\s*(?:SELECT|SHOW|SAVEPOINT|RELEASE|ROLLBACK|BEGIN|START|COMMIT|END|SET|FETCH|CLOSE)\b",
    re.IGNORECASE,
)
_OLD_INTO = re.compile(r"\bINTO\b", re.IGNORECASE)


def old_may_write(sql: object) -> bool:
    if not isinstance(sql, str):
        return True
    if _OLD_READ_ONLY.match(sql) is None:
        return True
    return ";" in sql.rstrip().rstrip(";") or _OLD_INTO.search(sql) is not None


def measure(judge: Callable[[str], bool], sql: str, number: int, repeat: int) -> float:
    """Median nanoseconds per call over `repeat` runs.

    Each call gets its own copy of the text, as each execute() does: a string
    caches its hash, and the ORM builds a new string for every query.
    """
    runs = []
    for _ in range(repeat):
        copies = [sql[:1] + sql[1:] for _ in range(number)]
        start = timeit.default_timer()
        for copy in copies:
            judge(copy)
        runs.append(timeit.default_timer() - start)
    return statistics.median(runs) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from routerkit.statements import _judge, may_write

    lines = [
        "| statement | write? | ns, routerkit | ns, first sight | ns, 0.1 regex | 0.1 said |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, sql in STATEMENTS.items():
        cached = measure(may_write, sql, args.number, args.repeat)
        first = measure(_judge, sql, max(args.number // 20, 1), args.repeat)
        old = measure(old_may_write, sql, args.number, args.repeat)
        lines.append(
            f"| {name} | {'yes' if may_write(sql) else 'no'} | {cached:,.0f} | {first:,.0f} "
            f"| {old:,.0f} | {'yes' if old_may_write(sql) else 'no'} |"
        )
    body = "\n".join(lines)
    note = (
        "*routerkit* is a statement the process has judged before (the verdict is "
        "cached), *first sight* one it has not. "
        f"Median of {args.repeat} runs of {args.number:,} calls, one process, "
        f"Python {platform.python_version()}, {platform.machine()}."
    )
    print(body, note, sep="\n\n")
    if args.write_readme:
        write_block("statements", body, note)


if __name__ == "__main__":
    main()
