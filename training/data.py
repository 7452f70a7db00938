"""Readers for MVTec-layout folders and for plain folders of good images.

    root/train/good/*.png                 good parts for training
    root/test/good/*.png                  good parts for testing
    root/test/<defect>/<stem>.png         defective parts
    root/ground_truth/<defect>/<stem>_mask.png
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import EdgeError
from edge.preprocess import IMAGE_SUFFIXES, prepare, read_image, resize_mask


class DataError(EdgeError):
    """A data folder is missing, empty or not in the expected layout."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # 0 good, 1 defective
    defect: str = "good"
    mask_path: Path | None = None


@dataclass
class DataFolder:
    root: Path
    train: list[Sample] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)
    mvtec: bool = True

    @property
    def has_labels(self) -> bool:
        return any(s.label for s in self.test) and any(not s.label for s in self.test)


def image_files(folder: Path) -> list[Path]:
    """The image files directly in `folder` (sorted; none when it is missing)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_folder(root: str | Path, require_test: bool = False) -> DataFolder:
    """Read an MVTec-layout folder, or a plain folder of good images (train only)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} not found")
    train_good = image_files(root / "train" / "good")
    if not (root / "train").is_dir():
        plain = image_files(root)
        if plain and not require_test:
            return DataFolder(root, [Sample(p, 0) for p in plain], [], mvtec=False)
        raise DataError(
            f"data folder {root} is not in MVTec layout (no train/good/): expected train/good, test/<type>, "
            "ground_truth/<type>/<name>_mask.png" + ("" if require_test else ", or a plain folder of good images")
        )
    if not train_good:
        raise DataError(f"data folder {root} has no good images in train/good/")
    test: list[Sample] = []
    test_root = root / "test"
    if test_root.is_dir():
        for defect_dir in sorted(d for d in test_root.iterdir() if d.is_dir()):
            for img in image_files(defect_dir):
                if defect_dir.name == "good":
                    test.append(Sample(img, 0))
                    continue
                mask = root / "ground_truth" / defect_dir.name / f"{img.stem}_mask.png"
                test.append(Sample(img, 1, defect_dir.name, mask if mask.is_file() else None))
    if require_test and not test:
        raise DataError(f"data folder {root} has no test images in test/<type>/")
    return DataFolder(root, [Sample(p, 0) for p in train_good], test)


def load_image(sample_or_path, size: tuple[int, int]) -> np.ndarray:
    """uint8 BGR at the model input size, via the edge's own pre-processing."""
    path = sample_or_path.path if isinstance(sample_or_path, Sample) else sample_or_path
    return prepare(read_image(path), size)


def load_mask(sample: Sample, size: tuple[int, int]) -> np.ndarray:
    """Boolean mask at (height, width); all False for good parts or a defect without a mask file."""
    if sample.mask_path is None:
        return np.zeros(size, dtype=bool)
    import cv2

    mask = cv2.imread(str(sample.mask_path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise DataError(f"mask {sample.mask_path} cannot be read")
    return resize_mask(mask, size)


def fingerprint(samples: list[Sample]) -> str:
    """A short hash of file names and sizes: which good images a model was trained on."""
    h = hashlib.sha256()
    for s in samples:
        h.update(s.path.name.encode())
        h.update(str(s.path.stat().st_size).encode())
    return h.hexdigest()[:16]


def split_holdout(samples: list[Sample], fraction: float, seed: int, minimum: int = 4) -> tuple[list[Sample], list[Sample]]:
    """Split good training images into (train, held-out) deterministically."""
    n_hold = max(minimum, int(round(len(samples) * fraction))) if fraction > 0 else 0
    if n_hold and len(samples) - n_hold < 2:
        raise DataError(f"only {len(samples)} good images: need at least {n_hold + 2} to hold {n_hold} out for thresholds")
    order = np.random.default_rng(seed).permutation(len(samples))
    hold = sorted(order[:n_hold].tolist())
    keep = sorted(order[n_hold:].tolist())
    return [samples[i] for i in keep], [samples[i] for i in hold]
