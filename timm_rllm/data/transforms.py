"""2D transforms for MedMNIST: channel policy, a stated resize-or-pad policy, timm augmentations."""

from __future__ import annotations

from torchvision import transforms as T


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
    if resize not in ("resize", "pad"):
        raise ValueError(f"resize policy must be 'resize' or 'pad', not {resize!r}")
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
