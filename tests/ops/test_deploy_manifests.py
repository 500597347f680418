"""The Kubernetes manifests and the compose file: valid against the API's schemas, and
saying what the deployment guide says they say (isolation, probes, one agent per provider).

No cluster runs here: each Kubernetes document is checked in strict mode (unknown fields
are errors) against the OpenAPI schemas kubernetes-validate ships for the API version.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "scripts" / "deploy" / "kubernetes"
COMPOSE = ROOT / "scripts" / "deploy" / "compose.yaml"
K8S_VERSION = "1.31.0"
PROVIDERS = ("h-city", "h-river", "h-mount")


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] == kind]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("doc", documents(),
                         ids=lambda d: f"{d['kind']}/{d['metadata'].get('namespace', '')}"
                                       f"/{d['metadata']['name']}")
def test_every_manifest_is_valid_in_strict_mode(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_refuses_a_misspelt_field() -> None:
    # The check above could pass by validating nothing: a typo must fail it.
    deployment = copy.deepcopy(by_kind("Deployment")[0])
    pod_spec(deployment)["runtimeClasName"] = "gvisor"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_no_secret_value_is_in_the_manifests() -> None:
    assert by_kind("Secret") == []


def test_the_controller_runs_under_gvisor_as_a_non_root_user() -> None:
    (runtime,) = by_kind("RuntimeClass")
    assert runtime["handler"] == "runsc"
    (controller,) = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "controller"]
    spec = pod_spec(controller)
    assert spec["runtimeClassName"] == runtime["metadata"]["name"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10002
    (c,) = spec["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert controller["spec"]["replicas"] >= 2  # replicas share the PostgreSQL queue


def test_every_service_selects_pods_of_its_namespace() -> None:
    workloads = by_kind("Deployment") + by_kind("StatefulSet")
    for svc in by_kind("Service"):
        ns, sel = svc["metadata"]["namespace"], svc["spec"]["selector"]
        matches = [w for w in workloads if w["metadata"]["namespace"] == ns
                   and sel.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matches) == 1, svc["metadata"]["name"]
        ports = {p["name"] for c in pod_spec(matches[0])["containers"] for p in c["ports"]}
        for port in svc["spec"]["ports"]:
            target = port["targetPort"]
            assert isinstance(target, int) or target in ports


def test_one_agent_per_provider_in_its_own_namespace() -> None:
    agents = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "agent"]
    assert sorted(a["metadata"]["namespace"] for a in agents) == sorted(
        f"provider-{p}" for p in PROVIDERS)
    namespaces = {n["metadata"]["name"] for n in by_kind("Namespace")}
    for agent in agents:
        ns = agent["metadata"]["namespace"]
        provider = ns.removeprefix("provider-")
        assert ns in namespaces
        assert agent["spec"]["replicas"] == 1 and agent["spec"]["strategy"]["type"] == "Recreate"
        spec = pod_spec(agent)
        assert spec["nodeSelector"] == {"data-sandbox/provider": provider}
        volumes = {v["name"]: v for v in spec["volumes"]}
        (c,) = spec["containers"]
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert volumes["engine"]["hostPath"]["path"] == "/var/run/docker.sock"
        # The work root at the node's path, shared with the engine.
        assert mounts["work"]["mountPath"] == volumes["work"]["hostPath"]["path"]
        assert mounts["work"]["mountPropagation"] == "Bidirectional"
        assert mounts["stage"]["mountPath"] == volumes["stage"]["hostPath"]["path"] \
            == "/var/lib/data-sandbox/stage"  # the executor's default stage root
        assert mounts["stage"]["mountPropagation"] == "Bidirectional"
        assert mounts["data"]["readOnly"] is True
        assert provider in volumes["data"]["hostPath"]["path"]
        args = c["args"]
        assert args[args.index("--work-root") + 1] == mounts["work"]["mountPath"]
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_each_provider_namespace_denies_all_egress_but_the_agents_to_the_controller() -> None:
    policies = by_kind("NetworkPolicy")
    for provider in PROVIDERS:
        ns = f"provider-{provider}"
        mine = [p for p in policies if p["metadata"]["namespace"] == ns]
        deny = [p for p in mine if p["spec"]["podSelector"] == {}]
        assert len(deny) == 1
        assert "Egress" in deny[0]["spec"]["policyTypes"]
        assert not deny[0]["spec"].get("egress")  # no rule: nothing allowed
        (agent,) = [p for p in mine if p["spec"]["podSelector"] != {}]
        assert agent["spec"]["podSelector"]["matchLabels"] == {
            "app.kubernetes.io/name": "agent"}
        ports = {port["port"] for rule in agent["spec"]["egress"] for port in rule["ports"]}
        assert ports == {8080, 443, 53}


def test_postgres_takes_connections_from_the_controller_and_migrations_only() -> None:
    (policy,) = [p for p in by_kind("NetworkPolicy")
                 if p["spec"]["podSelector"].get("matchLabels") ==
                 {"app.kubernetes.io/name": "postgres"}]
    sources = [s["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
               for rule in policy["spec"]["ingress"] for s in rule["from"]]
    assert sorted(sources) == ["controller", "migrate"]


def test_images_are_the_offline_built_ones_never_pulled() -> None:
    for w in by_kind("Deployment") + by_kind("StatefulSet") + by_kind("Job"):
        for c in pod_spec(w)["containers"]:
            assert c["image"].split(":")[0] in (
                "data-sandbox-controller", "data-sandbox-agent", "data-sandbox-postgres")
            assert c["imagePullPolicy"] == "Never"


# ---- compose -------------------------------------------------------------------------

def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def test_every_controller_process_gets_the_sealing_keyring_from_a_0400_secret() -> None:
    # Without it the controller makes a keyring in its (read-only) instance directory and
    # never starts; a keyring it made itself would also be lost with the pod.
    jobs = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "controller"]
    jobs += [d for d in by_kind("Job") if d["metadata"]["name"] == "migrate"]
    assert len(jobs) == 2
    for doc in jobs:
        spec = pod_spec(doc)
        (c,) = spec["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        path = env["SANDBOX_SEALING_KEY_FILE"]
        (mount,) = [m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert volume["secret"]["defaultMode"] == 0o400
        assert {"key": "sealing-key", "path": path.rsplit("/", 1)[1]} in \
            volume["secret"]["items"]
    controller = compose()["services"]["controller"]
    assert "sealing_key" in controller["secrets"]
    assert controller["environment"]["SANDBOX_SEALING_KEY_FILE"] == "/run/secrets/sealing_key"


def test_compose_runs_every_part_as_its_own_service_on_loopback() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "witness", "controller",
                             *(f"agent-{p}" for p in PROVIDERS)}
    for name, svc in services.items():
        assert svc["network_mode"] == "host", name  # nothing leaves 127.0.0.1 here
    env = services["controller"]["environment"]
    assert env["SANDBOX_HOST"] == "127.0.0.1"
    assert "127.0.0.1" in env["SANDBOX_DATABASE_URL"]
    assert services["postgres"]["environment"]["PGLISTEN"] == "127.0.0.1"


def test_compose_agents_use_their_own_data_and_work_root() -> None:
    services = compose()["services"]
    seen = set()
    for p in PROVIDERS:
        svc = services[f"agent-{p}"]
        code = p.upper()
        vols = svc["volumes"]
        assert "/var/run/docker.sock:/var/run/docker.sock" in vols
        assert f"${{DEMO_DIR}}/domains/{code}:/data:ro" in vols
        work, stage = [v for v in vols if isinstance(v, dict)]
        assert work["source"] == work["target"] == f"${{DEMO_DIR}}/jobs/{code}"
        assert stage["source"] == stage["target"]
        assert code not in stage["target"]  # jobs see the stage path: it names no one
        for bind in (work, stage):
            assert bind["bind"]["propagation"] == "rshared"
        cmd = svc["command"]
        assert cmd[cmd.index("--work-root") + 1] == work["target"]
        assert cmd[cmd.index("--stage-root") + 1] == stage["target"]
        seen.add(svc["environment"]["SANDBOX_AGENT_METRICS_PORT"])
    assert len(seen) == len(PROVIDERS)


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose not installed (scripts/ensure-compose.sh)")
def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    env = tmp_path / "compose.env"
    env.write_text("".join(f"{k}=x\n" for k in (
        "CONTROLLER_IMAGE", "AGENT_IMAGE", "POSTGRES_IMAGE", "SANDBOX_DB_PASSWORD",
        "METRICS_TOKEN", "LOG_ORIGIN", "LOG_VKEY", "WITNESS_VKEY")) + f"DEMO_DIR={tmp_path}\n")
    (tmp_path / "agents").mkdir()
    for p in PROVIDERS:
        (tmp_path / "agents" / f"{p.upper()}.env").write_text("")
    out = subprocess.run(["docker-compose", "-p", "validate", "-f", str(COMPOSE), "--env-file",
                          str(env), "config", "-q"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
