#!/usr/bin/env python3
"""Writes a fixture database of each released store schema version.

For each version N of each store, a fresh database gets migration 1, the
known data below (as release 1 stored it), then migrations 2..N, and is
dumped as SQL to

    crates/tally-collector/tests/fixtures/sqlite/vN.sql
    crates/tally-collector/tests/fixtures/postgres/vN.sql

`tests/store_suite.rs` loads each dump into an empty database, opens the
store on it (which upgrades it to the current version) and checks that the
known data reads back. The dumps are committed: they are what each release
left on disk, and a later edit of a released migration file does not
change them. Run this once when a new migration is released, to add the
new version's dump; existing dumps are kept unless --force is given.

    python3 scripts/store-fixtures.py [--force] [postgres://postgres@127.0.0.1:5432/postgres]

Needs Python's sqlite3 module and, for PostgreSQL, psql and pg_dump.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STORE = ROOT / "crates/tally-collector/src/store"
OUT = ROOT / "crates/tally-collector/tests/fixtures"

TS = 1_700_000_000_000
RAW = '{"type":"track","messageId":"fixture-1","event":"Open","anonymousId":"anon-fixture","context":{"tally":{"install_id":"inst-fixture","seq":1}}}'
BAD = '{"type":"track","messageId":"fixture-bad","userId":"u-bad"}'

# What release 1 stored for one accepted event and one rejected message.
DATA = {
    "sqlite": f"""
INSERT INTO events (message_id, kind, event, anonymous_id, install_id, seq, priority,
    timestamp, sent_at, received_at, ts_corrected, clamped, raw)
    VALUES ('fixture-1', 'track', 'Open', 'anon-fixture', 'inst-fixture', 1, 'normal',
    {TS}, {TS + 10}, {TS + 20}, {TS}, 0, '{RAW}');
INSERT INTO dead_letters (message_id, reason, detail, received_at, raw)
    VALUES ('fixture-bad', 'seq_zero', 'seq must be at least 1', {TS + 20}, '{BAD}');
UPDATE counters SET accepted = 1, rejected = 1, stored = 1 WHERE id = 0;
INSERT INTO installs (install_id, max_seq) VALUES ('inst-fixture', 1);
INSERT INTO install_seen (install_id, from_seq, to_seq) VALUES ('inst-fixture', 1, 1);
""",
    "postgres": f"""
INSERT INTO events (message_id, kind, event, anonymous_id, install_id, seq, priority,
    timestamp, sent_at, received_at, ts_corrected, clamped, raw)
    VALUES ('fixture-1', 'track', 'Open', 'anon-fixture', 'inst-fixture', 1, 'normal',
    {TS}, {TS + 10}, {TS + 20}, {TS}, false, '{RAW}');
INSERT INTO dead_letters (message_id, reason, detail, received_at, raw)
    VALUES ('fixture-bad', 'seq_zero', 'seq must be at least 1', {TS + 20}, '{BAD}');
UPDATE counters SET accepted = 1, rejected = 1, stored = 1 WHERE shard = 0;
INSERT INTO installs (install_id, max_seq) VALUES ('inst-fixture', 1);
INSERT INTO install_seen (install_id, from_seq, to_seq) VALUES ('inst-fixture', 1, 1);
""",
}


def ident_person_sql() -> str:
    """`identity::IDENT_PERSON_SQL`, which migrations name as a placeholder."""
    text = (STORE / "identity.rs").read_text(encoding="utf-8")
    m = re.search(r'pub\(crate\) const IDENT_PERSON_SQL: &str = "(.*?)";', text, re.S)
    if m is None:
        sys.exit("IDENT_PERSON_SQL not found in store/identity.rs")
    return re.sub(r"\\\n\s*", "", m.group(1))


def migrations(store: str) -> list[str]:
    person = ident_person_sql()
    files = sorted((STORE / store / "migrations").glob("[0-9][0-9][0-9][0-9]_*.sql"))
    return [f.read_text(encoding="utf-8").replace("{IDENT_PERSON_SQL}", person) for f in files]


def steps(store: str, version: int) -> str:
    """The SQL that builds version `version` with the known data."""
    ms = migrations(store)
    sql = ms[0] + DATA[store] + "".join(ms[1:version])
    kind = "INTEGER" if store == "sqlite" else "integer"
    return sql + (
        f"\nCREATE TABLE schema_version (version {kind} NOT NULL);\n"
        f"INSERT INTO schema_version (version) VALUES ({version});\n"
    )


def sqlite_dump(version: int) -> str:
    conn = sqlite3.connect(":memory:")
    conn.executescript(steps("sqlite", version))
    return "\n".join(conn.iterdump()) + "\n"


def postgres_dump(admin_url: str, version: int) -> str:
    name = f"tally_fixture_v{version}"
    psql = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", admin_url]
    subprocess.run([*psql, "-c", f"DROP DATABASE IF EXISTS {name}"], check=True)
    subprocess.run([*psql, "-c", f"CREATE DATABASE {name}"], check=True)
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    try:
        subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", url],
            input=steps("postgres", version),
            text=True,
            check=True,
        )
        dump = subprocess.run(
            ["pg_dump", "--inserts", "--no-owner", "--no-privileges", "--no-comments", url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        subprocess.run([*psql, "-c", f"DROP DATABASE IF EXISTS {name}"], check=True)
    # Session settings of pg_dump's own run and psql meta-commands
    # (`\restrict`): not part of the database, and not SQL a client runs.
    keep = [
        line
        for line in dump.splitlines()
        if not line.startswith(("SET ", "SELECT pg_catalog.set_config(", "--", "\\"))
    ]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(keep)).strip() + "\n"


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--force"]
    force = "--force" in sys.argv[1:]
    admin_url = args[0] if args else "postgres://postgres@127.0.0.1:5432/postgres"
    for store, dump in (("sqlite", None), ("postgres", None)):
        (OUT / store).mkdir(parents=True, exist_ok=True)
        for version in range(1, len(migrations(store)) + 1):
            path = OUT / store / f"v{version}.sql"
            if path.exists() and not force:
                continue
            text = sqlite_dump(version) if store == "sqlite" else postgres_dump(admin_url, version)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
