"""deploy/prometheus/enf-alerts.yml with promtool (Debian's `prometheus`
package, which .ci/run installs): `promtool check rules` finds every rule
valid, and `promtool test rules enf-alerts.test.yml` passes, where each alert
fires with its labels and annotations and stays quiet on a healthy series.
Then what promtool leaves unchecked: every rule has a severity, a summary and
a description; the test file has, for every alert, a case where it fires and
one where it does not; the Grafana dashboard's queries parse as PromQL.

Without promtool these tests fail (they are not skipped): CI must run them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "deploy" / "prometheus"
RULES = RULES_DIR / "enf-alerts.yml"
RULE_TESTS = RULES_DIR / "enf-alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "enf-dashboard.json"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not on PATH: it comes with Debian's `prometheus` package, which"
            " .ci/run installs (apt-get install --no-install-recommends prometheus)"
        )
    return path


def run_promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_finds_the_rules_valid() -> None:
    done = run_promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout, done.stdout


def test_promtool_passes_the_rules_unit_tests() -> None:
    done = run_promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout, done.stdout


def test_promtool_fails_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests can fail: one expected annotation changed, promtool says so."""
    shutil.copy(RULES, tmp_path / RULES.name)
    text = RULE_TESTS.read_text()
    wrong = text.replace('summary: "ENF dead letters present"', 'summary: "all is well"')
    assert wrong != text
    (tmp_path / RULE_TESTS.name).write_text(wrong)
    done = run_promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert done.returncode != 0 and "all is well" in done.stdout + done.stderr


def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: sum(rate(x[5m])\n"
    )
    done = run_promtool("check", "rules", str(broken), cwd=tmp_path)
    assert done.returncode != 0


def test_every_alert_has_severity_summary_and_description() -> None:
    found = rules()
    assert len(found) >= 9
    for rule in found:
        name = rule.get("alert")
        assert name, f"not an alerting rule: {rule}"
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name


def test_every_alert_fires_and_stays_quiet_in_the_unit_tests() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    assert doc["rule_files"] == [RULES.name]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            if check["exp_alerts"]:
                fires.add(check["alertname"])
                for alert in check["exp_alerts"]:
                    assert alert["exp_labels"]["severity"], check["alertname"]
                    assert set(alert["exp_annotations"]) == {"summary", "description"}
            else:
                quiet.add(check["alertname"])
    names = {rule["alert"] for rule in rules()}
    assert names - fires == set(), "alerts never seen firing"
    assert names - quiet == set(), "alerts never seen quiet"
    assert fires | quiet <= names, "tests of alerts that do not exist"


def test_the_dashboards_queries_parse(tmp_path: Path) -> None:
    """Every panel's query, as Prometheus reads it once Grafana has put in
    `$__rate_interval`: promtool checks them as recording rules."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    recorded = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"enf:panel_{i}", "expr": e.replace("$__rate_interval", "5m")}
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(recorded))
    done = run_promtool("check", "rules", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
