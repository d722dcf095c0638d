"""A pipeline: sources, feature sets and a training-set spec, with YAML form and fingerprint.

The canonical form is a plain dict with sources referenced by name. YAML dump and load go
through it, so a round trip gives an identical fingerprint.

>>> from evenflow.core import features as F
>>> from evenflow.core.schema import Schema, String, Float, Timestamp
>>> from evenflow.core.source import parquet
>>> tx = parquet("tx.parquet", schema=Schema(card_id=String(), amount=Float(), ts=Timestamp()),
...              key="card_id", event_time="ts")
>>> p = Pipeline(name="demo", feature_sets=[F.FeatureSet("card", source=tx,
...              features=[F.count(window="1h")])])
>>> Pipeline.from_yaml(p.to_yaml()).fingerprint() == p.fingerprint()
True
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from evenflow.core.features import FeatureSet
from evenflow.core.source import Source
from evenflow.core.split import SplitType
from evenflow.core.steps import Artifact, Resample, StepType
from evenflow.errors import DefinitionError


class Output(BaseModel):
    """Where a run writes. Not part of the fingerprint: moving outputs changes no value."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    directory: str = "out"
    warehouse: str = "duckdb:{directory}/warehouse.duckdb"
    lakehouse: str = "{directory}/lakehouse"

    def warehouse_url(self) -> str:
        return self.warehouse.format(directory=self.directory)

    def lakehouse_path(self) -> Path:
        return Path(self.lakehouse.format(directory=self.directory))


