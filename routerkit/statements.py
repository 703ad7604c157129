"""Tell from its text whether an SQL statement may change data.

Pure Python, no Django: `writes` calls `may_write()` on every statement a
connection runs. The ORM sends the same few hundred statement texts over and
over (values travel as parameters), so verdicts are kept in a bounded LRU cache:
a repeated statement costs one hash and lookup. A statement seen for the first
time is lexed (strings, comments, quoted names and dollar quotes blanked) and
judged part by part; one that starts with a writing verb is a write at once.

The classifier errs one way only. A read taken for a write costs replica reads
for the rest of the request; a write taken for a read costs a stale read, so
anything it cannot read with confidence (an unknown statement, an unterminated
quote, a string whose backslashes PostgreSQL and MySQL read differently) is a
write.
"""

from __future__ import annotations

import functools
import re

__all__ = ["may_write"]

# Verdicts for statements up to this length are cached; longer ones (a big
# bulk insert) are rare and would pin memory.
_CACHED_LENGTH = 4096
_CACHE_SIZE = 4096

# One left-to-right pass over the tokens that hide text. A plain string with a
# backslash is left unmatched on purpose: MySQL reads `\'` as an escaped quote,
# PostgreSQL as the end of the string, and the leftover quote makes it a write.
_LEXEME = re.compile(
    r"""
      (?P<comment>--[^\n]*|/\*(?:[^*]|\*(?!/))*\*/)
    | (?P<string>[Ee]'(?:[^'\\]|\\.|'')*'|'(?:[^'\\]|'')*')
    | "(?P<function>(?:[^"]|"")*)"(?=\s*\()
    | (?P<identifier>"(?:[^"]|"")*"|`(?:[^`]|``)*`)
    | (?P<dollar>\$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?\$(?P=tag)\$)
    """,
    re.VERBOSE | re.DOTALL,
)
# What a pass leaves behind when a token was not closed (or could not be read).
_UNREAD = re.compile(r"['\"`]|/\*|\$(?:[A-Za-z_]\w*)?\$")

# Statements that read: they write only with something from _WRITER inside.
_QUERIES = frozenset({"SELECT", "WITH", "VALUES", "TABLE", "SET", "SHOW", "DESCRIBE", "DESC"})
# Transaction and cursor control, and session housekeeping: never a write.
_CONTROL = frozenset(
    {
        "BEGIN",
        "START",
        "COMMIT",
        "END",
        "ROLLBACK",
        "ABORT",
        "SAVEPOINT",
        "RELEASE",
        "FETCH",
        "MOVE",
        "CLOSE",
        "DEALLOCATE",
        "DISCARD",
        "RESET",
    }
)
# Statements judged by what follows the verb; any other verb writes.
_MAY_READ = _QUERIES | _CONTROL | {"EXPLAIN", "COPY", "DECLARE", "PRAGMA"}
# Inside a query (matched on the lowered text): data-modifying CTEs and SELECT
# INTO, row locks (FOR UPDATE, FOR NO KEY UPDATE, FOR SHARE, FOR KEY SHARE,
# MySQL's LOCK IN SHARE MODE), and calls of the well-known functions that write,
# take locks or assign a transaction id (none of which a hot standby runs).
_WRITING_WORDS = r"(?:insert|update|delete|merge|into|share)\b"
_WRITING_CALLS = r"""(?:nextval|setval|set_config|lowrite|txid_current|dblink_exec
    |get_lock|release_lock|release_all_locks|lo_\w+
    |pg_(?:notify|advisory_\w+|try_advisory_\w+|terminate_backend|cancel_backend
        |reload_conf|switch_wal|create_\w+|drop_replication_slot
        |logical_emit_message|stat_reset\w*|current_xact_id))"?\s*\("""
_WRITER = re.compile(rf"\b{_WRITING_WORDS}|\b{_WRITING_CALLS}", re.VERBOSE)
# The same without leading word boundaries, which stop the regex engine from
# skipping ahead to the letters a match can start with: a fast first filter.
_WRITE_WORD = re.compile(_WRITING_WORDS)
_WRITE_CALL = re.compile(_WRITING_CALLS, re.VERBOSE)
_FIRST_WORD = re.compile(r"[\s(]*([A-Za-z]+)")
# EXPLAIN's options end where the explained statement begins.
_EXPLAINED = re.compile(
    r"\b(?:SELECT|WITH|VALUES|TABLE|INSERT|UPDATE|DELETE|MERGE|REPLACE|CREATE|EXECUTE|DECLARE)\b",
    re.IGNORECASE,
)
_ANALYZE = re.compile(r"\bANALY[SZ]E\b", re.IGNORECASE)
# `COPY table [(columns)] TO ...` and `COPY (query) TO ...` read; FROM loads.
_COPY_TO = re.compile(r"COPY\s+[\w.]+\s*(?:\([^)]*\)\s*)?TO\b", re.IGNORECASE)
_COPY_QUERY = re.compile(r"COPY\s*\((.*)\)\s*TO\b", re.IGNORECASE | re.DOTALL)
_CURSOR_QUERY = re.compile(
    r"\bCURSOR\s+(?:(?:WITH|WITHOUT)\s+HOLD\s+)?FOR\s+(.*)", re.IGNORECASE | re.DOTALL
)
# PRAGMAs that take an argument and only report (SQLite; Django's introspection
# runs these). Any other PRAGMA with an argument or `=` sets something.
_PRAGMA = re.compile(r"PRAGMA\s+(?:\w+\.)?(\w+)\s*(=|\()?", re.IGNORECASE)
_REPORTING_PRAGMAS = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "foreign_key_check",
        "integrity_check",
        "quick_check",
    }
)


