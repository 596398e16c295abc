"""The trainer for real: `sensorsynth trainer`, `worker`, `submit`, `jobs` and `cancel` as processes talking
ZeroMQ over 127.0.0.1. Fits are tiny (a 4-resonance model of 0.4 s, a few hundred steps of milliseconds), so
these tests are about the queue: progress, results, cancel, sharing, a SIGKILLed worker, a SIGKILLed queue,
bad jobs, and a result landing in the folder a running `sensorsynth serve` plays from."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from sensorsynth.instrument_file import load
from sensorsynth.trainer.client import read_event, subscribe

from .helpers import TINY_SPEC, clip_bytes, silent_bytes
from .procs import REPO, Cluster, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.trainer]  # real trainer, worker and Ray processes


SPEC_ARGS = [arg for key, value in TINY_SPEC.items() for arg in ("--spec", f"{key}={value}")]
FAST = {"init": "random", "frozen_steps": 2}


def quick(steps: int) -> dict:
    return {**FAST, "steps": steps}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory):
    """One queue (clips up to 1 MiB) and two workers, shared by the tests that do not kill anything."""
    cluster = Cluster(tmp_path_factory.mktemp("trainer"))
    try:
        cluster.start_trainer("--max-audio-mb", "1")
        cluster.start_worker()
        cluster.start_worker()
        cluster.wait_workers(2)
        (cluster.root / "take.wav").write_bytes(clip_bytes())
        yield cluster
        for proc in cluster.procs:
            if proc.alive():
                assert proc.stop() == 0, proc.output()
    finally:
        cluster.close()


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_submit_waits_with_progress_and_the_instrument_lands(shared: Cluster) -> None:
    events = subscribe(shared.pub)
    time.sleep(0.3)  # a SUB socket misses what is published before it has joined
    out = shared.root / "mine" / "tone.instrument"
    start = time.monotonic()
    result = shared.submit("take.wav", "--name", "tone", "--wait", "-o", str(out), "--steps", "60", *SPEC_ARGS)
    took = time.monotonic() - start
    assert result.returncode == 0, result.stderr + shared.logs()
    assert "60/60" in result.stderr and "loss=" in result.stderr and "eta=" in result.stderr
    assert "running on w-" in result.stderr
    target = shared.models / "tone.instrument"
    assert result.stdout.startswith(f"done: tone -> {target}, saved {out}")
    assert target.read_bytes() == out.read_bytes()
    instrument = load(target)
    assert instrument.name == "tone" and instrument.spec.n_resonances == 4
    assert instrument.manifest.source.name == "take.wav" and instrument.manifest.training["threads"] == 1
    assert sorted(p.name for p in shared.models.iterdir()) == ["tone.instrument"]  # nothing temporary left
    seen = []
    while (event := read_event(events, 2.0)) is not None:
        seen.append(event)
        if event.type == "instrument":
            break
    assert any(e.type == "job" and e.job.state == "running" and e.job.progress for e in seen)
    assert seen[-1].type == "instrument" and seen[-1].name == "tone" and seen[-1].path == str(target)
    events.close()
    print(f"\nsubmit --wait of a 60-step tiny fit: {took:.2f} s from the command's start to the instrument")


def test_submit_jobs_and_cancel_from_the_command_line(shared: Cluster) -> None:
    result = shared.submit("take.wav", "--name", "long", "--steps", "20000", "--set", "init=random", *SPEC_ARGS)
    assert result.returncode == 0, result.stderr
    job_id, state, name = result.stdout.split()
    assert (state, name) == ("queued", "long") and len(job_id) == 32
    with shared.client() as client:
        wait_for(lambda: (p := client.job(job_id).progress) and p.step > 3, 60, "the long job to run")
        listing = shared.run("jobs")
        assert listing.returncode == 0, listing.stderr
        assert "long" in listing.stdout and "running" in listing.stdout and "workers: 2" in listing.stdout
        data = json.loads(shared.run("jobs", "--json").stdout)
        assert any(j["id"] == job_id and j["state"] == "running" for j in data["jobs"])
        holder = next(w for w in client.list().workers if w.job and w.job.job_id == job_id)
        start = time.monotonic()
        prefix = shared.run("cancel", job_id[:8])  # a prefix no longer names a job
        assert prefix.returncode == 2 and "is not a full job id" in prefix.stderr
        cancelled = shared.run("cancel", job_id)
        assert cancelled.returncode == 0 and cancelled.stdout.strip() == f"cancelled {job_id[:8]} (long)"
        assert client.job(job_id).state == "cancelled"

        def let_go() -> bool:
            return all(w.job is None for w in client.list().workers if w.id == holder.id)

        wait_for(let_go, 10, "the worker to stop the cancelled fit")
        print(f"\ncancel -> worker idle: {time.monotonic() - start:.2f} s")
    again = shared.run("cancel", job_id)
    assert again.returncode == 2 and "error: job" in again.stderr and "already cancelled" in again.stderr
    unknown = shared.run("cancel", "f" * 32)
    assert unknown.returncode == 2 and f"no job {'f' * 32}" in unknown.stderr
    assert shared.run("cancel", "not-hex").returncode == 2


def test_a_queued_job_is_cancelled_before_it_runs(shared: Cluster) -> None:
    audio = clip_bytes()
    with shared.client() as client:
        busy = [client.submit(audio, f"busy{i}", settings=quick(20000), spec=TINY_SPEC) for i in range(2)]
        waiting = client.submit(audio, "waiting", settings=quick(10), spec=TINY_SPEC)
        wait_for(lambda: all(client.job(j.id).state == "running" for j in busy), 30, "both workers busy")
        assert client.job(waiting.id).state == "queued"
        cancelled = client.cancel(waiting.id)
        assert cancelled.state == "cancelled" and cancelled.attempt == 0
        for job in busy:
            client.cancel(job.id)
        wait_for(lambda: all(w.job is None for w in client.list().workers), 10, "idle workers")


def test_two_workers_share_the_jobs(shared: Cluster) -> None:
    audio = clip_bytes()
    with shared.client() as client:
        jobs = [client.submit(audio, f"share{i}", settings=quick(150), spec=TINY_SPEC) for i in range(4)]
        finals = [client.watch(j.id, timeout_s=90) for j in jobs]
    assert [f.state for f in finals] == ["done"] * 4, [f.reason for f in finals]
    assert len({f.worker for f in finals}) == 2  # both workers took jobs
    assert all((shared.models / f"share{i}.instrument").exists() for i in range(4))
    # the queue ran them two at a time (two workers, one thread each, two cores): some overlapped
    spans = sorted((f.started, f.finished) for f in finals)
    assert any(a_end > b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))


def test_bad_jobs_fail_cleanly_and_the_workers_go_on(shared: Cluster) -> None:
    (shared.root / "junk.wav").write_bytes(b"this is not audio at all" * 50)
    with shared.client() as client:
        junk = client.submit(b"not audio" * 100, "junk", clip_name="junk.wav", settings=quick(5), spec=TINY_SPEC)
        silent = client.submit(silent_bytes(), "silent", clip_name="quiet.wav", settings=quick(5), spec=TINY_SPEC)
        huge = client.submit(b"\0" * (3 * 2**19), "huge", clip_name="huge.wav")
        wrong = client.submit(clip_bytes(), "wrong", settings={"steps": "many"})
        finals = {j.name: client.watch(j.id, timeout_s=60) for j in (junk, silent, huge, wrong)}
        pids_before = {w.pid for w in client.list().workers}
    assert {n: (f.state, f.failure) for n, f in finals.items()} == {n: ("failed", "bad_input") for n in finals}
    assert finals["junk"].reason.startswith("junk.wav: not a readable audio file")
    assert finals["silent"].reason.startswith("quiet.wav: is silent")
    assert "the audio is 1.5 MiB; this trainer accepts at most 1.0 MiB" in finals["huge"].reason
    assert finals["wrong"].reason.startswith("bad settings: steps")
    assert finals["huge"].attempt == 0 and finals["wrong"].attempt == 0  # refused at the door
    cli = shared.submit("junk.wav", "--name", "junk2", "--wait", *SPEC_ARGS)
    assert cli.returncode == 2, cli.stderr
    assert "error: job" in cli.stderr and "failed: junk.wav: not a readable audio file" in cli.stderr
    assert "Traceback" not in cli.stderr
    local = shared.submit("take.wav", "--set", "lr=-1")
    assert local.returncode == 2 and "bad settings: lr" in local.stderr
    with shared.client() as client:  # the same workers, still alive, take the next good job
        good = client.watch(client.submit(clip_bytes(), "after", settings=quick(10), spec=TINY_SPEC).id, timeout_s=60)
        assert good.state == "done"
        assert {w.pid for w in client.list().workers} == pids_before


def test_a_worker_killed_mid_job_and_the_job_finishes_elsewhere(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        cluster.start_trainer()
        cluster.start_worker()
        cluster.start_worker()
        cluster.wait_workers(2)
        with cluster.client() as client:
            job = client.submit(clip_bytes(), "survivor", settings=quick(300), spec=TINY_SPEC)
            wait_for(lambda: (p := client.job(job.id).progress) and p.step >= 10, 60, "the job to run")
            victim = next(w for w in client.list().workers if w.job and w.job.job_id == job.id)
            os.kill(victim.pid, signal.SIGKILL)
            killed = time.monotonic()
            wait_for(lambda: (j := client.job(job.id)).attempt == 2 and j.state == "running", 30, "the requeue")
            print(f"\nSIGKILLed worker -> job running elsewhere: {time.monotonic() - killed:.2f} s")
            final = client.watch(job.id, timeout_s=90)
        assert final.state == "done", final.reason
        assert (final.attempt, final.losses) == (2, 1) and final.worker != victim.id
        assert load(cluster.models / "survivor.instrument").name == "survivor"
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.close()


def test_the_queue_killed_and_restarted_with_jobs_in_it(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        first = cluster.start_trainer()
        cluster.start_worker()
        cluster.wait_workers(1)
        with cluster.client() as client:
            running = client.submit(clip_bytes(), "running", settings=quick(500), spec=TINY_SPEC)
            queued = [client.submit(clip_bytes(), f"queued{i}", settings=quick(20), spec=TINY_SPEC) for i in range(2)]
            wait_for(lambda: (p := client.job(running.id).progress) and p.step >= 5, 60, "the first job to run")
        first.stop(signal.SIGKILL)
        cluster.start_trainer()
        with cluster.client() as client:
            finals = [client.watch(j.id, timeout_s=90) for j in (running, *queued)]
        assert [f.state for f in finals] == ["done"] * 3, [f.reason for f in finals]
        # the running job was adopted from its worker, not run again; each completed once
        assert [(f.attempt, f.losses) for f in finals] == [(1, 0)] * 3
        assert sorted(p.name for p in cluster.models.iterdir()) == [
            "queued0.instrument", "queued1.instrument", "running.instrument"]
        log = cluster.trainer.output()
        assert "adopted" in log and log.count(f"job {running.id[:8]} (running) done") == 1
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.close()


def test_a_running_server_plays_the_result(tmp_path: Path) -> None:
    """`sensorsynth serve` and `sensorsynth trainer` (with its own local worker) on one models folder."""
    import urllib.request

    models = tmp_path / "models"
    models.mkdir()
    (models / "guitar.instrument").write_bytes((REPO / "models" / "guitar.instrument").read_bytes())
    cluster = Cluster(tmp_path)
    try:
        server, url = cluster.start_serve(models)
        cluster.start_trainer("--models", str(models), workers=1)

        def listed() -> list[str]:
            with urllib.request.urlopen(f"{url}/api/instruments", timeout=5) as answer:
                return [i["name"] for i in json.loads(answer.read())["instruments"]]

        assert listed() == ["guitar"]
        with cluster.client() as client:
            cluster.wait_workers(1)
            start = time.monotonic()
            job = client.submit(clip_bytes(), "fresh", settings=quick(30), spec=TINY_SPEC)
            done = client.watch(job.id, timeout_s=90)
            assert done.state == "done", done.reason
            finished = time.monotonic()
            wait_for(lambda: "fresh" in listed(), 20, "the server to load the new instrument")
            print(f"\nsubmit -> done {finished - start:.2f} s, -> listed by serve {time.monotonic() - start:.2f} s")
            assert server.alive()
            local_worker = next(w.pid for w in client.list().workers)
        cluster.trainer.stop(signal.SIGKILL)  # its own worker does not outlive it
        wait_for(lambda: not _exists(local_worker), 10, "the trainer's worker to exit")
        assert server.stop() == 0
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.close()


def test_fits_as_ray_tasks_behind_the_same_queue(tmp_path: Path) -> None:
    """`trainer --ray local`: a local Ray instance (2 CPUs here) runs the fits; same door, same queue."""
    pytest.importorskip("ray", reason="ray is not installed (pip install 'sensorsynth[ray]')")
    cluster = Cluster(tmp_path)
    try:
        cluster.start_trainer("--ray", "local", workers=0, timeout=180)
        with cluster.client() as client:
            long = client.submit(clip_bytes(), "ray-long", settings=quick(20000), spec=TINY_SPEC)
            wait_for(lambda: (p := client.job(long.id).progress) and p.step > 3, 120, "the Ray task to report")
            assert client.job(long.id).worker == "ray"
            jobs = [client.submit(clip_bytes(), f"ray{i}", settings=quick(40), spec=TINY_SPEC) for i in range(2)]
            assert client.cancel(long.id).state == "cancelled"
            finals = [client.watch(j.id, timeout_s=120) for j in jobs]
            workers = client.list().workers
        assert [(f.state, f.worker) for f in finals] == [("done", "ray")] * 2, [f.reason for f in finals]
        assert [w.id for w in workers] == ["ray"]
        assert load(cluster.models / "ray0.instrument").name == "ray0"
        assert cluster.trainer.stop() == 0
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.close()
