"""One training run from a composed config: data + model -> Trainer -> fit -> test -> results.json.

Kept free of ``@hydra.main`` so the same function serves ``train.py``, the sweep and the tests.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf

from bloodcls.common.rundir import RESULTS_FILE, write_json
from bloodcls.config import instantiate
from bloodcls.errors import UserError
from bloodcls.models import build_from_hparams
from bloodcls.models.profiling import efficiency
from bloodcls.runs.environment import environment
from bloodcls.runs.resume import check_ckpt_path, keep_csv_history, start_or_resume
from bloodcls.runs.status import RunRecord, record_run
from bloodcls.schema import check_config
from bloodcls.training import loggers as trackers
from bloodcls.training import summaries
from bloodcls.training.callbacks import EpochSeed, EvalResults, History, ResumeLikeUninterrupted, best_epoch
from bloodcls.training.compute import apply_threads, describe, plan_compute
from bloodcls.uncertainty.fitting import summary as trust_summary

log = logging.getLogger(__name__)



def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    callbacks: list[Callback] = []
    for name, conf in (cfg or {}).items():
        if conf is not None and "_target_" in conf:
            callbacks.append(instantiate(conf))
        elif conf is not None:
            raise UserError(f"callbacks.{name} has no _target_; every callback config must name its class.")
    return callbacks


def instantiate_loggers(cfg: DictConfig | None, output_dir: Path) -> list[Logger]:
    loggers: list[Logger] = [instantiate(conf) for conf in (cfg or {}).values() if conf and "_target_" in conf]
    if not any(isinstance(lg, CSVLogger) for lg in loggers):  # a CSV log is always written
        loggers.append(CSVLogger(save_dir=str(output_dir), name="csv", version=""))
    return loggers


def _checkpoint_callback(callbacks: list[Callback]) -> ModelCheckpoint | None:
    return next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)


def _wandb(loggers: list[Logger]) -> WandbLogger | None:
    return next((lg for lg in loggers if isinstance(lg, WandbLogger)), None)


def _log_summary_to_wandb(logger: WandbLogger, results: dict[str, Any], class_names: list[str]) -> None:
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


def _tta_results(outcome: EvalResults) -> dict[str, Any] | None:
    scores = outcome.scores.get("test_tta")
    if not scores:
        return None
    return {"scores": scores, "acc": scores.get("test_tta/acc"), "f1": scores.get("test_tta/f1"),
            "confusion_matrix": outcome.confusion.get("test_tta")}


def summarize(results: dict[str, Any]) -> dict[str, float]:
    """Flat scalars for a tracker's run summary: final test scores (plain and TTA) and efficiency figures."""
    flat = {k: v for k, v in results["test"]["scores"].items()}
    flat.update((results.get("test_tta") or {}).get("scores", {}))
    flat.update({f"efficiency/{k}": v for k, v in results["efficiency"].items() if isinstance(v, (int, float))})
    if results.get("trust"):
        flat.update(trust_summary(results["trust"]))
    if results.get("val", {}).get("best"):
        flat.update({f"best_{k}": v for k, v in results["val"]["best"].items()})
    return flat


def train(cfg: DictConfig, output_dir: str | Path, group: str | None = None) -> dict[str, Any]:
    """Fit, test the best checkpoint once, and write ``results.json``; returns the results.

    ``status.json`` records how the run ended (:mod:`bloodcls.runs.status`); ``cfg.resume`` continues an
    interrupted run in its own folder (:mod:`bloodcls.runs.resume`).
    """
    check_config(cfg)  # wrong types and out-of-range values stop here, before any folder or file is touched
    output_dir = Path(output_dir)
    target = start_or_resume(cfg.get("resume"), output_dir)  # refuses a used folder before touching it
    if target is None:  # ckpt_path= is read like resume= (weights-only, one paragraph for a bad file)
        check_ckpt_path(cfg.get("ckpt_path"), training=bool(cfg.get("train", True)))
    resumed_from = target.checkpoint if target is not None else None
    with record_run(output_dir, cfg.get("run_name"), cfg.get("experiment_name"), resumed_from) as record:
        try:
            return _fit_and_test(cfg, output_dir, group, record, resumed_from)
        except BaseException:
            _close_wandb_run(exit_code=1)  # the next job of a multirun must get a W&B run of its own
            raise


