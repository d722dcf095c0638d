"""The ``evenflow`` command line.

User errors print as one clear message (file, record, field, fix) and exit with status 2,
without a traceback. Long stages show a live progress line; every run ends with a summary.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.syntax import Syntax
from rich.table import Table

from evenflow.errors import EvenflowError

app = typer.Typer(help="evenflow: one definition of a dataset, for training and serving.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console()
err_console = Console(stderr=True)

PipelineArg = Annotated[Path, typer.Argument(help="pipeline YAML file")]


class RichReporter:
    """Shows each stage as a spinner with elapsed time, then a tick with its duration."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.timings: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def stage(self, name: str, *, total: int | None = None) -> Iterator[Callable[[float], None]]:
        task = self.progress.add_task(name, total=total)
        start = time.perf_counter()
        try:
            yield lambda done: self.progress.update(task, completed=done)
        finally:
            took = time.perf_counter() - start
            self.timings.append((name, took))
            self.progress.update(task, completed=total or 1, total=total or 1,
                                 description=f"[green]✓[/] {name}")


@contextlib.contextmanager
def _progress() -> Iterator[RichReporter]:
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24),
               TaskProgressColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=err_console, transient=False) as progress:
        yield RichReporter(progress)


def _fail(exc: EvenflowError) -> None:
    # the message is the user's data and our words, not Rich markup: `accept: [name]` must print
    err_console.print(f"[bold red]error:[/] {escape(exc.message if not _where(exc) else _where(exc))}",
                      highlight=False)
    if exc.fix:
        err_console.print(f"  [bold]fix:[/] {escape(exc.fix)}", highlight=False)
    raise typer.Exit(2)


def _where(exc: EvenflowError) -> str:
    text = str(exc).split("\n  fix:")[0]
    return text


def _read_artifacts(path: Path) -> dict[str, Any]:
    import json

    if not path.exists():
        raise EvenflowError("file not found", file=str(path),
                            fix="pass out/<training set>/artifacts.json from evenflow training-set")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EvenflowError(f"not valid JSON: {exc}", file=str(path)) from None
    if not isinstance(data, dict):
        raise EvenflowError("artifacts must be a JSON object keyed by step", file=str(path))
    return data


def _accounting_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Nothing lost: input = output + quarantined + duplicates")
    for col in ("feature set", "source", "input", "output", "quarantined", "duplicates", "reconciles"):
        table.add_column(col, justify="right" if col not in ("feature set", "source") else "left")
    for r in rows:
        table.add_row(r["name"], r["source"], f"{r['input']:,}", f"{r['output']:,}",
                      f"{r['quarantined']:,}", f"{r['duplicates']:,}",
                      "[green]yes[/]" if r["reconciles"] else "[red]NO[/]")
    return table


def _quarantine_table(counts: dict[str, int]) -> Table:
    table = Table(title="Quarantine by reason")
    table.add_column("reason")
    table.add_column("records", justify="right")
    for reason, n in counts.items():
        table.add_row(reason, f"{n:,}")
    return table


@app.command()
def inspect(pipeline: PipelineArg) -> None:
    """Show a pipeline's definition, fingerprint and the SQL plan of each feature set."""
    from evenflow.batch.inspect import plan_sql
    from evenflow.core.pipeline import Pipeline

    try:
        p = Pipeline.load(pipeline)
        console.rule(f"pipeline {p.name}")
        console.print(Syntax(p.to_yaml(), "yaml", word_wrap=True))
        console.print(f"[bold]fingerprint[/] {p.fingerprint()}  (definition only; a training set "
                      "adds its fitted artifacts)")
        for fs in p.feature_sets:
            console.rule(f"feature set {fs.name}: SQL plan")
            console.print(Syntax(plan_sql(p, fs), "sql", word_wrap=True))
    except EvenflowError as exc:
        _fail(exc)


