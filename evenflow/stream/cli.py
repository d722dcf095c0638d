"""Commands of this stage, registered on the main ``evenflow`` app."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to ``app``."""
    from evenflow.stream.runner import register_consume

    register_consume(app)
    from evenflow.stream.parity import register_parity

    register_parity(app)
    from evenflow.stream.service import register_serve

    register_serve(app)
    from evenflow.stream.backfill import register_backfill

    register_backfill(app)
    from evenflow.stream.transform import register_transform

    register_transform(app)
