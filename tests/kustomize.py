"""Render a Kustomize overlay the way `kubectl kustomize` does, for the features
deploy/kubernetes uses: `resources` (files and directories), `namespace`, `images` and
strategic-merge `patches` (maps merge, lists of named items merge by `name` with new items
first, other lists are replaced). No registry package ships kustomize; test_kubernetes.py
checks this against `kubectl kustomize` wherever kubectl is installed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "StorageClass"})
Resource = dict[str, Any]


def render(directory: Path) -> list[Resource]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    resources: list[Resource] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        if path.is_dir():
            resources += render(path)
        else:
            resources += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for patch in spec.get("patches", []):
        change = yaml.safe_load((directory / patch["path"]).read_text())
        target = find(resources, change["kind"], change["metadata"]["name"])
        merged = strategic_merge(target, change)
        resources[resources.index(target)] = merged
    if namespace := spec.get("namespace"):
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = namespace
    for image in spec.get("images", []):
        for container in containers(resources):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                new_tag = image.get("newTag", tag)
                container["image"] = image.get("newName", name) + (f":{new_tag}" if new_tag else "")
    return resources


def find(resources: list[Resource], kind: str, name: str) -> Resource:
    for resource in resources:
        if resource["kind"] == kind and resource["metadata"]["name"] == name:
            return resource
    raise LookupError(f"patch target {kind}/{name} not found")


def containers(resources: list[Resource]) -> list[dict[str, Any]]:
    found = []
    for resource in resources:
        pod = resource.get("spec", {}).get("template", {}).get("spec", {})
        found += pod.get("containers", []) + pod.get("initContainers", [])
    return found


def strategic_merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(base[key], value) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        changes = {item["name"]: item for item in patch}
        kept = [strategic_merge(i, changes[i["name"]]) if i["name"] in changes else i for i in base]
        known = {item["name"] for item in base}
        return [item for item in patch if item["name"] not in known] + kept  # new ones first
    return patch


def _named(items: list[Any]) -> bool:
    return all(isinstance(item, dict) and "name" in item for item in items)
