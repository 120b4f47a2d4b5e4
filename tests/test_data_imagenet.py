"""Image-folder (ImageNet layout) loading on a tiny generated tree of PNG and JPEG files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from samscale.data import DatasetUnavailable, ImageFolderLoader, ImageFolderSplit, load_dataset, make_loader
from samscale.data.imagenet import CROP_RATIO, CROP_SCALE, IMAGENET_MEAN, IMAGENET_STD, crop_box

Image = pytest.importorskip("PIL.Image")

CLASSES = ["n02", "n01", "b_dog"]  # written in this order, expected back sorted by name


def _pixels(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture
def tree(tmp_path):
    """train/ with 2 PNG + 1 JPEG per class, val/ with 1 PNG per class; returns the root and the val pixels."""
    val_pixels = {}
    for label_seed, name in enumerate(CLASSES):
        for part, count in (("train", 3), ("val", 1)):
            folder = tmp_path / part / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = _pixels(100 * label_seed + 10 * i + (part == "val"), 20, 20)
                extension = ".JPEG" if (part == "train" and i == 2) else ".png"
                Image.fromarray(pixels).save(folder / f"img{i}{extension}")
                if part == "val":
                    val_pixels[name] = pixels
        (tmp_path / "train" / name / "notes.txt").write_text("not an image")
    return tmp_path, val_pixels


def _normalized(pixels: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(pixels.astype(np.float64) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)


def test_labels_follow_sorted_class_names_and_shapes_match(tree):
    root, _ = tree
    ds = load_dataset("imagenet", root=str(root), val_size=0, image_size=16, resize_size=20)
    assert isinstance(ds.train, ImageFolderSplit) and ds.train.classes == ("b_dog", "n01", "n02")
    assert ds.num_classes == 3 and ds.input_shape == (3, 16, 16) and len(ds.train) == 9 and len(ds.test) == 3
    assert ds.train.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [p.split("/")[-2] for p in ds.test.paths] == ["b_dog", "n01", "n02"]
    assert ds.train.training and not ds.test.training
    x, y = next(iter(make_loader(ds.train, 4, shuffle=True, generator=torch.Generator().manual_seed(0))))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_eval_transform_is_a_center_crop_of_the_normalized_pixels(tree):
    root, val_pixels = tree
    ds = load_dataset("imagenet", root=str(root), val_size=0, image_size=16, resize_size=20)
    batches = list(ImageFolderLoader(ds.test, 2, shuffle=False))
    assert [len(y) for _, y in batches] == [2, 1]
    x = torch.cat([b for b, _ in batches])
    for i, name in enumerate(["b_dog", "n01", "n02"]):
        expected = _normalized(val_pixels[name][2:18, 2:18])  # 20x20 kept at 20 (resize 20), center 16x16
        torch.testing.assert_close(x[i].double(), expected, rtol=0, atol=1e-5)


def test_training_transform_with_a_full_crop_is_the_image_and_flips_by_its_coin(tree):
    root, val_pixels = tree
    ds = load_dataset("imagenet", root=str(root), val_size=0, image_size=20)
    split = ds.test.subset(torch.tensor([0]))
    training = ImageFolderSplit(split.paths, split.y, split.classes, training=True, image_size=20)
    full_crop = torch.tensor([1.0, 0.5, 0.0, 0.0] * 10)  # scale 1, aspect ratio exactly 1, offset 0
    image = _normalized(val_pixels["b_dog"])
    kept = training.load(0, torch.cat([full_crop, torch.tensor([0.9])]))
    flipped = training.load(0, torch.cat([full_crop, torch.tensor([0.1])]))
    torch.testing.assert_close(kept.double(), image, rtol=0, atol=1e-5)
    torch.testing.assert_close(flipped.double(), torch.flip(image, dims=[-1]), rtol=0, atol=1e-5)


def test_carved_validation_uses_the_eval_transform(tree):
    root, _ = tree
    ds = load_dataset("imagenet", root=str(root), val_size=3, image_size=16, resize_size=20)
    assert len(ds.val) == 3 and not ds.val.training and ds.train.training and len(ds.train) == 6
    assert not set(ds.val.paths) & set(ds.train.paths)
    assert not load_dataset("imagenet", root=str(root), val_size=0, augment=False).train.training


def test_loader_is_deterministic_and_independent_of_worker_threads(tree):
    root, _ = tree
    ds = load_dataset("imagenet", root=str(root), val_size=0, image_size=8, resize_size=10)

    def epoch(workers: int) -> list[torch.Tensor]:
        loader = ImageFolderLoader(ds.train, 4, shuffle=True, generator=torch.Generator().manual_seed(5),
                                   num_workers=workers)
        assert len(loader) == 3
        return [x for x, _ in loader]

    serial, threaded = epoch(0), epoch(2)
    assert all(torch.equal(a, b) for a, b in zip(serial, threaded))


@pytest.mark.parametrize("width, height", [(40, 30), (30, 40), (64, 64), (200, 20), (20, 200)])
def test_random_resized_crop_boxes_stay_inside_and_respect_scale_and_ratio(width, height):
    generator = torch.Generator().manual_seed(width * height)
    for _ in range(200):
        left, top, w, h = crop_box(width, height, torch.rand(10, 4, generator=generator))
        assert 0 <= left and left + w <= width and 0 <= top and top + h <= height and w > 0 and h > 0
        ratio = w / h
        slack = 1.0 / min(w, h) + 1e-9  # rounding w and h to integers moves the ratio by at most this much
        assert CROP_RATIO[0] - slack <= ratio <= CROP_RATIO[1] + slack or (w, h) == (width, height)


def test_fallback_crop_is_the_central_largest_allowed_box():
    never_fits = torch.tensor([[1.0, 1.0, 0.5, 0.5]] * 10)  # full area at ratio 4/3 cannot fit a 10x100 image
    assert crop_box(10, 100, never_fits) == (0, (100 - round(10 / CROP_RATIO[0])) // 2, 10, round(10 / CROP_RATIO[0]))
    assert CROP_SCALE[1] == 1.0


def test_missing_tree_is_explained(tmp_path):
    with pytest.raises(DatasetUnavailable, match=r"train/<wnid>/\*\.JPEG") as info:
        load_dataset("imagenet", root=str(tmp_path))
    assert f"no folder {tmp_path / 'train'}" in str(info.value)
    assert "registered users" in str(info.value)
