"""The end of a run, for W&B, TensorBoard and MLflow: the test and efficiency summary and the confusion matrix.

W&B gets its run summary, a table and a plot (:func:`log_wandb_summary`). The per-epoch
metrics and the resolved config reach every logger through Lightning already; this adds what only
exists once the best checkpoint has been tested.
"""

from __future__ import annotations

import logging
from typing import Any

import yaml
from lightning.fabric.utilities.logger import _flatten_dict
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

log = logging.getLogger(__name__)

CONFUSION_TAG = "test/confusion_matrix"
# TensorBoard's HPARAMS table: the config keys that tell the study's runs apart and the scores to compare
# (the whole resolved config is in hparams.yaml and under TEXT; all of it as columns buries these).
HPARAM_KEYS = ("experiment_name", "group", "seed", "recipe_name", "model/name", "model/arch", "data/img_size",
               "data/augment", "data/batch_size", "model/optimizer/lr", "trainer/max_epochs")
HPARAM_METRICS = ("test/acc", "test/f1", "test_tta/acc", "best_val/f1", "efficiency/params_trainable",
                  "efficiency/macs", "efficiency/train_time_s", "efficiency/epochs_run")


def confusion_figure(confmat: list[list[int]], class_names: list[str]):
    """The test confusion matrix (rows: true class) as a matplotlib figure, counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    ax.imshow(confmat, cmap="Blues")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max((max(row) for row in confmat), default=0)
    for i, row in enumerate(confmat):
        for j, n in enumerate(row):
            ax.text(j, i, str(n), ha="center", va="center", fontsize=8, color="white" if n > peak / 2 else "black")
    fig.tight_layout()
    return fig


def _not_logged_yet(results: dict[str, Any]) -> dict[str, float]:
    """The summary less the test scores, which Lightning logged to every tracker during ``trainer.test``."""
    logged = set(results["test"]["scores"]) | set((results.get("test_tta") or {}).get("scores", {}))
    return {k: v for k, v in results["summary"].items() if k not in logged}


def _tensorboard(lg: TensorBoardLogger, results: dict[str, Any], fig) -> None:
    from torch.utils.tensorboard.summary import hparams

    lg.log_metrics(_not_logged_yet(results))
    # The HPARAMS tab: every run's config beside its test scores, one row per run (what Lightning's
    # log_hyperparams(params, metrics) writes, without logging the test scores a second time).
    flat = lg._sanitize_params(_flatten_dict(results["config"]))
    params = {k: flat[k] for k in HPARAM_KEYS if flat.get(k) is not None}
    metrics = {k: results["summary"][k] for k in HPARAM_METRICS if k in results["summary"]}
    writer = lg.experiment._get_file_writer()
    for summary in hparams(params, metrics):
        writer.add_summary(summary)
    config = yaml.safe_dump(results["config"], sort_keys=False)
    lg.experiment.add_text("config", "    " + config.replace("\n", "\n    "))  # Markdown code block
    if fig is not None:
        lg.experiment.add_figure(CONFUSION_TAG, fig, close=False)
    lg.experiment.flush()


def _mlflow(lg: MLFlowLogger, results: dict[str, Any], fig) -> None:
    lg.log_metrics(_not_logged_yet(results))
    if fig is not None:
        lg.experiment.log_figure(lg.run_id, fig, f"{CONFUSION_TAG}.png")


def log_summary(loggers: list[Logger], results: dict[str, Any], class_names: list[str]) -> None:
    """Log the summary to every TensorBoard and MLflow logger; a tracker failing here never loses results.json."""
    trackers = [lg for lg in loggers if isinstance(lg, (TensorBoardLogger, MLFlowLogger))]
    if not trackers:
        return
    confmat = results["test"].get("confusion_matrix")
    fig = confusion_figure(confmat, class_names) if confmat else None
    for lg in trackers:
        try:
            (_tensorboard if isinstance(lg, TensorBoardLogger) else _mlflow)(lg, results, fig)
        except Exception as err:  # noqa: BLE001 - the run's own files matter more than a tracker's copy
            log.warning("could not log the run summary to %s: %s", type(lg).__name__, err)
    if fig is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)


def log_wandb_summary(logger: WandbLogger, results: dict[str, Any], class_names: list[str]) -> None:
    """W&B's run summary, and the test confusion matrix as a table and a plot."""
    import wandb

    run = logger.experiment
    run.summary.update(results["summary"])
    confmat = results["test"].get("confusion_matrix")
    if confmat:
        table = wandb.Table(columns=["true", *class_names], data=[[c, *row] for c, row in zip(class_names, confmat, strict=True)])
        y_true = [i for i, row in enumerate(confmat) for j, n in enumerate(row) for _ in range(n)]
        y_pred = [j for i, row in enumerate(confmat) for j, n in enumerate(row) for _ in range(n)]
        run.log({
            "test/confusion_matrix_table": table,
            "test/confusion_matrix": wandb.plot.confusion_matrix(y_true=y_true, preds=y_pred, class_names=class_names),
        })
