"""The engine's measurements on their own (server/meter.py): histograms, the level meter, event latency and
the sample clock, CPU load. Values in, figures out: no engine, no threads."""

from __future__ import annotations

import time

import numpy as np
import pytest

from sensorsynth.server.meter import CpuLoad, Latency, Meter, Stats

RATE, BLOCK = 48000, 64
MS = 1_000_000  # ns


def test_stats_percentiles_are_bin_upper_edges_over_the_whole_run():
    s = Stats(1.0, n_bins=100)
    assert s.percentiles(50, 99) == [None, None] and s.count == 0
    for v in range(1, 101):  # 1..100; 100 lands in the last, open-ended bin
        s.add(v - 0.5)
    assert s.count == 100 and s.max == 99.5
    p50, p99 = s.percentiles(50, 99)
    assert p50 == 50.0 and p99 == 99.0
    s.add(1e9)  # beyond the range: counted in the last bin, never lost
    s.add(-3.0)  # below: the first
    assert s.count == 102 and s.counts[-1] == 2 and s.counts[0] == 2 and s.max == 1e9


def test_the_meter_reads_rms_and_peak_since_the_last_reading_and_the_last_second_in_dbfs():
    m = Meter()
    t = np.arange(RATE) / RATE
    sine = (0.5 * np.sin(2 * np.pi * 441 * t)).astype(np.float32)
    for i in range(0, RATE, BLOCK):
        m.measure(sine[i : i + BLOCK])
    m.measure(np.zeros(0, np.float32))  # nothing played: no change
    rms, peak = m.take_level(now=100.0)
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=1e-3) and peak == pytest.approx(0.5, rel=1e-4)
    assert m.take_level(now=100.05) == (0.0, 0.0)  # reset by the reading
    level = m.level(now=100.1)
    assert level["rms_dbfs"] == pytest.approx(-9.0, abs=0.1) and level["peak_dbfs"] == pytest.approx(-6.0, abs=0.1)
    assert m.level(now=102.0) == {"rms_dbfs": None, "peak_dbfs": None}  # a second later: nothing recent


def test_latency_counts_an_event_in_the_first_block_that_took_it_and_reached_its_sample():
    lat = Latency(RATE, BLOCK)
    t0 = 10_000 * MS
    lat.expect(100, t0, posted=1)  # sample 100 is in the block [64, 128)
    lat.expect(130, t0 + 1 * MS, posted=2)  # in [128, 192)
    lat.block_left(0, BLOCK, t0 + 2 * MS, ahead_ms=1.0, taken=2)
    assert lat.latency_ms.count == 0  # neither sample reached yet
    lat.block_left(64, BLOCK, t0 + 3 * MS, ahead_ms=1.0, taken=0)
    assert lat.latency_ms.count == 0  # the right block, but the renderer had not taken the message yet
    lat.block_left(128, BLOCK, t0 + 4 * MS, ahead_ms=0.5, taken=2)
    assert lat.latency_ms.count == 2  # both now (the first was late: the next block played it)
    assert lat.latency_ms.max == pytest.approx(4.0) and lat.to_card_ms.max == pytest.approx(4.5)
    lat.expect(200, t0 + 5 * MS)
    lat.block_left(192, BLOCK, t0 + 6 * MS, ahead_ms=0.0)  # the Python path: no inbox count
    assert lat.latency_ms.count == 3


def test_the_sample_clock_is_the_least_delayed_block_over_a_second():
    lat = Latency(RATE, BLOCK)
    assert lat.sample_at(123 * MS, default=77) == 77  # before any block: the renderer's time
    start_ns = 5_000 * MS
    jitter = np.random.default_rng(0).uniform(0.2, 3.0, RATE // BLOCK + 2) * MS
    jitter[10] = 0.0  # one block left exactly on time
    for k, j in enumerate(jitter):
        sample = k * BLOCK
        lat.block_left(sample, BLOCK, start_ns + sample * 1_000_000_000 // RATE + int(j), ahead_ms=0.0)
    assert lat.offset_ns == start_ns  # the least-delayed block names sample 0's time
    assert lat.sample_at(start_ns + 500 * MS, default=0) == RATE // 2
    assert lat.sample_at(start_ns - 500 * MS, default=0) == 0  # never negative


def test_cpu_load_is_read_at_most_every_second():
    cpu = CpuLoad()
    assert cpu.read() == 0.0  # too soon: the previous (none)
    cpu._last = (time.process_time() - 0.5, time.monotonic() - 1.0, 0.0)  # as if a second ago, half a core busy
    assert 0.45 < cpu.read() < 0.8
