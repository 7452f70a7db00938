"""The MVTec reader, the plain-folder reader and the seeded synthetic generator."""

import hashlib
import subprocess
import sys

import cv2
import numpy as np
import pytest

from training.data import DataError, load_folder, split_holdout
from training.synthetic import DEFECTS, SyntheticConfig, generate
from tests.helpers import SHARED_DATASETS


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_same_seed_writes_identical_files_and_another_seed_does_not(tmp_path):
    cfg = SyntheticConfig(train=3, test_good=2, test_defect=2, size=64, seed=5)
    a, b = generate(tmp_path / "a", cfg), generate(tmp_path / "b", cfg)
    c = generate(tmp_path / "c", SyntheticConfig(train=3, test_good=2, test_defect=2, size=64, seed=6))
    assert _digest(a) == _digest(b) != _digest(c)


def test_every_defect_has_a_mask_that_covers_a_visible_change(tmp_path):
    root = generate(tmp_path / "d", SyntheticConfig(train=2, test_good=1, test_defect=3, size=128, seed=1))
    data = load_folder(root)
    defects = [s for s in data.test if s.label]
    assert {s.defect for s in defects} == set(DEFECTS)
    for s in defects:
        mask = cv2.imread(str(s.mask_path), cv2.IMREAD_GRAYSCALE)
        assert set(np.unique(mask)) <= {0, 255} and (mask > 0).sum() > 10


@pytest.mark.skipif(not (SHARED_DATASETS / "verify.py").is_file(), reason="shared dataset checker not present")
def test_generated_folder_passes_the_shared_layout_checker(tmp_path):
    root = generate(tmp_path / "v", SyntheticConfig(train=3, test_good=2, test_defect=2, size=64, seed=2))
    proc = subprocess.run([sys.executable, str(SHARED_DATASETS / "verify.py"), "--strict", str(root)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_plain_folder_of_good_images_reads_as_training_data(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    data = load_folder(tmp_path)
    assert not data.mvtec and len(data.train) == 3 and data.test == []
    with pytest.raises(DataError, match="not in MVTec layout"):
        load_folder(tmp_path, require_test=True)


def test_mvtec_folder_without_good_training_images_is_refused(tmp_path):
    (tmp_path / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match="no good images"):
        load_folder(tmp_path)


def test_holdout_split_is_deterministic_and_disjoint(synthetic_data):
    train = load_folder(synthetic_data).train
    a1, h1 = split_holdout(train, 0.2, seed=0)
    a2, h2 = split_holdout(train, 0.2, seed=0)
    assert h1 == h2 and not set(a1) & set(h1) and len(a1) + len(h1) == len(train)


@pytest.mark.skipif(not (SHARED_DATASETS / "magnetic_tile").is_dir(), reason="shared magnetic_tile set not present")
def test_magnetic_tile_reads_with_masks_for_every_defect():
    data = load_folder(SHARED_DATASETS / "magnetic_tile", require_test=True)
    assert len(data.train) == 762
    assert all(s.mask_path is not None for s in data.test if s.label)
