"""The mapping edge's files: learned mappings are saved in ``learned_dir`` when the models folder is not the
server's to write (the systemd layout), and read back from there first."""

from __future__ import annotations

import shutil

from sensorsynth.mapping.learned import LearnedFile
from sensorsynth.server.engine import Engine, EngineSettings
from sensorsynth.server.library import Library
from sensorsynth.server.mapping_edge import MappingEdge
from sensorsynth.server.playout import NullOutput
from sensorsynth.server.rejections import Rejections

from .conftest import BUNDLED

RATE, BLOCK = 22050, 64


def edge(tmp_path, learned_dir=None) -> MappingEdge:
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    shutil.copy(BUNDLED, models / BUNDLED.name)
    library = Library(models)
    library.scan(settle=False)
    engine = Engine(library, EngineSettings(sample_rate=RATE, block_size=BLOCK, max_voices=2, seed=1,
                                            realtime_priority=0), NullOutput(RATE, BLOCK))  # fmt: skip
    return MappingEdge(engine, Rejections(), None, learned_dir)


def test_learned_mappings_are_saved_in_learned_dir_not_the_models_folder(tmp_path):
    learned = tmp_path / "state" / "learned"  # made on the first save
    e = edge(tmp_path, learned)
    e.hub.install("guitar", {})
    path = e.save_learned("guitar")
    assert path == learned / "guitar.learned.json" and path.is_file()
    assert not (tmp_path / "models" / "guitar.learned.json").exists()
    assert LearnedFile.model_validate_json(path.read_text()).control_dims == 16

    again = edge(tmp_path, learned)  # a restart reads it back
    again.load_learned()
    assert "guitar" in again.hub.learned


def test_learned_dir_is_read_before_the_models_folder(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    # what came with the models folder is for another instrument size: ignored with a warning
    (models / "guitar.learned.json").write_text(LearnedFile(instrument="guitar", control_dims=3).model_dump_json())
    e = edge(tmp_path, tmp_path / "learned")
    e.load_learned()
    assert "guitar" not in e.hub.learned

    (tmp_path / "learned").mkdir()
    (tmp_path / "learned" / "guitar.learned.json").write_text(
        LearnedFile(instrument="guitar", control_dims=16).model_dump_json())
    e = edge(tmp_path, tmp_path / "learned")
    e.load_learned()
    assert "guitar" in e.hub.learned  # this server's own save wins over the models folder's


def test_without_learned_dir_the_models_folder_is_used(tmp_path):
    e = edge(tmp_path)
    e.hub.install("guitar", {})
    assert e.save_learned("guitar") == tmp_path / "models" / "guitar.learned.json"
