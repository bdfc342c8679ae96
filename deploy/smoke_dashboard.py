"""Evaluate every Grafana panel query and every autoscaling query against a real Prometheus scraping cnnserve.

``.ci/container-smoke`` starts Debian's Prometheus with deploy/prometheus/prometheus.yml (target pointed at the
container), then runs this: it sends a trickle of classifications until Prometheus sees them as a rate (bounded),
checks that every scrape target is ``up``, then runs each panel's query with Grafana's variables filled in, each
Prometheus trigger of the KEDA ScaledObject (k8s/components/autoscale-keda) and each prometheus-adapter rule
(deploy/prometheus-adapter), and fails if any errs, comes back empty (a panel that would show "No data") or holds
only NaN (a quantile of nothing).
Usage: ``python deploy/smoke_dashboard.py --prometheus http://127.0.0.1:P1 --service http://127.0.0.1:P2``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

DASHBOARD = Path(__file__).resolve().parent / "grafana" / "dashboards" / "cnnserve.json"
DIGIT = Path(__file__).resolve().parent.parent / "samples" / "digits" / "digit-7.png"
#: Requests a second sent while waiting for Prometheus to see them (bounded by --timeout-s).
TRICKLE_PER_S = 5
SCALED_OBJECT = Path(__file__).resolve().parent.parent / "k8s" / "components" / "autoscale-keda" / "scaledobject.yaml"
ADAPTER_RULES = Path(__file__).resolve().parent / "prometheus-adapter" / "rules.yaml"
#: The scrape job of deploy/prometheus/prometheus.yml, and of the ServiceMonitor's (named after the Service).
JOB = "cnnserve"
#: Grafana's template variables, with the values a default dashboard view gives them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$model": ".*"}


class DashboardFailure(Exception):
    """A dashboard query that errs or finds nothing."""


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    """Instant query; returns the result vector or raises with Prometheus' error."""
    url = f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    if body.get("status") != "success":
        raise DashboardFailure(f"{expr}: {body.get('errorType')}: {body.get('error')}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def classify(service: str, model: str, image: bytes) -> None:
    """One REST classification (traffic for the panels); a failure here fails the smoke test."""
    request = urllib.request.Request(
        f"{service}/v1/models/{model}/classify", data=image, headers={"Content-Type": "image/png"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 200:
            raise DashboardFailure(f"classify answered {response.status}")


def feed_until_rated(prometheus: str, service: str, model: str, timeout_s: float) -> tuple[float, int]:
    """Send a trickle of requests until Prometheus sees them as a rate (two scrapes apart); (seconds, requests).

    A rate needs two samples that differ: traffic sent in one burst before Prometheus first scraped the service
    gives every rate 0, and every quantile and ratio of rates NaN. So the traffic goes on, a few requests a second,
    until the request counter's rate over the panels' window is above 0.
    """
    image = DIGIT.read_bytes()
    rate = f'sum(rate(cnnserve_requests_total{{job="{JOB}",outcome="success"}}[1m]))'
    start, sent = time.monotonic(), 0
    state = "Prometheus not answering"
    while time.monotonic() - start < timeout_s:
        for _ in range(TRICKLE_PER_S):
            classify(service, model, image)
            sent += 1
        try:
            result = query(prometheus, rate)
            value = float(result[0]["value"][1]) if result else 0.0
            if value > 0:
                return time.monotonic() - start, sent
            state = f"request rate {value:g}/s after {sent} requests"
        except OSError:  # Prometheus still starting
            pass
        time.sleep(1.0)
    raise DashboardFailure(f"after {timeout_s:.0f} s: {state}; expected a rate above 0")


def panel_queries(dashboard: Path) -> list[tuple[str, str]]:
    """(panel title, query with Grafana's variables filled in) for every target of every panel."""
    panels = json.loads(dashboard.read_text(encoding="utf-8"))["panels"]
    found = []
    for panel in panels:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append((panel["title"], expr))
    return found


def scaling_queries(scaled_object: Path = SCALED_OBJECT) -> list[tuple[str, str]]:
    """(trigger name, query) for every Prometheus trigger of the KEDA ScaledObject."""
    triggers = yaml.safe_load(scaled_object.read_text(encoding="utf-8"))["spec"]["triggers"]
    return [(t["name"], t["metadata"]["query"]) for t in triggers if t["type"] == "prometheus"]


def adapter_queries(rules: Path = ADAPTER_RULES) -> list[tuple[str, str]]:
    """(metric, query) for every prometheus-adapter rule, its template filled in as the adapter would for the pods
    of the scrape job (here matched by ``job``, as a plain scrape has no namespace or pod labels)."""
    found = []
    for rule in yaml.safe_load(rules.read_text(encoding="utf-8"))["rules"]["custom"]:
        series = rule["seriesQuery"].strip("'").split("{")[0]
        query = rule["metricsQuery"].replace("<<.Series>>", series)
        query = query.replace("<<.LabelMatchers>>", f'job="{JOB}"').replace("<<.GroupBy>>", "instance")
        found.append((rule["name"]["as"], query))
    return found


def problem(prometheus: str, expr: str) -> str | None:
    """Why ``expr`` would draw nothing useful (no data, or NaN only), or None when it returns a number."""
    result = query(prometheus, expr)
    if not result:
        return "no data"
    values = [float(sample["value"][1]) for sample in result]
    return "NaN only" if all(value != value for value in values) else None


def check_targets_up(prometheus: str) -> int:
    """Every target of the scrape job answers (``up`` is 1); returns how many there are."""
    up = query(prometheus, f'up{{job="{JOB}"}}')
    down = [sample["metric"].get("instance", "?") for sample in up if float(sample["value"][1]) != 1]
    if not up or down:
        raise DashboardFailure(f"scrape targets of job {JOB} not up: {down or 'none found'}")
    return len(up)


def main(argv: list[str] | None = None) -> int:
    """Check every query; print one line per panel target; exit 1 if any failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", required=True, help="Prometheus base URL")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD, help="Grafana dashboard JSON")
    parser.add_argument("--service", required=True, help="cnnserve base URL (the trickle of requests goes there)")
    parser.add_argument("--model", default="lenet5_digits", help="model the trickle classifies digits with")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="bound on the wait for the scrapes")
    args = parser.parse_args(argv)
    base = args.prometheus.rstrip("/")
    try:
        waited, sent = feed_until_rated(base, args.service.rstrip("/"), args.model, args.timeout_s)
        print(f"dashboard: Prometheus saw a request rate after {waited:.1f} s and {sent} requests")
        print(f"dashboard: {check_targets_up(base)} scrape target(s) of job {JOB} up")
        queries = panel_queries(args.dashboard) + scaling_queries() + adapter_queries()
        failed = [f"{title}: {expr} ({why})" for title, expr in queries if (why := problem(base, expr))]
        if failed:
            raise DashboardFailure(f"{len(failed)} queries would draw nothing: {'; '.join(failed)}")
        print(f"dashboard: all {len(queries)} panel and autoscaling queries return numbers")
    except (DashboardFailure, OSError, KeyError, ValueError) as err:
        print(f"dashboard: FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
