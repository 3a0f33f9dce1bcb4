"""The data: BloodMNIST's files (names, checks, cache, class weights) or a folder of a lab's own images (listing,
checks, split), the batch loaders, the batched augmentation and the LightningDataModules
(``conf/data/bloodmnist.yaml`` targets ``bloodcls.data.BloodMNISTDataModule``, ``conf/data/folder.yaml``
``bloodcls.data.FolderDataModule``)."""

from bloodcls.data.datamodule import ArrayDataModule, BloodMNISTDataModule
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
from bloodcls.data.folder_datamodule import FolderDataModule, FolderSplits, load_folder_splits
from bloodcls.data.loaders import ArrayDataset, ShardSampler, TensorBatches
from bloodcls.errors import DataError

__all__ = ["CLASS_NAMES", "FLAG", "NUM_CLASSES", "SIZES", "SPLITS", "ArrayDataModule", "ArrayDataset",
           "BloodMNISTDataModule", "DataError", "FolderDataModule", "FolderSplits", "ShardSampler", "TensorBatches",
           "_warned_md5", "check_md5", "class_weights", "default_root", "ensure_file", "file_name", "load_cached",
           "load_folder_splits", "load_npz", "md5sum", "official_md5", "official_url"]
