"""Fuzz a served challenge's HTTP API from its own OpenAPI schema (schemathesis + hypothesis).

Every documented operation gets `examples` generated requests that fit the schema and as many
that break it, sent over real HTTP with the given headers; each response is checked by
schemathesis' default checks (no 5xx, status codes and bodies as documented). Used by the test
suite and by `benchmarks/bench_hardening.py`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable


@dataclass
class FuzzReport:
    cases: int = 0
    statuses: Counter = field(default_factory=Counter)
    operations: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    no_invalid_form: list[str] = field(default_factory=list)  # nothing in the schema to break

    @property
    def server_errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if code >= 500)


def fuzz_api(url: str, headers: Callable[[], dict] | None = None, examples: int = 10) -> FuzzReport:
    """`headers` gives each operation its own headers (a fresh token: DELETE /api/token revokes one)."""
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import positive_data_acceptance

    # Whether a schema-valid upload is accepted depends on the file's content (an archive of the
    # right layout), which a schema cannot say; every other default check applies.
    excluded = [positive_data_acceptance]

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    report = FuzzReport()
    for result in schema.get_all_operations():
        op = result.ok()
        report.operations.append(op.label)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                strategy = op.as_strategy(generation_mode=mode)
            except Exception as exc:  # noqa: BLE001 - an operation with nothing to break negatively
                report.failures.append(f"{op.label} ({mode.value}): no strategy: {exc}")
                continue

            sent = headers() if headers else None

            @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
            @given(case=strategy)
            def run(case):
                response = case.call(base_url=url, headers=sent)  # noqa: B023 - run() is called at once
                report.cases += 1
                report.statuses[response.status_code] += 1
                case.validate_response(response, excluded_checks=excluded)

            try:
                run()
            except Unsatisfiable:
                report.no_invalid_form.append(op.label)
            except Exception as exc:  # noqa: BLE001 - collected: one line per failing operation
                report.failures.append(f"{op.label} ({mode.value}): {str(exc).strip()[:600]}")
    return report
