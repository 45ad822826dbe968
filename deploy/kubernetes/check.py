"""Checks the Kubernetes manifests offline, as a cluster would on `kubectl
apply -k` (run by tests/it/kubernetes.rs; no cluster here).

    python check.py KUSTOMIZE OUT_DIR OVERLAY...

Each overlay is rendered with the `kustomize` binary given, then:
- every Kubernetes resource is checked against the API's schema
  (kubernetes-validate, strict: an unknown field is an error) for each
  Kubernetes version in VERSIONS;
- every KEDA resource against the schema of KEDA's own CRD (crds/), also
  strictly, and the aws-sqs-queue trigger's metadata against the keys
  KEDA reads;
- references between them resolve (the scaled Deployment, the trigger's
  authentication, the selectors, volumes, service account) and the drain
  fits the pod's grace period.
The pipeline files of the rendered ConfigMaps are written to
OUT_DIR/OVERLAY/ for `host check`. Prints one line per resource; exits 1
naming every problem.
"""
import os
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
# The oldest and newest Kubernetes minor versions the manifests support.
VERSIONS = ["1.29.0", "1.34.0"]
KEDA = {
    "ScaledObject": "keda.sh_scaledobjects.yaml",
    "TriggerAuthentication": "keda.sh_triggerauthentications.yaml",
}
# What KEDA's aws-sqs-queue scaler reads from a trigger's metadata.
SQS_METADATA = {
    "queueURL", "queueURLFromEnv", "queueLength", "activationQueueLength", "awsRegion",
    "awsEndpoint", "scaleOnInFlight", "scaleOnDelayed", "identityOwner",
}


def crd_schema(kind):
    with open(os.path.join(HERE, "crds", KEDA[kind])) as f:
        crd = yaml.safe_load(f)
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    return crd["spec"]["group"] + "/" + version["name"], version["schema"]["openAPIV3Schema"]


