"""The trainer's subcommands: ``trainer``, ``worker``, ``submit``, ``jobs``, ``cancel``, ``fetch``. Argparse wiring and
thin handlers over :mod:`sensorsynth.trainer.broker`, :mod:`~sensorsynth.trainer.worker` and
:mod:`~sensorsynth.trainer.client`; pyzmq and the rest are imported only when a command runs, so
``sensorsynth --help`` stays fast. ``trainer`` (with local or Ray workers) and ``worker`` fit, so they need the
fitting extra and say so in one line without it; ``submit``, ``jobs``, ``cancel`` and ``fetch`` only talk to a
queue, and ``trainer keys`` manages its CURVE keys.

(Past 500 lines on purpose: seven commands and the key management share one set of connection, key and
output options; each handler is a few lines over the trainer package, which holds the logic.)"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from .common import EXIT_FAILURE, CliError, check_device, parse_assignment, progress_callback, refuse_output, require_fit

DEFAULT_CONNECT = "tcp://127.0.0.1:5555"
DEFAULT_BIND = "tcp://127.0.0.1:5555"
DEFAULT_DB = ".sensorsynth/trainer.db"
_ENDPOINT = re.compile(r"^(tcp|ipc|inproc)://\S+$")


def _endpoint(text: str) -> str:
    if not _ENDPOINT.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a ZeroMQ endpoint (e.g. tcp://host:5555)")
    return text


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def add_parsers(commands: argparse._SubParsersAction) -> None:
    # -------------------------------------------------------------------------------------- trainer
    p = commands.add_parser(
        "trainer",
        help="run the fitting queue (and local workers) that submit sends jobs to",
        description="Run the durable job queue on a ZeroMQ ROUTER socket, with --workers local worker processes "
        "(default one, using all cores). Results are written atomically to MODELS, where a running `sensorsynth "
        "serve` loads them. The queue lives in an SQLite database (--db) and survives restarts of any process. "
        "SIGINT/SIGTERM stop it; running jobs are handed back to the queue.",
    )
    p.add_argument("--bind", type=_endpoint, default=DEFAULT_BIND,
                   help=f"where clients and workers connect (default {DEFAULT_BIND}; tcp://*:5555 for the network)")
    p.add_argument("--pub", default=None,
                   help="PUB socket for announcements (default: the --bind port + 1; 'none' for none)")
    p.add_argument("--db", default=DEFAULT_DB, help=f"the queue's SQLite database (default {DEFAULT_DB})")
    p.add_argument("--models", default="models", help="folder the instruments are written to (default models)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="local worker processes (default 1, or 0 with --ray; 0 = queue only, workers join with "
                   "`sensorsynth worker`)")
    p.add_argument("--threads", type=_positive(int), metavar="N",
                   help="torch threads per local worker (default: the cores divided among the workers)")
    p.add_argument("--device", default="cpu", help="torch device of the local workers: cpu, cuda, cuda:1 ...")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="also run fits as Ray tasks on this cluster ('auto', ray://head:10001, or 'local' for a "
                   "Ray instance started here)")
    p.add_argument("--ray-tasks", type=_positive(int), metavar="N",
                   help="fits in flight on Ray at once (default: the cluster's CPUs / --threads)")
    p.add_argument("--heartbeat-s", type=_positive(float), default=1.0, help="heartbeat interval (default 1 s)")
    p.add_argument("--liveness", type=_positive(int), default=5,
                   help="heartbeats missed before a worker is dead and its job requeued (default 5)")
    p.add_argument("--max-losses", type=_positive(int), default=3,
                   help="a job whose worker dies this many times fails (default 3)")
    p.add_argument("--max-audio-mb", type=_positive(float), default=64.0, help="largest clip accepted (default 64 MiB)")
    p.add_argument("--ready-file", metavar="FILE.json",
                   help="once listening, write {endpoint, pub, pid, workers} here as JSON")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    p.set_defaults(handler=cmd_trainer)
    add_trainer_security_options(p)

    # --------------------------------------------------------------------------------------- worker
    p = commands.add_parser(
        "worker",
        help="fit jobs from a trainer's queue",
        description="Connect to a trainer's queue and fit its jobs, one at a time, with --threads torch threads on "
        "--device. Heartbeats both ways: a queue that goes silent is reconnected to, a worker that goes silent "
        "has its job requeued. SIGINT/SIGTERM hand the running job back and stop.",
    )
    p.add_argument("--connect", type=_endpoint, default=DEFAULT_CONNECT, help=f"the queue (default {DEFAULT_CONNECT})")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ... (default cpu)")
    p.add_argument("--threads", type=_positive(int), metavar="N", help="torch threads (default: all cores)")
    p.add_argument("--machine", help="machine name for core accounting (default: the hostname)")
    p.add_argument("--heartbeat-s", type=_positive(float), default=1.0, help="heartbeat interval (default 1 s)")
    p.add_argument("--liveness", type=_positive(int), default=5,
                   help="heartbeats missed before the queue is presumed gone and reconnected to (default 5)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    p.add_argument("--parent", type=int, help=argparse.SUPPRESS)  # a trainer's own worker: stop when it is gone
    p.set_defaults(handler=cmd_worker)
    add_peer_keys_option(p, "worker")

    # --------------------------------------------------------------------------------------- submit
    p = commands.add_parser(
        "submit",
        help="send a clip to the trainer as a fitting job",
        description="Send CLIP to the trainer as a job. Without --wait, print the job id and return. With --wait, "
        "show the fit's progress (stage, step, ETA, loss) until the instrument lands in the trainer's models "
        "folder; -o also saves it here. Ctrl-C stops waiting, not the job (`sensorsynth cancel JOB` does).",
    )
    p.add_argument("clip", metavar="CLIP", help="audio file (wav, flac, ogg, ...), sent as it is")
    p.add_argument("--name", help="instrument name: models/NAME.instrument (default: the clip's name)")
    p.add_argument("--connect", type=_endpoint, default=DEFAULT_CONNECT, help=f"the trainer (default {DEFAULT_CONNECT})")
    p.add_argument("--wait", action="store_true", help="follow the job until it ends")
    p.add_argument("-o", "--output", metavar="PATH", help="also save the instrument here (implies --wait)")
    p.add_argument("--force", action="store_true", help="overwrite -o if it exists")
    p.add_argument("--replace", action="store_true", help="let the result replace models/NAME.instrument")
    p.add_argument("--steps", type=_positive(int), help="optimisation steps (default: the fitter's)")
    p.add_argument("--loss", metavar="NAME", help="spectral loss: mrstft, seed or multires")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", type=parse_assignment,
                   help="any other fit setting (repeatable); device and threads are the worker's")
    p.add_argument("--spec", metavar="KEY=VALUE", action="append", type=parse_assignment,
                   help="model size or rate, e.g. --spec n_resonances=8 (repeatable)")
    p.add_argument("--timeout", type=_positive(float), metavar="S", help="give up waiting after S seconds")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_submit)
    add_peer_keys_option(p, "client")

    # ----------------------------------------------------------------------------------------- jobs
    p = commands.add_parser("jobs", help="list the trainer's jobs and workers",
                            description="List the newest jobs (queued, running, done, failed, cancelled) and the "
                            "workers connected to the trainer.")
    p.add_argument("--connect", type=_endpoint, default=DEFAULT_CONNECT, help=f"the trainer (default {DEFAULT_CONNECT})")
    p.add_argument("--limit", type=_positive(int), default=30, help="how many jobs (default 30)")
    p.add_argument("--state", action="append", choices=["queued", "running", "done", "failed", "cancelled"],
                   help="only jobs in this state (repeatable)")
    p.add_argument("--json", action="store_true", help="machine-readable JSON")
    p.set_defaults(handler=cmd_jobs)
    add_peer_keys_option(p, "client")

    # --------------------------------------------------------------------------------------- cancel
    p = commands.add_parser("cancel", help="cancel a queued or running job",
                            description="Cancel JOB (its full id, as submit and `jobs --json` print it; only its "
                            "submitter or an admin key may). A running fit stops within a second; its worker takes "
                            "the next job.")
    p.add_argument("job", metavar="JOB", help="the job's full id (32 hex digits)")
    p.add_argument("--connect", type=_endpoint, default=DEFAULT_CONNECT, help=f"the trainer (default {DEFAULT_CONNECT})")
    p.set_defaults(handler=cmd_cancel)
    add_peer_keys_option(p, "client")
    add_fetch_parser(commands)


# ---------------------------------------------------------------------------------------------- helpers


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class _Stop:
    """SIGINT/SIGTERM set a flag the loops check (they wake at least ten times a second)."""

    def __init__(self) -> None:
        self.flag = threading.Event()

    def __enter__(self) -> "_Stop":
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.flag.set()

    def __exit__(self, *exc: object) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)

    def __call__(self) -> bool:
        return self.flag.is_set()


def _pub_endpoint(bind: str, pub: str | None) -> str | None:
    if pub is not None:
        return None if pub.lower() == "none" else pub
    match = re.match(r"^(tcp://.+):(\d+)$", bind)
    return f"{match.group(1)}:{int(match.group(2)) + 1}" if match and int(match.group(2)) > 0 else None


def _write_json(path: str, data: dict[str, Any]) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, json.dumps(data))


def _client(args: argparse.Namespace, **options: Any) -> Any:
    from ..trainer.client import TrainerClient

    return TrainerClient(args.connect, **{"timeout_s": 5.0, "retries": 2, "keys": peer_keys_of(args, "client"),
                                          **options})


def _refused(exc: Exception) -> Any:
    """The queue said no (exit 2: the request was wrong), or nothing answered (exit 1)."""
    from ..trainer.client import TrainerUnavailable

    return CliError(str(exc), EXIT_FAILURE if isinstance(exc, TrainerUnavailable) else 2)


# ------------------------------------------------------------------------------------------------ trainer


def cmd_trainer(args: argparse.Namespace) -> int:
    if args.workers is None:  # with --ray, Ray owns this machine's cores: no local workers competing for them
        args.workers = 0 if args.ray else 1
    if args.workers < 0:
        raise CliError("--workers must be 0 or more")
    if args.workers or args.ray:  # a queue alone (--workers 0) fits nothing here and needs no torch
        require_fit("trainer")
    if args.device != "cpu":  # fail here, not in every local worker (which the trainer would keep restarting)
        check_device(args.device)
    _logging(args.log_level)
    import zmq

    from ..trainer.broker import MiB, Broker, BrokerConfig
    from ..trainer.local import LocalWorkers, default_threads, local_endpoint
    from ..trainer.store import Store, StoreError
    from ..trainer.worker import machine_cores

    config = BrokerConfig(
        bind=args.bind, pub=_pub_endpoint(args.bind, args.pub), models=Path(args.models),
        heartbeat_s=args.heartbeat_s, liveness=args.liveness, max_losses=args.max_losses,
        max_audio_bytes=int(args.max_audio_mb * MiB), **trainer_security(args),
    )
    if config.models.exists() and not config.models.is_dir():
        raise CliError(f"{config.models}: is not a folder")
    try:
        store = Store(args.db)
    except StoreError as exc:
        raise CliError(str(exc)) from None
    backend = None
    threads = args.threads or default_threads(max(1, args.workers), machine_cores())
    if args.ray:
        from ..trainer.ray_backend import RayBackend, RayUnavailable

        try:
            backend = RayBackend(args.ray, threads=args.threads or 1, device=args.device, max_tasks=args.ray_tasks)
        except RayUnavailable as exc:
            store.close()
            raise CliError(str(exc)) from None
    broker = Broker(config, store, backend=backend)
    try:
        endpoint = broker.bind()
    except zmq.ZMQError as exc:
        broker.close()
        store.close()
        raise CliError(f"cannot listen on {args.bind} or {config.pub}: {exc}") from None
    workers = LocalWorkers(args.workers, local_endpoint(endpoint), threads, args.device, args.heartbeat_s,
                           args.liveness, args.log_level,
                           keys=str(config.keys.folder) if config.keys is not None else None)
    print(f"trainer: queue {endpoint} ({store.path}), "
          + (f"CURVE keys {config.keys.folder}" if config.keys else "no keys (loopback only)")
          + f", announcements {broker.pub_endpoint or 'off'}, "
          f"models {config.models}/, {args.workers} local worker(s) x {threads} thread(s) on {args.device}"
          + (f", Ray {args.ray}" if args.ray else ""), flush=True)
    try:
        with _Stop() as stop:
            workers.start()
            if args.ready_file:
                _write_json(args.ready_file, {"endpoint": endpoint, "pub": broker.pub_endpoint, "pid": os.getpid(),
                                              "workers": workers.pids()})
            broker.run(stop, on_tick=workers.poll)
    except Exception as exc:  # noqa: BLE001 - the queue must say why it stopped
        logging.getLogger("sensorsynth.trainer").exception("the queue stopped")
        raise CliError(f"the queue stopped: {type(exc).__name__}: {exc}", EXIT_FAILURE) from None
    finally:
        workers.stop()
        broker.close()
        store.close()
    print("trainer: stopped", flush=True)
    return 0


# ------------------------------------------------------------------------------------------------- worker


def cmd_worker(args: argparse.Namespace) -> int:
    require_fit("worker")
    _logging(args.log_level)
    check_device(args.device)
    import torch

    from ..trainer.worker import Worker, WorkerOptions, machine_cores

    threads = args.threads or machine_cores()
    torch.set_num_threads(threads)  # this process fits with these threads; each fit sets them again anyway
    importlib.import_module("sensorsynth.instrument.fit")  # load the fitter now, not inside the first job

    worker = Worker(WorkerOptions(connect=args.connect, threads=threads, device=args.device, machine=args.machine,
                                  heartbeat_s=args.heartbeat_s, liveness=args.liveness,
                                  keys=peer_keys_of(args, "worker")))
    with _Stop() as stop:
        if args.parent:  # the trainer that started this worker was killed: do not outlive it
            return worker.run(lambda: stop() or os.getppid() != args.parent)
        return worker.run(stop)


# ------------------------------------------------------------------------------------------------- submit


def _clip_name(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip(".-_") or "clip"
    return stem if stem[0].isalnum() else f"clip-{stem}"


def cmd_submit(args: argparse.Namespace) -> int:
    from ..instrument.settings import make_settings, make_spec
    from ..protocol.trainer import valid_name

    clip = Path(args.clip)
    if not clip.is_file():
        raise CliError(f"{clip}: no such file" if not clip.exists() else f"{clip}: is not a file")
    name = args.name or _clip_name(clip)
    if not valid_name(name):
        raise CliError(f"--name {name!r}: use letters, digits, '.', '_' and '-', starting with a letter or digit")
    settings: dict[str, Any] = dict(args.set or [])
    settings.update((k, getattr(args, k)) for k in ("steps", "loss", "seed") if getattr(args, k) is not None)
    spec = dict(args.spec or [])
    try:  # the queue checks again; this fails a typo before anything is sent
        make_settings(settings)
        make_spec(spec)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    out = Path(args.output) if args.output else None
    if out is not None:
        refuse_output(out, args.force)
    try:
        data = clip.read_bytes()
    except OSError as exc:
        raise CliError(f"{clip}: cannot read ({exc.strerror or exc})") from None

    from ..trainer.client import RequestRefused, TrainerUnavailable

    with _client(args) as client:
        try:
            welcome = client.hello()
            if len(data) > welcome.limits.max_audio_bytes:  # the queue would drop the connection unread
                raise CliError(f"{clip}: {len(data) / 2**20:.1f} MiB; the trainer accepts at most "
                               f"{welcome.limits.max_audio_bytes / 2**20:.1f} MiB")
            steps = make_settings(settings).steps
            if welcome.limits.max_steps is not None and steps > welcome.limits.max_steps:
                raise CliError(f"bad settings: steps: {steps} steps; the trainer runs at most "
                               f"{welcome.limits.max_steps} per job")
            job = client.submit(data, name, clip_name=clip.name, settings=settings, spec=spec, replace=args.replace)
        except (TrainerUnavailable, RequestRefused) as exc:
            raise _refused(exc) from None
        if job.state == "failed":
            raise CliError(f"job {job.id[:8]} ({name}) failed: {job.reason}")
        if not (args.wait or out):
            print(f"{job.id} {job.state} {job.name}")
            return 0
        if not args.quiet:
            print(f"job {job.id[:8]} {job.state}: {clip.name} -> {name}", file=sys.stderr)
        final = _follow(client, job.id, args)
        if final.state == "done" and out is not None:
            try:
                _, blob = client.fetch(final.id)
            except (TrainerUnavailable, RequestRefused) as exc:
                raise _refused(exc) from None
            _save_bytes(blob, out, args.force)
    if final.state == "done":
        where = final.result_path or "the trainer's queue"
        loss = f"{final.final_loss:.6g}" if final.final_loss is not None else "unknown"
        took = (final.finished or 0) - (final.created or 0)
        print(f"done: {name} -> {where}" + (f", saved {out}" if out else "") + f" (job {final.id[:8]}, final loss "
              f"{loss}, {took:.1f} s from submission)")
        return 0
    if final.state == "cancelled":
        raise CliError(f"job {final.id[:8]} ({name}) was cancelled", EXIT_FAILURE)
    code = 2 if final.failure == "bad_input" else EXIT_FAILURE
    raise CliError(f"job {final.id[:8]} ({name}) failed: {final.reason}", code)


def _follow(client: Any, job_id: str, args: argparse.Namespace) -> Any:
    """Watch the job with a progress bar; Ctrl-C stops watching, not the job."""
    from ..trainer.client import RequestRefused

    show, close = progress_callback(args.quiet)
    state: dict[str, Any] = {"last": ("queued", None, 0)}  # submit has already said it is queued

    def on_update(info: Any) -> None:
        label = (info.state, info.worker, info.attempt)
        if label != state["last"] and not args.quiet and info.state in ("queued", "running"):
            close()
            where = f" on {info.worker}" if info.worker else ""
            note = f" (attempt {info.attempt})" if info.attempt > 1 else ""
            print(f"job {info.id[:8]} {info.state}{where}{note}", file=sys.stderr)
        state["last"] = label
        if info.progress is not None:
            show(info.progress)

    def on_silence(seconds: float) -> None:
        close()
        if not args.quiet:
            print(f"note: the trainer has not answered for {seconds:.0f} s; still waiting", file=sys.stderr)

    try:
        return client.watch(job_id, on_update, timeout_s=args.timeout, on_silence=on_silence)
    except KeyboardInterrupt:
        close()
        print(f"\nstopped waiting; job {job_id[:8]} goes on (sensorsynth cancel {job_id} stops it)", file=sys.stderr)
        raise
    except TimeoutError as exc:
        raise CliError(str(exc), 1) from None
    except RequestRefused as exc:
        raise CliError(str(exc)) from None
    finally:
        close()


def _save_bytes(blob: bytes, out: Path, force: bool) -> None:
    from ..instrument_file import InstrumentFileError, loads

    try:
        loads(blob, "the trainer's result")  # never write what we could not load
    except InstrumentFileError as exc:
        raise CliError(str(exc), 1) from None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            atomic_write(out, blob, clobber=force)
        except FileExistsError:
            raise CliError(f"{out}: appeared while fitting; use --force to overwrite it") from None
    except OSError as exc:
        raise CliError(f"{out}: cannot write ({exc.strerror or exc})") from None


# --------------------------------------------------------------------------------------------- jobs, cancel


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def cmd_jobs(args: argparse.Namespace) -> int:
    from ..trainer.client import RequestRefused, TrainerUnavailable

    with _client(args) as client:
        try:
            listing = client.list(args.limit, args.state)
        except (TrainerUnavailable, RequestRefused) as exc:
            raise _refused(exc) from None
    if args.json:
        print(listing.model_dump_json(indent=2, exclude={"v", "type", "req"}))
        return 0
    now = time.time()
    rows = [("JOB", "NAME", "STATE", "PROGRESS", "LOSS", "WORKER", "AGE", "NOTE")]
    for job in listing.jobs:
        p = job.progress
        progress = f"{p.stage} {p.step}/{p.steps}" if p else ""
        loss = p.loss if p and p.loss is not None else job.final_loss
        note = job.result_path if job.state == "done" else (job.reason or "")
        if job.attempt > 1:
            note = f"attempt {job.attempt}; {note}".rstrip("; ")
        rows.append((job.id, job.name, job.state, progress, f"{loss:.5g}" if loss is not None else "",
                     job.worker or "", _age(now - job.created), note or ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    if not listing.jobs:
        print("(no jobs)")
    print(f"\nworkers: {len(listing.workers)}")
    for w in listing.workers:
        doing = f"fitting {w.job.job_id[:8]}" if w.job else "idle"
        print(f"  {w.id}  {w.host} pid {w.pid}  {w.device}, {w.threads} of {w.cores} cores  {doing}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from ..trainer.client import RequestRefused, TrainerUnavailable

    if not re.match(r"^[0-9a-f]{32}$", args.job):
        raise CliError(f"{args.job!r} is not a full job id (32 hex digits, as submit and `jobs --json` print it)")
    with _client(args) as client:
        try:
            job = client.cancel(args.job)
        except (TrainerUnavailable, RequestRefused) as exc:
            raise _refused(exc) from None
    print(f"cancelled {job.id[:8]} ({job.name})")
    return 0


# --------------------------------------------------------------------------------- keys, limits, fetch
# ``trainer keys`` and ``fetch`` live here too (docs/trainer-security.md). This makes the module longer than 500
# lines: it is every trainer subcommand's wiring, each handler thin.

KEYS_ENV = "SENSORSYNTH_TRAINER_KEYS"


DEFAULT_PEER_KEYS = ".sensorsynth/keys"


def add_peer_keys_option(p: argparse.ArgumentParser, role: str) -> None:
    p.add_argument("--keys", metavar="DIR",
                   help=f"CURVE keys for a trainer that has keys: a bundle from `sensorsynth trainer keys add-{role}`, "
                   f"or the trainer's own keys folder on its machine; 'none' for none (default: ${KEYS_ENV}, else "
                   f"{DEFAULT_PEER_KEYS} when it exists)")


def peer_keys_of(args: argparse.Namespace, role: str) -> Any:
    """The PeerKeys ``--keys`` (or its defaults) names, or None; a folder that cannot be used is a CliError."""
    from sensorsynth.trainer.keys import KeysError, PeerKeys

    folder = getattr(args, "keys", None) or os.environ.get(KEYS_ENV)
    if folder is None and (Path(DEFAULT_PEER_KEYS) / "server.key").exists():
        folder = DEFAULT_PEER_KEYS
    if folder is None or folder == "none":
        return None
    try:
        return PeerKeys.load(folder, role)
    except KeysError as exc:
        raise CliError(f"--keys: {exc}") from None


def add_trainer_security_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keys", metavar="DIR",
                   help="CURVE keys folder (made on first start when empty): only its worker, client and admin keys "
                   "may connect. Required when --bind or --pub is beyond loopback. Default: the keys folder next to "
                   "--db when it holds keys; 'none' for none")
    p.add_argument("--max-steps", type=_positive(int), default=20_000,
                   help="most optimiser steps a job may ask for (default 20000)")
    p.add_argument("--max-jobs-per-client", type=_positive(int), default=8,
                   help="queued + running jobs one client may have (default 8)")
    p.add_argument("--max-queue-mb", type=_positive(float), default=1024.0,
                   help="audio held for queued jobs, all clients together (default 1024 MiB)")
    p.add_argument("--keep-days", type=_positive(float), default=7.0,
                   help="finished jobs and their results are forgotten after this many days (default 7)")
    p.add_argument("--keep-jobs", type=_positive(int), default=1000,
                   help="... or beyond this many finished jobs (default 1000)")
    p.add_argument("--keep-results-mb", type=_positive(float), default=1024.0,
                   help="... or once the results kept pass this many MiB (default 1024)")
    sub = p.add_subparsers(dest="trainer_command", metavar="keys", required=False,
                           title="key management (sensorsynth trainer keys --help)")
    k = sub.add_parser("keys", help="make and list the trainer's CURVE keys",
                       description="The trainer's CURVE keys: `init` makes the trainer's key pair and this machine's "
                       "own bundles; `add-worker NAME` / `add-client NAME` / `add-admin NAME` allow another machine "
                       "(a bundle to copy there, or --public FILE for a key made there with `keys new`); `list`, "
                       "`remove NAME`. Changes apply to a running trainer without a restart.")
    ks = k.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    for name, text in (("init", "make the trainer's keys (keeps what exists)"), ("list", "list the allowed keys")):
        a = ks.add_parser(name, help=text, description=text)
        a.add_argument("--keys", dest="keys_dir", metavar="DIR", default=None,
                       help="the trainer's keys folder (default: keys next to the default --db)")
        a.set_defaults(handler=cmd_keys)
    for role in ("worker", "client", "admin"):
        a = ks.add_parser(f"add-{role}", help=f"allow {'an' if role == 'admin' else 'a'} {role} key",
                          description=f"Allow a {role}: make it a key pair and a bundle (keys/issued/NAME) to copy to "
                          "its machine, or with --public register a public key made there by `keys new`.")
        a.add_argument("name", metavar="NAME")
        a.add_argument("--public", metavar="FILE.key", help="a public key made on the peer's machine")
        a.add_argument("--keys", dest="keys_dir", metavar="DIR", default=None, help="the trainer's keys folder")
        a.set_defaults(handler=cmd_keys, role=f"{role}s")
    a = ks.add_parser("remove", help="stop allowing a key", description="Take NAME out of every role.")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--keys", dest="keys_dir", metavar="DIR", default=None, help="the trainer's keys folder")
    a.set_defaults(handler=cmd_keys)
    a = ks.add_parser("new", help="on a worker's or client's machine: make its own key pair",
                      description="Make DIR/id.key and id.key_secret; register id.key on the trainer with "
                      "`keys add-worker NAME --public id.key`, and copy the trainer's server.key into DIR.")
    a.add_argument("folder", metavar="DIR")
    a.set_defaults(handler=cmd_keys)


def _default_trainer_keys(db: str) -> Path:
    return Path(db).parent / "keys"


def cmd_keys(args: argparse.Namespace) -> int:
    from sensorsynth.trainer import keys as K

    folder = Path(getattr(args, "keys_dir", None) or _default_trainer_keys(getattr(args, "db", DEFAULT_DB)))
    try:
        if args.keys_command == "init":
            made = K.init(folder)
            for line in made or [f"{folder}: the keys were already there"]:
                print(line)
            print(f"start the trainer with --keys {folder}; add a worker on another machine with "
                  f"`sensorsynth trainer keys add-worker NAME --keys {folder}`")
        elif args.keys_command == "list":
            server = K.public_z85(K.server_public(folder))  # "no queue keys here; run keys init" when absent
            rows = K.listing(folder)
            print(f"{folder}: trainer key {server.decode()[:12]}…")
            for role, name, key in rows:
                print(f"  {role:7s} {name:24s} {key}…")
            if not rows:
                print("  (no keys allowed)")
        elif args.keys_command == "remove":
            gone = K.remove(folder, args.name)
            if not gone:
                raise CliError(f"no key named {args.name!r} in {folder}")
            print(f"removed {', '.join(str(p) for p in gone)}; peers with it are refused from their next message")
        elif args.keys_command == "new":
            public = K.new_bundle(Path(args.folder))
            print(f"made {public} (and its secret, 0600); register it on the trainer with `sensorsynth trainer keys "
                  f"add-worker NAME --public {public.name}` (or add-client), and copy the trainer's server.key here")
        else:
            print(K.add(folder, args.role, args.name, Path(args.public) if args.public else None))
    except K.KeysError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"{folder}: {exc.strerror or exc}") from None
    return 0


def trainer_security(args: argparse.Namespace) -> dict[str, Any]:
    """BrokerConfig fields for the trainer's keys and bounds. Refuses (CliError, one line) to listen beyond
    loopback without keys; makes the keys on first start in a --keys folder that has none."""
    from sensorsynth.trainer import keys as K
    from sensorsynth.trainer.broker import MiB

    pub = _pub_endpoint(args.bind, args.pub)
    exposed = [e for e in (args.bind, pub) if e is not None and not K.is_loopback(e)]
    folder: Path | None
    if args.keys == "none":
        folder = None
    elif args.keys:
        folder = Path(args.keys)
    else:
        default = _default_trainer_keys(args.db)
        folder = default if (default / "server.key_secret").exists() else None
    if folder is None and exposed:
        raise CliError(f"the trainer would listen on {exposed[0]}, beyond this machine, without keys: make them with "
                       f"`sensorsynth trainer keys init --keys {_default_trainer_keys(args.db)}` and start with "
                       f"--keys {_default_trainer_keys(args.db)} (or bind to tcp://127.0.0.1)")
    keys = None
    if folder is not None:
        try:
            for line in K.init(folder) if not (folder / "server.key_secret").exists() else []:
                print(f"trainer: made {line}", flush=True)
            keys = K.ServerKeys.load(folder)
        except (K.KeysError, OSError) as exc:
            raise CliError(f"--keys {folder}: {exc}") from None
    return {
        "keys": keys, "max_steps": args.max_steps, "max_active_per_client": args.max_jobs_per_client,
        "max_queue_bytes": int(args.max_queue_mb * MiB), "keep_s": args.keep_days * 86400.0,
        "keep_jobs": args.keep_jobs, "keep_result_bytes": int(args.keep_results_mb * MiB),
    }


def add_fetch_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("fetch", help="save a finished job's instrument",
                            description="Save the instrument of JOB (its full id; only its submitter or an admin "
                            "key may) to -o PATH.")
    p.add_argument("job", metavar="JOB", help="the job's full id (32 hex digits)")
    p.add_argument("-o", "--output", metavar="PATH", required=True, help="where to save the .instrument file")
    p.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    p.add_argument("--connect", type=_endpoint, default=DEFAULT_CONNECT, help=f"the trainer (default {DEFAULT_CONNECT})")
    p.set_defaults(handler=cmd_fetch)
    add_peer_keys_option(p, "client")


def cmd_fetch(args: argparse.Namespace) -> int:
    from sensorsynth.trainer.client import RequestRefused, TrainerUnavailable

    if not re.match(r"^[0-9a-f]{32}$", args.job):
        raise CliError(f"{args.job!r} is not a full job id (32 hex digits, as submit and `jobs --json` print it)")
    out = Path(args.output)
    if out.exists() and not args.force:
        raise CliError(f"{out}: exists; use --force to overwrite it")
    with _client(args) as client:
        try:
            reply, blob = client.fetch(args.job)
        except (TrainerUnavailable, RequestRefused) as exc:
            raise _refused(exc) from None
    _save_bytes(blob, out, args.force)
    print(f"saved {reply.name} ({len(blob)} bytes) to {out}")
    return 0
