"""2D transforms for MedMNIST: channel policy, a stated resize-or-pad policy, timm augmentations."""

from __future__ import annotations

from torchvision import transforms as T

RESIZE_POLICIES = ("resize", "pad")


def transforms_2d(
    img_size: int,
    source_size: int,
    source_chans: int,
    in_chans: int,
    train: bool,
    resize: str = "resize",
    hflip: float = 0.0,
    randaug: str | None = None,
    reprob: float = 0.0,
) -> T.Compose:
    """PIL image -> normalised tensor (mean 0.5, std 0.5 per channel).

    Channels: grayscale files are repeated to 3 channels when the model takes 3 (and RGB files are
    converted to gray for a 1-channel model). Size: ``resize`` (bicubic) or ``pad`` (zero padding
    around the original pixels, as MedMNIST+ does) when ``img_size`` differs from the file's.
    Augmentation (train only): horizontal flip, timm RandAugment (e.g. ``rand-m9-mstd0.5``),
    timm random erasing.
    """
    if resize not in RESIZE_POLICIES:
        raise ValueError(f"resize policy must be one of {', '.join(RESIZE_POLICIES)}, not {resize!r}")
    ops: list = []
    if source_chans != in_chans:
        ops.append(T.Grayscale(num_output_channels=in_chans))
    if img_size != source_size:
        if resize == "resize":
            ops.append(T.Resize(img_size, interpolation=T.InterpolationMode.BICUBIC))
        else:
            if img_size < source_size:
                raise ValueError(f"cannot pad {source_size} px images down to {img_size} px")
            left = (img_size - source_size) // 2
            ops.append(T.Pad((left, left, img_size - source_size - left, img_size - source_size - left)))
    if train and hflip > 0:
        ops.append(T.RandomHorizontalFlip(hflip))
    if train and randaug:
        from timm.data.auto_augment import rand_augment_transform

        fill = (128,) * in_chans if in_chans > 1 else 128
        ops.append(rand_augment_transform(randaug, dict(translate_const=int(img_size * 0.45), img_mean=fill)))
    ops += [T.ToTensor(), T.Normalize([0.5] * in_chans, [0.5] * in_chans)]
    if train and reprob > 0:
        from timm.data.random_erasing import RandomErasing

        ops.append(RandomErasing(reprob, mode="pixel", device="cpu"))
    return T.Compose(ops)


class Transform3d:
    """Volume tensor (1, D, H, W) in [0, 1] -> normalised (C, D, H, W); train-time random flips along
    each axis (probability ``flip``) and shifts of up to ``shift`` voxels (wrapped), as options."""

    def __init__(self, in_chans: int, train: bool, flip: float = 0.0, shift: int = 0) -> None:
        self.in_chans, self.train, self.flip, self.shift = in_chans, train, flip, shift

    def __call__(self, x):
        import torch

        if self.train:
            for dim in (1, 2, 3):
                if self.flip and torch.rand(()) < self.flip:
                    x = x.flip(dim)
            if self.shift:
                offsets = torch.randint(-self.shift, self.shift + 1, (3,)).tolist()
                x = x.roll(offsets, dims=(1, 2, 3))
        x = (x - 0.5) / 0.5
        return x.expand(self.in_chans, *x.shape[1:]).contiguous() if self.in_chans != x.shape[0] else x
