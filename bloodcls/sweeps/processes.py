"""Training processes of a sweep: each in its own process group, a few at a time, stopped together.

Launchers start workers of their own (joblib, submitit); signalling only the direct child would leave
them training and holding the terminal, so Ctrl-C / SIGTERM is passed to every job's whole group. After
a signal no new job starts, the running ones get ``grace_s`` seconds to stop cleanly (Lightning keeps
their last checkpoint and ``status.json`` says "interrupted"), then their groups are killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence

from bloodcls.common.files import REPO

TICK_S = 30.0  # how often the caller's ``tick`` runs while jobs train (the sweep's jobs.txt)


def run_groups(commands: Sequence[Sequence[str]], jobs: int = 1, grace_s: float = 60.0,
               tick: Callable[[], None] | None = None, on_start: Callable[[int], None] | None = None,
               tick_s: float = TICK_S) -> list[int | None]:
    """Run ``commands`` at most ``jobs`` at a time; returns each one's exit status (None: never started,
    because a signal stopped the sweep first). ``on_start(i)`` runs before command ``i`` starts, ``tick()``
    every ``tick_s`` seconds and once at the end."""
    pending = list(range(len(commands)))
    running: dict[int, subprocess.Popen] = {}
    codes: list[int | None] = [None] * len(commands)
    received: list[float] = []

    def forward(signum, _frame) -> None:
        if not received:
            print(f"[sweep] {signal.Signals(signum).name}: stopping the jobs, then reporting what finished", flush=True)
        received.append(time.monotonic())
        for proc in list(running.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    last_tick = time.monotonic()
    try:
        while pending or running:
            while pending and len(running) < max(1, jobs) and not received:
                i = pending.pop(0)
                if on_start is not None:
                    on_start(i)
                running[i] = subprocess.Popen(list(commands[i]), cwd=REPO, start_new_session=True)
            if received:
                pending.clear()
            for i, proc in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                codes[i] = code
                del running[i]
                with contextlib.suppress(ProcessLookupError):  # launcher workers left behind by a stopped job
                    os.killpg(proc.pid, signal.SIGKILL)
            if received and time.monotonic() - received[0] > grace_s:
                for proc in running.values():
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
            if tick is not None and time.monotonic() - last_tick >= tick_s:
                last_tick = time.monotonic()
                tick()
            if running:
                time.sleep(0.5)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if tick is not None:
            tick()
    return codes


def run_process_group(cmd: Sequence[str], grace_s: float = 60.0, tick: Callable[[], None] | None = None) -> int:
    """One command (a Hydra multirun) in its own process group; see :func:`run_groups`."""
    code = run_groups([cmd], 1, grace_s, tick)[0]
    return 1 if code is None else code
