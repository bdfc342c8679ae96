"""The README and docs/ stay true to the code: every table, route, metric, link and path they give is checked here.

Expectations come from the code (the Settings class, a fresh metrics registry, the app's OpenAPI document, the
error codes in service/, the zoo), never from lists kept in this file. Run: pytest tests/test_docs.py
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README_MAX_BYTES = 8 * 1024
PARAGRAPH_MAX_WORDS = 120
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count", "_created")

PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
_FENCE = re.compile(r"^```.*?^```[ \t]*$", flags=re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_METRIC_NAME = re.compile(r"\b(?:cnnserve|nv_inference)_[a-z0-9_]*[a-z0-9]\b")
_ROUTE = re.compile(rf"\b({'|'.join(HTTP_METHODS)}) (/[^\s`|,;)?]*)")


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def page_id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def prose(text: str) -> str:
    """The text without fenced code blocks."""
    return _FENCE.sub("", text)


def between(text: str, start: str, end: str) -> str:
    assert start in text, f"missing {start!r}"
    return text.split(start, 1)[1].split(end, 1)[0]


# ---- settings -------------------------------------------------------------------------------------------------


def rendered_default(default: Any) -> str:
    """How the settings table writes a field's default."""
    if default is None:
        return "(unset)"
    if default == ():
        return "(empty)"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, Path):
        return "<repo>/" + default.relative_to(ROOT).as_posix()
    return str(default)


def test_settings_table_lists_exactly_the_settings_fields() -> None:
    table = between(read(DOCS / "settings.md"), "<!-- settings-table:start -->", "<!-- settings-table:end -->")
    rows = re.findall(r"^\| `CNNSERVE_([A-Z0-9_]+)` \| (.+?) \| (.+) \|$", table, flags=re.MULTILINE)
    assert [name for name, _, _ in rows] == [name.upper() for name in Settings.model_fields]
    for (name, default, meaning), field in zip(rows, Settings.model_fields.values(), strict=True):
        assert field.description, f"Settings.{name.lower()} has no description"
        assert meaning == field.description, f"docs/settings.md's row for CNNSERVE_{name} is out of date"
        assert default.strip("`") == rendered_default(field.default), f"default of CNNSERVE_{name}"


def test_every_setting_the_docs_name_exists() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    for page in PAGES:
        for name in re.findall(r"\bCNNSERVE_([A-Z0-9_]+)\b", read(page)):
            assert name in fields, f"{page_id(page)} names CNNSERVE_{name}, which is not a setting"


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test     # " in read(ROOT / "README.md")
    ci = read(ROOT / ".ci" / "run")
    assert re.search(r"^make test$", ci, flags=re.MULTILINE)


# ---- metrics --------------------------------------------------------------------------------------------------


@cache
def exported_metrics() -> dict[str, str]:
    """Metric name -> type, as a scrape shows them, from a fresh registry with one model added.

    Counters are named as exposed (``_total``); Triton's ``nv_inference_*`` series only exist once a model is.
    """
    from service.metrics import Metrics

    registry = CollectorRegistry()
    Metrics(registry).add_model("docs_model", "1", lambda: 0)
    exported = {}
    for family in registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        exported[name] = "untyped" if family.type == "unknown" else family.type
    return exported


def test_metrics_page_lists_exactly_the_exported_metrics() -> None:
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| ([a-z]+) \|", read(DOCS / "metrics.md"), flags=re.MULTILINE)
    documented = dict(rows)
    assert len(documented) == len(rows), "a metric is listed twice in docs/metrics.md"
    exported = exported_metrics()
    assert sorted(set(exported) - set(documented)) == [], "exported but missing from docs/metrics.md"
    assert sorted(set(documented) - set(exported)) == [], "in docs/metrics.md but not exported"
    assert documented == exported, "a metric's type in docs/metrics.md is wrong"


def test_every_metric_name_the_docs_use_is_exported() -> None:
    exported = exported_metrics()
    histograms = [name for name, kind in exported.items() if kind == "histogram"]
    series = set(exported) | {h + suffix for h in histograms for suffix in HISTOGRAM_SUFFIXES}
    for page in PAGES:
        for name in _METRIC_NAME.findall(read(page)):
            assert name in series, f"{page_id(page)} names metric {name}, which the service does not export"


# ---- HTTP API -------------------------------------------------------------------------------------------------


def normalise(path: str) -> str:
    """A route path with its parameter names dropped: ``/v2/models/{model}`` -> ``/v2/models/{}``."""
    return re.sub(r"\{[^}]*\}", "{}", path)


