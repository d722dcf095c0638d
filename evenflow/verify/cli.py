"""Commands of this stage, registered on the main ``evenflow`` app."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def _summary(report: dict[str, Any], html_path: Path, json_path: Path) -> None:
    """The verdict, the failed checks and the drifted features, as Rich output."""
    from rich.table import Table

    from evenflow.cli import console

    v = report["verdict"]
    style = {"fit": "bold green", "fit_with_warnings": "bold yellow", "not_fit": "bold red"}[v["status"]]
    console.rule(report["title"])
    console.print(f"[{style}]{v['headline']}[/]", highlight=False)
    for text in v["blocking"]:
        console.print(f"  [red]✗[/] {text}", highlight=False)
    for text in v["warnings"]:
        console.print(f"  [yellow]![/] {text}", highlight=False)
    for text in v["notes"]:
        console.print(f"  [dim]·[/] {text}", highlight=False)
    prof = report["profile"]
    splits = Table(title="Rows and label balance per split")
    for col in ("split", "rows", "label balance", "imbalance"):
        splits.add_column(col, justify="left" if col in ("split", "label balance") else "right")
    for split, n in prof["splits"].items():
        b = prof["balance"].get(split, {})
        ratio = b.get("imbalance_ratio")
        splits.add_row(split, f"{n:,}", ", ".join(f"{k}: {c:,}" for k, c in b.get("counts", {}).items()),
                       f"{ratio:.1f} : 1" if ratio else "–")
    console.print(splits)
    if report["checks"]:
        checks = Table(title=f"Checks ({sum(not f['passed'] for f in report['checks'])} of "
                             f"{len(report['checks'])} failed)")
        for col in ("check", "severity", "result", "observed", "bound"):
            checks.add_column(col)
        for f in sorted(report["checks"], key=lambda f: f["passed"]):
            result = ("[green]passed[/]" if f["passed"] else "[yellow]accepted[/]" if f["accepted"]
                      else "[red]FAILED[/]")
            checks.add_row(f["check"], f["severity"], result, str(f["observed"]), str(f["bound"]))
        console.print(checks)
    drifted = {n: d for n, d in prof["drift"].items() if d["flagged"]}
    if drifted:
        drift = Table(title="Features that drift between train and test")
        for col in ("feature", "PSI", "KS D / Cramér's V", "missing train → test"):
            drift.add_column(col, justify="left" if col == "feature" else "right")
        for n, d in drifted.items():
            test = d.get("ks") if d["kind"] == "numeric" else d.get("cramers_v")
            drift.add_row(n, f"{d['psi']:.3f}", f"{test:.3f}" if test is not None else "–",
                          f"{d['missing_train']:.1%} → {d['missing_test']:.1%}")
        console.print(drift)
    console.print(f"  html: {html_path}\n  json: {json_path}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to ``app``."""

    @app.command()
    def report(training_set: Annotated[Path, typer.Argument(
                   help="a built training set's folder (with training_set.parquet), or the pipeline YAML")],
               out: Annotated[Path | None, typer.Option(
                   help="folder to write report.html and report.json (default: the training set's)")] = None,
               strict: Annotated[bool, typer.Option(
                   help="exit with status 1 when the verdict is 'not fit to train'")] = False) -> None:
        """Write the dataset report: a self-contained HTML page with charts, and its JSON twin."""
        import json

        from evenflow.cli import _fail
        from evenflow.errors import EvenflowError
        from evenflow.verify.report import write_report

        try:
            html_path, json_path = write_report(training_set, out)
        except EvenflowError as exc:
            _fail(exc)
            return
        result = json.loads(json_path.read_text())
        _summary(result, html_path, json_path)
        if strict and result["verdict"]["status"] == "not_fit":
            raise typer.Exit(1)
