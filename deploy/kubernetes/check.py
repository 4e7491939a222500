#!/usr/bin/env python3
"""Checks deploy/ offline (run by deploy/check.sh in CI):

- every Kubernetes object in deploy/kubernetes against the API's schemas (kubernetes-validate,
  strict: unknown fields are errors); the Prometheus Operator's kinds (ServiceMonitor,
  PrometheusRule) by their required fields;
- every kustomization: its resources exist, its `replicas` name a workload and its `images`
  an image of the resources it builds on;
- the PrometheusRule's groups are deploy/prometheus's, unchanged (`--write` regenerates it);
- every `--flag` the manifests and systemd units pass to `membrane` is one the binary takes;
- the systemd units have the sections and keys a unit needs.

Usage: check.py MEMBRANE_BINARY [--write]
"""
import pathlib
import re
import subprocess
import sys

import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.31.0"
OPERATOR_KINDS = {
    "ServiceMonitor": ["spec.selector", "spec.endpoints"],
    "PrometheusRule": ["spec.groups"],
}
errors = []


def fail(where, what):
    errors.append(f"{where}: {what}")


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def dig(d, dotted):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def check_objects():
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for d in docs(path):
            kind = d.get("kind")
            if kind in OPERATOR_KINDS:
                if d.get("apiVersion") != "monitoring.coreos.com/v1":
                    fail(path, f"{kind}: apiVersion must be monitoring.coreos.com/v1")
                for field in OPERATOR_KINDS[kind]:
                    if dig(d, field) in (None, [], {}):
                        fail(path, f"{kind}: {field} is missing")
                continue
            try:
                kubernetes_validate.validate(d, K8S_VERSION, strict=True)
            except Exception as e:  # the library raises several error types
                fail(path, f"{kind} {dig(d, 'metadata.name')}: {str(e).splitlines()[0]}")


def resources_of(kdir):
    """The objects a kustomization builds on (its own files and those of the directories it
    names), without applying its transforms."""
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    out = []
    for r in k.get("resources", []):
        p = (kdir / r).resolve()
        if p.is_dir():
            if not (p / "kustomization.yaml").exists():
                fail(kdir / "kustomization.yaml", f"{r}: a directory without kustomization.yaml")
                continue
            out += resources_of(p)
        elif p.exists():
            out += docs(p)
        else:
            fail(kdir / "kustomization.yaml", f"{r}: no such file")
    return out


def images_of(objs, kdir):
    names = set()
    for o in objs:
        for c in dig(o, "spec.template.spec.containers") or []:
            names.add(c["image"].split(":")[0])
    # An image renamed by a kustomization below counts under its new name.
    for r in yaml.safe_load((kdir / "kustomization.yaml").read_text()).get("resources", []):
        p = (kdir / r).resolve()
        if p.is_dir():
            for i in yaml.safe_load((p / "kustomization.yaml").read_text()).get("images", []):
                if "newName" in i:
                    names.add(i["newName"])
    return names


def check_kustomizations():
    for kfile in sorted(K8S.rglob("kustomization.yaml")):
        kdir = kfile.parent
        k = yaml.safe_load(kfile.read_text())
        if k.get("kind") != "Kustomization":
            fail(kfile, "kind must be Kustomization")
        objs = resources_of(kdir)
        workloads = {dig(o, "metadata.name") for o in objs if o.get("kind") in ("Deployment", "StatefulSet")}
        for r in k.get("replicas", []):
            if r["name"] not in workloads:
                fail(kfile, f"replicas: no workload named {r['name']} (have {sorted(workloads)})")
        images = images_of(objs, kdir)
        for i in k.get("images", []):
            if i["name"] not in images:
                fail(kfile, f"images: no container uses {i['name']} (have {sorted(images)})")


def rule_groups():
    groups = []
    for f in sorted((ROOT / "deploy" / "prometheus").glob("*.yaml")):
        groups += yaml.safe_load(f.read_text())["groups"]
    return groups


def check_prometheus_rule(write):
    path = K8S / "base" / "prometheusrule.yaml"
    want = rule_groups()
    if write:
        head = [l for l in path.read_text().splitlines() if l.startswith("#")]
        obj = {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {"name": "membrane", "labels": {"app.kubernetes.io/part-of": "membrane"}},
            "spec": {"groups": want},
        }
        path.write_text("\n".join(head) + "\n" + yaml.safe_dump(obj, sort_keys=False, width=200))
    got = docs(path)[0]["spec"]["groups"]
    if got != want:
        fail(path, "its groups differ from deploy/prometheus/*.yaml: run check.py --write")


def check_flags(binary):
    helps = {}
    for sub in ("proxy", "control"):
        out = subprocess.run([binary, sub, "--help"], capture_output=True, text=True, check=True).stdout
        helps[sub] = set(re.findall(r"--[a-z][a-z0-9-]*", out))

    def check(where, args):
        if not args or args[0] not in helps:
            return
        for a in args[1:]:
            flag = a.split("=", 1)[0]
            if flag.startswith("--") and flag not in helps[args[0]]:
                fail(where, f"`membrane {args[0]}` takes no {flag}")

    # The containers' arguments (the image's entrypoint is the binary).
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for d in docs(path):
            for c in dig(d, "spec.template.spec.containers") or []:
                check(path, c.get("args", []))
    # The units' ExecStart lines.
    for path in sorted((ROOT / "deploy" / "systemd").glob("*.service")):
        for line in path.read_text().splitlines():
            if line.startswith("ExecStart="):
                words = line.split("=", 1)[1].split()
                check(path, words[1:])


def check_units():
    for path in sorted((ROOT / "deploy" / "systemd").glob("*.service")):
        sections, section = {}, None
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                sections[section] = {}
            elif "=" in line and section:
                k, v = line.split("=", 1)
                sections[section][k] = v
            else:
                fail(path, f"not a unit line: {line}")
        for s, keys in {"Unit": ["Description"], "Service": ["ExecStart"], "Install": ["WantedBy"]}.items():
            for key in keys:
                if key not in sections.get(s, {}):
                    fail(path, f"[{s}] needs {key}")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    write = "--write" in sys.argv[2:]
    check_objects()
    check_kustomizations()
    check_prometheus_rule(write)
    check_flags(sys.argv[1])
    check_units()
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"deploy/: {sum(1 for _ in K8S.rglob('*.yaml'))} Kubernetes files and the systemd units check out")


main()
