"""Evaluate every Grafana dashboard query against a real Prometheus that scrapes a running cnnserve.

``.ci/container-smoke`` starts Debian's Prometheus with deploy/prometheus/prometheus.yml (target pointed at the
container), sends traffic, then runs this: it waits (bounded) until Prometheus has counted as many successful
requests as the service reports, in two scrapes, then runs each panel's query with Grafana's variables filled
in, and fails if any errs or comes back empty (a panel that would show "No data").
Usage: ``python deploy/smoke_dashboard.py --prometheus http://127.0.0.1:P1 --service http://127.0.0.1:P2``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parent / "grafana" / "dashboards" / "cnnserve.json"
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


def served_successes(service: str) -> float:
    """Successful requests the service itself reports on its /metrics (every model, every reason)."""
    with urllib.request.urlopen(f"{service}/metrics", timeout=10) as response:
        text = response.read().decode()
    pattern = re.compile(r'^cnnserve_requests_total\{[^}]*outcome="success"[^}]*\} ([0-9.e+]+)$', re.M)
    return sum(float(value) for value in pattern.findall(text))


def wait_for_traffic(prometheus: str, min_requests: float, timeout_s: float) -> float:
    """Wait until Prometheus holds the client's requests in two scrapes (a rate needs two); returns seconds waited.

    The request counter's series appear with the first request, later than every other series, so two samples of
    it mean every panel's rate has two samples too.
    """
    start = time.monotonic()
    success = 'cnnserve_requests_total{outcome="success"}'
    state = "Prometheus not answering"
    for _ in range(int(timeout_s) + 1):
        try:
            samples = query(prometheus, f"min(count_over_time({success}[5m]))")
            total = query(prometheus, f"sum({success})")
            seen = float(samples[0]["value"][1]) if samples else 0.0
            counted = float(total[0]["value"][1]) if total else 0.0
            if seen >= 2 and counted >= min_requests:
                return time.monotonic() - start
            state = f"{seen:.0f} scrapes of the request counter, {counted:.0f} successful requests counted"
        except OSError:  # Prometheus still starting
            pass
        time.sleep(1.0)
    raise DashboardFailure(f"after {timeout_s:.0f} s: {state}; expected 2 scrapes and >= {min_requests} requests")


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


def main(argv: list[str] | None = None) -> int:
    """Check every query; print one line per panel target; exit 1 if any failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", required=True, help="Prometheus base URL")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD, help="Grafana dashboard JSON")
    parser.add_argument("--service", required=True, help="cnnserve base URL (its own count of requests)")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="bound on the wait for the scrapes")
    args = parser.parse_args(argv)
    base = args.prometheus.rstrip("/")
    try:
        served = served_successes(args.service.rstrip("/"))
        if served <= 0:
            raise DashboardFailure("the service reports no successful request; send traffic first")
        waited = wait_for_traffic(base, served, args.timeout_s)
        print(f"dashboard: Prometheus counted the service's {served:.0f} successful requests after {waited:.1f} s")
        queries = panel_queries(args.dashboard)
        empty = [f"{title}: {expr}" for title, expr in queries if not query(base, expr)]
        if empty:
            raise DashboardFailure(f"{len(empty)} panel queries return no data: {'; '.join(empty)}")
        print(f"dashboard: all {len(queries)} panel queries return data")
    except (DashboardFailure, OSError, KeyError, ValueError) as err:
        print(f"dashboard: FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
