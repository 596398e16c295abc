"""The SQLite queue: durable across reopen, conditional transitions, results once, an outbox of deliveries."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sensorsynth.trainer import jobs as J
from sensorsynth.trainer.store import Store, StoreError


def job(n: int, name: str = "cello", owner: str = "key:a") -> J.Job:
    return J.new_job(f"{n:032x}", name, "take.wav", float(n), settings={"steps": 3, "lr": 0.1},
                     spec={"n_resonances": 4}, replace=True, audio_bytes=4, owner=owner)


def test_jobs_survive_a_reopen_in_order(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    for n in (3, 1, 2):
        store.add(job(n), b"RIFF")
    store.close()
    store = Store(tmp_path / "q.db")
    assert [j.id[-1] for j in store.in_state("queued")] == ["3", "1", "2"]  # submission order
    again = store.get(job(1).id)
    assert again == job(1) and again.settings == {"steps": 3, "lr": 0.1} and again.replace is True
    assert store.audio(job(1).id) == b"RIFF"
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.add(job(1), b"other") == job(1) and store.audio(job(1).id) == b"RIFF"  # idempotent submit


def test_transitions_are_conditional_and_results_stored_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    queued = store.add(job(1), b"RIFF")
    running = J.assign(queued, "w1", 5.0)
    assert store.save(running, queued)
    assert not store.save(J.assign(queued, "w2", 6.0), queued)  # it moved on: nothing changes
    assert store.get(queued.id).worker == "w1"
    done = J.complete(running, 1, 7.0, final_loss=0.25, result_path=None)
    assert store.complete(done, running, b"instrument")
    assert not store.complete(done, running, b"second")  # a repeated result
    assert store.result(queued.id) == b"instrument"
    assert store.audio(queued.id) is None  # audio goes when the job ends
    assert [j.id for j in store.undelivered()] == [queued.id]
    store.delivered(queued.id, "models/cello.instrument")
    assert store.undelivered() == [] and store.get(queued.id).result_path == "models/cello.instrument"


def test_list_owners_and_names(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    for n in range(1, 6):
        store.add(job(n, f"n{n % 2}", owner="key:a" if n < 4 else "key:b"), b"x")
    assert [j.id[-1] for j in store.jobs(limit=2)] == ["4", "5"]
    assert [j.id[-1] for j in store.jobs(10, owner="key:b")] == ["4", "5"]
    assert store.active_count("key:a") == 3 and store.active_count("key:c") == 0
    assert store.audio_bytes() == 5 and store.last_owner("n0") == "key:b" and store.last_owner("zz") is None
    assert len(store.active_with_name("n1")) == 3
    failed = J.rejected(job(9), "bad", 1.0)
    store.add(failed, b"never stored")
    assert store.audio(failed.id) is None and store.counts() == {"queued": 5, "failed": 1}
    assert [j.id[-1] for j in store.jobs(10, ["failed"])] == ["9"]


def test_not_a_queue(tmp_path: Path) -> None:
    bad = tmp_path / "junk.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="junk.db"):
        Store(bad)
    newer = tmp_path / "newer.db"
    sqlite3.connect(newer).execute("PRAGMA user_version=7")
    with pytest.raises(StoreError, match="version 7"):
        Store(newer)


def _finish(store: Store, n: int, finished: float, result: bytes, owner: str = "key:a") -> J.Job:
    queued = store.add(job(n, f"r{n}", owner), b"RIFF")
    running = J.assign(queued, "w", finished - 1)
    store.save(running, queued)
    store.complete(J.complete(running, 1, finished, final_loss=None, result_path=None), running, result)
    store.delivered(queued.id, f"models/r{n}.instrument")
    return queued


def test_retention_by_age_count_and_bytes(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    for n in range(1, 7):
        _finish(store, n, 100.0 * n, b"i" * 10)
    store.add(job(50), b"RIFF")  # active jobs are never pruned
    assert store.prune(finished_before=250.0, keep_jobs=100, keep_result_bytes=10**6) == 2  # older than 250
    assert [j.id[-1] for j in store.in_state("done")] == ["3", "4", "5", "6"]
    assert store.prune(finished_before=0.0, keep_jobs=3, keep_result_bytes=10**6) == 1  # beyond the newest 3
    assert store.prune(finished_before=0.0, keep_jobs=100, keep_result_bytes=25) == 1  # 3 x 10 bytes > 25
    assert [j.id[-1] for j in store.in_state("done")] == ["5", "6"] and store.result(job(4).id) is None
    assert store.get(job(50).id).state == "queued"
    undelivered = store.add(job(60, "late"), b"RIFF")  # done but not yet written to the folder: kept
    running = J.assign(undelivered, "w", 1.0)
    store.save(running, undelivered)
    store.complete(J.complete(running, 1, 2.0, final_loss=None, result_path=None), running, b"x")
    assert store.prune(finished_before=1e9, keep_jobs=0, keep_result_bytes=0) == 2
    assert [j.id for j in store.in_state("done")] == [undelivered.id]


def test_a_version_1_queue_is_upgraded_with_owners(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = Store(path)
    store.add(job(1), b"RIFF")
    store.close()
    db = sqlite3.connect(path)  # what a version-1 queue looked like: no owner column
    db.execute("DROP INDEX jobs_owner")
    db.execute("ALTER TABLE jobs DROP COLUMN owner")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    store = Store(path)
    assert store.get(job(1).id).owner == "" and store.db.execute("PRAGMA user_version").fetchone()[0] == 2
