"""Label quality: conflicting labels and label-noise candidates, as findings.

- ``conflicting_labels``: rows whose features are identical (nulls equal) but whose labels differ.
  Evaluated by DuckDB in one GROUP BY.
- ``label_noise``: confident learning (cleanlab ``find_label_issues``) on **out-of-fold** predicted
  probabilities from a scikit-learn model (``cross_val_predict``), so no row is judged by a model
  that saw its label.

Both look at one split (train by default), return a :class:`~evenflow.verify.findings.Finding`
whose ``rows`` are positions in the training set's table, and can be quarantined from train with
:func:`quarantine_rows`. cleanlab and scikit-learn are imported lazily (the ``verify`` extra).

>>> import pyarrow as pa
>>> t = pa.table({"x": [1, 1, 2, 3], "y": [0, 1, 0, 0], "split": ["train"] * 4})
>>> f = conflicting_labels(t, ["x"], "y")
>>> f.passed, f.rows
(False, [0, 1])
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evenflow.core.sqltext import ident as q
from evenflow.core.sqltext import literal as lit
from evenflow.errors import DefinitionError, MissingExtraError
from evenflow.verify.findings import MAX_EVIDENCE, Finding, Severity

if TYPE_CHECKING:
    from evenflow.batch.training import TrainingSet

ROW = "__row"


def _in_split(table: pa.Table, split: str | None) -> pa.Table:
    """``table`` with a ``__row`` position column, restricted to one split."""
    table = table.append_column(ROW, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    if split is None or "split" not in table.column_names:
        return table
    return table.filter(pc.fill_null(pc.equal(table.column("split"), split), False))


def _check_columns(table: pa.Table, columns: list[str]) -> None:
    for c in columns:
        if c not in table.column_names:
            raise DefinitionError(f"label check needs column {c!r}, which the table does not have",
                                  field=c, fix=f"its columns: {', '.join(table.column_names)}")


def conflicting_labels(table: pa.Table, features: list[str], label: str, *, split: str | None = "train",
                       severity: Severity = "warn") -> Finding:
    """Rows with identical ``features`` (nulls equal) and more than one distinct label."""
    _check_columns(table, [*features, label])
    if not features:
        raise DefinitionError("conflicting_labels needs at least one feature column")
    part = _in_split(table, split)
    keys = ", ".join(q(f) for f in features)
    con = duckdb.connect()
    try:
        con.register("__t", part)
        rows = con.sql(
            f"SELECT t.{ROW}, g.__group FROM __t t JOIN (SELECT {keys}, min({ROW}) AS __group "
            f"FROM __t GROUP BY ALL HAVING count(DISTINCT {q(label)}) > 1) g ON "
            + " AND ".join(f"t.{q(f)} IS NOT DISTINCT FROM g.{q(f)}" for f in features)
            + f" ORDER BY g.__group, t.{ROW}").fetchall()
        groups = len({g for _, g in rows})
    finally:
        con.close()
    ids = [int(r) for r, _ in rows]
    group_of = {int(r): int(g) for r, g in rows}
    evidence = [{"row": i, "group": group_of[i], "label": part.column(label)[j].as_py(),
                 **{f: part.column(f)[j].as_py() for f in features}}
                for j, i in _positions(part, ids[:MAX_EVIDENCE])]
    return Finding("conflicting_labels", severity, not ids,
                   f"{len(ids)} rows in {groups} groups share identical features but not the label"
                   if ids else "no identical feature rows with different labels",
                   observed=len(ids), bound=0, evidence=evidence, rows=sorted(ids))


def _positions(part: pa.Table, ids: list[int]) -> list[tuple[int, int]]:
    """(index within ``part``, row id) for each id, in the order given."""
    where = {int(r): j for j, r in enumerate(part.column(ROW).to_pylist())}
    return [(where[i], i) for i in ids]


def _default_model(seed: int) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # fast and calibrated enough for confident learning; nulls imputed inside each fold. For
    # non-linear boundaries pass model= (e.g. HistGradientBoostingClassifier).
    return make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(),
                         LogisticRegression(max_iter=1000, random_state=seed))


def label_noise(table: pa.Table, features: list[str], label: str, *, split: str | None = "train",
                model: Any = None, folds: int = 5, seed: int = 0, severity: Severity = "warn",
                filter_by: str = "prune_by_noise_rate") -> Finding:
    """Label-noise candidates by confident learning on out-of-fold predicted probabilities.

    ``model`` is any scikit-learn classifier with ``predict_proba`` (default: logistic
    regression on median-imputed, standardized features); ``folds`` stratified folds, shuffled with ``seed``.
    """
    try:
        from cleanlab.filter import find_label_issues
        from sklearn.model_selection import StratifiedKFold, cross_val_predict
    except ImportError as exc:  # pragma: no cover - the dev environment has both
        raise MissingExtraError("cleanlab", "verify") from exc
    _check_columns(table, [*features, label])
    part = _in_split(table, split)
    part = part.filter(pc.is_valid(part.column(label)))
    y_raw = part.column(label).to_pylist()
    classes = sorted(set(y_raw), key=str)
    counts = {c: y_raw.count(c) for c in classes}
    if len(classes) < 2 or min(counts.values()) < folds:
        return Finding("label_noise", severity, True,
                       f"not checked: needs 2+ classes with at least {folds} rows each (got {counts})",
                       observed=None, bound=None)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[v] for v in y_raw])
    x = _matrix(part, features)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probs = cross_val_predict(model if model is not None else _default_model(seed), x, y, cv=cv,
                              method="predict_proba")
    found = find_label_issues(labels=y, pred_probs=probs, filter_by=filter_by,
                              return_indices_ranked_by="self_confidence")
    row_ids = part.column(ROW).to_pylist()
    ids = [int(row_ids[j]) for j in found]
    evidence = [{"row": int(row_ids[j]), "label": y_raw[j], "predicted": classes[int(np.argmax(probs[j]))],
                 "p_given_label": float(probs[j, y[j]]),
                 **{f: part.column(f)[int(j)].as_py() for f in features}} for j in found[:MAX_EVIDENCE]]
    return Finding("label_noise", severity, not ids,
                   f"{len(ids)} of {len(y)} labels look wrong to an out-of-fold model (confident "
                   "learning)" if ids else "no label-noise candidates",
                   observed=len(ids), bound=0, evidence=evidence, rows=sorted(ids))


def _matrix(part: pa.Table, features: list[str]) -> Any:
    cols = []
    for f in features:
        try:
            cols.append(part.column(f).cast(pa.float64()).to_numpy(zero_copy_only=False))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DefinitionError(f"label_noise needs numeric features; {f!r} is {part.column(f).type}",
                                  field=f, fix="encode it first, or leave it out of features=") from exc
    return np.column_stack(cols) if cols else np.empty((part.num_rows, 0))


def check_labels(ts: TrainingSet, *, split: str = "train", conflicts: bool = True, noise: bool = True,
                 model: Any = None, folds: int = 5, seed: int = 0,
                 severity: Severity = "warn") -> list[Finding]:
    """Both label checks on a training set's ``split`` over its feature columns."""
    out = []
    if conflicts:
        out.append(conflicting_labels(ts.table, ts.feature_columns, ts.label, split=split,
                                      severity=severity))
    if noise:
        out.append(label_noise(ts.table, ts.feature_columns, ts.label, split=split, model=model,
                               folds=folds, seed=seed, severity=severity))
    return out


