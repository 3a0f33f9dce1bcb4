"""The reference study's reported figures (../shared/reference_study.md): the registered models' metadata
(``ModelSpec.study``), the experiment list, and the rows the reports set beside ours."""

from __future__ import annotations

EXPERIMENTS = ("baseline_64", "baseline_128", "baseline_aug", "unet", "inception", "skip", "hybrid")

# params (M) as the study reports them, memory (MB), test acc (%), epochs, train time (s), test time (s)
PERFORMANCE = {
    "baseline_64": {"params_m": 4.29, "memory_mb": 4.36, "acc": 88.66, "epochs": 9, "train_s": 31.13, "test_s": 3.89},
    "baseline_128": {"params_m": 4.29, "memory_mb": 16.36, "acc": 94.45, "epochs": 25, "train_s": 154.59, "test_s": 4.42},
    "baseline_aug": {"params_m": 4.29, "memory_mb": 16.36, "acc": 95.88, "epochs": 29, "train_s": 176.90, "test_s": 4.52},
    "unet": {"params_m": 2.19, "memory_mb": 8.36, "acc": 96.40, "epochs": 25, "train_s": 153.26, "test_s": 4.38},
    "inception": {"params_m": 0.04, "memory_mb": 0.14, "acc": 95.03, "epochs": 30, "train_s": 181.25, "test_s": 6.49},
    "skip": {"params_m": 0.31, "memory_mb": 1.17, "acc": 96.78, "epochs": 20, "train_s": 235.07, "test_s": 6.01},
    "hybrid": {"params_m": 0.05, "memory_mb": 0.17, "acc": 94.53, "epochs": 32, "train_s": 227.08, "test_s": 6.73},
}
# The study's Keras model summaries: input size, trainable parameters, parameters with BatchNorm statistics,
# memory (MiB, float32), forward MACs (millions). The ports match every figure (tests/test_models.py).
COUNTS = {
    "baseline_64": {"img_size": 64, "trainable": 1_143_432, "with_bn": 1_143_880, "mib": 4.36, "macs_m": 43.3},
    "baseline_128": {"img_size": 128, "trainable": 4_289_160, "with_bn": 4_289_608, "mib": 16.36, "macs_m": 173.0},
    "baseline_aug": {"img_size": 128, "trainable": 4_289_160, "with_bn": 4_289_608, "mib": 16.36, "macs_m": 173.0},
    "unet": {"img_size": 128, "trainable": 2_191_432, "with_bn": 2_191_880, "mib": 8.36, "macs_m": 170.9},
    "inception": {"img_size": 128, "trainable": 36_828, "with_bn": 37_164, "mib": 0.14, "macs_m": 61.2},
    "skip": {"img_size": 128, "trainable": 307_112, "with_bn": 308_008, "mib": 1.17, "macs_m": 642.4},
    "hybrid": {"img_size": 128, "trainable": 45_124, "with_bn": 45_524, "mib": 0.17, "macs_m": 77.1},
}
PERFORMANCE_NOTE = ("The study lists 4.29 M parameters for baseline_64; its own memory figure and layer list give "
                    "1.14 M (4.29 M is the 128 px baseline).")

# Macro precision / recall / F1 (x100)
MACRO = {
    "baseline_64": (89, 87, 88), "baseline_128": (94, 94, 94), "baseline_aug": (96, 96, 96), "unet": (95, 95, 95),
    "inception": (97, 97, 97), "skip": (97, 97, 97), "hybrid": (89, 87, 88),
}

# Best per-class F1 the study reports, with the experiments it names.
BEST_PER_CLASS_F1 = {
    "basophil": "0.97 (unet)",
    "eosinophil": "1.00 (all advanced models)",
    "erythroblast": "0.98 (skip, inception, unet)",
    "immature_granulocytes": "0.92 (skip)",
    "lymphocyte": "0.99 (skip, inception)",
    "monocyte": "0.98 (skip)",
    "neutrophil": ">= 0.95 (all)",
    "platelet": "0.99-1.00 (all)",
}
