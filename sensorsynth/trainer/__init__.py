"""The trainer: fitting jobs over ZeroMQ, durable, many workers.

Pure core: :mod:`.jobs` (a job's states and the only transitions between them) and :mod:`.schedule`
(which idle worker takes which queued job without overbooking a machine's cores). Thin edges around it:
:mod:`.store` (SQLite, WAL: the queue survives restarts), :mod:`.broker` (the ROUTER socket clients and
workers talk to, heartbeats, requeueing, results into the models folder), :mod:`.worker` (a DEALER that fits
one job at a time), :mod:`.client` (submit, watch, list, cancel, fetch), :mod:`.local` (the trainer's own
worker processes) and :mod:`.ray_backend` (fits as Ray tasks). The commands are in
:mod:`sensorsynth.cli.trainer`; the wire is :mod:`sensorsynth.protocol.trainer`.
"""