class TrainingSetSpec(BaseModel):
    """A point-in-time training set: label rows as query points, features as of each row.

    ``time`` is the observation time t of each row (defaults to the labels source's
    ``event_time``); ``knowledge_time`` the column giving a (defaults to t);
    ``label_available_time`` when the label became known, used by a time split.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    labels: Source | str
    label: str
    features: list[FeatureSet | str]
    split: SplitType
    time: str | None = None
    knowledge_time: str | None = None
    label_available_time: str | None = None
    steps: list[StepType] = []
    resample: Resample | None = None
    #: String columns checked for near-duplicate text across splits at every build.
    text_columns: list[str] = []
    #: Error-level check findings accepted by name (e.g. ``[temporal_overlap]``): reported, not fatal.
    accept: list[str] = []


class Pipeline(BaseModel):
    """Everything evenflow needs to build features and training sets."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    sources: dict[str, Source] = {}
    feature_sets: list[FeatureSet] = []
    training_set: TrainingSetSpec | None = None
    output: Output = Output()

    @model_validator(mode="after")
    def _resolve(self) -> Pipeline:
        sources = dict(self.sources)

        def register(src: Source | str, owner: str) -> None:
            if isinstance(src, str):
                if src not in sources:
                    raise DefinitionError(f"{owner} refers to source {src!r}, which is not defined",
                                          fix=f"define it under sources: ({', '.join(sources) or 'none yet'})")
                return
            if src.name in sources and sources[src.name].dump() != src.dump():
                raise DefinitionError(f"two different sources are named {src.name!r}",
                                      fix="pass name= to one of them")
            old = sources.get(src.name)
            sources[src.name] = src if old is None or old.frame is None else old

        sets = {fs.name: fs for fs in self.feature_sets}
        for fs in self.feature_sets:
            register(fs.source, f"feature set {fs.name!r}")
        if self.training_set is not None:
            register(self.training_set.labels, f"training set {self.training_set.name!r}")
            for ref in self.training_set.features:
                if isinstance(ref, str):
                    if ref not in sets:
                        raise DefinitionError(f"training set refers to feature set {ref!r}, which is "
                                              "not defined", fix=f"known: {', '.join(sets)}")
                else:
                    register(ref.source, f"feature set {ref.name!r}")
                    sets.setdefault(ref.name, ref)
        for fs in sets.values():
            schema = sources[fs.source_name()].schema_
            clash = [f.name for f in fs.features if schema is not None and f.name in schema.fields]
            if clash:
                # batch output would keep the field and rename the feature, the stream the reverse
                raise DefinitionError(f"feature set {fs.name!r}: feature {clash[0]!r} has the name of a "
                                      f"field of source {fs.source_name()!r}",
                                      fix=f"give the feature another name=, e.g. name={clash[0] + '_feature'!r}")
        object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "feature_sets", list(sets.values()))
        return self

    # -- access ---------------------------------------------------------------------------------
    def source_of(self, fs: FeatureSet) -> Source:
        return self.sources[fs.source_name()]

    def feature_set(self, name: str) -> FeatureSet:
        for fs in self.feature_sets:
            if fs.name == name:
                return fs
        raise DefinitionError(f"no feature set named {name!r}",
                              fix=f"known: {', '.join(f.name for f in self.feature_sets)}")

    def key_of(self, fs: FeatureSet) -> list[str]:
        key = fs.key or self.source_of(fs).key
        if not key:
            raise DefinitionError(f"feature set {fs.name!r} has no entity key",
                                  fix="set key= on the feature set or its source")
        return key

    # -- canonical form ---------------------------------------------------------------------------
    def canonical(self, *, locations: bool = True) -> dict[str, Any]:
        """Definition as plain data: sources by name, defaults spelled out, outputs apart.

        ``locations=False`` leaves out where sources live (path, table, dsn): moving data does
        not change a definition, and the dataset card records source versions on its own.
        """
        def fs_dump(fs: FeatureSet) -> dict[str, Any]:
            data = fs.model_dump(mode="json", exclude={"source"})
            return {"name": data.pop("name"), "source": fs.source_name(), **data}

        out: dict[str, Any] = {
            "name": self.name,
            "sources": {name: {k: v for k, v in src.dump().items()
                               if locations or k not in ("path", "table", "dsn")}
                        for name, src in sorted(self.sources.items())},
            "feature_sets": [fs_dump(fs) for fs in self.feature_sets],
        }
        if self.training_set is not None:
            ts = self.training_set
            # empty check settings are left out, so adding them kept every existing fingerprint
            empty = {f for f in ("text_columns", "accept") if not getattr(ts, f)}
            data = ts.model_dump(mode="json", exclude={"labels", "features", *empty}, exclude_none=True)
            data["labels"] = ts.labels if isinstance(ts.labels, str) else ts.labels.name
            data["features"] = [f if isinstance(f, str) else f.name for f in ts.features]
            out["training_set"] = data
        return out

    def fingerprint(self, artifacts: dict[str, Artifact] | None = None) -> str:
        """A stable hash of the canonical definition and the fitted artifacts."""
        body = {"definition": self.canonical(locations=False), "artifacts": artifacts or {}}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        data = self.canonical()
        data["output"] = self.output.model_dump()
        return yaml.safe_dump(data, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, file: str | None = None,
                  base: Path | None = None) -> Pipeline:
        try:
            data = dict(data)
            sources = {}
            for name, spec in (data.pop("sources", None) or {}).items():
                spec = {"name": name, **spec}
                if base is not None and spec.get("path") and not Path(spec["path"]).is_absolute() \
                        and spec.get("format") != "postgres":
                    spec["path"] = str(base / spec["path"])
                sources[name] = Source.load(spec)
            output = data.get("output")
            if base is not None and isinstance(output, dict) and "directory" in output \
                    and not Path(output["directory"]).is_absolute():
                data["output"] = {**output, "directory": str(base / output["directory"])}
            return cls(sources=sources, **data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            given = err.get("input")
            shown = f"; got {given!r}" if isinstance(given, (str, int, float)) else ""
            raise DefinitionError(f"{err['msg']}{shown} (at {where})", file=file,
                                  fix="compare with docs/pipeline-yaml.md") from None
        except DefinitionError as exc:
            exc.file = exc.file or file
            raise

    @classmethod
    def from_yaml(cls, text: str, *, file: str | None = None, base: Path | None = None) -> Pipeline:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DefinitionError(f"not valid YAML: {exc}", file=file,
                                  fix="check indentation and quoting at the line shown") from None
        if not isinstance(data, dict):
            raise DefinitionError("a pipeline file must be a mapping with name:, sources:, "
                                  "feature_sets:", file=file,
                                  fix="see examples/fraud/pipeline.yaml and docs/pipeline-yaml.md")
        return cls.from_dict(data, file=file, base=base)

    @classmethod
    def load(cls, path: str | Path) -> Pipeline:
        """Load a pipeline YAML file; relative paths in it are relative to the file."""
        path = Path(path)
        if not path.exists():
            raise DefinitionError("file not found", file=str(path),
                                  fix="pass the path of a pipeline YAML file")
        return cls.from_yaml(path.read_text(), file=str(path), base=path.parent)
