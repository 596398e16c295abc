"""The Python path's play-out on its own (server/playout.py): the ring and the clock-paced null output."""

from __future__ import annotations

import time

import numpy as np

from sensorsynth.server.playout import H_READ, NullOutput, Ring

RATE, BLOCK = 8000, 64


def test_the_ring_wraps_and_counts_what_it_holds():
    ring = Ring(5 * BLOCK)
    blocks = [np.full(BLOCK, i, np.float32) for i in range(1, 8)]
    for b in blocks[:4]:
        ring.write(b)
    assert ring.fill == 4 * BLOCK
    ring.header[H_READ] += 3 * BLOCK  # the reader took three blocks
    for b in blocks[4:]:
        ring.write(b)  # wraps around the end
    assert ring.fill == 4 * BLOCK
    got = ring.samples[(np.arange(3 * BLOCK, 7 * BLOCK)) % ring.size]
    np.testing.assert_array_equal(got, np.concatenate(blocks[3:]))


def test_the_null_output_consumes_whole_blocks_by_the_clock_and_counts_a_dry_ring():
    out = NullOutput(RATE, BLOCK, ring_blocks=64)
    for _ in range(3):
        out.ring.write(np.ones(BLOCK, np.float32))
    out.start()
    time.sleep(0.25)  # 2000 samples due: 31 whole blocks
    out.advance()
    c = out.counters()
    assert 25 <= c["callbacks"] <= 40, c
    assert c["underruns"] == c["callbacks"] - 3 and c["device_underflow"] == 0  # only 3 blocks were there
    assert out.ring.fill == 0 and "null output" in out.description
    out.stop()