def _fit_and_test(cfg: DictConfig, output_dir: Path, group: str | None, record: RunRecord,
                  resumed_from: Path | None) -> dict[str, Any]:
    output_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    compute = plan_compute(cfg.trainer.get("precision", "auto"), cfg.data.get("channels_last", "auto"),
                           cfg.trainer.get("accelerator", "auto"), cfg.get("threads", "auto"))
    apply_threads(compute)
    rank_zero_info(describe(compute))
    datamodule = instantiate(cfg.data, channels_last=compute.channels_last)  # reads no file yet
    # Cheap checks first: an unknown architecture or a bad model setting stops before the data file is looked for.
    model = instantiate(cfg.model, num_classes=datamodule.num_classes, class_names=datamodule.class_names,
                        channels_last=compute.channels_last)
    datamodule.prepare_data()  # a missing file fails here, before anything heavy starts
    model.set_class_weights(datamodule.train_class_weights())  # the study's class-weighted loss

    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    history = History()
    outcome = EvalResults()  # the module hands its scores and test predictions here
    callbacks += [EpochSeed(cfg.seed), history, ResumeLikeUninterrupted(), outcome]
    group = _wire_wandb(cfg, record, group)
    trackers.tag_runs(cfg, group)  # MLflow's tags.group
    loggers = instantiate_loggers(cfg.get("logger"), output_dir)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, precision=compute.precision)
    record.trainer = trainer
    keep_csv_history(loggers)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    for lg in loggers:
        lg.log_hyperparams(resolved)
    wb = _wandb(loggers)
    record.update(group=group, wandb_id=wb.version if wb is not None else None)

    fit_wall = 0.0
    if cfg.get("train", True):
        t0 = time.perf_counter()
        ckpt_path = str(resumed_from) if resumed_from is not None else cfg.get("ckpt_path")
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        fit_wall = time.perf_counter() - t0
    elif not cfg.get("ckpt_path"):
        raise UserError("train=false scores an existing model: give its checkpoint with ckpt_path=<file.ckpt>.")
    # trainer.test(ckpt_path=...) restores callback states from that checkpoint: keep the full history.
    epochs = [dict(r) for r in history.epochs]

    ckpt = _checkpoint_callback(callbacks)
    best_path = ckpt.best_model_path if ckpt is not None and ckpt.best_model_path else None
    if not cfg.get("train", True):
        best_path = cfg.ckpt_path
    test_time = 0.0
    if cfg.get("test", True):  # off in hyper-parameter searches: they must never see the test split
        t0 = time.perf_counter()
        trainer.test(model, datamodule=datamodule, ckpt_path=best_path, verbose=False)
        test_time = time.perf_counter() - t0

    eff = efficiency(build_from_hparams(cfg.model, num_classes=datamodule.num_classes, weights=False), cfg.data.img_size)
    eff.update({"train_time_s": sum(r["time_s"] for r in epochs), "fit_wall_s": fit_wall, "test_time_s": test_time,
                "epochs_run": len(epochs), "best_epoch": best_epoch(epochs, "val/loss")})
    results = build_results(cfg, outcome, datamodule, epochs, eff, resolved)
    results["checkpoints"] = {"best": best_path, "last": ckpt.last_model_path if ckpt is not None else None}
    results["environment"] = environment(trainer.strategy.root_device)
    results["compute"] = compute.as_dict()
    if trainer.is_global_zero:
        if wb is not None:
            results["wandb"] = {"id": wb.version, "mode": getattr(wb.experiment.settings, "mode", None)}
            _log_summary_to_wandb(wb, results, datamodule.class_names)
        summaries.log_summary(loggers, results, datamodule.class_names)  # TensorBoard and MLflow
        write_json(output_dir / RESULTS_FILE, results)
    _close_wandb_run(exit_code=0)  # one W&B run per job: the next job of a multirun starts its own
    if trainer.is_global_zero:
        log.info("test acc %.4f, macro F1 %.4f -> %s", results["test"]["acc"] or 0, results["test"]["f1"] or 0,
                 output_dir / RESULTS_FILE)
    return results


def _wire_wandb(cfg: DictConfig, record: RunRecord, group: str | None) -> str | None:
    """The run's W&B group (a resumed run keeps its group and id; an explicit logger.wandb.group wins),
    written into the logger's config before it is instantiated."""
    group = record.fields.get("group") or group
    wandb_cfg = cfg.logger.get("wandb") if cfg.get("logger") else None
    if wandb_cfg is not None:
        group = wandb_cfg.get("group") or group
        if group:
            OmegaConf.update(cfg, "logger.wandb.group", group, force_add=True)
        if record.fields.get("wandb_id"):
            OmegaConf.update(cfg, "logger.wandb.id", record.fields["wandb_id"], force_add=True)
    return group


def build_results(cfg: DictConfig, outcome: EvalResults, datamodule, epochs: list[dict[str, Any]], eff: dict[str, Any],
                  resolved: dict) -> dict[str, Any]:
    """The ``results.json`` payload: what was run, the test scores (plain and TTA), efficiency, history."""
    best_val = next((r for r in epochs if r["epoch"] == eff["best_epoch"]), {})
    test_scores = outcome.scores.get("test", {})
    results: dict[str, Any] = {
        "status": "completed",
        "experiment": cfg.get("experiment_name"),
        "run_name": cfg.get("run_name"),
        "model": cfg.model.name,
        "arch": cfg.model.get("arch"),
        "img_size": cfg.data.img_size,
        "augment": "robust" if datamodule.photometric is not None else datamodule.augment,
        "seed": cfg.seed,
        "recipe": cfg.get("recipe_name"),
        "test": {
            "scores": test_scores,
            "acc": test_scores.get("test/acc"),
            "f1": test_scores.get("test/f1"),
            "confusion_matrix": outcome.confusion.get("test"),
            "predictions": outcome.predictions.get("test", []),
            "labels": datamodule.splits["test"][1].cpu().tolist(),
        },
        "val": {"best": {k: v for k, v in best_val.items() if k.startswith("val/")}},
        # model.tta=true: the same test images scored with the 8 rotations/flips averaged, beside "test".
        "test_tta": _tta_results(outcome),
        # callbacks.trust: calibration, abstention and the out-of-distribution gate (bloodcls.uncertainty)
        "trust": outcome.trust,
        "efficiency": eff,
        "history": epochs,
        "data": {"path": str(datamodule.path), "md5": datamodule.md5, "split_sizes": datamodule.split_sizes(),
                 "class_names": datamodule.class_names},
        "config": resolved,
    }
    results["summary"] = summarize(results)
    return results


def _close_wandb_run(exit_code: int) -> None:
    """Finish the process's W&B run, if one was started (wandb is only imported when used)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=exit_code)

