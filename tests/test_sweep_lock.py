"""<sweep>/sweep.lock: one process runs a sweep, on this host or another over a shared filesystem (the SLURM
launcher); a live holder refuses a resume or a second sweep of the same name, a stale lock is taken over."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bloodcls.runs.status import now_iso, process_started, still_running
from bloodcls.sweeps.jobs import CONTINUE, inventory
from bloodcls.sweeps.launch import main as sweep_main
from bloodcls.sweeps.lock import HEARTBEAT_S, STALE_AFTER_S, SweepLock, SweepLocked
from tests.helpers import REPO, no_data, run_cli

HERE = socket.gethostname()
PLAN = {"experiments": ["skip"], "seeds": [0], "overrides": ["logger=csv"]}


def _ago(seconds: float) -> str:
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)).isoformat(timespec="seconds")


def _lock(sweep: Path, host: str, pid: int, started_s_ago: float, beat_s_ago: float) -> Path:
    sweep.mkdir(parents=True, exist_ok=True)
    path = sweep / "sweep.lock"
    path.write_text(json.dumps({"host": host, "pid": pid, "started_at": _ago(started_s_ago),
                                "heartbeat_at": _ago(beat_s_ago), "token": "theirs"}))
    return path


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def _gone_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the number names no process now
    return proc.pid


def test_a_live_sweep_on_another_host_refuses_resume_in_one_paragraph(tmp_path):
    sweep = tmp_path / "sweeps" / "slurm"
    job = sweep / "runs" / "0_skip_s0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- experiment=skip\n- seed=0\n- logger=csv\n")
    (job / "status.json").write_text(json.dumps({"status": "running", "host": "node-7", "pid": 4242}))
    (job / "checkpoints").mkdir()
    (job / "checkpoints" / "last.ckpt").write_bytes(b"training on node-7")
    (sweep / "sweep.json").write_text(json.dumps(PLAN))
    # Why the lock is needed: from here a job running on node-7 looks killed, and would be continued a second time.
    assert inventory(sweep, PLAN)[0].state == CONTINUE
    lock = _lock(sweep, "node-7", 4242, started_s_ago=7200, beat_s_ago=20)
    before = lock.read_bytes()

    proc = run_cli("sweep.py", f"resume={sweep}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    message = proc.stderr.strip()
    assert message.startswith(f"error: {sweep} is being run by process 4242 on host node-7, since ")
    assert re.search(r"\(last heartbeat \d+ s ago\)", message) and "kill -TERM 4242` on node-7" in message
    assert f"delete {lock}." in message
    assert "\n" not in message  # one paragraph
    assert lock.read_bytes() == before  # the holder's lock, its job folder and the plan are left as they were
    assert sorted(p.name for p in (sweep / "runs").iterdir()) == ["0_skip_s0"]
    assert json.loads((sweep / "sweep.json").read_text()) == PLAN and not (sweep / "jobs.txt").exists()


def test_a_second_sweep_of_the_same_name_is_refused_while_the_first_runs(tmp_path, sleeper):
    sweep = tmp_path / "sweeps" / "busy"
    _lock(sweep, HERE, sleeper.pid, started_s_ago=0, beat_s_ago=0)  # as the first sweep.py would have written it
    with pytest.raises(SweepLocked, match=rf"busy is being run by process {sleeper.pid} on this host \({HERE}\)"):
        sweep_main(["name=busy", "experiments=[skip]", "seeds=[0]", "logger=csv", f"paths.log_dir={tmp_path}",
                    *no_data(tmp_path)])
    assert sorted(p.name for p in sweep.iterdir()) == ["sweep.lock"]  # no plan, no runs/: nothing started


@pytest.mark.parametrize("holder", ["another host, silent", "this host, process gone"])
def test_a_stale_lock_is_taken_over_with_a_one_line_warning(tmp_path, caplog, holder):
    if holder == "another host, silent":
        path = _lock(tmp_path, "node-7", 4242, started_s_ago=9000, beat_s_ago=STALE_AFTER_S + 60)
        why = "no heartbeat from host node-7 since "
    else:
        pid = _gone_pid()
        path = _lock(tmp_path, HERE, pid, started_s_ago=60, beat_s_ago=1)  # SIGKILLed a second after its last beat
        why = f"process {pid} on this host has ended"
    lock = SweepLock(tmp_path)
    with caplog.at_level(logging.WARNING, logger="bloodcls.sweeps.lock"):
        lock.acquire()
    try:
        (warning,) = [r.getMessage() for r in caplog.records]
        assert warning.startswith(f"taking over the stale lock of sweep {tmp_path} ({why}") and "\n" not in warning
        record = json.loads(path.read_text())
        assert (record["host"], record["pid"]) == (HERE, os.getpid()) and record["token"] != "theirs"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.lock"]  # the stale one is not left beside it
    finally:
        lock.release()
    assert not path.exists()


def test_a_fresh_heartbeat_from_another_host_holds_the_lock_until_it_goes_stale(tmp_path):
    _lock(tmp_path, "node-7", 4242, started_s_ago=9000, beat_s_ago=STALE_AFTER_S - 30)
    with pytest.raises(SweepLocked, match=r"on host node-7, since .* \(last heartbeat 5\d\d s ago\)"):
        SweepLock(tmp_path).acquire()
    with SweepLock(tmp_path, stale_after_s=STALE_AFTER_S - 60):  # the same lock, judged with a shorter timeout
        assert json.loads((tmp_path / "sweep.lock").read_text())["pid"] == os.getpid()


@pytest.mark.skipif(process_started(os.getpid()) is None, reason="needs /proc to tell when a process started")
def test_a_live_process_that_started_after_the_lock_is_not_its_holder(tmp_path, sleeper):
    """After a restart the number can name another process: the lock is older than it, so it is stale."""
    _lock(tmp_path, HERE, sleeper.pid, started_s_ago=0, beat_s_ago=0)
    with pytest.raises(SweepLocked, match=rf"process {sleeper.pid} on this host"):
        SweepLock(tmp_path).acquire()
    _lock(tmp_path, HERE, sleeper.pid, started_s_ago=3600, beat_s_ago=3600)
    with SweepLock(tmp_path):
        assert json.loads((tmp_path / "sweep.lock").read_text())["pid"] == os.getpid()


def test_the_holder_beats_and_releases_only_its_own_lock(tmp_path, caplog):
    assert not (tmp_path / "sweep.lock").exists()  # a sweep folder without a lock (older sweeps) is unlocked
    lock = SweepLock(tmp_path)
    lock.acquire()
    path = tmp_path / "sweep.lock"
    record = json.loads(path.read_text())
    assert set(record) >= {"host", "pid", "started_at", "heartbeat_at"} and record["pid"] == os.getpid()
    with pytest.raises(SweepLocked, match=rf"process {os.getpid()} on this host"):
        SweepLock(tmp_path).acquire()  # held: even this process cannot take it twice
    path.write_text(json.dumps({**record, "heartbeat_at": _ago(120)}))
    assert lock.refresh()
    assert abs(dt.datetime.fromisoformat(json.loads(path.read_text())["heartbeat_at"]).timestamp() - time.time()) < 3
    other = {**record, "host": "node-7", "token": "theirs"}  # taken over while this process was stopped
    path.write_text(json.dumps(other))
    with caplog.at_level(logging.WARNING, logger="bloodcls.sweeps.lock"):
        assert not lock.refresh()
    assert "no longer names this process" in caplog.text
    lock.release()
    assert json.loads(path.read_text()) == other  # the new holder's lock stays


def test_an_unreadable_lock_holds_while_young_and_is_taken_over_when_old(tmp_path):
    path = tmp_path / "sweep.lock"
    path.write_text("")  # created, not written yet (or damaged)
    with pytest.raises(SweepLocked, match="an unknown process"):
        SweepLock(tmp_path).acquire()
    old = time.time() - STALE_AFTER_S - 10
    os.utime(path, (old, old))
    with SweepLock(tmp_path):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists()


def test_the_guide_states_the_lock_as_the_code_keeps_it():
    guide = (REPO / "docs" / "guide" / "sweeps.md").read_text()
    assert f"rewritten every {HEARTBEAT_S:.0f} s while it runs" in guide
    assert guide.count(f"{STALE_AFTER_S / 60:.0f} minutes") >= 3  # refusal, takeover, clearing by hand


@pytest.mark.skipif(process_started(os.getpid()) is None, reason="needs /proc to tell when a process started")
def test_a_younger_process_with_a_runs_recorded_pid_is_not_the_run(sleeper):
    """The same rule for one run's status.json (a job of a sweep): after a reboot its pid can name another process."""
    hour_ago = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).isoformat(timespec="seconds")
    status = {"status": "running", "host": HERE, "pid": sleeper.pid, "started_at": now_iso()}
    assert still_running(status) == sleeper.pid  # recorded by this very process, just now
    assert still_running({**status, "started_at": hour_ago}) is None  # recorded an hour before it started
    resumed = {**status, "started_at": hour_ago, "resumes": [{"at": now_iso(), "from": "last.ckpt"}]}
    assert still_running(resumed) == sleeper.pid  # continued by it just now: the latest record counts
    assert still_running({**status, "started_at": "not a time"}) == sleeper.pid  # unknown: trust the pid
