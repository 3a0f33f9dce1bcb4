"""A run's outcome on disk: ``status.json``, written when the run starts and again however it ends.

A sweep report reads it to tell completed, failed and interrupted jobs apart without parsing logs.
Keys (the contract): ``status`` (running | completed | failed | interrupted), ``error`` (one
paragraph or null), ``error_type`` (exception class name or null), ``traceback`` (for failures
that are not a :class:`~bloodcls.errors.UserError`, else null), ``started_at``, ``finished_at``
(ISO 8601 or null), ``run_name``, ``experiment``, ``last_checkpoint`` (path or null) and
``wandb_id`` (or null). Extra keys: ``group`` (the W&B group, reused on resume), ``resumes``
(when, from which checkpoint and on which commit the run was continued, and each one's ``compute``), ``compute``
(threads, precision, memory layout and processor of the first start), ``commit`` (the code the run
started on: a resumed run may end on another), ``host`` and ``pid`` (to tell a run that is still going
from one that was killed without a chance to record it).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bloodcls.common.checkout import git_commit
from bloodcls.common.rundir import CHECKPOINT_DIR, LAST_CKPT, STATUS_FILE, read_json, write_json
from bloodcls.errors import UserError

log = logging.getLogger(__name__)

RUNNING, COMPLETED, FAILED, INTERRUPTED = "running", "completed", "failed", "interrupted"
# Shell convention for "killed by signal N": 128 + N.
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def clock(seconds: float | None) -> str:
    """``1h05m`` / ``4m07s`` / ``12s``: durations in progress lines and sweep status files (here, below the
    training and the sweeps that both write them)."""
    if seconds is None:
        return "?"
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The run folder's status record, or None when it has none (or an unreadable one)."""
    return read_json(Path(run_dir) / STATUS_FILE)


def still_running(status: dict[str, Any]) -> int | None:
    """The pid of the process that recorded ``status`` if it is still alive on this machine, else None.

    A run killed without warning (SIGKILL, out of memory, power loss) stays "running" in its
    status.json; this tells it apart from a run that really is still going, and from a younger process that
    was given the same pid since (after a reboot pids start again from low numbers).
    """
    pid = status.get("pid")
    if status.get("status") != RUNNING or status.get("host") != socket.gethostname() or not isinstance(pid, int):
        return None
    if pid == os.getpid() or not process_alive(pid):
        return None
    resumes = status.get("resumes") or []
    recorded = resumes[-1].get("at") if resumes and isinstance(resumes[-1], dict) else status.get("started_at")
    try:
        when = dt.datetime.fromisoformat(str(recorded)).timestamp()
    except ValueError:
        return pid
    return None if started_after(pid, when) else pid


def started_after(pid: int, when: float) -> bool:
    """Whether process ``pid`` started after ``when`` (seconds since the epoch, with 5 s of slack): then it is not
    the process that wrote a record at ``when`` but a younger one given the same number (after a reboot, say).
    False where /proc cannot tell."""
    started = process_started(pid)
    return started is not None and started > when + 5.0


def process_started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), from /proc; None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(ln.split()[1]) for ln in Path("/proc/stat").read_text().splitlines()
                    if ln.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: start time in clock ticks
    except (OSError, IndexError, ValueError, StopIteration):
        return None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine, whoever owns it."""
    if pid <= 0:  # 0 and negative numbers name process groups, not a process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


def is_rank_zero() -> bool:
    """False in the extra processes of a multi-GPU (DDP) run: only rank 0 keeps the run folder's records."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


class RunInterrupted(SystemExit):
    """Raised once an interrupted run is recorded; exits 130 (Ctrl-C) or 143 (SIGTERM), like a shell."""

    def __init__(self, signal_name: str, message: str) -> None:
        super().__init__(EXIT_CODES.get(signal_name, 1))
        self.signal_name, self.message = signal_name, message


class RunRecord:
    """The status record of one run folder, rewritten atomically on every change."""

    def __init__(self, run_dir: Path, fields: dict[str, Any], enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.path = self.run_dir / STATUS_FILE
        self.fields = fields
        self.checkpoint_dir = self.run_dir / CHECKPOINT_DIR
        self.trainer: Any = None  # set once built: names the epoch in messages

    def update(self, **fields: Any) -> None:
        self.fields.update(fields)
        self.write()

    def note_start(self, **facts: Any) -> None:
        """Record what this start of the run trained with (threads, precision, layout, processor) beside the start
        itself: ``compute`` for the first, the last ``resumes`` entry for a resume, so a run continued on another
        machine or thread count says so (the published record's ``starts``)."""
        resumes = self.fields.get("resumes") or []
        if resumes:
            resumes[-1] = {**resumes[-1], "compute": facts}
        else:
            self.fields["compute"] = facts
        self.write()

    def write(self) -> None:
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.path, self.fields)

    def last_checkpoint(self) -> str | None:
        """The run's ``last.ckpt`` (from the trainer's ModelCheckpoint when there is one)."""
        candidates = []
        for cb in getattr(self.trainer, "checkpoint_callbacks", None) or []:
            if getattr(cb, "last_model_path", ""):
                candidates.append(Path(cb.last_model_path))
            if getattr(cb, "dirpath", None):
                candidates.append(Path(cb.dirpath) / LAST_CKPT)
        candidates.append(self.checkpoint_dir / LAST_CKPT)
        found = next((p for p in candidates if p.is_file()), None)
        return None if found is None else str(self._spelled_from_run_dir(found))

    def _spelled_from_run_dir(self, path: Path) -> Path:
        """``path`` under ``run_dir`` as the user gave it: Lightning resolves links in checkpoint folders, and a
        status naming ``/home/u/runs/...`` beside ``outputs/...`` reads as two runs."""
        try:
            return self.run_dir / path.resolve().relative_to(self.run_dir.resolve())
        except ValueError:
            return path


