"""deploy/kubernetes: every manifest validates against the Kubernetes schemas, and what it
configures is what Berth reads (the catalog loads, the hub config compiles, the Role grants no
more than the hub uses — see also test_kube_lifecycle's check against the API stand-in)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from berth.hub_config.loader import parse_catalog

DEPLOY = Path(__file__).parents[1] / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30"


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((DEPLOY / "manifests").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return found


@pytest.mark.parametrize("name, manifest", documents(), ids=[n for n, _ in documents()])
def test_manifest_is_valid_kubernetes(name: str, manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    assert manifest["metadata"].get("namespace", "berth") == "berth"


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(
        f"manifests/{p.name}" for p in (DEPLOY / "manifests").glob("*.yaml")
    )


def _config_map(name: str) -> dict[str, str]:
    return next(
        d for _, d in documents() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name
    )["data"]


def test_catalog_config_map_is_a_kubernetes_catalog() -> None:
    catalog = parse_catalog(_config_map("berth-catalog")["berth.yaml"], "berth-catalog")
    assert catalog.backends == frozenset({"kubernetes"})
    assert catalog.profiles["gpu-1"].kubernetes.tolerations


def test_hub_config_compiles_and_mounts_what_it_reads() -> None:
    source = _config_map("berth-hub-config")["jupyterhub_config.py"]
    compile(source, "jupyterhub_config.py", "exec")
    assert '"/etc/berth/catalog/berth.yaml"' in source
    deployment = next(d for _, d in documents() if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert "/etc/berth/catalog" in mounts and "/etc/berth/jupyterhub_config.py" in mounts
    assert pod["serviceAccountName"] == "berth-hub"


def test_role_is_namespaced_and_least_privilege() -> None:
    kinds = {d["kind"] for _, d in documents()}
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    role = next(d for _, d in documents() if d["kind"] == "Role")
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""]
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert not {"secrets", "pods/exec", "nodes"} & set(rule["resources"])


def test_culler_role_holds_only_its_scopes() -> None:
    source = _config_map("berth-hub-config")["jupyterhub_config.py"]
    namespace: dict[str, Any] = {}

    class Section(dict[str, Any]):
        def __getattr__(self, name: str) -> Any:
            return self.setdefault(name, Section())

        def __setattr__(self, name: str, value: Any) -> None:
            self[name] = value

    config = Section()
    namespace["get_config"] = lambda: config
    exec(
        compile(
            source.replace("berth.hub_config.configure(c,", "(lambda *a: None)(c,"), "cfg", "exec"
        ),
        namespace,
    )
    roles = {r["name"]: r for r in config["JupyterHub"]["load_roles"]}
    assert sorted(roles["berth-culler"]["scopes"]) == [
        "delete:servers",
        "list:users",
        "read:servers",
        "read:users:groups",
    ]
    assert [s["name"] for s in config["JupyterHub"]["services"]] == ["berth-culler"]


def test_z2jh_values_parse_and_their_config_compiles() -> None:
    values = yaml.safe_load((DEPLOY / "z2jh-values.yaml").read_text())
    compile(values["hub"]["extraConfig"]["berth"], "extraConfig", "exec")
    assert values["hub"]["services"]["berth-culler"]["command"][0] == "berth-culler"
    assert values["cull"]["enabled"] is False
