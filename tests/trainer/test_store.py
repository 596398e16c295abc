"""The SQLite queue: durable across reopen, conditional transitions, results once, an outbox of deliveries."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sensorsynth.trainer import jobs as J
from sensorsynth.trainer.store import Store, StoreError


def job(n: int, name: str = "cello") -> J.Job:
    return J.new_job(f"{n:032x}", name, "take.wav", float(n), settings={"steps": 3, "lr": 0.1},
                     spec={"n_resonances": 4}, replace=True, audio_bytes=4)


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


def test_find_list_and_names(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    for n in range(1, 6):
        store.add(job(n, f"n{n % 2}"), b"x")
    assert len(store.find("0" * 31)) == 2  # ambiguous prefixes return two
    assert [j.id for j in store.find(job(4).id[:32])] == [job(4).id]
    assert store.find("f") == []
    assert [j.id[-1] for j in store.jobs(limit=2)] == ["4", "5"]
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