@app.command()
def run(pipeline: PipelineArg,
        memory_limit: Annotated[str, typer.Option(help="DuckDB memory limit")] = "3GB",
        artifacts: Annotated[Path | None, typer.Option(
            help="a training set's artifacts.json: apply its fitted steps instead of fitting")] = None) -> None:
    """Validate and clean every source, compute features at every event, write the lakehouse.

    Learned steps are fitted on all the events unless --artifacts gives the ones a training
    set was fitted with (then the features match what the model was trained on).
    """
    from evenflow.batch.engine import BatchEngine
    from evenflow.batch.publish import write_features
    from evenflow.core.pipeline import Pipeline

    try:
        p = Pipeline.load(pipeline)
        with _progress() as reporter:
            engine = BatchEngine(p, reporter=reporter, memory_limit=memory_limit)
            fitted = _read_artifacts(artifacts) if artifacts else None
            prepared = [engine.prepare(fs, artifacts=fitted) for fs in p.feature_sets]
            written = write_features(engine, prepared, p.output)
        rows = [{"name": ev.feature_set.name, **ev.accounting()} for ev in prepared]
        console.print(_accounting_table(rows))
        console.print(_quarantine_table(engine.quarantine_counts()))
        for name, where in written.items():
            console.print(f"  {name}: {where}")
        if not all(r["reconciles"] for r in rows):
            raise typer.Exit(1)
    except EvenflowError as exc:
        _fail(exc)


@app.command("training-set")
def training_set(spec: Annotated[Path, typer.Argument(help="pipeline YAML with a training_set")],
                 memory_limit: Annotated[str, typer.Option(help="DuckDB memory limit")] = "3GB",
                 warehouse: Annotated[str | None, typer.Option(
                     help="override the warehouse: duckdb:FILE or postgresql://host/db")] = None) -> None:
    """Build the point-in-time training set, split it, and publish it with its dataset card."""
    from evenflow.batch.engine import BatchEngine
    from evenflow.batch.publish import write_training_set
    from evenflow.batch.training import SPLITS, build
    from evenflow.core.pipeline import Pipeline

    try:
        p = Pipeline.load(spec)
        output = p.output if warehouse is None else p.output.model_copy(update={"warehouse": warehouse})
        with _progress() as reporter:
            engine = BatchEngine(p, reporter=reporter, memory_limit=memory_limit)
            ts = build(p, engine=engine)
            written = write_training_set(ts, output)
        card = ts.card
        summary = Table(title=f"training set {ts.name}  (fingerprint {ts.fingerprint})")
        for col in ("split", "rows", "label balance"):
            summary.add_column(col)
        for split in SPLITS:
            bal = ", ".join(f"{k}: {v:,}" for k, v in card["label_balance"].get(split, {}).items())
            summary.add_row(split, f"{card['rows'][split]:,}", bal)
        for reason, n in card["held_out"].items():
            summary.add_row(f"held out: {reason}", f"{n:,}", "")
        console.print(summary)
        console.print(_accounting_table(card["feature_sets"]))
        console.print(_quarantine_table(card["quarantine"]))
        if card.get("contracts"):
            contracts = Table(title="contracts")
            for col in ("source", "rule", "severity", "result", "observed", "bound"):
                contracts.add_column(col)
            for source, results in card["contracts"].items():
                for r in results:
                    contracts.add_row(source, r["name"], r["severity"], "pass" if r["passed"] else "FAIL",
                                      f"{r['observed']}", f"{r['bound']}")
            console.print(contracts)
        if card.get("checks"):
            checks = Table(title="contamination and leakage checks")
            for col in ("check", "result", "rows", "message"):
                checks.add_column(col)
            for c in card["checks"]:
                result = "pass" if c["passed"] else "accepted" if c["accepted"] else c["severity"]
                checks.add_row(c["check"], result, str(c["rows"]), c["message"][:100])
            console.print(checks)
        for name, where in written.items():
            console.print(f"  {name}: {where}")
    except EvenflowError as exc:
        _fail(exc)


# Commands of the other stages register themselves; each module imports its heavy libraries lazily.
for _module in ("evenflow.stream.cli", "evenflow.verify.cli"):
    __import__(_module, fromlist=["register"]).register(app)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
