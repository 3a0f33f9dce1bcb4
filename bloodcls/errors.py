"""User-facing errors: one clear paragraph that says what to do, never a traceback wall."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """A problem the user can fix (bad input, missing data, bad config); shown without a traceback."""


class DataError(UserError):
    """The dataset file is missing, corrupt or not in the MedMNIST layout."""


def _in_multirun() -> bool:
    """True inside a job of a Hydra multirun (``-m``)."""
    if "hydra" not in sys.modules:
        return False
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _failed_job(err: BaseException) -> Exception:
    """The exception a failed multirun job hands to Hydra: one line in Hydra's final report."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import CompactHydraException

    hc = HydraConfig.get()
    where = f"job {hc.job.num} ({hc.runtime.output_dir})"
    message = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
    return CompactHydraException(f"error: {where} failed: {message} Its status.json has the details; "
                                 "the other jobs of the sweep still ran.")


def _log_to_files(err: BaseException) -> None:
    """Write the error to the log files only (Hydra's job log), not to the console handlers."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (err,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def report_user_errors(func: F) -> F:
    """Turn a :class:`UserError` escaping a CLI entry point into its message and exit status 2.

    In a Hydra multirun job the error is printed and handed back to Hydra as an ordinary exception
    instead (``sys.exit`` there would end the whole sweep): Hydra records the job as failed, runs the
    remaining jobs, then reports the first failure in one line and exits with status 1.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as err:
            _log_to_files(err)  # under Hydra: keep the reason in the run's log file; the console gets it once below
            if _in_multirun():
                print(f"error: {err}", file=sys.stderr)
                raise _failed_job(err) from None
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except Exception as err:
            if _in_multirun():
                log.exception("job failed")  # the traceback goes to the job's log and its status.json
                raise _failed_job(err) from None
            raise

    return wrapper  # type: ignore[return-value]
