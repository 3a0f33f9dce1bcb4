"""One lock for a whole sweep, ``<sweep>/sweep.lock``: a second ``sweep.py`` never trains the jobs of a running one.

Each job's ``status.json`` names its host and pid, but a process can only be looked up on its own host: over a
shared filesystem (the SLURM launcher, conf/hydra/launcher/slurm.yaml) a job training on another node looks dead
from here, and a resume would start a second writer in its run folder. So the process that runs a sweep (a new
one, or ``resume=``) holds this lock from before its first job until its report is written: host, pid, when it
took the lock, and a heartbeat rewritten every :data:`HEARTBEAT_S` seconds by a background thread.

A lock is held while its process is alive on this host, or, taken on another host, while its heartbeat is younger
than :data:`STALE_AFTER_S`. Anything else is stale (a dead pid here, a pid since reused by a younger process, a
silent host) and is taken over with a one-line warning. A sweep folder without a lock (sweeps started before the
lock existed) is simply unlocked. Taking the lock is atomic on local and network filesystems (``O_CREAT | O_EXCL``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import secrets
import socket
import threading
from pathlib import Path
from typing import Any

from bloodcls.common.rundir import read_json, write_json
from bloodcls.common.sweepdir import LOCK_FILE
from bloodcls.errors import UserError
from bloodcls.runs.status import process_alive, started_after

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0  # how often the holder rewrites heartbeat_at
STALE_AFTER_S = 600.0  # another host's lock is stale after 10 minutes without a heartbeat (20 missed beats)


class SweepLocked(UserError):
    """The sweep is being run by another live process."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _age_s(stamp: Any, path: Path) -> float:
    """Seconds since ``stamp`` (ISO 8601); the file's modification time when it has none that parses."""
    try:
        then = dt.datetime.fromisoformat(str(stamp))
        then = then if then.tzinfo else then.replace(tzinfo=dt.timezone.utc)
        return (_now() - then).total_seconds()
    except ValueError:
        return _now().timestamp() - path.stat().st_mtime


def holder_of(record: dict[str, Any] | None, path: Path, stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Who holds the lock ``record`` (read from ``path``), in words, or None when it is stale."""
    if record is None:  # just created and not written yet, or damaged: trust it while the file is young
        age = _now().timestamp() - path.stat().st_mtime
        return f"an unknown process (the lock cannot be read; written {age:.0f} s ago)" if age < stale_after_s else None
    host, pid = record.get("host"), record.get("pid")
    if host == socket.gethostname():
        if not isinstance(pid, int) or not process_alive(pid):
            return None
        if started_after(pid, _now().timestamp() - _age_s(record.get("started_at"), path)):
            return None  # a younger process got the number after a restart
        return f"process {pid} on this host ({host}), since {record.get('started_at')}"
    age = _age_s(record.get("heartbeat_at"), path)
    if age >= stale_after_s:
        return None
    return f"process {pid} on host {host}, since {record.get('started_at')} (last heartbeat {age:.0f} s ago)"


class SweepLock:
    """``acquire()`` before a sweep's first job, ``release()`` after its report (or use it as a context manager)."""

    def __init__(self, sweep_dir: str | Path, heartbeat_s: float = HEARTBEAT_S,
                 stale_after_s: float = STALE_AFTER_S) -> None:
        self.sweep_dir = Path(sweep_dir)
        self.path = self.sweep_dir / LOCK_FILE
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.record: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SweepLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, taking over a stale one; a :class:`SweepLocked` paragraph while a live process holds it."""
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._create():
                self._thread = threading.Thread(target=self._beat, name="sweep-lock-heartbeat", daemon=True)
                self._thread.start()
                return
            record = read_json(self.path)
            try:
                holder = holder_of(record, self.path, self.stale_after_s)
            except FileNotFoundError:
                continue  # released while we looked
            if holder is not None:
                raise SweepLocked(self._refusal(holder, record or {}))
            self._take_over(record)
        raise SweepLocked(f"{self.sweep_dir}: another process is taking the lock {self.path} at this very moment; "
                          "check what runs this sweep (its jobs.txt, the processes of its host) before starting it.")

    def _create(self) -> bool:
        now = _now().isoformat(timespec="seconds")
        record = {"host": socket.gethostname(), "pid": os.getpid(), "started_at": now, "heartbeat_at": now,
                  "heartbeat_s": self.heartbeat_s, "token": secrets.token_hex(8)}
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(record, indent=2))
        self.record = record
        return True

    def _take_over(self, record: dict[str, Any] | None) -> None:
        """Move the stale lock aside, unless another process replaced it meanwhile (then it goes back)."""
        why = ("its lock cannot be read" if record is None else
               f"process {record.get('pid')} on this host has ended" if record.get("host") == socket.gethostname() else
               f"no heartbeat from host {record.get('host')} since {record.get('heartbeat_at')}")
        aside = self.path.with_name(f"{LOCK_FILE}.stale-{socket.gethostname()}-{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if read_json(aside) != record:  # a live lock taken between our look and the move: put it back
            try:
                os.link(aside, self.path)
            except OSError:
                pass
        else:
            log.warning("taking over the stale lock of sweep %s (%s)", self.sweep_dir, why)
        aside.unlink(missing_ok=True)

    def _refusal(self, holder: str, record: dict[str, Any]) -> str:
        pid, host = record.get("pid", "<pid>"), record.get("host", "its host")
        return (f"{self.sweep_dir} is being run by {holder}: {self.path} says so, and two processes must never train "
                "the jobs of one sweep (a second writer in a run folder corrupts it). Wait for it to finish, or stop "
                f"it (Ctrl-C, or `kill -TERM {pid}` on {host}: its jobs record themselves as interrupted and keep "
                "last.ckpt; jobs a cluster launcher started run on until cancelled, e.g. with scancel), then resume. "
                "A lock whose process is gone is taken over by the next sweep.py; one from "
                f"another host after {self.stale_after_s / 60:.0f} minutes without a heartbeat. If you are sure "
                f"nothing runs this sweep any more, delete {self.path}.")

    def refresh(self) -> bool:
        """Rewrite the heartbeat; False (with a warning) once the lock no longer names this process."""
        if self.record is None:
            return False
        if (read_json(self.path) or {}).get("token") != self.record["token"]:
            log.warning("sweep %s: %s no longer names this process (taken over while this one was silent for %.0f "
                        "s or more); its jobs may now have a second writer", self.sweep_dir, self.path,
                        self.stale_after_s)
            return False
        self.record["heartbeat_at"] = _now().isoformat(timespec="seconds")
        write_json(self.path, self.record)
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self.refresh():
                    return
            except OSError as err:  # a network filesystem's hiccup: try again at the next beat
                log.warning("sweep %s: could not refresh %s: %s", self.sweep_dir, self.path, err)

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still this process's (a no-op when never taken)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.record is not None and (read_json(self.path) or {}).get("token") == self.record["token"]:
            self.path.unlink(missing_ok=True)
        self.record = None
