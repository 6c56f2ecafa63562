#!/usr/bin/env python3
"""deploy/grafana/outpost.json against the fields Grafana's dashboard schema (schemaVersion
38) requires, and every panel query through promtool's PromQL parser (Debian 12 packages no
Grafana to import it into; docs/operations.md says so). metrics_lint_test checks that every
metric it names is served."""
import json
import os
import subprocess
import sys
import tempfile

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


with open(os.path.join(root, "deploy", "grafana", "outpost.json")) as f:
    dash = json.load(f)

for key, kind in (("title", str), ("uid", str), ("schemaVersion", int), ("panels", list),
                  ("time", dict), ("templating", dict)):
    check(isinstance(dash.get(key), kind), f"dashboard.{key} is missing or not a {kind.__name__}")
check(len(dash.get("uid", "")) <= 40, "uid longer than 40 characters")
names = [v.get("name") for v in dash["templating"].get("list", [])]
check("datasource" in names, "no ${datasource} variable")

ids, exprs = set(), []
for p in dash["panels"]:
    title = p.get("title", "?")
    check(isinstance(p.get("id"), int) and p["id"] not in ids, f"{title}: id missing or repeated")
    ids.add(p.get("id"))
    check(p.get("type") in ("timeseries", "stat", "gauge", "table"), f"{title}: type")
    g = p.get("gridPos", {})
    check(all(isinstance(g.get(k), int) for k in ("h", "w", "x", "y")), f"{title}: gridPos")
    check(g.get("x", 0) + g.get("w", 0) <= 24, f"{title}: wider than the 24-column grid")
    check(p.get("datasource", {}).get("uid") == "${datasource}", f"{title}: datasource")
    targets = p.get("targets", [])
    check(len(targets) > 0, f"{title}: no query")
    refs = [t.get("refId") for t in targets]
    check(len(set(refs)) == len(refs) and all(refs), f"{title}: refIds")
    for t in targets:
        check(bool(t.get("expr")), f"{title}: empty expr")
        exprs.append((title, t.get("expr", "")))
    check(bool(p.get("description")), f"{title}: no description (docs/operations.md lists them)")

# Each query as a recording rule: promtool parses it as Prometheus would.
with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as rules:
    rules.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (_, expr) in enumerate(exprs):
        rules.write(f"      - record: dashboard:q{i}\n        expr: {json.dumps(expr)}\n")
r = subprocess.run(["promtool", "check", "rules", rules.name], capture_output=True, text=True)
os.unlink(rules.name)
check(r.returncode == 0, "promtool cannot parse a panel query:\n" + r.stdout + r.stderr)

# The documented list of panels is the dashboard's.
with open(os.path.join(root, "docs", "operations.md")) as f:
    doc = f.read()
for p in dash["panels"]:
    check(p["title"] in doc, f"docs/operations.md does not describe the panel \"{p['title']}\"")

for f in failures:
    print("FAIL:", f)
print(f"{len(dash['panels'])} panels, {len(exprs)} queries: " + ("ok" if not failures else "failed"))
sys.exit(1 if failures else 0)
