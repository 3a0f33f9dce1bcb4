"""BloodMNIST data: the files (names, checks, cache, class weights), the batch loaders, the batched
augmentation and the LightningDataModule (``conf/data/bloodmnist.yaml`` targets
``bloodcls.data.BloodMNISTDataModule``)."""

from bloodcls.data.datamodule import BloodMNISTDataModule
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

__all__ = ["CLASS_NAMES", "FLAG", "NUM_CLASSES", "SIZES", "SPLITS", "ArrayDataset", "BloodMNISTDataModule", "DataError",
           "ShardSampler", "TensorBatches", "_warned_md5", "check_md5", "class_weights", "default_root", "ensure_file",
           "file_name", "load_cached", "load_npz", "md5sum", "official_md5", "official_url"]
