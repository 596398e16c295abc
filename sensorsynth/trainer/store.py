"""The queue on disk: SQLite in WAL mode, written only by the queue process.

What is stored, and when, is what makes restarts safe:

- a job is committed (row and audio) *before* its submitter hears "queued": an accepted job is never lost;
- every transition of :mod:`.jobs` is one transaction, conditional on the state and attempt it started
  from, so a stale or repeated message changes nothing;
- a result is committed (the instrument's bytes with the ``done`` state) before the worker is acknowledged
  and before the file is written to the models folder; the write is then marked delivered. A queue killed
  in between writes it on its next start (an outbox), so a job completes once and its file always appears.

``synchronous=FULL``: a commit survives a power cut, not only a crash of the process. Audio is deleted when
its job ends; results are kept so ``fetch`` works later, until :meth:`Store.prune` drops them (the queue's
retention rule: finished jobs older than a few days, beyond a count, or beyond a total of result bytes).

Version 2 added ``owner`` (who submitted each job); a version-1 database is upgraded in place, its jobs
owned by nobody (only an admin sees them).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import asdict, fields
from pathlib import Path
from typing import Iterable, Iterator

from .jobs import Job

SCHEMA_VERSION = 2
_COLUMNS = [f.name for f in fields(Job)]
_JSON = {"settings", "spec"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    clip_name TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    created REAL NOT NULL,
    settings TEXT NOT NULL,
    spec TEXT NOT NULL,
    replace INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    losses INTEGER NOT NULL,
    started REAL,
    finished REAL,
    worker TEXT,
    reason TEXT,
    failure TEXT,
    final_loss REAL,
    result_path TEXT,
    audio_bytes INTEGER NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    delivered INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq);
CREATE TABLE IF NOT EXISTS audio (job_id TEXT PRIMARY KEY REFERENCES jobs (id), data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    job_id TEXT PRIMARY KEY REFERENCES jobs (id),
    attempt INTEGER NOT NULL,
    data BLOB NOT NULL
);
"""


class StoreError(RuntimeError):
    """The database cannot be opened or is not a trainer queue."""