def unknown_fields(value, schema, path):
    """Fields the schema does not declare (a cluster would prune them)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found = []
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key in schema["properties"]:
                found += unknown_fields(item, schema["properties"][key], f"{path}.{key}")
            elif not schema.get("additionalProperties"):
                found.append(f"{path}.{key}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            found += unknown_fields(item, schema["additionalProperties"], f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def check_keda(doc):
    api, schema = crd_schema(doc["kind"])
    problems = [] if doc["apiVersion"] == api else [f"apiVersion is {doc['apiVersion']}, KEDA serves {api}"]
    for error in jsonschema.Draft7Validator(schema).iter_errors(doc):
        where = ".".join(str(p) for p in error.absolute_path)
        problems.append(f"{where}: {error.message}")
    problems += [f"{p}: not a field of {doc['kind']}" for p in unknown_fields(doc, schema, "")]
    for trigger in doc.get("spec", {}).get("triggers", []):
        if trigger.get("type") != "aws-sqs-queue":
            problems.append(f"trigger {trigger.get('type')}: only aws-sqs-queue is expected here")
            continue
        meta = trigger.get("metadata", {})
        problems += [f"aws-sqs-queue has no metadata `{k}`" for k in sorted(set(meta) - SQS_METADATA)]
        for needed in ["queueURL", "awsRegion", "queueLength"]:
            if needed not in meta:
                problems.append(f"aws-sqs-queue needs `{needed}`")
        for number in ["queueLength", "activationQueueLength"]:
            if number in meta and not str(meta[number]).isdigit():
                problems.append(f"`{number}` is {meta[number]!r}, not a whole number")
    return problems


def check_kubernetes(doc):
    problems = []
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            problems.append(f"Kubernetes {version}: {where}: {e.message}")
    return problems


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def check_references(docs):
    problems = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    deployments = by_kind.get("Deployment", {})
    for name, so in by_kind.get("ScaledObject", {}).items():
        target = so["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            problems.append(f"ScaledObject {name} scales {target}, which is not among the Deployments")
            continue
        # KEDA must watch the queue the pods read.
        queues = {
            env_of(c).get("LOGIN_QUEUE", {}).get("value")
            for c in deployments[target]["spec"]["template"]["spec"]["containers"]
        } - {None}
        for t in so["spec"]["triggers"]:
            url = t.get("metadata", {}).get("queueURL", "")
            if queues and url.rstrip("/").rsplit("/", 1)[-1] not in queues:
                problems.append(f"ScaledObject {name} watches {url}, but the pods read {', '.join(sorted(queues))}")
        for t in so["spec"]["triggers"]:
            auth = t.get("authenticationRef", {}).get("name")
            if auth and auth not in by_kind.get("TriggerAuthentication", {}):
                problems.append(f"ScaledObject {name} authenticates with {auth}, which is not defined")
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]
        labels = pod["metadata"]["labels"]
        if not matches(dep["spec"]["selector"]["matchLabels"], labels):
            problems.append(f"Deployment {name}: its selector does not match its pods")
        if "replicas" in dep["spec"]:
            problems.append(f"Deployment {name} sets replicas: KEDA's HPA owns them, and every apply would reset them")
        for s in by_kind.get("Service", {}).values():
            if not matches(s["spec"]["selector"], labels):
                problems.append(f"Service {s['metadata']['name']} selects no pod of {name}")
        for p in by_kind.get("PodDisruptionBudget", {}).values():
            if not matches(p["spec"]["selector"]["matchLabels"], labels):
                problems.append(f"PodDisruptionBudget {p['metadata']['name']} covers no pod of {name}")
        spec = pod["spec"]
        account = spec.get("serviceAccountName")
        if account and account not in by_kind.get("ServiceAccount", {}):
            problems.append(f"Deployment {name} runs as service account {account}, which is not defined")
        for v in spec.get("volumes", []):
            cm = v.get("configMap", {}).get("name")
            if cm and cm not in by_kind.get("ConfigMap", {}):
                problems.append(f"Deployment {name} mounts ConfigMap {cm}, which is not defined")
        grace = spec.get("terminationGracePeriodSeconds", 30)
        for c in spec["containers"]:
            env = env_of(c)
            drain = int(env.get("HOST_DRAIN_S", {}).get("value", "25"))
            if drain + 3 > grace:
                problems.append(
                    f"Deployment {name}: HOST_DRAIN_S={drain} leaves less than 3 s of the pod's "
                    f"terminationGracePeriodSeconds ({grace}) before SIGKILL"
                )
            security = c.get("securityContext", {})
            if not security.get("readOnlyRootFilesystem") or security.get("allowPrivilegeEscalation", True):
                problems.append(f"container {c['name']}: a read-only root and no privilege escalation")
            if not spec.get("securityContext", {}).get("runAsNonRoot"):
                problems.append(f"Deployment {name}: pods must run as non-root")
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"]:
                if probe not in c:
                    problems.append(f"container {c['name']} has no {probe}")
            if "readyz" not in str(c.get("readinessProbe")):
                problems.append(f"container {c['name']}: the readiness probe must ask /readyz (it fails while draining)")
            for want in ["DATABASE_URL", "HOST_ADMIN_TOKEN"]:
                if want not in env:
                    problems.append(f"container {c['name']} has no {want}")
    return problems


def main():
    kustomize, out, overlays = sys.argv[1], sys.argv[2], sys.argv[3:]
    problems = []
    for overlay in overlays:
        rendered = subprocess.run(
            [kustomize, "build", os.path.join(HERE, "overlays", overlay)], capture_output=True, text=True
        )
        if rendered.returncode != 0:
            problems.append(f"{overlay}: kustomize build failed: {rendered.stderr.strip()}")
            continue
        docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
        for doc in docs:
            what = f"{overlay}: {doc['kind']} {doc['metadata']['name']}"
            found = check_keda(doc) if doc["kind"] in KEDA else check_kubernetes(doc)
            problems += [f"{what}: {p}" for p in found]
            print(f"{what}: {'ok' if not found else f'{len(found)} problem(s)'}")
            if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("etl-pipelines"):
                folder = os.path.join(out, overlay)
                os.makedirs(folder, exist_ok=True)
                for key, text in doc.get("data", {}).items():
                    with open(os.path.join(folder, key), "w") as f:
                        f.write(text)
        problems += [f"{overlay}: {p}" for p in check_references(docs)]
    for p in problems:
        print(f"problem: {p}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