def may_write(sql: object) -> bool:
    """Tell whether `sql` may change data, erring towards yes.

    `sql` is the statement as a driver receives it: `str`, or `bytes` in UTF-8;
    anything else (a psycopg `Composable` must be rendered first) is a write.
    """
    if isinstance(sql, bytes):
        try:
            sql = sql.decode()
        except UnicodeDecodeError:
            return True
    if not isinstance(sql, str):
        return True
    if len(sql) > _CACHED_LENGTH:
        return _judge(sql)
    return _judge_cached(sql)


def _judge(sql: str) -> bool:
    first = _FIRST_WORD.match(sql)
    if first is not None:
        word = first.group(1).upper()
        if word not in _MAY_READ:
            return True  # DML, DDL or unknown: nothing after it can make it a read
        if word in _QUERIES and _is_plain(sql) and not _writes_inside(sql):
            # The ORM's usual statement: nothing hides text, so no lexing. (A
            # hit may be a quoted name such as "update": the lexer tells.)
            return False
    text = _LEXEME.sub(_blank, sql)
    if _UNREAD.search(text) is not None:
        return True
    # Several statements in one call ("SELECT 1; DELETE ..."): any may write.
    return any(_statement_writes(part) for part in text.split(";"))


_judge_cached = functools.lru_cache(maxsize=_CACHE_SIZE)(_judge)


def _is_plain(sql: str) -> bool:
    """Tell whether no string, comment, dollar quote or second statement is in `sql`."""
    return (
        not ("'" in sql or "$" in sql or ";" in sql or "`" in sql or "--" in sql or "/*" in sql)
        and sql.count('"') % 2 == 0
    )


def _writes_inside(query: str) -> bool:
    """Tell whether a query's text holds something that writes (see _WRITER)."""
    text = query.lower()
    # The loose patterns skip most of the text fast; the strict one confirms.
    if _WRITE_WORD.search(text) is None and _WRITE_CALL.search(text) is None:
        return False
    return _WRITER.search(text) is not None


def _blank(match: re.Match[str]) -> str:
    """Replace a token by something with the same role and no SQL in it."""
    if match.group("comment") is not None:
        return " "
    function = match.group("function")
    if function is not None:
        return function  # "nextval"(...) is still a call of nextval
    return "_"  # a value or a name


def _statement_writes(text: str) -> bool:
    first = _FIRST_WORD.match(text)
    if first is None:
        return bool(text.strip())  # only punctuation left: not something to trust
    word = first.group(1).upper()
    if word in _QUERIES:
        return _writes_inside(text)
    if word in _CONTROL:
        return False
    body = text[first.end(1) :]
    if word == "EXPLAIN":
        return _explain_writes(body)
    if word == "COPY":
        return _copy_writes(text[first.start(1) :])
    if word == "DECLARE":
        query = _CURSOR_QUERY.search(body)
        return query is None or _statement_writes(query.group(1))
    if word == "PRAGMA":
        return _pragma_writes(text[first.start(1) :])
    return True


def _explain_writes(body: str) -> bool:
    """EXPLAIN runs the statement only with ANALYZE."""
    explained = _EXPLAINED.search(body)
    if explained is None:
        return False  # MySQL's `EXPLAIN table` describes it
    if _ANALYZE.search(body, 0, explained.start()) is None:
        return False
    return _statement_writes(body[explained.start() :])


def _copy_writes(text: str) -> bool:
    query = _COPY_QUERY.match(text)
    if query is not None:
        return _statement_writes(query.group(1))  # COPY (INSERT ... RETURNING) TO
    return _COPY_TO.match(text) is None


def _pragma_writes(text: str) -> bool:
    pragma = _PRAGMA.match(text)
    if pragma is None:
        return True
    name, argument = pragma.groups()
    if argument is None:
        return False  # `PRAGMA user_version` reads the value
    return argument == "=" or name.lower() not in _REPORTING_PRAGMAS
