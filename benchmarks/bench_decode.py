"""Image-folder decode throughput: images per second of `ImageFolderLoader` with 0 (decoding in the training thread)
and N decoding threads, training transform (random-resized crop to 224, flip, normalization) as in ImageNet training.

The images are JPEGs generated into a temporary folder, ImageNet-like in size (500 × 375 by default), so the number
measures decoding, resizing and normalizing, not the disk. Arguments: IMAGES WORKERS... (default 192 and 1 2 4); the
table prints images/s and the speed-up over 0 threads. Pillow releases the GIL while it decodes and resizes, so the
threads scale with the cores that are free; a GPU node has 8-16 of them per GPU.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from samscale.data import ImageFolderLoader, load_dataset


def write_images(root: Path, n: int, size: tuple[int, int] = (500, 375)) -> None:
    """`n` JPEG images (quality 90) of smooth random content in two class folders of train/ and one of val/."""
    from PIL import Image

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size[1] // 25 + 1, size[0] // 25 + 1, 3), dtype=np.uint8)
    for i in range(n):
        folder = root / "train" / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(np.roll(base, i, axis=0)).resize(size, Image.Resampling.BILINEAR)
        image.save(folder / f"{i}.jpg", quality=90)
    for name in ("class0", "class1"):
        (root / "val" / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(base).save(root / "val" / name / "0.jpg")


def images_per_second(loader: ImageFolderLoader) -> float:
    started = time.perf_counter()
    count = sum(len(x) for x, _ in loader)
    return count / (time.perf_counter() - started)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 192
    workers = [int(w) for w in sys.argv[2:]] or [1, 2, 4]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="samscale-decode-") as folder:
        write_images(Path(folder), n)
        train = load_dataset("imagenet", root=folder, val_size=0).train

        def loader(threads: int) -> ImageFolderLoader:
            return ImageFolderLoader(train, 64, shuffle=True, generator=torch.Generator().manual_seed(0),
                                     num_workers=threads)

        images_per_second(loader(max(workers)))  # warm the page cache and Pillow
        base = images_per_second(loader(0))
        print(f"{n} JPEG images 500x375 → 224x224 training crops, batch 64")
        print(f"{'threads':>8} {'images/s':>10} {'speed-up':>9}")
        print(f"{0:>8} {base:>10.1f} {1.0:>9.2f}")
        for threads in workers:
            rate = images_per_second(loader(threads))
            print(f"{threads:>8} {rate:>10.1f} {rate / base:>9.2f}")


if __name__ == "__main__":
    main()
