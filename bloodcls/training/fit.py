"""One training run from a composed config: build (data + model + Trainer) -> fit -> test -> collect -> publish.

Kept free of ``@hydra.main`` so the same function serves ``train.py``, the sweep and the tests.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from dataclasses import dataclass
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
from bloodcls.runs.environment import environment, processor_name
from bloodcls.runs.resume import check_ckpt_path, keep_csv_history, start_or_resume
from bloodcls.runs.status import RunRecord, record_run
from bloodcls.schema import check_config
from bloodcls.training import finetune, summaries
from bloodcls.training import loggers as trackers
from bloodcls.training.callbacks import EpochSeed, EvalResults, History, ResumeLikeUninterrupted, best_epoch
from bloodcls.training.compute import ComputePlan, apply_threads, describe, plan_compute
from bloodcls.training.console import OperationCountSummary, quiet_lightning
from bloodcls.training.progress import EpochProgress
from bloodcls.uncertainty.fitting import summary as trust_summary

log = logging.getLogger(__name__)


def train(cfg: DictConfig, output_dir: str | Path, group: str | None = None) -> dict[str, Any]:
    """Fit, test the best checkpoint once, and write ``results.json``; returns the results.

    The steps: build -> fit -> test -> collect -> publish. ``cfg`` comes back as it went in (a sweep reuses
    it); ``status.json`` records how the run ended (:mod:`bloodcls.runs.status`); ``cfg.resume`` continues
    an interrupted run in its own folder (:mod:`bloodcls.runs.resume`).
    """
    check_config(cfg)  # wrong types and out-of-range values stop here, before any folder or file is touched
    output_dir = Path(output_dir)
    target = start_or_resume(cfg.get("resume"), output_dir)  # refuses a used folder before touching it
    if target is None:  # ckpt_path= is read like resume= (weights-only, one paragraph for a bad file)
        check_ckpt_path(cfg.get("ckpt_path"), training=bool(cfg.get("train", True)))
    start = finetune.read_start(cfg, resuming=target is not None)  # init_from=: read safely, checked (not on resume)
    resumed_from = target.checkpoint if target is not None else None
    with record_run(output_dir, cfg.get("run_name"), cfg.get("experiment_name"), resumed_from) as record:
        exit_code = 1
        try:
            run = _build(cfg, output_dir, group, record, start)
            epochs, fit_wall = _fit(run, resumed_from)
            best_path, test_time = _test(run)
            results = _collect(run, epochs, fit_wall, best_path, test_time)
            # "commit" is the code the run ended on; after a resume it may differ from the one it started on
            results["environment"]["commit_started"] = record.fields.get("commit")
            _publish(run, results, output_dir)
            exit_code = 0
        finally:  # one W&B run per job: the next job of a multirun starts its own, after a failure too
            _close_wandb_run(exit_code)
        if not run.trainer.is_global_zero:
            return results
        if results["test"]["acc"] is None:  # test=false: nothing scored, say so rather than "test acc 0.0000"
            val = results["val"]["best"].get("val/acc")
            log.info("test skipped (test=false)%s -> %s", f"; best validation acc {val:.4f}" if val is not None else "",
                     output_dir / RESULTS_FILE)
        else:
            before = (results.get("init_from") or {}).get("test")
            log.info("test acc %.4f, macro F1 %.4f%s -> %s", results["test"]["acc"] or 0, results["test"]["f1"] or 0,
                     f" (init_from before fine-tuning: acc {before['acc']:.4f}, macro F1 {before['f1']:.4f})"
                     if before else "", output_dir / RESULTS_FILE)
    return results


@dataclass
class Run:
    """What :func:`_build` makes and the later steps use."""

    cfg: DictConfig  # the run's own copy: the caller's config plus the trackers' group and W&B id
    compute: ComputePlan
    datamodule: Any
    model: L.LightningModule
    callbacks: list[Callback]
    history: History
    outcome: EvalResults  # the module hands its scores and test predictions here
    loggers: list[Logger]
    trainer: L.Trainer
    resolved: dict[str, Any]  # the config as results.json and the trackers record it
    start: finetune.Start | None = None  # init_from=: the checkpoint, class matching and starting scores

    @property
    def wandb(self) -> WandbLogger | None:
        return next((lg for lg in self.loggers if isinstance(lg, WandbLogger)), None)

    @property
    def checkpoint(self) -> ModelCheckpoint | None:
        return next((c for c in self.callbacks if isinstance(c, ModelCheckpoint)), None)


def _build(cfg: DictConfig, output_dir: Path, group: str | None, record: RunRecord,
           start: finetune.Start | None = None) -> Run:
    """Compute plan, data, model, callbacks, trackers and Trainer, cheap checks first."""
    output_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # precision and memory layout are settled before the data, the model and the Trainer take them
    compute = plan_compute(cfg.trainer.get("precision", "auto"), cfg.data.get("channels_last", "auto"),
                           cfg.trainer.get("accelerator", "auto"), cfg.get("threads", "auto"))
    apply_threads(compute)
    rank_zero_info(describe(compute))
    record.note_start(threads=compute.threads, precision=compute.precision, channels_last=compute.channels_last,
                      processor=processor_name() if compute.device == "cpu" else None)
    # reads no file yet; run_dir: where a folder's split is kept (and read back by resume=)
    datamodule = instantiate(cfg.data, channels_last=compute.channels_last, run_dir=str(output_dir))
    # Cheap checks first: an unknown architecture or a bad model setting stops before the data file is looked for.
    model = instantiate(cfg.model, num_classes=datamodule.num_classes, class_names=datamodule.class_names,
                        channels_last=compute.channels_last)
    datamodule.prepare_data()  # a missing file fails here, before anything heavy starts
    model.set_class_weights(datamodule.train_class_weights())  # the study's class-weighted loss
    finetune.start_from(start, model, datamodule, cfg.get("init_classes"))  # init_from=: weights, starting scores

    history, outcome = History(), EvalResults()
    callbacks = [*instantiate_callbacks(cfg.get("callbacks")), EpochSeed(cfg.seed), history,
                 EpochProgress(history, record), ResumeLikeUninterrupted(), outcome,
                 *([finetune.StartRecord(start)] if start is not None else [])]  # init_from's record, for resume=
    if cfg.trainer.get("enable_model_summary", True):  # Lightning's own would print "Total FLOPs: 0"
        callbacks.append(OperationCountSummary())
    run_cfg, group = run_config(cfg, record, group)
    loggers = instantiate_loggers(run_cfg.get("logger"), output_dir)
    quiet_lightning()
    trainer: L.Trainer = instantiate(run_cfg.trainer, callbacks=callbacks, logger=loggers, precision=compute.precision,
                                     enable_model_summary=False)
    record.trainer = trainer
    keep_csv_history(loggers)
    run = Run(run_cfg, compute, datamodule, model, callbacks, history, outcome, loggers, trainer,
              OmegaConf.to_container(run_cfg, resolve=True), start)
    for lg in loggers:
        lg.log_hyperparams(run.resolved)
    record.update(group=group, wandb_id=run.wandb.version if run.wandb is not None else None)
    return run


def run_config(cfg: DictConfig, record: RunRecord, group: str | None) -> tuple[DictConfig, str | None]:
    """(the run's config, its group): a copy of ``cfg`` whose trackers carry the group, so the caller's
    config is never changed. A resumed run keeps its group and W&B id; an explicit logger.wandb.group wins."""
    run_cfg = copy.deepcopy(cfg)
    group = record.fields.get("group") or group
    wandb_cfg = cfg.logger.get("wandb") if cfg.get("logger") else None
    if wandb_cfg is not None:
        group = wandb_cfg.get("group") or group
        if group:
            OmegaConf.update(run_cfg, "logger.wandb.group", group, force_add=True)
        if record.fields.get("wandb_id"):
            OmegaConf.update(run_cfg, "logger.wandb.id", record.fields["wandb_id"], force_add=True)
    trackers.tag_runs(run_cfg, group)  # MLflow's tags.group
    return run_cfg, group


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


def _fit(run: Run, resumed_from: Path | None) -> tuple[list[dict[str, Any]], float]:
    """Train (or, with train=false, check that there is a model to score); returns (epoch history, wall seconds)."""
    cfg, fit_wall = run.cfg, 0.0
    if cfg.get("train", True):
        t0 = time.perf_counter()
        ckpt_path = str(resumed_from) if resumed_from is not None else cfg.get("ckpt_path")
        run.trainer.fit(run.model, datamodule=run.datamodule, ckpt_path=ckpt_path)
        fit_wall = time.perf_counter() - t0
    elif not cfg.get("ckpt_path"):
        raise UserError("train=false scores an existing model: give its checkpoint with ckpt_path=<file.ckpt>.")
    # trainer.test(ckpt_path=...) restores callback states from that checkpoint: keep the full history now.
    return [dict(r) for r in run.history.epochs], fit_wall


def _test(run: Run) -> tuple[str | None, float]:
    """Score the test split once with the best checkpoint (or ckpt_path= with train=false); returns
    (that checkpoint, seconds)."""
    ckpt = run.checkpoint
    best_path = ckpt.best_model_path if ckpt is not None and ckpt.best_model_path else None
    if not run.cfg.get("train", True):
        best_path = run.cfg.ckpt_path
    test_time = 0.0
    if run.cfg.get("test", True):  # off in hyper-parameter searches: they must never see the test split
        t0 = time.perf_counter()
        run.trainer.test(run.model, datamodule=run.datamodule, ckpt_path=best_path, verbose=False)
        test_time = time.perf_counter() - t0 - run.outcome.trust_time_s  # the trust fit is timed apart
    return best_path, test_time


def _collect(run: Run, epochs: list[dict[str, Any]], fit_wall: float, best_path: str | None,
             test_time: float) -> dict[str, Any]:
    """The ``results.json`` payload, all of it: what was run, the test scores (plain and TTA), efficiency,
    history, data, config, summary, checkpoints, environment, compute plan and W&B run."""
    cfg, outcome, datamodule, ckpt, wb = run.cfg, run.outcome, run.datamodule, run.checkpoint, run.wandb
    eff = efficiency(build_from_hparams(cfg.model, num_classes=datamodule.num_classes, weights=False), cfg.data.img_size)
    eff.update({"train_time_s": sum(r["time_s"] for r in epochs), "fit_wall_s": fit_wall, "test_time_s": test_time,
                "trust_time_s": outcome.trust_time_s,
                "epochs_run": len(epochs), "best_epoch": best_epoch(epochs, "val/loss")})
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
        "data": datamodule.record(),  # path, md5, split sizes, class names (and a folder's split file, skips)
        "config": run.resolved,
        "init_from": run.start.record() if run.start is not None else None,  # fine-tuning: the starting scores
    }
    results["summary"] = summarize(results)
    results["checkpoints"] = {"best": best_path, "last": ckpt.last_model_path if ckpt is not None else None}
    results["environment"] = environment(run.trainer.strategy.root_device)
    results["compute"] = run.compute.as_dict()
    if wb is not None and run.trainer.is_global_zero:
        results["wandb"] = {"id": wb.version, "mode": getattr(wb.experiment.settings, "mode", None)}
    return results


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
    if (results.get("init_from") or {}).get("test"):
        flat.update({f"init_from/test_{k}": v for k, v in results["init_from"]["test"].items() if k in ("acc", "f1")})
    if results.get("val", {}).get("best"):
        flat.update({f"best_{k}": v for k, v in results["val"]["best"].items()})
    return flat


def _publish(run: Run, results: dict[str, Any], output_dir: Path) -> None:
    """Rank zero only: the trackers' summaries (W&B, TensorBoard, MLflow) and ``results.json``."""
    if not run.trainer.is_global_zero:
        return
    if run.wandb is not None:
        summaries.log_wandb_summary(run.wandb, results, run.datamodule.class_names)
    summaries.log_summary(run.loggers, results, run.datamodule.class_names)  # TensorBoard and MLflow
    write_json(output_dir / RESULTS_FILE, results)


def _close_wandb_run(exit_code: int) -> None:
    """Finish the process's W&B run, if one was started (wandb is only imported when used)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=exit_code)
