"""Merging the ``/metrics`` scrapes, Triton statistics and repository indexes of every worker into one answer.

One server can be several worker processes behind one port, and every worker counts only the requests it
served. A scrape or a statistics request lands on one worker, which would report a fraction of the server; so
the answering worker gathers every worker's answer and merges them here: counts add up, timestamps of creation
take the earliest, times of last inference the latest. Both functions are pure, so they are tested without
processes.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

#: One series of a family: sample name and its labels, sorted (label order differs in no meaningful way).
_SeriesKey = tuple[str, tuple[tuple[str, str], ...]]

#: Fields that identify a statistics entry rather than count anything: equal in every answer merged together.
_IDENTITY = frozenset({"name", "version", "batch_size"})


class _MergedFamilies(Collector):
    """Yields already merged families, so ``generate_latest`` renders them exactly as a worker's own scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def merge_prometheus(texts: Sequence[str]) -> bytes:
    """One Prometheus text scrape out of every worker's: equal series summed, ``_created`` the earliest.

    Counters, histogram buckets, sums and counts, Triton's untyped counters and the in-flight and queue-depth
    gauges are all per-worker shares of the server's number, so they add. A family or series only some workers
    have (a model only one of them served yet) is kept. Families and samples keep their first-seen order.
    """
    families: dict[str, Metric] = {}
    series: dict[str, dict[_SeriesKey, float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            merged = series.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                seen = merged.get(key)
                if seen is None:
                    merged[key] = sample.value
                elif sample.name.endswith("_created"):
                    merged[key] = min(seen, sample.value)
                else:
                    merged[key] = seen + sample.value
    for name, family in families.items():
        for (sample_name, labels), value in series[name].items():
            family.add_sample(sample_name, dict(labels), value)
    registry = CollectorRegistry()
    registry.register(_MergedFamilies(list(families.values())))
    return generate_latest(registry)


def merge_model_stats(answers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One Triton ``{"model_stats": [...]}`` out of every worker's, entries of the same (name, version) merged.

    Every count and nanosecond total adds, ``last_inference`` is the latest, ``batch_stats`` merge by batch
    size. An entry only some workers have is kept; entries keep the first-seen order of (name, version).
    """
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for answer in answers:
        for entry in copy.deepcopy(answer["model_stats"]):  # never share the callers' dicts with the result
            key = (entry["name"], entry["version"])
            merged[key] = _add(merged[key], entry, "") if key in merged else entry
    return {"model_stats": list(merged.values())}


def _add(ours: Any, theirs: Any, field: str) -> Any:
    """Two workers' values of one statistics ``field``, merged (dicts field by field, either side's extra kept)."""
    if field == "batch_stats":
        by_size = {batch["batch_size"]: batch for batch in ours}
        for batch in theirs:
            size = batch["batch_size"]
            by_size[size] = _add(by_size[size], batch, "") if size in by_size else batch
        return [by_size[size] for size in sorted(by_size)]
    if isinstance(ours, dict):
        either = {**ours, **theirs}  # a field only one side has keeps that side's value
        return {
            name: _add(ours[name], theirs[name], name) if name in ours and name in theirs else value
            for name, value in either.items()
        }
    if field == "last_inference":
        return max(ours, theirs)
    if field in _IDENTITY:
        return ours
    return ours + theirs


def merge_repository_index(tables: Sequence[Sequence[Mapping[str, str]]], ready_only: bool) -> list[dict[str, str]]:
    """The server's repository index from every worker's: a model is READY only where every worker serves it.

    A model some worker has not loaded yet (or failed to) shows that worker's rows; a version not served by every
    worker shows as LOADING with how many serve it, so a client polling the index never sees READY before every
    worker can answer. ``ready_only`` keeps the READY rows, as one worker's index would.
    """
    names = list(dict.fromkeys(row["name"] for table in tables for row in table))
    merged: list[dict[str, str]] = []
    for name in names:
        per_worker = [[dict(row) for row in table if row["name"] == name] for table in tables]
        pending = next((rows for rows in per_worker if any(r["state"] != "READY" for r in rows)), None)
        if pending is not None:  # a worker not done with it (or failing) speaks for it
            merged += pending
            continue
        if not all(per_worker):
            merged.append({"name": name, "state": "UNAVAILABLE", "reason": "not known to every worker yet"})
            continue
        versions = [{row.get("version") for row in rows} for rows in per_worker]
        for version in dict.fromkeys(row.get("version") for rows in per_worker for row in rows):
            row = next(r for rows in per_worker for r in rows if r.get("version") == version)
            serving = sum(version in served for served in versions)
            if serving < len(tables):
                row |= {"state": "LOADING", "reason": f"ready in {serving} of {len(tables)} workers"}
            merged.append(row)
    return [row for row in merged if row["state"] == "READY"] if ready_only else merged