class Store:
    """One connection, used from one thread (the queue's loop); a lock guards against accidents."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=10)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1, SCHEMA_VERSION):
                raise StoreError(f"{self.path}: queue database version {version}, this sensorsynth reads {SCHEMA_VERSION}")
            if version == 1:  # before owners: add the column (the index comes with the schema below)
                self.db.execute("ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
            self.db.executescript(_SCHEMA)  # CREATE ... IF NOT EXISTS: the same on every start
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{self.path}: cannot open the queue database ({exc})") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    # -- plumbing

    def _write(self, statements: Iterable[tuple[str, tuple]]) -> None:
        """Run ``statements`` in one IMMEDIATE transaction."""
        with self._lock:
            cur = self.db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    cur.execute(sql, args)
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    @staticmethod
    def _row(values: sqlite3.Row | tuple) -> Job:
        data = dict(zip(_COLUMNS, values))
        for key in _JSON:
            data[key] = json.loads(data[key])
        data["replace"] = bool(data["replace"])
        return Job(**data)

    @staticmethod
    def _values(job: Job) -> tuple:
        data = asdict(job)
        for key in _JSON:
            data[key] = json.dumps(data[key], sort_keys=True)
        data["replace"] = int(data["replace"])
        return tuple(data[c] for c in _COLUMNS)

    def _select(self, where: str = "", args: tuple = (), tail: str = "") -> list[Job]:
        sql = f"SELECT {', '.join(_COLUMNS)} FROM jobs {where} {tail}"
        with self._lock:
            return [self._row(r) for r in self.db.execute(sql, args).fetchall()]

    # -- jobs

    def add(self, job: Job, audio: bytes | None) -> Job:
        """Commit a new job (and its audio). A job id seen before returns the stored job unchanged: a
        submitter that resends after a lost answer gets the job it already made."""
        existing = self.get(job.id)
        if existing is not None:
            return existing
        marks = ", ".join("?" for _ in _COLUMNS)
        statements = [(f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({marks})", self._values(job))]
        if audio is not None and not job.terminal:
            statements.append(("INSERT INTO audio (job_id, data) VALUES (?, ?)", (job.id, audio)))
        self._write(statements)
        return job

    def get(self, job_id: str) -> Job | None:
        found = self._select("WHERE id = ?", (job_id,))
        return found[0] if found else None

    def jobs(self, limit: int = 50, states: Iterable[str] | None = None, owner: str | None = None) -> list[Job]:
        """The newest ``limit`` jobs (of ``states``; of ``owner`` when given), oldest first."""
        wanted = list(states or [])
        clauses, args = [], list(wanted)
        if wanted:
            clauses.append(f"state IN ({', '.join('?' for _ in wanted)})")
        if owner is not None:
            clauses.append("owner = ?")
            args.append(owner)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return self._select(where, tuple(args) + (limit,), "ORDER BY seq DESC LIMIT ?")[::-1]

    def active_count(self, owner: str) -> int:
        """Queued and running jobs of ``owner`` (the per-client queue bound)."""
        with self._lock:
            return self.db.execute("SELECT COUNT(*) FROM jobs WHERE owner = ? AND state IN ('queued', 'running')",
                                   (owner,)).fetchone()[0]

    def audio_bytes(self) -> int:
        """Bytes of audio held for queued and running jobs (the queue's disk bound)."""
        with self._lock:
            return self.db.execute("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM audio").fetchone()[0]

    def last_owner(self, name: str) -> str | None:
        """Who made (or is making) ``name``: the owner of its newest done or active job, None if none."""
        with self._lock:
            row = self.db.execute("SELECT owner FROM jobs WHERE name = ? AND state IN ('done', 'queued', 'running') "
                                  "ORDER BY seq DESC LIMIT 1", (name,)).fetchone()
        return row[0] if row else None

    def prune(self, finished_before: float, keep_jobs: int, keep_result_bytes: int) -> int:
        """The retention rule: forget finished jobs (row and result) that finished before
        ``finished_before``, or are beyond the newest ``keep_jobs`` finished ones, or whose results (counted
        from the newest) pass ``keep_result_bytes`` in all. A result not yet written to the models folder is
        kept whatever its age. Returns how many jobs were forgotten."""
        with self._lock:
            rows = self.db.execute(
                "SELECT j.id, j.finished, COALESCE(LENGTH(r.data), 0), j.state, j.delivered FROM jobs j "
                "LEFT JOIN results r ON r.job_id = j.id WHERE j.state IN ('done', 'failed', 'cancelled') "
                "ORDER BY j.seq DESC").fetchall()
        drop, total = [], 0
        for index, (job_id, finished, size, state, delivered) in enumerate(rows):
            total += size
            if state == "done" and not delivered:
                continue
            if index >= keep_jobs or (finished or 0) < finished_before or total > keep_result_bytes:
                drop.append(job_id)
        for start in range(0, len(drop), 500):
            chunk = drop[start:start + 500]
            marks = ", ".join("?" for _ in chunk)
            self._write([(f"DELETE FROM results WHERE job_id IN ({marks})", tuple(chunk)),
                         (f"DELETE FROM audio WHERE job_id IN ({marks})", tuple(chunk)),
                         (f"DELETE FROM jobs WHERE id IN ({marks})", tuple(chunk))])
        return len(drop)

    def in_state(self, state: str) -> list[Job]:
        """Every job in ``state``, in submission order (the queue's order)."""
        return self._select("WHERE state = ?", (state,), "ORDER BY seq")

    def active_with_name(self, name: str) -> list[Job]:
        return self._select("WHERE name = ? AND state IN ('queued', 'running')", (name,))

    def save(self, job: Job, was: Job) -> bool:
        """Store ``job`` if the stored row is still ``was`` (state and attempt): False if it moved on."""
        sets = ", ".join(f"{c} = ?" for c in _COLUMNS)
        statements = [(f"UPDATE jobs SET {sets} WHERE id = ? AND state = ? AND attempt = ?",
                       self._values(job) + (was.id, was.state, was.attempt))]
        if job.terminal:
            statements.append(("DELETE FROM audio WHERE job_id = ?", (job.id,)))
        with self._lock:
            cur = self.db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.execute(*statements[0])
                changed = cur.rowcount == 1
                if changed:
                    for sql, args in statements[1:]:
                        cur.execute(sql, args)
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
        return changed

    def complete(self, job: Job, was: Job, result: bytes) -> bool:
        """``job`` (done) and its result in one transaction, only if the row is still ``was``."""
        if job.state != "done":
            raise ValueError("complete() stores a done job")
        sets = ", ".join(f"{c} = ?" for c in _COLUMNS)
        with self._lock:
            cur = self.db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.execute(f"UPDATE jobs SET {sets}, delivered = 0 WHERE id = ? AND state = ? AND attempt = ?",
                            self._values(job) + (was.id, was.state, was.attempt))
                changed = cur.rowcount == 1
                if changed:
                    cur.execute("INSERT OR REPLACE INTO results (job_id, attempt, data) VALUES (?, ?, ?)",
                                (job.id, job.attempt, result))
                    cur.execute("DELETE FROM audio WHERE job_id = ?", (job.id,))
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
        return changed

    def audio(self, job_id: str) -> bytes | None:
        with self._lock:
            row = self.db.execute("SELECT data FROM audio WHERE job_id = ?", (job_id,)).fetchone()
        return bytes(row[0]) if row else None

    def result(self, job_id: str) -> bytes | None:
        with self._lock:
            row = self.db.execute("SELECT data FROM results WHERE job_id = ?", (job_id,)).fetchone()
        return bytes(row[0]) if row else None

    def undelivered(self) -> list[Job]:
        """Done jobs whose instrument has not been written to the models folder yet."""
        return self._select("WHERE state = 'done' AND delivered = 0", (), "ORDER BY seq")

    def delivered(self, job_id: str, path: str | None) -> None:
        self._write([("UPDATE jobs SET delivered = 1, result_path = ? WHERE id = ?", (path, job_id))])

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())

    def __iter__(self) -> Iterator[Job]:
        return iter(self._select("", (), "ORDER BY seq"))
