"""Datasets for samscale: sources (MNIST, Fashion-MNIST, CIFAR-10 and its stand-in, ImageNet folders, MNIST-1D,
synthetic regression), seeded validation splits, label noise, in-memory batching and tensor augmentation."""
from samscale.data.augment import PadCropFlip, pad_crop_flip
from samscale.data.dataset import Augmentation, Dataset, SourceDataset
from samscale.data.errors import ChecksumMismatch, DatasetUnavailable, DownloadFailed, UnknownDataset
from samscale.data.imagenet import ImageFolderLoader, ImageFolderSplit
from samscale.data.loader import TensorLoader, make_loader
from samscale.data.paths import data_home, dataset_dir
from samscale.data.registry import DATASETS, DatasetEntry, load_dataset
from samscale.data.split import Split

__all__ = [
    "DATASETS",
    "Augmentation",
    "ChecksumMismatch",
    "Dataset",
    "DatasetEntry",
    "DatasetUnavailable",
    "DownloadFailed",
    "ImageFolderLoader",
    "ImageFolderSplit",
    "PadCropFlip",
    "SourceDataset",
    "Split",
    "TensorLoader",
    "UnknownDataset",
    "data_home",
    "dataset_dir",
    "load_dataset",
    "make_loader",
    "pad_crop_flip",
]
