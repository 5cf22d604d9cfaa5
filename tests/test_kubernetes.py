"""deploy/kubernetes, offline: every rendered overlay validates against the Kubernetes OpenAPI
schemas (kubernetes-validate ships them), and the manifests agree with the code they deploy."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from festora.models import RUNNER_SPECS
from tests.kustomize import Resource, containers, render

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = ROOT / "deploy" / "kubernetes" / "overlays"
# the oldest Kubernetes still supported upstream-ish, and the newest the validator knows
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
RUNNER_COMPONENTS = {spec.key.replace("_", "-"): spec for spec in RUNNER_SPECS.values()}
GPU_RUNNERS = {"clip", "nima-technical", "nima-aesthetic"}
GRACEFUL_SHUTDOWN_ARG = "--timeout-graceful-shutdown"


@pytest.fixture(scope="module", params=["cpu", "gpu"])
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Resource]]:
    return request.param, render(OVERLAYS / request.param)


def by_kind(resources: list[Resource], kind: str) -> dict[str, Resource]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


def component(resource: Resource) -> str:
    return resource["metadata"]["labels"]["app.kubernetes.io/component"]


def container_of(deployment: Resource) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_resource_validates_against_the_openapi_schema(
    overlay: tuple[str, list[Resource]], version: str
) -> None:
    _, resources = overlay
    assert resources
    for resource in resources:
        kubernetes_validate.validate(resource, version, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_render_helper_matches_kubectl_kustomize(overlay: tuple[str, list[Resource]]) -> None:
    name, resources = overlay
    out = subprocess.run(
        ["kubectl", "kustomize", str(OVERLAYS / name)], capture_output=True, text=True, check=True
    ).stdout
    expected = [doc for doc in yaml.safe_load_all(out) if doc]

    def key(r: Resource) -> tuple[str, str]:
        return r["kind"], r["metadata"]["name"]

    assert {key(r): r for r in resources} == {key(r): r for r in expected}


def runner_services() -> dict[str, Any]:
    """The API service's runner dependencies by BentoML service name."""
    from service import FestoraVision

    return {d.on.name: d.on for d in FestoraVision.dependencies.values()}


def option_values(args: list[str], option: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args) if arg == option]


def test_the_api_and_each_runner_run_from_the_one_image(
    overlay: tuple[str, list[Resource]],
) -> None:
    _, resources = overlay
    deployments = by_kind(resources, "Deployment")
    assert {component(d) for d in deployments.values()} == {"api", *RUNNER_COMPONENTS}
    images = {c["image"] for c in containers(list(deployments.values()))}
    assert images == {"registry.example.com/festora-vision:latest"}
    services = runner_services()
    for deployment in deployments.values():
        args = container_of(deployment)["args"]
        assert args[0] == "start-http-server"  # the image's entrypoint serves the Bento so
        if component(deployment) == "api":
            assert option_values(args, "--service-name") == []
        else:
            (name,) = option_values(args, "--service-name")
            assert services[name].inner.spec is RUNNER_COMPONENTS[component(deployment)]


def test_the_api_finds_every_runner_and_redis_at_a_service(
    overlay: tuple[str, list[Resource]],
) -> None:
    _, resources = overlay
    config = by_kind(resources, "ConfigMap")["festora-config"]["data"]
    services = by_kind(resources, "Service")
    api = container_of(by_kind(resources, "Deployment")["festora-api"])
    depends = dict(d.split("=", 1) for d in option_values(api["args"], "--depends"))
    assert depends.keys() == runner_services().keys()  # the API starts no runner itself
    urls = [config[ref.removeprefix("$(").removesuffix(")")] for ref in depends.values()]
    for url in [*urls, config["REDIS_URL"]]:
        host, port = url.split("://")[1].split("/")[0].split(":")
        assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}, url


def test_probes_resources_and_graceful_termination(overlay: tuple[str, list[Resource]]) -> None:
    _, resources = overlay
    for deployment in by_kind(resources, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        container = container_of(deployment)
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        args = container["args"]
        drain = int(args[args.index(GRACEFUL_SHUTDOWN_ARG) + 1])
        pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
        assert pod["terminationGracePeriodSeconds"] > pre_stop + drain
        if component(deployment) in RUNNER_COMPONENTS:
            spec = RUNNER_COMPONENTS[component(deployment)]
            threads = env_of(container)[f"{spec.env_prefix}_NUM_THREADS"]
            assert container["resources"]["requests"]["cpu"] == threads


def test_every_deployment_has_a_service_an_autoscaler_and_a_disruption_budget(
    overlay: tuple[str, list[Resource]],
) -> None:
    _, resources = overlay
    services = by_kind(resources, "Service")
    autoscalers = by_kind(resources, "HorizontalPodAutoscaler")
    budgets = by_kind(resources, "PodDisruptionBudget")
    for name, deployment in by_kind(resources, "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert services[name]["spec"]["selector"].items() <= labels.items()
        assert budgets[name]["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert autoscalers[name]["spec"]["scaleTargetRef"]["name"] == name
    assert autoscalers["festora-api"]["spec"]["minReplicas"] >= 2  # the PDB keeps one up


def test_the_gpu_overlay_puts_clip_and_nima_on_gpu_nodes(
    overlay: tuple[str, list[Resource]],
) -> None:
    name, resources = overlay
    for deployment in by_kind(resources, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        container = container_of(deployment)
        gpus = container["resources"].get("limits", {}).get("nvidia.com/gpu")
        on_gpu = name == "gpu" and component(deployment) in GPU_RUNNERS
        assert (gpus == 1) is on_gpu
        assert ("nvidia.com/gpu.present" in pod.get("nodeSelector", {})) is on_gpu
        if on_gpu:
            assert env_of(container)["FESTORA_DEVICE"] == "cuda"
            assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
