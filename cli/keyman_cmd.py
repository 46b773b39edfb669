"""``tfshare keys serve`` and ``tfshare keys resend``: the key manager's commands (issue 15).

Thin: parse, one call into ``tfshare.keymanager``, render. Registered on the ``keys`` group by
cli/keys_cmd.py.
"""

from __future__ import annotations

import typer


def serve_cmd() -> None:
    """Run the key manager: epoch keys for every epoch-mode channel (not yet built)."""
    raise typer.Exit(2)


def resend_cmd() -> None:
    """Deliver a channel's current epoch key again to one reader (not yet built)."""
    raise typer.Exit(2)
