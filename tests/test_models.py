"""The bundled instruments: loadable, small, with provenance that matches their source clip."""

import json
from pathlib import Path

import numpy as np
import pytest

from sensorsynth.instrument_file import describe, load, sha256_of
from sensorsynth.render.performance import render_reconstruction

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted((ROOT / "models").glob("*.instrument"))
AUDIO = ROOT.parent / "shared" / "audio"


def test_a_default_instrument_is_bundled():
    assert (ROOT / "models" / "guitar.instrument") in MODELS


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_bundled_instrument_is_valid_small_and_traceable(path):
    inst = load(path)
    assert path.stat().st_size <= 100_000
    manifest = inst.manifest
    assert manifest.source is not None and manifest.training and manifest.final_loss is not None
    clip = AUDIO / manifest.source.name
    if clip.exists():
        assert sha256_of(clip) == manifest.source.sha256
    sidecar = path.with_name(path.name + ".json")
    assert sidecar.exists(), "each bundled instrument has a readable copy of its manifest beside it"
    summary = json.loads(sidecar.read_text())
    assert summary["created"] == manifest.created and summary["arrays"] == describe(inst)["arrays"]


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_bundled_instrument_plays(path):
    out = render_reconstruction(load(path), seed=0)
    assert np.all(np.isfinite(out)) and 0.05 < np.abs(out).max() <= 1.0
