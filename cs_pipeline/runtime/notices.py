"""Dagster's notices about beta, preview and superseded parameters are for the project's developers, not
for the people running the command line: ``silence_dagster_notices`` filters them."""

from __future__ import annotations

import warnings


def silence_dagster_notices() -> None:
    """Ignore Dagster's beta/preview/supersession warnings (by category, and by message for other Dagster
    versions) and the ``XDG_RUNTIME_DIR is not set`` notice, for the rest of this process."""
    for pattern in (r".*is currently in beta", r".*is currently in preview", r".*is superseded",
                    r"XDG_RUNTIME_DIR is not set"):
        warnings.filterwarnings("ignore", message=pattern)
    try:
        from dagster._utils.warnings import (
            BetaWarning,
            PreviewWarning,
            SupersessionWarning,
        )

        for category in (BetaWarning, PreviewWarning, SupersessionWarning):
            warnings.filterwarnings("ignore", category=category)
    except ImportError:  # another Dagster version: the message patterns above still apply
        pass
