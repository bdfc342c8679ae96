"""Probe a server as kubelet and Prometheus do, from a process of its own, and print the latencies as JSON.

``python health_prober.py PORT SECONDS PERIOD_S PATH...``: every PERIOD_S, GET each PATH on a fresh connection,
for SECONDS; then print ``{"latencies_s": {path: [...]}, "failures": [...]}``. A process rather than a thread of
the test: the load generator holds the test process's interpreter lock most of the time, and a thread waiting for
it would time the generator, not the server.
"""

from __future__ import annotations

import http.client
import json
import sys
import time

TIMEOUT_S = 20.0


def probe(port: int, seconds: float, period_s: float, paths: list[str]) -> dict[str, object]:
    """Probe until ``seconds`` have passed; latencies of the 200s by path, and every other outcome."""
    latencies: dict[str, list[float]] = {path: [] for path in paths}
    failures: list[str] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for path in paths:
            started = time.perf_counter()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
            try:
                connection.request("GET", path)
                status = connection.getresponse().status
            except OSError as err:
                failures.append(f"{path}: {err!r}")
                continue
            finally:
                connection.close()
            if status == 200:
                latencies[path].append(time.perf_counter() - started)
            else:
                failures.append(f"{path}: {status}")
        time.sleep(period_s)
    return {"latencies_s": latencies, "failures": failures}


if __name__ == "__main__":
    port, seconds, period_s, *paths = sys.argv[1:]
    print(json.dumps(probe(int(port), float(seconds), float(period_s), paths)))
