"""The dataset report's HTML page, drawn from the report dict (see :mod:`evenflow.verify.report`).

Tables are rendered here, in the page itself, so the numbers read without JavaScript; charts are
drawn in the browser by the inlined plotly.js from the embedded JSON twin. Rows carry
``data-*`` attributes (check name, status, feature, flagged) so tests and scripts can find them.
"""

from __future__ import annotations

import html
from typing import Any

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #d8dce3;padding-bottom:4px}
.meta{color:#5b6472;font-size:13px} code{font-size:12px;background:#eceef2;padding:1px 4px;border-radius:3px}
.verdict{border-radius:8px;padding:14px 18px;margin:18px 0;border:1px solid}
.verdict.fit{background:#e9f7ef;border-color:#5cb85c} .verdict.fit_with_warnings{background:#fff8e5;border-color:#e0a800}
.verdict.not_fit{background:#fdecea;border-color:#d9534f} .verdict h2{border:0;margin:0 0 6px;font-size:20px}
.verdict ul{margin:4px 0 0 18px;padding:0} .blocking{color:#a12622} .warning{color:#7a5a00} .note{color:#5b6472}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px;margin:6px 0}
th,td{border:1px solid #e1e4ea;padding:4px 8px;text-align:left;vertical-align:top} th{background:#f0f2f5}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#2d7a3e;font-weight:600} .fail{color:#b52a25;font-weight:600} .accepted{color:#8a6d00;font-weight:600}
.flag{color:#b52a25;font-weight:600} details{margin:2px 0 6px} summary{cursor:pointer;color:#2f5d9c}
.chart{background:#fff;border:1px solid #e1e4ea;border-radius:6px;margin:8px 0;min-height:240px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:10px}
.evidence{max-height:320px;overflow:auto}
"""

SCRIPT = """
(function () {
  var report = JSON.parse(document.getElementById("evenflow-report").textContent);
  report.charts.forEach(function (chart) {
    Plotly.newPlot(chart.id, chart.figure.data, chart.figure.layout,
                   {displaylogo: false, responsive: true});
  });
})();
"""


def escape(value: Any) -> str:
    """HTML-escaped text of a value (None as an empty cell).

    >>> escape("<b>"), escape(None)
    ('&lt;b&gt;', '')
    """
    return "" if value is None else html.escape(str(value))


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell.

    >>> fmt(0.123456), fmt(1234567), fmt(None), fmt("x")
    ('0.123', '1,234,567', '–', 'x')
    """
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) < 1e6 else f"{value:,.4g}"
    return escape(value)


def _table(header: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _chart(chart: dict[str, Any]) -> str:
    return (f'<div class="chart" id="{escape(chart["id"])}" data-section="{escape(chart["section"])}" '
            f'title="{escape(chart["title"])}"></div>')


def _verdict(v: dict[str, Any]) -> str:
    items = ([f'<li class="blocking">{escape(t)}</li>' for t in v["blocking"]]
             + [f'<li class="warning">{escape(t)}</li>' for t in v["warnings"]]
             + [f'<li class="note">{escape(t)}</li>' for t in v["notes"]])
    return (f'<section id="verdict" class="verdict {escape(v["status"])}" data-status="{escape(v["status"])}">'
            f'<h2>{escape(v["headline"])}</h2><ul>{"".join(items)}</ul></section>')


def _evidence(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    body = ["<tr>" + "".join(f"<td>{escape(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows]
    return (f'<details class="evidence"><summary>{len(rows)} evidence row{"s" * (len(rows) > 1)}</summary>'
            f"{_table(cols, body)}</details>")


def _checks(checks: list[dict[str, Any]]) -> str:
    if not checks:
        return ('<p id="no-checks">No check results: no <code>checks.json</code> next to the training '
                "set and no contract results in <code>card.json</code>.</p>")
    rows = []
    order = sorted(checks, key=lambda f: (f["passed"], f["accepted"], f["severity"] != "error"))
    for f in order:
        status = "passed" if f["passed"] else "accepted" if f["accepted"] else "failed"
        css = {"passed": "pass", "accepted": "accepted", "failed": "fail"}[status]
        rows.append(f'<tr class="check" data-check="{escape(f["check"])}" data-status="{status}">'
                    f'<td><b>{escape(f["check"])}</b><br><span class="meta">{escape(f["source"])}</span></td>'
                    f'<td>{escape(f["severity"])}</td><td class="{css}">{status}</td>'
                    f'<td class="num">{fmt(f["observed"])}</td><td class="num">{fmt(f["bound"])}</td>'
                    f'<td class="num">{fmt(f["offending_rows"])}</td>'
                    f'<td>{escape(f["message"])}{_evidence(f["evidence"])}</td></tr>')
    return _table(["check", "severity", "result", "observed", "bound", "offending rows", "message and evidence"],
                  rows)


def _balance(prof: dict[str, Any]) -> str:
    rows = []
    for split, b in prof["balance"].items():
        for cls, n in b["counts"].items():
            rows.append(f'<tr data-split="{escape(split)}" data-class="{escape(cls)}"><td>{escape(split)}</td>'
                        f'<td>{escape(cls)}</td><td class="num">{fmt(n)}</td>'
                        f'<td class="num">{fmt(b["fractions"][cls], 4)}</td>'
                        f'<td class="num">{fmt(b["imbalance_ratio"], 2)}</td></tr>')
    return _table(["split", "class", "rows", "share", "imbalance (majority / minority)"], rows)


def _missing(prof: dict[str, Any]) -> str:
    splits = list(prof["splits"])
    rows = [f'<tr data-column="{escape(c)}"><td>{escape(c)}</td>'
            + "".join(f'<td class="num">{fmt(per[s]["missing"])} ({fmt((per[s]["fraction"] or 0) * 100, 1)}%)</td>'
                      for s in splits) + "</tr>"
            for c, per in prof["missing"].items() if any(per[s]["missing"] for s in splits)]
    if not rows:
        return '<p id="no-missing">No missing values in any column or split.</p>'
    return _table(["column", *[f"missing in {s}" for s in splits]], rows)


def _drift(prof: dict[str, Any]) -> str:
    if not prof["drift"]:
        return "<p>No drift computed: the training set needs both a train and a test split.</p>"
    t = prof["thresholds"]
    rows = []
    for name, d in sorted(prof["drift"].items(), key=lambda kv: -kv[1]["psi"]):
        test, p = (d.get("ks"), d.get("ks_pvalue")) if d["kind"] == "numeric" else (d.get("cramers_v"),
                                                                                   d.get("chi2_pvalue"))
        rows.append(f'<tr class="drift" data-feature="{escape(name)}" data-flagged="{str(d["flagged"]).lower()}">'
                    f'<td>{escape(name)}</td><td>{escape(d["kind"])}</td><td class="num">{fmt(d["psi"])}</td>'
                    f'<td class="num">{fmt(test)}</td><td class="num">{fmt(p, 4)}</td>'
                    f'<td class="num">{fmt(d["missing_train"] * 100, 1)}% → {fmt(d["missing_test"] * 100, 1)}%</td>'
                    f'<td class="{"flag" if d["flagged"] else ""}">{"DRIFT" if d["flagged"] else "ok"}</td></tr>')
    intro = (f'<p class="meta">Test compared with train. Flagged when PSI ≥ {t["psi"]}, or KS D ≥ {t["ks"]} '
             f'(numeric) / Cramér\'s V ≥ {t["cramers_v"]} (categorical) with p &lt; {t["alpha"]}. '
             "PSI bins: train deciles plus a missing bin (numeric); train's top values plus other "
             "and missing (categorical).</p>")
    return intro + _table(["feature", "kind", "PSI", "KS D / Cramér's V", "p-value", "missing train → test", ""],
                          rows)


def _stats(prof: dict[str, Any]) -> str:
    rows = []
    for name, feat in prof["features"].items():
        if feat["kind"] != "numeric":
            continue
        for split, s in feat["stats"].items():
            rows.append(f"<tr><td>{escape(name)}</td><td>{escape(split)}</td>"
                        + "".join(f'<td class="num">{fmt(s.get(k))}</td>'
                                  for k in ("count", "mean", "std", "min", "p25", "median", "p75", "max"))
                        + "</tr>")
    return _table(["feature", "split", "count", "mean", "std", "min", "p25", "median", "p75", "max"], rows)


def render_html(report: dict[str, Any], report_json: str) -> str:
    """The whole page: ``report`` for the tables, ``report_json`` (its JSON text) embedded as is."""
    from plotly.offline import get_plotlyjs

    prof, ts = report["profile"], report["training_set"]
    charts: dict[str, list[str]] = {c["section"]: [] for c in report["charts"]}
    for c in report["charts"]:
        charts[c["section"]].append(_chart(c))
    skipped = "".join(f"<li><code>{escape(k)}</code>: {escape(v)}</li>" for k, v in prof["skipped"].items())
    split_rows = ", ".join(f"{escape(s)} {fmt(n)}" for s, n in prof["splits"].items())
    sections = [
        f'<header><h1>{escape(report["title"])}</h1><div class="meta">{fmt(ts["rows"])} rows ({split_rows}); '
        f'label <code>{escape(ts["label"])}</code>; pipeline <code>{escape(ts["pipeline"])}</code>, '
        f'fingerprint <code>{escape(ts["fingerprint"])}</code>; generated {escape(report["generated_at"])}<br>'
        f'{escape(ts["directory"])}</div></header>',
        _verdict(report["verdict"]),
        f'<section id="checks"><h2>Checks</h2>{_checks(report["checks"])}</section>',
        f'<section id="balance"><h2>Label balance per split</h2>{"".join(charts.get("balance", []))}'
        f"{_balance(prof)}</section>",
        f'<section id="missingness"><h2>Missing values per column and split</h2>'
        f'{"".join(charts.get("missingness", []))}{_missing(prof)}</section>',
        f'<section id="drift"><h2>Drift between train and test</h2>{"".join(charts.get("drift", []))}'
        f"{_drift(prof)}</section>",
        f'<section id="distributions"><h2>Distributions per split</h2>'
        f'<div class="grid">{"".join(charts.get("distributions", []))}</div>'
        f"<h3>Summary statistics</h3>{_stats(prof)}"
        + (f"<p>Not profiled:</p><ul>{skipped}</ul>" if skipped else "") + "</section>",
    ]
    # "<" inside the JSON only occurs in strings, where \u003c is the same character to a parser
    embedded = report_json.replace("<", "\\u003c")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(report['title'])}</title><style>{CSS}</style>"
            f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
            f"<body><main>{''.join(sections)}</main>"
            f'<script type="application/json" id="evenflow-report">{embedded}</script>'
            f"<script>{SCRIPT}</script></body></html>\n")