def classify(exc: BaseException) -> tuple[str, str | None]:
    """(status, signal name) of an exception that ended a run."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if isinstance(exc, SIGTERMException):
        return INTERRUPTED, "SIGTERM"
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED, "SIGINT"
    # Lightning turns Ctrl-C during fit/test into sys.exit(1), raised while handling the KeyboardInterrupt.
    if isinstance(exc, SystemExit) and isinstance(exc.__context__, KeyboardInterrupt):
        return INTERRUPTED, "SIGINT"
    return FAILED, None


def _failure_fields(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, UserError):
        return {"error": str(exc), "error_type": type(exc).__name__, "traceback": None}
    return {
        "error": f"{type(exc).__name__}: {exc}",
        "error_type": type(exc).__name__,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


def _interrupted_message(record: RunRecord, signal_name: str, last: str | None) -> str:
    how = "Ctrl-C (SIGINT)" if signal_name == "SIGINT" else "SIGTERM (e.g. a scheduler's preemption or `kill`)"
    epoch = getattr(record.trainer, "current_epoch", None)  # 0-based; the progress lines count epochs from 1
    where = f" during epoch {epoch + 1} ({epoch} finished)" if epoch is not None else ""
    if last is None:
        return (f"Interrupted by {how}{where}, before any epoch had finished, so there is no checkpoint to "
                "continue from: start the run again.")
    return (f"Interrupted by {how}{where}. {last} holds the end of the last finished epoch; continue this "
            f"run in the same folder with `python train.py resume={record.run_dir}`.")


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Make SIGTERM stop the run everywhere, not only inside Lightning's fit/test loops.

    Inside those loops Lightning installs its own handler, which calls this one too: it then does
    nothing and lets Lightning stop cleanly at the end of the batch. Outside them (data loading,
    scoring, writing results) the default action would kill the process before ``status.json``
    could say so; this raises Lightning's ``SIGTERMException`` instead.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    def handler(signum: int, frame: Any) -> None:
        if signal.getsignal(signal.SIGTERM) is handler:  # called directly, not from Lightning's handler
            raise SIGTERMException()

    old_term, old_int = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old_term)
        # Lightning ignores SIGINT for good after a Ctrl-C; give callers (tests, notebooks) theirs back.
        signal.signal(signal.SIGINT, old_int)


@contextmanager
def record_run(
    run_dir: str | Path,
    run_name: str | None,
    experiment: str | None,
    resumed_from: str | Path | None = None,
) -> Iterator[RunRecord]:
    """Write ``status.json`` as running, then completed / failed / interrupted on the way out.

    Failures are re-raised unchanged; an interruption is re-raised as :class:`RunInterrupted`
    (a ``SystemExit`` with the shell's exit code) after its message is logged.
    """
    run_dir = Path(run_dir)
    previous = read_status(run_dir) if resumed_from is not None else None
    fields: dict[str, Any] = {
        "status": RUNNING, "error": None, "error_type": None, "traceback": None,
        "started_at": now_iso(), "finished_at": None, "run_name": run_name, "experiment": experiment,
        "last_checkpoint": None, "wandb_id": None, "group": None, "resumes": [], "compute": None,
        "commit": git_commit(), "host": socket.gethostname(), "pid": os.getpid(),
    }
    if previous:
        here = fields["commit"]
        for key in ("started_at", "wandb_id", "group", "resumes", "compute"):
            fields[key] = previous.get(key, fields[key])
        fields["commit"] = previous.get("commit")  # unknown (null) for a run started before commits were kept
        fields["resumes"] = [*fields["resumes"], {"at": now_iso(), "from": str(resumed_from), "commit": here,
                                                  "previous_status": previous.get("status")}]
    record = RunRecord(run_dir, fields, enabled=is_rank_zero())
    record.write()
    try:
        with _sigterm_raises():
            yield record
    except BaseException as exc:
        status, signal_name = classify(exc)
        last = record.last_checkpoint()
        record.fields.update(status=status, finished_at=now_iso(), last_checkpoint=last)
        if status == INTERRUPTED:
            message = _interrupted_message(record, signal_name, last)
            error_type = "KeyboardInterrupt" if signal_name == "SIGINT" else type(exc).__name__
            record.update(error=message, error_type=error_type, traceback=None)
            log.warning(message)
            raise RunInterrupted(signal_name, message) from exc
        record.update(**_failure_fields(exc))
        raise
    record.update(status=COMPLETED, finished_at=now_iso(), last_checkpoint=record.last_checkpoint())
