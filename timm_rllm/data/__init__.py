"""MedMNIST datasets through the `medmnist` package, offline-first, and their transforms.

Files are looked for in the data folder (``--data-dir`` or ``$TIMM_RLLM_DATA``, default
``~/.medmnist`` as medmnist itself uses), then among the files bundled with this package
(BreastMNIST and AdrenalMNIST3D at 28 px). A missing file is downloaded by medmnist when the
network allows; otherwise the error says where to put it and where it comes from.

Every file is checked against the MD5 that ``medmnist.INFO`` records, once: the result is
remembered by path, size and modification time, so later runs cost nothing. Files of your own in
MedMNIST's format (not the official ones) skip the check with ``TIMM_RLLM_SKIP_MD5=1``.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import medmnist
import numpy as np
import torch
from medmnist import INFO
from torch.utils.data import Dataset

from .._io import verify_once

BUNDLED_DIR = Path(__file__).parent / "files"
DATA_ENV = "TIMM_RLLM_DATA"
SKIP_MD5_ENV = "TIMM_RLLM_SKIP_MD5"
SIZES_2D = (28, 64, 128, 224)
SIZES_3D = (28, 64)
FLAGS_2D = tuple(f for f in INFO if not f.endswith("3d"))
FLAGS_3D = tuple(f for f in INFO if f.endswith("3d"))
MULTI_LABEL = "multi-label, binary-class"


class DataError(RuntimeError):
    """A dataset flag, size or file that cannot be used."""


def bundled_path(flag: str) -> Path:
    return BUNDLED_DIR / f"{flag}.npz"


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".medmnist").expanduser()


def file_name(flag: str, size: int = 28) -> str:
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def expected_md5(flag: str, size: int = 28) -> str:
    return INFO[flag]["MD5" if size == 28 else f"MD5_{size}"]


def check_flag(flag: str, size: int = 28) -> None:
    if flag not in INFO:
        raise DataError(f"unknown MedMNIST dataset {flag!r}; known: {', '.join(INFO)}")
    sizes = SIZES_3D if flag in FLAGS_3D else SIZES_2D
    if size not in sizes:
        raise DataError(f"{flag} comes in sizes {sizes}, not {size}")


def check_md5(path: Path, expected: str) -> None:
    """Raise unless ``path`` has MD5 ``expected``; a file checked before (same size and mtime) is not read again
    (remembered in the block cache's ``.verified`` folder)."""
    from ..llm.cache import BlockCache

    md5 = verify_once(path, expected, "md5", BlockCache().verified_dir)
    if md5 is not None:
        raise DataError(f"{path} has MD5 {md5}, expected {expected}: the file is damaged or not the official one; "
                        f"delete it and download it again (for files of your own in MedMNIST's format, set "
                        f"{SKIP_MD5_ENV}=1)")


def find_file(flag: str, size: int = 28, data_dir: str | os.PathLike | None = None, download: bool = True,
              verify_md5: bool | None = None) -> Path:
    """The npz file of a dataset: local first, then bundled, then downloaded by medmnist."""
    check_flag(flag, size)
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    name = file_name(flag, size)
    path = next((p for p in (root / name, BUNDLED_DIR / name) if p.is_file()), None)
    if path is None and download:
        root.mkdir(parents=True, exist_ok=True)
        try:
            getattr(medmnist, INFO[flag]["python_class"])(split="test", root=str(root), size=size, download=True)
        except Exception:  # medmnist prints its own message and raises on any network failure
            pass
        path = root / name if (root / name).is_file() else None
    if path is None:
        url = INFO[flag]["url" if size == 28 else f"url_{size}"]
        raise DataError(
            f"{name} is not in {root} and could not be downloaded. Download it from {url} "
            f"(MD5 {expected_md5(flag, size)}) and put it in {root}, or point --data-dir / ${DATA_ENV} "
            "at the folder that holds it."
        )
    if verify_md5 is None:
        verify_md5 = os.environ.get(SKIP_MD5_ENV, "") in ("", "0")
    if verify_md5:
        check_md5(path, expected_md5(flag, size))
    return path


class MedMNISTSplit(Dataset):
    """One split of a MedMNIST dataset as (image tensor, label tensor) pairs.

    The arrays are read once with ``np.load`` (the files medmnist writes; its own Dataset
    classes read them the same way). Images go through ``transform`` as PIL images (2D) or
    as float tensors (3D).
    """

    def __init__(self, flag: str, split: str, size: int = 28, data_dir: str | os.PathLike | None = None,
                 transform=None, download: bool = True, verify_md5: bool | None = None) -> None:
        if split not in ("train", "val", "test"):
            raise DataError(f"split must be train, val or test, not {split!r}")
        self.flag, self.split, self.size = flag, split, size
        self.path = find_file(flag, size, data_dir, download, verify_md5)
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                missing = {f"{split}_images", f"{split}_labels"} - set(npz.files)
                if missing:
                    raise DataError(f"{self.path} lacks {sorted(missing)}: not a MedMNIST file")
                self.images = npz[f"{split}_images"]
                self.labels = npz[f"{split}_labels"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"{self.path} is not a readable npz file ({e}): delete it and download it again") from e
        self.info = INFO[flag]
        self.task = self.info["task"]
        self.num_classes = len(self.info["label"])
        self.in_chans = self.info["n_channels"]
        self.is_3d = flag in FLAGS_3D
        self.transform = transform
        self._check_arrays()

    def _check_arrays(self) -> None:
        """The split is what it claims: not empty, images of the stated shape and finite, labels in range."""
        where = f"{self.path} ({self.split} split)"
        images, labels = self.images, self.labels
        if len(images) == 0:
            raise DataError(f"{where} is empty")
        spatial = (self.size,) * (3 if self.is_3d else 2)
        shapes = [(len(images), *spatial)] + ([(len(images), *spatial, 3)] if self.in_chans == 3 else [])
        if images.shape not in shapes:
            raise DataError(f"{where}: images are shaped {images.shape}, expected {' or '.join(map(str, shapes))}")
        if images.dtype.kind == "f" and not np.isfinite(images).all():
            raise DataError(f"{where}: images hold NaN or infinite values")
        multi = self.task == MULTI_LABEL
        width = self.num_classes if multi else 1
        allowed = [(len(images), width)] + ([] if multi else [(len(images),)])
        if labels.shape not in allowed:
            raise DataError(f"{where}: labels are shaped {labels.shape}, expected ({len(images)}, {width})")
        high = 2 if multi else self.num_classes
        if labels.dtype.kind not in "iub" or labels.min() < 0 or labels.max() >= high:
            raise DataError(f"{where}: labels must be integers in 0..{high - 1} ({self.flag} has "
                            f"{self.num_classes} {'labels' if multi else 'classes'}), found "
                            f"{labels.min()}..{labels.max()} ({labels.dtype})")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[i]
        if self.is_3d:
            x = torch.from_numpy(image).float().div(255)[None]  # (1, D, H, W)
            x = self.transform(x) if self.transform else x
        else:
            from PIL import Image

            x = Image.fromarray(image)
            x = self.transform(x) if self.transform else torch.from_numpy(np.array(x)).float().div(255)
        label = torch.from_numpy(np.atleast_1d(self.labels[i]).astype(np.float32 if self.task == MULTI_LABEL
                                                                      else np.int64))
        return x, label if self.task == MULTI_LABEL else label[0]
