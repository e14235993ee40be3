"""Schema fuzzing of `siglip serve`: schemathesis reads the server's /openapi.json and sends generated requests,
valid ones (positive) and invalid ones (negative), to every operation; each answer must be no 5xx and match the
schema (status code documented, JSON body of the documented shape, content type).

`fuzz(url, ...)` is what tests/test_serve_hardening.py calls with small, seeded counts. `make fuzz` runs more:

    python tests/fuzz_api.py --max-examples 300 --seed 0     # a demo-model server of its own on 127.0.0.1
    python tests/fuzz_api.py --url http://127.0.0.1:8000      # a server already running (add --api-key KEY)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class FuzzReport:
    calls: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def fuzz(
    url: str,
    *,
    max_examples: int = 20,
    seed: int = 0,
    time_budget_s: float = 60.0,
    api_key: str | None = None,
) -> FuzzReport:
    """Fuzz every operation of `url`/openapi.json, positive and negative cases, within `time_budget_s`."""
    import hypothesis.errors
    import schemathesis
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    report = FuzzReport()
    deadline = time.monotonic() + time_budget_s
    operations = [result.ok() for result in schema.get_all_operations()]
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for operation in operations:
            if time.monotonic() > deadline:
                return report
            try:
                _fuzz_operation(operation.as_strategy(generation_mode=mode), mode.value, url, headers, checks,
                                report, deadline, max_examples, seed)  # fmt: skip
            except hypothesis.errors.Unsatisfiable:  # nothing to make invalid (a GET without parameters)
                continue
    return report


def _fuzz_operation(strategy, mode, url, headers, checks, report, deadline, max_examples, seed) -> None:
    import hypothesis
    from hypothesis import HealthCheck, Phase, settings

    @hypothesis.seed(seed)
    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=strategy)
    def run(case: Any) -> None:
        if time.monotonic() > deadline:
            return
        response = case.call(base_url=url, headers=headers, timeout=30)
        report.calls += 1
        report.statuses[response.status_code] = report.statuses.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except Exception as failure:  # a check failed: keep going, report them all
            report.failures.append(
                f"{case.method} {case.path} ({mode}) -> {response.status_code}: "
                f"{str(failure)[:400]} | body={str(case.body)[:200]!r} query={case.query!r}"
            )

    run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="a running server (default: start one with the demo model)")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--max-examples", type=int, default=300, help="examples per operation and mode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-budget", type=float, default=1800.0, help="seconds in all")
    args = parser.parse_args(argv)
    options = dict(max_examples=args.max_examples, seed=args.seed, time_budget_s=args.time_budget)
    if args.url:
        report = fuzz(args.url.rstrip("/"), api_key=args.api_key, **options)
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from serve_helpers import ThreadServer

        from siglip.bulk import embed_source
        from siglip.serve import create_app

        model = str(ROOT / "models" / "siglip-demo-shapes")
        with tempfile.TemporaryDirectory() as scratch:  # a collection, so that search and thumbnails answer 200
            collection = Path(scratch) / "shapes"
            embed_source(ROOT / "examples" / "images", collection, model=model)
            with ThreadServer(create_app(model, [collection], device="cpu")) as server:
                report = fuzz(server.url, **options)
    print(f"{report.calls} calls, statuses {dict(sorted(report.statuses.items()))}, {len(report.failures)} failures")
    for failure in report.failures[:50]:
        print("  " + failure)
    return 1 if report.failures or not report.calls else 0


if __name__ == "__main__":
    sys.exit(main())
