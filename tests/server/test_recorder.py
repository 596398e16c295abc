"""The recorder on its own (server/recorder.py): every block pushed lands in the WAV in order; a path it
cannot write is a clear start-up error. (A disk that fills up while recording: tests/server/test_faults.py, with
a real file-size limit.)"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sensorsynth.server.recorder import Recorder, RecorderError

RATE = 16000


def test_blocks_land_whole_and_in_order_and_close_is_idempotent(tmp_path):
    rec = Recorder(tmp_path / "sub" / "take.wav", RATE, flush_s=0.01, subtype="FLOAT")
    blocks = [np.random.default_rng(i).uniform(-1, 1, 64).astype(np.float32) for i in range(50)]
    buffer = np.zeros(64, np.float32)
    for b in blocks:
        buffer[:] = b  # the caller reuses its buffer at once: push must have copied
        rec.push(buffer)
    rec.close()
    rec.close()
    data, rate = sf.read(str(rec.path), dtype="float32")
    assert rate == RATE and rec.failed is None
    np.testing.assert_array_equal(data, np.concatenate(blocks))
    assert rec.seconds == pytest.approx(50 * 64 / RATE)


def test_an_unwritable_path_is_a_recorder_error(tmp_path):
    with pytest.raises(RecorderError, match="cannot record to"):
        Recorder(tmp_path, RATE)  # a folder

