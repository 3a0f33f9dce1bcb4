"""The data: BloodMNIST's files (names, checks, cache, class weights) or a folder of a lab's own images (listing,
checks, split), the batch loaders, the batched augmentation and the LightningDataModules
(``conf/data/bloodmnist.yaml`` targets ``bloodcls.data.BloodMNISTDataModule``, ``conf/data/folder.yaml``
``bloodcls.data.FolderDataModule``).

The LightningDataModules are imported on first use (PEP 562), so that readers of the files and class names (the
sweep's parent process, reports, tables) do not import Lightning."""

from typing import Any

from bloodcls.data.files import (
    CLASS_NAMES,
    FLAG,
    NUM_CLASSES,
    SIZES,
    SPLITS,
    _warned_md5,
    check_md5,
    class_weights,
    default_root,
    ensure_file,
    file_name,
    load_cached,
    load_npz,
    md5sum,
    official_md5,
    official_url,
)
from bloodcls.data.loaders import ArrayDataset, ShardSampler, TensorBatches
from bloodcls.errors import DataError

__all__ = ["CLASS_NAMES", "FLAG", "NUM_CLASSES", "SIZES", "SPLITS", "ArrayDataModule", "ArrayDataset",
           "BloodMNISTDataModule", "DataError", "FolderDataModule", "FolderSplits", "ShardSampler", "TensorBatches",
           "_warned_md5", "check_md5", "class_weights", "default_root", "ensure_file", "file_name", "load_cached",
           "load_folder_splits", "load_npz", "md5sum", "official_md5", "official_url"]

# name -> the module that defines it; these import Lightning
_LAZY = {"ArrayDataModule": "datamodule", "BloodMNISTDataModule": "datamodule", "FolderDataModule": "folder_datamodule",
         "FolderSplits": "folder_datamodule", "load_folder_splits": "folder_datamodule"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
