"""The Dockerfile and deploy/k8s manifests, checked offline: schemas, and agreement with the server itself.

No docker daemon or cluster here: kubernetes-validate carries the Kubernetes OpenAPI schemas in the
package, dockerfile-parse reads the Dockerfile; the rest is cross-checks against tunelab's own code.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import tomllib
import typer
import yaml
from dockerfile_parse import DockerfileParser

from tunelab.cli import app as cli
from tunelab.serving.app import create_app
from tunelab.serving.metrics import ServeMetrics
from tunelab.serving.predictor import Predictor
from tunelab.serving.settings import ServeSettings, load_settings

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.37"


def manifests() -> dict[str, dict[str, Any]]:
    """kind -> the one manifest of that kind under deploy/k8s."""
    docs = [
        d for f in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())
    ]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs) == 4
    return by_kind


def serve_params(argv: list[str]) -> dict[str, Any]:
    """The options ``tunelab serve`` parses from ``argv`` (click raises on anything it would refuse)."""
    assert argv[:2] == ["tunelab", "serve"]
    serve = typer.main.get_command(cli).commands["serve"]  # type: ignore[attr-defined]  # a group
    return serve.make_context("serve", argv[2:]).params


def container() -> dict[str, Any]:
    return manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(ROOT / "Dockerfile"))


@pytest.mark.parametrize("kind", ["Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap"])
def test_manifest_validates_against_kubernetes_schema(kind: str):
    assert kubernetes_validate.validate(manifests()[kind], K8S_VERSION, strict=True) == K8S_VERSION


def test_schema_check_rejects_a_misspelt_field():
    broken = copy.deepcopy(manifests()["Deployment"])
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_hpa_scales_on_a_metric_the_server_exports_and_the_adapter_maps():
    hpa, adapter = manifests()["HorizontalPodAutoscaler"], manifests()["ConfigMap"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == manifests()["Deployment"]["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    exported = {m.name for m in ServeMetrics().registry.collect()}
    assert name in exported
    (rule,) = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    assert rule["name"]["as"] == name
    assert rule["seriesQuery"].startswith(name + "{")


def test_probes_hit_routes_of_the_app_on_the_served_port(classifier: Predictor):
    routes = {
        getattr(r, "path", None)
        for r in create_app(load_settings(model_dir="m", api_key="k"), classifier).routes
    }
    c = container()
    port = serve_params(c["args"])["port"]
    (container_port,) = c["ports"]
    assert container_port["containerPort"] == port
    assert c["livenessProbe"]["httpGet"]["port"] == container_port["name"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert "/health" in routes
    # /ready needs the key, so its probe is a command: its URL must name this port and the route
    (url_port, path) = re.findall(
        r"http://127\.0\.0\.1:(\d+)(/\w+)", " ".join(c["readinessProbe"]["exec"]["command"])
    )[0]
    assert (int(url_port), path) == (port, "/ready")
    assert "/ready" in routes
    annotations = manifests()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] in routes
    service_port = manifests()["Service"]["spec"]["ports"][0]
    assert service_port["targetPort"] == container_port["name"]
    assert (
        manifests()["Service"]["spec"]["selector"].items()
        <= manifests()["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    )


def test_grace_period_outlasts_prestop_and_drain():
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in container()["env"]}
    drain = (
        int(env["TUNELAB_SERVE_DRAIN_TIMEOUT_S"]["value"])
        if "TUNELAB_SERVE_DRAIN_TIMEOUT_S" in env
        else (ServeSettings.model_fields["drain_timeout_s"].default)
    )
    pre_stop = container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain
    key = env["TUNELAB_SERVE_API_KEY"]
    assert "value" not in key
    assert key["valueFrom"]["secretKeyRef"]["name"]
    assert container()["resources"]["requests"]["cpu"]
    assert serve_params(container()["args"])["workers"] >= 1


def test_dockerfile_pins_install_torch_and_serves_with_a_valid_command():
    parsed = dockerfile()
    pin = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["tunelab"]["install"]["torch"]
    torch_installs = [
        i["value"]
        for i in parsed.structure
        if i["instruction"] == "RUN" and re.search(r"\btorch\b", i["value"])
    ]
    assert len(torch_installs) == 1
    assert pin in torch_installs[0].split()
    assert "/whl/cpu" in torch_installs[0]
    instructions = [i["instruction"] for i in parsed.structure]
    assert instructions[-1] == "CMD"
    params = serve_params(json.loads(parsed.structure[-1]["value"]))
    assert params["host"] == "0.0.0.0"
    (exposed,) = [i["value"] for i in parsed.structure if i["instruction"] == "EXPOSE"]
    assert int(exposed) == params["port"] == serve_params(container()["args"])["port"]
    user = [i["value"] for i in parsed.structure if i["instruction"] == "USER"]
    assert user
    assert user[-1] not in ("root", "0")
    assert instructions.index("USER") > max(i for i, n in enumerate(instructions) if n == "RUN")
    healthcheck = next(i["value"] for i in parsed.structure if i["instruction"] == "HEALTHCHECK")
    assert f"127.0.0.1:{params['port']}/health" in healthcheck
    assert "TUNELAB_SERVE_API_KEY" not in " ".join(str(v) for v in parsed.envs)  # no key baked in
