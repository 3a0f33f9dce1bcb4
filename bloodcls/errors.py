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


def report_user_errors(func: F) -> F:
    """Turn a :class:`UserError` escaping a CLI entry point into its message and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as err:
            if logging.getLogger().handlers:  # under Hydra: keep the reason in the run's log file too
                log.error("%s", err)
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
