"""deploy/: the systemd unit, Dockerfile, compose file and Kubernetes manifests run only commands
the real CLI accepts, and the monitoring files match what nodes serve.

No container engine or cluster runs here, so the images are not built and nothing is applied;
instead every ``fedchain ...`` command line these files contain is resolved against the real
typer application (command path and options parsed and type-checked, nothing executed), the
compose testnet's layout (homes, ports, advertised hosts) is checked against what its own
``testnet create`` command produces, and the Kubernetes manifests (the base, and the overlays
``testnet create N --k8s`` writes, rendered by ``kubectl kustomize``) are validated offline
against the strict schemas of a pinned Kubernetes version, with each pod's init script run
against its ConfigMap and Secret as mounted.
"""

from __future__ import annotations

import base64
import configparser
import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from cli.main import app
from learning.data import load_digits
from node.fl.localdata import load_local, parse_eval_set
from node.fl.task import Task
from node.home import load_home

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
COMMAND = typer.main.get_command(app)


def resolve(args: list[str]):
    """Parse ``fedchain ARGS`` down to the leaf command's context; raises on any usage error."""
    ctx = COMMAND.make_context("fedchain", list(args))
    while hasattr(ctx.command, "resolve_command"):
        pending = [*(getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", None) or []), *ctx.args]
        name, sub, rest = ctx.command.resolve_command(ctx, pending)
        ctx = sub.make_context(name, rest, parent=ctx)
    return ctx


def fedchain_args(argv: list[str]) -> list[str]:
    """The arguments after the ``fedchain`` executable in an argv."""
    assert Path(argv[0]).name == "fedchain", argv
    return argv[1:]


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def dockerfile_instruction(name: str) -> list[str]:
    """The JSON (exec) form of a Dockerfile instruction (for HEALTHCHECK: of its CMD)."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(rf"^{name}\b[^\[\n]*(\[.*\])\s*$", text, re.MULTILINE)
    assert match, f"Dockerfile has no exec-form {name}"
    return json.loads(match.group(1))


def test_resolver_catches_bad_commands():
    """The check below would be worthless if the resolver accepted anything."""
    assert resolve(["node", "start", "--home", "/x"]).command_path == "fedchain node start"
    for bad in (["node", "stat"], ["testnet", "create", "4", "--bogus"], ["testnet", "create", "many"],
                ["status", "--node"]):
        with pytest.raises(Exception):
            resolve(bad)


def test_unit_file():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read_string((DEPLOY / "fedchain.service").read_text())
    service = unit["Service"]
    ctx = resolve(fedchain_args(shlex.split(service["ExecStart"])))
    assert ctx.command_path == "fedchain node start"
    assert str(ctx.params["home"]) == "/var/lib/fedchain"
    assert service["User"] not in ("", "root")
    assert service["Restart"] == "on-failure"
    assert service["StateDirectory"] == "fedchain"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "CapabilityBoundingSet": ""}.items():
        assert service[key] == value, key
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_dockerfile():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", text, re.MULTILINE)
    assert "torch==2.13.0" in text and "/whl/cpu" in text
    assert re.search(r"^USER (?!root)\w+", text, re.MULTILINE)
    entry = dockerfile_instruction("ENTRYPOINT")
    ctx = resolve(fedchain_args(entry + dockerfile_instruction("CMD")))
    assert ctx.command_path == "fedchain node start"
    health = dockerfile_instruction("HEALTHCHECK")
    assert resolve(fedchain_args(health)).command_path == "fedchain status"
    ignore = [line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "**" and "!node/**" in ignore


def test_compose_commands_parse():
    services = compose()["services"]
    assert set(services) == {"init", "node0", "node1", "node2", "node3"}
    for name, svc in services.items():
        assert svc["image"] == "fedchain:latest"
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        ctx = resolve(svc["command"])  # the image's ENTRYPOINT is fedchain
        expected = "fedchain testnet create" if name == "init" else "fedchain node start"
        assert ctx.command_path == expected, name
        if name != "init":
            assert resolve(fedchain_args(svc["healthcheck"]["test"][1:])).command_path == "fedchain status"
            assert svc["depends_on"]["init"]["condition"] == "service_completed_successfully"


def test_compose_layout_matches_what_init_creates(tmp_path):
    """Run the init service's own command into a temporary folder and compare with the services."""
    services = compose()["services"]
    init_args = list(services["init"]["command"])
    init_args[init_args.index("--dir") + 1] = str(tmp_path)
    result = CliRunner().invoke(app, init_args)
    assert result.exit_code == 0, result.output
    again = CliRunner().invoke(app, init_args)  # --exist-ok: a restarted init must succeed
    assert again.exit_code == 0, again.output
    for i in range(4):
        svc = services[f"node{i}"]
        home_arg = resolve(svc["command"]).params["home"]
        home = load_home(tmp_path / Path(home_arg).name)
        net = home.config.network
        assert net.host == "0.0.0.0"
        assert net.url == f"http://node{i}:{net.port}", "peers must dial the service name"
        assert svc["ports"] == [f"127.0.0.1:{net.port}:{net.port}"]
        assert svc["healthcheck"]["test"][-2] == f"http://127.0.0.1:{net.port}"
        assert all(re.fullmatch(r"http://node\d:\d+", url) for url in net.bootstrap)
        assert len(net.bootstrap) == 3


# --- Kubernetes (deploy/k8s) -----------------------------------------------------------------

K8S = DEPLOY / "k8s"
K8S_VERSION = "1.32.0"  # the Kubernetes whose schemas the manifests must satisfy (strict: no unknown fields)


def k8s_valid(doc: dict) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def kustomize(folder: Path) -> list[dict]:
    """``kubectl kustomize`` (offline) of an overlay: the manifests a cluster would receive."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the overlays cannot be rendered here (the base is still validated)")
    result = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def overlay(tmp_path: Path, n: int) -> dict[tuple[str, str], dict]:
    """The rendered overlay ``fedchain testnet create N --k8s`` writes, by (kind, name)."""
    out = tmp_path / f"overlay{n}"
    result = CliRunner().invoke(app, ["testnet", "create", str(n), "--k8s", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "testnet.yaml").stat().st_mode & 0o077 == 0, "the node keys are readable by their owner only"
    docs = kustomize(out)
    for doc in docs:
        k8s_valid(doc)
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_the_validator_catches_bad_manifests():
    """The checks below would be worthless if the validator accepted anything."""
    good = yaml.safe_load((K8S / "base" / "pdb.yaml").read_text())
    k8s_valid(good)
    for bad in ({**good, "spec": {**good["spec"], "maxUnavailabel": 1}},             # unknown field (strict)
                {**good, "spec": {**good["spec"], "selector": "app=fedchain"}}):      # wrong type
        with pytest.raises(kubernetes_validate.ValidationError):
            k8s_valid(bad)


def test_k8s_base_manifests_validate():
    files = sorted((K8S / "base").glob("*.yaml"))
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in files if p.name != "kustomization.yaml")
    kinds = []
    for path in files:
        if path.name != "kustomization.yaml":
            for doc in yaml.safe_load_all(path.read_text()):
                k8s_valid(doc)
                kinds.append(doc["kind"])
    assert sorted(kinds) == ["PodDisruptionBudget", "Service", "Service", "StatefulSet"]


@pytest.mark.parametrize(("n", "unavailable"), [(4, 1), (7, 2), (25, 6)])
def test_k8s_overlay_for_n_nodes(tmp_path, n, unavailable):
    """N replicas, and a disruption budget that leaves a BFT quorum of the min(21, N) delegates."""
    res = overlay(tmp_path, n)
    assert res[("StatefulSet", "fedchain")]["spec"]["replicas"] == n
    assert res[("PodDisruptionBudget", "fedchain")]["spec"]["maxUnavailable"] == unavailable
    d = min(21, n)
    assert d - unavailable >= 2 * d // 3 + 1 > d - unavailable - 1  # a quorum always stays, and no more is kept
    assert set(res[("ConfigMap", "fedchain-testnet")]["data"]) == {"genesis.json", *(f"node{i}.toml" for i in range(n))}
    assert set(res[("ConfigMap", "fedchain-testnet")]["binaryData"]) == {"eval-set.npz"}
    assert set(res[("Secret", "fedchain-node-keys")]["data"]) == {f"node{i}.json" for i in range(n)}
    assert set(res[("Secret", "fedchain-node-data")]["data"]) == {f"node{i}.npz" for i in range(n)}


def test_k8s_overlay_refuses_data_too_large_for_kubernetes_objects(tmp_path):
    """Fashion-MNIST shards do not fit a Secret: the CLI says so and where such data goes instead."""
    result = CliRunner().invoke(app, ["testnet", "create", "4", "--k8s", str(tmp_path / "o"),
                                      "--dataset", "fashion_mnist"])
    assert result.exit_code != 0
    assert "more than Kubernetes keeps in one object" in result.output and "data volume" in result.output
    assert not (tmp_path / "o" / "testnet.yaml").exists()


def test_k8s_pods_get_the_homes_the_cli_makes(tmp_path):
    """Run each pod's init script against the ConfigMap and Secrets as Kubernetes mounts them, and
    load the home it lays out with the node's own loader: its URL is the pod's stable name under
    the headless Service, its port the container's, its key the genesis account of its ordinal,
    and it trains on its own shard on its own data volume, which the node mounts read-only."""
    res = overlay(tmp_path, 4)
    sts = res[("StatefulSet", "fedchain")]
    service = res[("Service", "fedchain")]
    pod = sts["spec"]["template"]
    init, = pod["spec"]["initContainers"]
    node, = pod["spec"]["containers"]
    assert service["spec"]["clusterIP"] == "None" and sts["spec"]["serviceName"] == service["metadata"]["name"]
    labels = pod["metadata"]["labels"]
    for selector in (service["spec"]["selector"], sts["spec"]["selector"]["matchLabels"],
                     res[("PodDisruptionBudget", "fedchain")]["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    # the node runs `fedchain node start` on the home volume that the init container fills
    ctx = resolve(node["args"])  # the image's ENTRYPOINT is fedchain
    assert ctx.command_path == "fedchain node start"
    home_mount = {m["name"]: m["mountPath"] for m in node["volumeMounts"]}["home"]
    env = {e["name"]: e.get("value") for e in init["env"]}
    assert str(ctx.params["home"]) == home_mount == env["FEDCHAIN_HOME"]
    port = next(p["containerPort"] for p in node["ports"] if p["name"] == "http")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert node[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "home"
    # the mounts, as the kubelet makes them: ConfigMap keys as files, Secret keys decoded, mode 0440
    mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["testnet"]["configMap"]["name"] == "fedchain-testnet" and mounts["testnet"] == env["TESTNET_DIR"]
    assert volumes["keys"]["secret"]["secretName"] == "fedchain-node-keys" and mounts["keys"] == env["KEYS_DIR"]
    assert volumes["node-data"]["secret"] == {"secretName": "fedchain-node-data", "defaultMode": 0o440, "optional": True}
    assert mounts["node-data"] == env["NODE_DATA_DIR"]
    # each pod's data volume (a claim of its own): written by the init container, read-only to the node
    node_data = next(m for m in node["volumeMounts"] if m["name"] == "data")
    assert node_data["readOnly"] and node_data["mountPath"] == mounts["data"] == env["DATA_DIR"]
    assert [c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]] == ["home", "data"]
    testnet, keys, shards = tmp_path / "testnet", tmp_path / "keys", tmp_path / "node-data"
    for folder, (kind, name) in ((testnet, ("ConfigMap", "fedchain-testnet")), (keys, ("Secret", "fedchain-node-keys")),
                                 (shards, ("Secret", "fedchain-node-data"))):
        folder.mkdir()
        doc = res[(kind, name)]
        for key, text in doc.get("data", {}).items():
            if kind == "Secret":
                (folder / key).write_bytes(base64.b64decode(text))
                (folder / key).chmod(0o440)
            else:
                (folder / key).write_text(text)
        for key, data in doc.get("binaryData", {}).items():
            (folder / key).write_bytes(base64.b64decode(data))
    genesis = json.loads((testnet / "genesis.json").read_text())
    task = Task.from_dict(genesis["app"]["task"])
    script = init["args"][0]
    assert init["command"] == ["sh", "-c"]
    trained = []
    for i in range(4):
        home, data_dir = tmp_path / f"pod{i}", tmp_path / f"data{i}"
        data_dir.mkdir()
        run_env = {"PATH": os.environ["PATH"], "POD_NAME": f"fedchain-{i}", "FEDCHAIN_HOME": str(home),
                   "TESTNET_DIR": str(testnet), "KEYS_DIR": str(keys), "DATA_DIR": str(data_dir),
                   "NODE_DATA_DIR": str(shards)}
        for start in range(2):  # a restart finds the home there, the key widened by the fsGroup handling
            result = subprocess.run(["sh", "-c", script], env=run_env, capture_output=True, text=True, timeout=30, check=False)
            assert result.returncode == 0, result.stderr
            loaded = load_home(home)
            (home / "node_key.json").chmod(0o660)
        net = loaded.config.network
        assert net.host == "0.0.0.0" and net.port == port
        assert net.url == f"http://fedchain-{i}.{service['metadata']['name']}:{port}"
        assert sorted(net.bootstrap) == sorted(f"http://fedchain-{j}.fedchain:{port}" for j in range(4) if j != i)
        assert loaded.keypair.node_id == genesis["accounts"][i]["id"]
        # [data] names the files on the pod's volume; as the node reads them there, they fit the task
        data = loaded.config.data
        assert (data.source, data.eval_set) == (f"{env['DATA_DIR']}/train.npz", f"{env['DATA_DIR']}/eval-set.npz")
        local = dataclasses.replace(data, source=str(data_dir / "train.npz"), eval_set=str(data_dir / "eval-set.npz"))
        trained.append(load_local(task, local, home))
        assert len(parse_eval_set(task, (data_dir / "eval-set.npz").read_bytes())) == task.eval_set_samples
        assert (data_dir / "train.npz").stat().st_mode & 0o077 == 0, "a device's data is its own"
    # every pod holds its own shard: together they are the data set less the public evaluation set
    pool, _ = load_digits(seed=0)
    rows = [set(map(bytes, ds.x)) for ds in trained]
    assert all(not (rows[a] & rows[b]) for a in range(4) for b in range(a + 1, 4))
    assert sum(len(ds) for ds in trained) + task.eval_set_samples == len(pool)
    # an operator's own file on the volume is never replaced; a volume with no data stops the pod
    own = tmp_path / "data0" / "train.npz"
    own.write_bytes((shards / "node1.npz").read_bytes())
    run_env = {"PATH": os.environ["PATH"], "POD_NAME": "fedchain-0", "FEDCHAIN_HOME": str(tmp_path / "pod0"),
               "TESTNET_DIR": str(testnet), "KEYS_DIR": str(keys), "DATA_DIR": str(tmp_path / "data0"),
               "NODE_DATA_DIR": str(shards)}
    assert subprocess.run(["sh", "-c", script], env=run_env, timeout=30, check=False).returncode == 0
    assert own.read_bytes() == (shards / "node1.npz").read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run(["sh", "-c", script], env={**run_env, "DATA_DIR": str(empty), "NODE_DATA_DIR": str(empty)}, check=False,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and f"no {empty}/train.npz on the data volume of node 0" in result.stderr


def test_committed_overlay_is_what_the_cli_writes(tmp_path):
    committed = K8S / "overlays" / "4-nodes"
    out = tmp_path / "4-nodes"
    result = CliRunner().invoke(app, ["testnet", "create", "4", "--k8s", str(out), "--k8s-base", "../../base"])
    assert result.exit_code == 0, result.output
    assert (committed / "kustomization.yaml").read_text() == (out / "kustomization.yaml").read_text()
    again = CliRunner().invoke(app, ["testnet", "create", "4", "--k8s", str(out)])
    assert again.exit_code != 0 and "holds a testnet's node keys" in again.output  # keys are never replaced
    assert "overlays/*/testnet.yaml" in (K8S / ".gitignore").read_text()


def test_k8s_image_is_the_one_the_dockerfile_builds():
    sts = yaml.safe_load((K8S / "base" / "statefulset.yaml").read_text())
    images = {c["image"] for c in sts["spec"]["template"]["spec"]["initContainers"] + sts["spec"]["template"]["spec"]["containers"]}
    assert images == {compose()["services"]["node0"]["image"]}
    assert sts["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user


# --- monitoring (deploy/prometheus, deploy/grafana) --------------------------------------------

def test_prometheus_scrapes_the_nodes_where_they_listen():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    local = jobs["fedchain-local"]
    ports = sorted(int(svc["ports"][0].rsplit(":", 1)[1]) for name, svc in compose()["services"].items() if name != "init")
    assert local["static_configs"][0]["targets"] == [f"127.0.0.1:{p}" for p in ports]
    assert local["metrics_path"] == "/metrics"
    annotations = yaml.safe_load((K8S / "base" / "statefulset.yaml").read_text())["spec"]["template"]["metadata"]["annotations"]
    relabels = " ".join(str(r.get("source_labels")) for r in jobs["fedchain-k8s"]["relabel_configs"])
    for key in annotations:
        assert "__meta_kubernetes_pod_annotation_" + re.sub(r"[^a-z0-9]", "_", key) in relabels, key
    assert annotations["prometheus.io/path"] == "/metrics"


def grafana_metric_names() -> set[str]:
    dash = json.loads((DEPLOY / "grafana" / "fedchain-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dash["panels"] for t in panel["targets"]]
    assert exprs and all(t["datasource"]["uid"] == "${datasource}" for p in dash["panels"] for t in p["targets"])
    return set(re.findall(r"\b((?:fedchain|process)_[a-z0-9_]+)", " ".join(exprs)))


def test_grafana_dashboard_is_well_formed():
    names = grafana_metric_names()
    assert "fedchain_fl_test_accuracy_ratio" in names and "fedchain_finality_latency_seconds_bucket" in names
    # the metrics an FL node exports are checked against a live one in tests/integration/test_dashboard.py