def quarantine_rows(ts: TrainingSet, findings: list[Finding]) -> TrainingSet:
    """A copy of ``ts`` without the train rows the findings name; each goes to the engine's
    quarantine (reason = the check's name, payload = the row as JSON) and is counted in the card.
    Test rows are never removed."""
    drop: dict[int, str] = {}
    for f in findings:
        for r in f.rows:
            drop.setdefault(int(r), f.check)
    splits = ts.table.column("split").to_pylist()
    drop = {r: c for r, c in drop.items() if splits[r] == "train"}
    con = ts.engine.con
    for row, check in sorted(drop.items()):
        payload = json.dumps(ts.table.slice(row, 1).to_pylist()[0], default=str)
        con.execute(f"INSERT INTO __quarantine VALUES ('training_set', 'training_set', {row}, "
                    f"{lit(payload)}, {lit(check)}, {lit(ts.label)}, {lit('labels.' + check)}, "
                    f"{lit('removed from train by the label-quality check ' + check)})")
    keep = np.ones(ts.table.num_rows, dtype=bool)
    keep[list(drop)] = False
    counts: dict[str, int] = {}
    for check in drop.values():
        counts[check] = counts.get(check, 0) + 1
    quality = {**ts.card.get("quality_steps", {}), "label_quarantine": counts}
    return dataclasses.replace(ts, table=ts.table.filter(pa.array(keep)),
                               card={**ts.card, "quality_steps": quality})