@cache
def app_routes() -> tuple[frozenset[tuple[str, str]], frozenset[tuple[str, str]]]:
    """(method, path) of every route in the OpenAPI document, and of FastAPI's own docs pages."""
    from service.main import create_app

    app = create_app(Settings(repository_path=ROOT / "models", preprocess_threads=1))  # loads nothing
    api = frozenset(
        (method.upper(), normalise(path))
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if method.upper() in HTTP_METHODS
    )
    own = frozenset(("GET", url) for url in (app.docs_url, app.redoc_url, app.openapi_url) if url)
    return api, own


def documented_routes(text: str) -> set[tuple[str, str]]:
    return {(method, normalise(path)) for method, path in _ROUTE.findall(text)}


def test_api_page_documents_every_route() -> None:
    api, _ = app_routes()
    assert api, "the app's OpenAPI document has no paths"
    missing = sorted(api - documented_routes(read(DOCS / "api.md")))
    assert missing == [], f"routes missing from docs/api.md: {missing}"


def test_every_route_the_docs_name_exists() -> None:
    api, own = app_routes()
    for page in PAGES:
        unknown = sorted(documented_routes(prose(read(page))) - api - own)
        assert unknown == [], f"{page_id(page)} names routes the app does not serve: {unknown}"


def test_api_page_documents_every_error_code() -> None:
    codes = {
        code
        for source in sorted((ROOT / "service").rglob("*.py"))
        for code in re.findall(r"\bcode\s*=\s*\"([a-z_]+)\"", read(source))
    }
    assert codes, "found no error codes in service/"
    api = read(DOCS / "api.md")
    missing = sorted(code for code in codes if f"`{code}`" not in api)
    assert missing == [], f"error codes missing from docs/api.md: {missing}"


# ---- export ---------------------------------------------------------------------------------------------------


def test_export_page_lists_the_zoo() -> None:
    pytest.importorskip("torch")
    from export.zoo import ALIASES, ZOO

    section = between(read(DOCS / "export.md"), "## The zoo", "\n## ")
    rows = re.findall(r"^\| (`.+?`) \| .+ \| (\S+) \|$", section, flags=re.MULTILINE)
    inputs = {name: size for names, size in rows for name in re.findall(r"`([\w.]+)`", names)}
    assert sorted(inputs) == sorted(ZOO), "docs/export.md's zoo table differs from the zoo"
    for name, entry in ZOO.items():
        assert inputs[name] == "×".join(str(d) for d in entry.input_size), f"input size of {name}"
    for alias in ALIASES:
        assert f"`{alias}`" in section, f"zoo alias {alias} missing from docs/export.md"


# ---- links, paths, size ---------------------------------------------------------------------------------------


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors for a Markdown page."""
    headings = re.findall(r"^#{1,6} (.+)$", prose(read(page)), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_resolve(page: Path) -> None:
    for target in _LINK.findall(prose(read(page))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # http:, https:, mailto:
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page_id(page)} links to {target}, which does not exist"
        if fragment and resolved.suffix == ".md":
            assert fragment in anchors(resolved), f"{page_id(page)} links to {target}: no such heading"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_sample_paths_exist(page: Path) -> None:
    for path in re.findall(r"(?<![\w/])(samples/[\w/.-]*\w)", read(page)):
        assert (ROOT / path).exists(), f"{page_id(page)} uses {path}, which does not exist"
    assert (ROOT / "models" / "lenet5_digits" / "config.json").is_file()


def test_docs_index_links_every_page() -> None:
    index = read(DOCS / "index.md")
    for page in DOCS.glob("*.md"):
        if page.name != "index.md":
            assert f"]({page.name})" in index, f"docs/index.md does not link {page.name}"


def test_readme_stays_short() -> None:
    size = len(read(ROOT / "README.md").encode())
    assert size < README_MAX_BYTES, f"README.md is {size} bytes; move reference material into docs/"


def paragraphs(text: str) -> list[str]:
    """Prose paragraphs and list items; code blocks, tables and headings left out."""
    found = []
    for block in re.split(r"\n\s*\n", prose(text)):
        lines = [line for line in block.splitlines() if not line.lstrip().startswith(("|", "#"))]
        found += [p for p in re.split(r"\n(?=\s*(?:[-*]|\d+\.) )", "\n".join(lines)) if p.strip()]
    return found


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_no_paragraph_rambles(page: Path) -> None:
    for paragraph in paragraphs(read(page)):
        words = len(paragraph.split())
        assert words <= PARAGRAPH_MAX_WORDS, f"{page_id(page)}: {words} words in {paragraph[:80]!r}…"
