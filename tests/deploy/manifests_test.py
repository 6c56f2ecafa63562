#!/usr/bin/env python3
"""Checks the structure of deploy/k8s/ and deploy/compose.yaml (label deploy).

deploy/k8s is not applied to a cluster here (k8s_schema_test checks it against the API
schemas) and compose_test brings compose up, so this holds them to what docs/install.md
says where neither looks: every manifest parses; the Deployment probes
/readyz and /healthz on the port named http, runs as a non-root uid that matches the
image's, with a read-only root file system and no capabilities, and has resources; the
Services, the HorizontalPodAutoscaler and the PodDisruptionBudget select or target it; the
ConfigMap's gateway.toml parses and listens where the ports say; compose builds the image
from deploy/gateway.Dockerfile.
"""
import pathlib
import re
import sys
import tomllib

import yaml

root = pathlib.Path(__file__).resolve().parents[2]
k8s = root / "deploy" / "k8s"
failures = []


def check(what, ok):
    print(("ok: " if ok else "FAIL: ") + what)
    if not ok:
        failures.append(what)


docs = {}
kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
for name in kustomization["resources"]:
    for doc in yaml.safe_load_all((k8s / name).read_text()):
        docs[(doc["kind"], doc["metadata"]["name"])] = doc
check("kustomization lists every manifest in deploy/k8s",
      sorted(kustomization["resources"]) ==
      sorted(p.name for p in k8s.glob("*.yaml") if p.name != "kustomization.yaml"))

dep = docs[("Deployment", "outpost-gateway")]
labels = dep["spec"]["template"]["metadata"]["labels"]
check("the Deployment's selector matches its pods",
      dep["spec"]["selector"]["matchLabels"].items() <= labels.items())
pod = dep["spec"]["template"]["spec"]
c = pod["containers"][0]
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
check("readiness probe: GET /readyz on the http port",
      c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"})
check("liveness probe: GET /healthz on the http port",
      c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"})
check("resources: requests and a memory limit",
      "cpu" in c["resources"]["requests"] and "memory" in c["resources"]["limits"])
sc = pod["securityContext"]
dockerfile = (root / "deploy" / "gateway.Dockerfile").read_text()
image_user = re.findall(r"^USER (\d+):(\d+)", dockerfile, re.M)[-1]
check("runAsNonRoot with the image's uid and gid",
      sc["runAsNonRoot"] and (str(sc["runAsUser"]), str(sc["runAsGroup"])) == image_user)
csc = c["securityContext"]
check("no privilege escalation, read-only root, all capabilities dropped",
      csc["allowPrivilegeEscalation"] is False and csc["readOnlyRootFilesystem"] is True
      and csc["capabilities"]["drop"] == ["ALL"])
mounts = {m["mountPath"] for m in c["volumeMounts"]}
check("config, certificates and a writable state directory are mounted",
      {"/etc/outpost/gateway.toml", "/etc/outpost/certs", "/var/lib/outpost-gateway"} <= mounts)

config = tomllib.loads(docs[("ConfigMap", "outpost-gateway")]["data"]["gateway.toml"])
check("gateway.toml listens on the agents port", config["gateway"]["listen"].endswith(f":{ports['agents']}"))
check("gateway.toml serves HTTP on the http port, on every address",
      config["gateway"]["http_listen"] == f"0.0.0.0:{ports['http']}")
grace = int(config["gateway"]["shutdown_grace"].rstrip("s"))
check("terminationGracePeriodSeconds exceeds gateway.shutdown_grace",
      pod["terminationGracePeriodSeconds"] > grace)
secret = docs[("Secret", "outpost-gateway-certs")]
check("the Secret holds the three files gateway.toml names",
      {pathlib.Path(config["tls"][k]).name for k in ("ca_file", "cert_file", "key_file")}
      == set(secret["stringData"]))

for (kind, name), doc in docs.items():
    if kind == "Service":
        check(f"Service {name} selects the pods", doc["spec"]["selector"].items() <= labels.items())
        check(f"Service {name} targets named container ports",
              all(p["targetPort"] in ports for p in doc["spec"]["ports"]))
hpa = docs[("HorizontalPodAutoscaler", "outpost-gateway")]
check("the HPA scales the Deployment, from at least 2",
      hpa["spec"]["scaleTargetRef"]["name"] == "outpost-gateway" and hpa["spec"]["minReplicas"] >= 2)
pdb = docs[("PodDisruptionBudget", "outpost-gateway")]
check("the PDB selects the pods", pdb["spec"]["selector"]["matchLabels"].items() <= labels.items())

compose = yaml.safe_load((root / "deploy" / "compose.yaml").read_text())
services = compose["services"]
check("compose has gateway, kafka, mosquitto and agent",
      {"gateway", "kafka", "mosquitto", "agent"} <= set(services))
check("compose builds the gateway and the agent from deploy/gateway.Dockerfile",
      services["gateway"]["build"]["dockerfile"] == "deploy/gateway.Dockerfile"
      and services["agent"]["build"]["target"] == "agent")
for svc in ("gateway", "agent", "mosquitto"):
    for v in services[svc].get("volumes", []):
        host = v.split(":")[0]
        if host.startswith("./compose/"):
            check(f"compose mounts {host}, which exists", (root / "deploy" / host).exists())
for name in ("gateway.toml", "agent.toml"):
    try:
        tomllib.loads((root / "deploy" / "compose" / name).read_text())
        parsed = True
    except tomllib.TOMLDecodeError:
        parsed = False
    check(f"compose's {name} parses", parsed)

sys.exit(1 if failures else 0)
