"""The dataset report: one self-contained HTML page and its JSON twin, for a built training set.

``write_report(dir)`` reads what ``evenflow training-set`` published in ``dir``
(``training_set.parquet``, and when present ``card.json`` and ``checks.json``), profiles it
(:mod:`evenflow.verify.profile`) and writes ``report.html`` and ``report.json`` next to them.

The page opens with a verdict (fit to train, fit with warnings, or not fit, and why), then the
table of every check with its evidence rows, then label balance, missingness, drift between the
splits and the distributions per split. Charts are Plotly, with plotly.js inlined: the page
works offline and can be mailed around. The JSON twin is the same document the page is drawn
from (it is embedded in the page verbatim), so scripts and people read the same numbers.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from evenflow.errors import EvenflowError
from evenflow.verify.profile import profile
from evenflow.verify.templates.report import render_html

COLORS = {"train": "#1f77b4", "test": "#ff7f0e"}
#: card.json keys under which other stages may record check results, besides checks.json
CARD_CHECK_KEYS = ("contracts", "quality", "label_quality")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EvenflowError(f"not valid JSON: {exc}", file=str(path),
                            fix="rebuild the training set with evenflow training-set") from None


def _as_findings(data: Any, source: str) -> list[dict[str, Any]]:
    """Findings in one shape from ``checks.json`` (a list, or ``{"findings": [...]}``) or a card
    section (a list of results, a mapping of rule name to result, or of source name to results,
    as the card's ``contracts`` holds them)."""
    if isinstance(data, dict) and not any(k in data for k in ("findings", "results")):
        out = []
        for key, value in data.items():
            if isinstance(value, list):  # per source: its contracts' results
                out += _as_findings(value, f"{source} on {key}")
            elif isinstance(value, dict):
                out += _as_findings([{"check": key, **value}], source)
        return out
    if isinstance(data, dict):
        data = data.get("findings", data.get("results"))
    if not isinstance(data, list):
        return []
    out = []
    for item in data:
        if not isinstance(item, dict):
            continue
        rows = item.get("rows")
        count = len(rows) if isinstance(rows, list) else rows if isinstance(rows, int) else \
            item.get("failing_rows", item.get("failures"))
        out.append({"check": str(item.get("check") or item.get("name") or item.get("rule") or "?"),
                    "source": source, "kind": item.get("kind"),
                    "severity": item.get("severity", "error"), "passed": bool(item.get("passed", False)),
                    "accepted": bool(item.get("accepted", False)),
                    "message": item.get("message") or (f"{item['kind']} contract, {item.get('level', '')}-level"
                                                       if item.get("kind") else ""),
                    "observed": item.get("observed"), "bound": item.get("bound"),
                    "offending_rows": count, "evidence": list(item.get("evidence") or [])[:20]})
    return out


def _features(card: dict[str, Any], table: pa.Table, label: str) -> tuple[list[str], dict[str, str]]:
    """Columns to profile, and the ones left out with why (keys, ids, times are not features)."""
    keys = {k for fs in card.get("feature_sets", []) for k in fs.get("key", [])}
    declared = set(card.get("features", []))
    chosen, skipped = [], {}
    for c in table.column_names:
        kind = table.schema.field(c).type
        if c in (label, "split"):
            continue
        if c in declared:
            chosen.append(c)
        elif c in keys:
            skipped[c] = "entity key"
        elif pa.types.is_temporal(kind):
            skipped[c] = "time column"
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            distinct = pc.count_distinct(table.column(c)).as_py()
            # an identifier: its top values and drift say nothing about the data
            if distinct > 50 and distinct > table.num_rows / 2:
                skipped[c] = f"identifier ({distinct:,} distinct values in {table.num_rows:,} rows)"
            else:
                chosen.append(c)
        else:
            chosen.append(c)
    return chosen, skipped


def _verdict(report: dict[str, Any]) -> dict[str, Any]:
    """Fit to train or not, with every reason; blocking reasons first."""
    blocking, warnings, notes = [], [], []
    prof = report["profile"]
    for f in report["checks"]:
        if f["passed"]:
            continue
        text = f"{f['check']}: {f['message']}" + (f" (observed {f['observed']}, bound {f['bound']})"
                                                  if f["observed"] is not None else "")
        if f["severity"] == "error" and not f["accepted"]:
            blocking.append(f"failed check {text}")
        elif f["severity"] == "error":
            warnings.append(f"accepted by name despite failing: {text}")
        elif f["severity"] == "warn":
            warnings.append(f"warning from check {text}")
    if not report["sources"]["checks"]:
        notes.append("no checks.json next to the training set: contamination and leakage checks "
                     "were not run, so this verdict does not cover them")
    train = prof["balance"].get("train")
    if not prof["splits"].get("train"):
        blocking.append("the train split is empty")
    elif train and len([v for v in train["counts"].values() if v]) < 2:
        blocking.append(f"the train split has a single label class ({', '.join(train['counts'])})")
    test = prof["balance"].get("test")
    if not prof["splits"].get("test"):
        warnings.append("the test split is empty: nothing to evaluate on")
    elif test and test["missing_classes"]:
        warnings.append(f"the test split has no rows of class {', '.join(test['missing_classes'])}")
    for name, per in prof["missing"].items():
        if name in prof["features"] and per.get("train", {}).get("fraction") == 1.0:
            warnings.append(f"feature {name} is missing in every train row")
    drifted = [n for n, d in prof["drift"].items() if d["flagged"]]
    if drifted:
        many = len(drifted) > 1
        warnings.append(f"{len(drifted)} feature{'s' * many} drift{'s' * (not many)} between "
                        f"train and test: {', '.join(drifted)}")
    status = "not_fit" if blocking else "fit_with_warnings" if warnings else "fit"
    headline = {"not_fit": f"Not fit to train: {len(blocking)} blocking problem{'s' * (len(blocking) > 1)}",
                "fit_with_warnings": f"Fit to train, with {len(warnings)} warning{'s' * (len(warnings) > 1)}",
                "fit": "Fit to train"}[status]
    return {"status": status, "headline": headline, "blocking": blocking, "warnings": warnings,
            "notes": notes}


def _figure(fig: Any) -> dict[str, Any]:
    """Plotly figure as plain JSON, without the theme template (plotly.js defaults suffice)."""
    data: dict[str, Any] = json.loads(fig.to_json())
    data["layout"].pop("template", None)
    return data


def _charts(prof: dict[str, Any]) -> list[dict[str, Any]]:
    import plotly.graph_objects as go

    def color(split: str) -> str:
        return COLORS.get(split, "#2ca02c")

    layout = {"margin": {"l": 60, "r": 20, "t": 40, "b": 50}, "height": 320,
              "legend": {"orientation": "h", "y": 1.12}}
    charts = []
    bal = go.Figure(layout={**layout, "barmode": "group", "yaxis_title": "share of rows",
                            "xaxis_title": f"label {prof['label']}", "xaxis_type": "category"})
    for split, b in prof["balance"].items():
        bal.add_bar(name=split, x=list(b["counts"]), y=[b["fractions"][k] for k in b["counts"]],
                    text=[f"{n:,}" for n in b["counts"].values()], marker_color=color(split))
    ratios = [b["imbalance_ratio"] or 0 for b in prof["balance"].values()]
    if max(ratios, default=0) > 20:  # a minority class under 5% is invisible on a linear axis
        bal.update_yaxes(type="log", title="share of rows (log scale)")
    charts.append({"id": "chart-balance", "section": "balance", "title": "Label balance per split",
                   "figure": _figure(bal)})
    cols = list(prof["missing"])
    splits = list(prof["splits"])
    z = [[prof["missing"][c][s]["fraction"] or 0.0 for s in splits] for c in cols]
    text = [[f"{prof['missing'][c][s]['missing']:,} of {prof['missing'][c][s]['rows']:,}" for s in splits]
            for c in cols]
    miss = go.Figure(go.Heatmap(z=z, x=splits, y=cols, text=text, zmin=0, zmax=1, colorscale=[[0, "#ffffff"], [1, "#b2182b"]],
                                hovertemplate="%{y} in %{x}: %{z:.1%} missing (%{text})<extra></extra>",
                                colorbar={"title": "missing"}),
                     layout={**layout, "height": max(240, 22 * len(cols) + 90),
                             "yaxis": {"autorange": "reversed", "automargin": True}})
    charts.append({"id": "chart-missing", "section": "missingness",
                   "title": "Missing values per column and split", "figure": _figure(miss)})
    if prof["drift"]:
        names = list(prof["drift"])
        d = prof["drift"]
        drift = go.Figure(go.Bar(
            x=[d[n]["psi"] for n in names], y=names, orientation="h",
            marker_color=["#d62728" if d[n]["flagged"] else "#7f7f7f" for n in names],
            customdata=[[d[n].get("ks") if d[n]["kind"] == "numeric" else d[n].get("cramers_v")] for n in names],
            hovertemplate="%{y}: PSI %{x:.3f}, KS D / Cramér's V %{customdata[0]:.3f}<extra></extra>"),
            layout={**layout, "height": max(240, 22 * len(names) + 90), "xaxis_title": "PSI (test vs train)",
                    "yaxis": {"autorange": "reversed", "automargin": True}})
        drift.add_vline(x=prof["thresholds"]["psi"], line_dash="dash", line_color="#d62728")
        charts.append({"id": "chart-drift", "section": "drift", "title": "Drift between train and test (PSI)",
                       "figure": _figure(drift)})
    for i, (name, feat) in enumerate(prof["features"].items()):
        fig = go.Figure(layout={**layout, "barmode": "overlay" if feat["kind"] == "numeric" else "group",
                                "yaxis_title": "share of the split's rows", "xaxis_title": name})
        if feat["kind"] == "numeric" and feat["histogram"]:
            h = feat["histogram"]
            mids = [(a + b) / 2 for a, b in zip(h["edges"][:-1], h["edges"][1:], strict=True)]
            for split, counts in h["counts"].items():
                n = sum(counts) or 1
                fig.add_bar(name=split, x=mids, y=[c / n for c in counts], width=h["edges"][1] - h["edges"][0],
                            opacity=0.55, marker_color=color(split))
        elif feat["kind"] == "categorical":
            fig.update_xaxes(type="category")
            for split, values in feat["top"].items():
                n = sum(values.values()) or 1
                fig.add_bar(name=split, x=list(values), y=[v / n for v in values.values()],
                            marker_color=color(split))
        charts.append({"id": f"chart-feature-{i}", "section": "distributions", "feature": name,
                       "title": f"{name} per split", "figure": _figure(fig)})
    return charts


def training_set_dir(path: str | Path) -> Path:
    """The published training-set folder from a folder, its Parquet file, or the pipeline YAML."""
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        from evenflow.core.pipeline import Pipeline

        pipeline = Pipeline.load(path)
        if pipeline.training_set is None:
            raise EvenflowError("the pipeline has no training_set", file=str(path),
                                fix="pass a pipeline with a training_set: section, or the training set folder")
        path = Path(pipeline.output.directory) / pipeline.training_set.name
    elif path.suffix == ".parquet":
        path = path.parent
    if not (path / "training_set.parquet").exists():
        raise EvenflowError("no training_set.parquet here: the training set is not built", file=str(path),
                            fix="build it first with: evenflow training-set <pipeline.yaml>")
    return path


def build_report(path: str | Path) -> dict[str, Any]:
    """The report's content as a JSON-safe dict (what ``report.json`` holds)."""
    folder = training_set_dir(path)
    try:
        table = pq.read_table(folder / "training_set.parquet")
    except (OSError, pa.ArrowException) as exc:
        raise EvenflowError(f"cannot read the training set: {exc}", file=str(folder / "training_set.parquet"),
                            fix="rebuild it with evenflow training-set") from None
    card_path, checks_path = folder / "card.json", folder / "checks.json"
    card = _read_json(card_path) if card_path.exists() else {}
    if not isinstance(card, dict):
        raise EvenflowError("card.json must be a JSON object", file=str(card_path),
                            fix="rebuild the training set with evenflow training-set")
    label = card.get("label") or ("label" if "label" in table.column_names else None)
    if not label:
        raise EvenflowError("no card.json names the label column", file=str(folder),
                            fix="rebuild the training set with evenflow training-set")
    features, skipped = _features(card, table, label)
    prof = profile(table, label=label, features=features)
    prof["skipped"].update(skipped)
    if checks_path.exists():
        checks = _as_findings(_read_json(checks_path), "checks.json")
    else:  # the card keeps a summary of the same findings (offending-row counts, no evidence)
        checks = _as_findings(card.get("checks"), "card.json checks")
    for key in CARD_CHECK_KEYS:
        checks += _as_findings(card.get(key), f"card.json {key}")
    report: dict[str, Any] = {
        "title": f"Dataset report: {card.get('name', folder.name)}",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "training_set": {"directory": str(folder), "name": card.get("name", folder.name),
                         "label": label, "rows": table.num_rows, "columns": table.column_names,
                         "fingerprint": card.get("fingerprint"), "pipeline": card.get("pipeline"),
                         "split": card.get("split"), "held_out": card.get("held_out"),
                         "quarantine": card.get("quarantine")},
        "sources": {"parquet": True, "card": card_path.exists(),
                    "checks": checks_path.exists() or isinstance(card.get("checks"), list)},
        "checks": checks, "profile": prof}
    report["verdict"] = _verdict(report)
    report["charts"] = _charts(prof)
    return report


def write_report(training_set_dir: str | Path, out: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.json`` for a built training set; return both paths.

    ``out`` is the folder to write to (default: the training set's own folder).
    """
    report = build_report(training_set_dir)
    folder = Path(out) if out is not None else Path(report["training_set"]["directory"])
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=1, allow_nan=False, default=str)
    json_path, html_path = folder / "report.json", folder / "report.html"
    json_path.write_text(text)
    html_path.write_text(render_html(report, text))
    return html_path, json_path

