"""Learned mappings: targets from events, ridge and MLP fits, the JSON file (no pickle), the live predictor,
and the whole record → train → run loop through the hub."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from sensorsynth.instrument_file import load
from sensorsynth.mapping.hub import MappingHub
from sensorsynth.mapping.learned import LearnedFile, targets_at, train
from sensorsynth.protocol.commands import Control
from tests.mapping.streams import REPO

K = 4


def test_targets_are_envelopes_around_events():
    times = np.array([0.0, 0.9, 1.0, 1.1, 3.0])
    y = targets_at(times, np.array([1.0]), np.array([[0, 2.0, 0, 0]]), K, tau=0.1)
    assert y.shape == (5, K)
    np.testing.assert_allclose(y[:, 1], [2 * np.exp(-10), 2 * np.exp(-1), 2.0, 2 * np.exp(-1), 2 * np.exp(-20)])
    assert not y[:, [0, 2, 3]].any()
    assert not targets_at(times, np.array([]), np.zeros((0, K)), K).any()


def pose_data(n=400, seed=0):
    """Two poses of a 3-axis sensor, each paired with its own note; rests between."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.05, (n, 3))
    y = np.zeros((n, K))
    a, b = slice(0, n // 4), slice(n // 2, 3 * n // 4)
    x[a, 0] += 1.0
    y[a, 1] = 0.8
    x[b, 2] += 1.0
    y[b, 3] = 0.5
    return x, y


@pytest.mark.parametrize("model", ["ridge", "mlp"])
def test_train_learns_which_pose_plays_which_note(model):
    x, y = pose_data()
    m = train(x, y, "raw", 3, model, events=2)
    p = m.compiled()
    assert m.outputs == K and m.pairs == 400 and m.score > 0.5
    assert p(np.array([1.0, 0, 0])).argmax() == 1 and p(np.array([0, 0, 1.0])).argmax() == 3
    assert p(np.array([0.0, 0, 0])).max() < m.onset < p(np.array([1.0, 0, 0])).max()  # rest < onset < a pose
    assert m.level == pytest.approx(0.65)  # the median of the recorded peaks (0.8 and 0.5)
    assert train(x, y, "raw", 3, model, event_peaks=np.array([0.8, 0.5, 0.5])).level == pytest.approx(0.5)


def test_train_refuses_too_little():
    with pytest.raises(ValueError, match="at least"):
        train(np.zeros((5, 2)), np.ones((5, K)), "raw", 2)
    with pytest.raises(ValueError, match="no target events"):
        train(np.zeros((50, 2)), np.zeros((50, K)), "raw", 2)


def test_the_file_is_json_data_and_round_trips_exactly():
    x, y = pose_data()
    m = train(x, y, "raw", 3, "mlp")
    doc = LearnedFile(instrument="guitar", control_dims=K, sources={"td": m})
    text = doc.model_dump_json()
    raw = json.loads(text)
    assert raw["format"] == "sensorsynth-learned" and raw["version"] == 1
    assert set(raw["sources"]["td"]) >= {"mean", "scale", "layers", "onset", "model"}
    back = LearnedFile.model_validate_json(text)
    probe = np.array([0.3, -0.2, 0.9])
    np.testing.assert_allclose(back.sources["td"].compiled()(probe), m.compiled()(probe), rtol=1e-12)


@pytest.mark.parametrize("breakage", ["shape", "nan", "outputs", "scale", "extra"])
def test_broken_files_are_refused(breakage):
    x, y = pose_data()
    raw = json.loads(LearnedFile(instrument="g", control_dims=K, sources={"s": train(x, y, "raw", 3)}).model_dump_json())
    src = raw["sources"]["s"]
    if breakage == "shape":
        src["layers"][0]["weight"].pop()
    elif breakage == "nan":
        raw = json.loads(json.dumps(raw).replace(str(src["mean"][0]), "NaN", 1))
    elif breakage == "outputs":
        raw["control_dims"] = K + 1
    elif breakage == "scale":
        src["scale"][0] = 0.0
    else:
        raw["pickle"] = "cos\nsystem\n"
    with pytest.raises((ValidationError, ValueError)):
        LearnedFile.model_validate_json(json.dumps(raw))


def test_record_train_run_through_the_hub():
    """A raw source held in two poses while the instrument plays two different notes: after training and
    with run on, the poses play those notes, and resting is silent."""
    inst = load(REPO / "models" / "guitar.instrument")
    k = inst.spec.control_plane_dim
    hub = MappingHub(lambda n: inst)
    note_a, note_b = np.zeros(k), np.zeros(k)
    note_a[2], note_b[9] = 0.9, 0.6
    hub.record("me", True, 0.0, voice=1, instrument="guitar")
    rng = np.random.default_rng(0)
    t = 0.0
    for rep in range(6):
        for pose, note in (([0.9, 0.1], note_a), ([0.1, 0.9], note_b), ([0.5, 0.5], None)):
            if note is not None:
                hub.target("me", note, t + 0.3)
            for _ in range(30):
                hub.sensor("me", "pad", "raw", np.array(pose) + rng.normal(0, 0.01, 2), t, t, "guitar")
                t += 1 / 50
    data = hub.training_data("me", k)
    assert len(data) == 1 and data[0][0] == "pad" and data[0][3].shape[0] == 540
    source, kind, width, x, y, peaks = data[0]
    assert len(peaks) == 12 and set(np.round(peaks, 2)) == {0.9, 0.6}
    hub.install("guitar", {source: train(x, y, kind, width, "ridge", events=len(peaks), event_peaks=peaks)})
    hub.record("me", False, t)
    hub.run("me", True)
    t += 3.0  # a pause: the learned pose held from the first frame after it still plays
    played = {}
    for pose, name in (([0.9, 0.1], "a"), ([0.5, 0.5], "rest"), ([0.1, 0.9], "b"), ([0.5, 0.5], "rest2")):
        cmds = []
        for _ in range(40):
            cmds += hub.sensor("me", "pad", "raw", np.array(pose), t, t, "guitar")
            t += 1 / 50
        played[name] = [c for c in cmds if isinstance(c, Control)]
    assert played["a"] and np.argmax(played["a"][0].values) == 2
    assert played["b"] and np.argmax(played["b"][0].values) == 9
    assert not played["rest"] and not played["rest2"]
    hub.run("me", False)  # back to the basis: a held pose is silent, a move plays
    assert not hub.sensor("me", "pad", "raw", np.array([0.5, 0.5]), t, t, "guitar")


def test_replay_hands_out_the_fitted_performance_and_records_it():
    inst = load(REPO / "models" / "guitar.instrument")
    hub = MappingHub(lambda n: inst)
    hub.record("me", True, 10.0, voice=3, instrument="guitar", replay=True)
    events = []
    t = 10.0
    while hub.sessions["me"].recording and t < 20:
        out, _ = hub.tick(t)
        events += out
        hub.sensor("me", "s", "raw", np.array([t % 1.0]), t, t, "guitar")
        t += 0.01
    frames = np.unique(inst.control_index // inst.spec.control_plane_dim)
    assert len(events) == frames.size and all(v == 3 for v, _, _ in events)
    assert not hub.sessions["me"].recording  # one pass, then it stops by itself
    assert len(hub.sessions["me"].targets) == frames.size and hub.sessions["me"].pairs() > 500
