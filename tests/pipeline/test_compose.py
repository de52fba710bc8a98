"""docker-compose.yml stays scalable (`docker compose up --scale worker=3`) and creates every topic a worker uses
(Kafka there has automatic topic creation off)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from pipeline.config import TopicsSettings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_worker_service_can_be_scaled() -> None:
    worker = compose()["services"]["worker"]
    assert "container_name" not in worker and "hostname" not in worker
    for port in worker.get("ports", []):
        host_ip, host_port, container_port = str(port).split(":")
        assert host_ip == "127.0.0.1" and host_port == "", f"a fixed host port clashes between replicas: {port}"


def test_topics_init_creates_every_topic_with_the_default_names() -> None:
    words = set(re.findall(r"[\w.-]+", " ".join(compose()["services"]["topics-init"]["command"])))
    names = TopicsSettings().model_dump(exclude={"partitions", "replicas"}).values()
    missing = [n for n in names if n not in words]
    assert not missing, f"topics-init does not create {missing}"


def test_prometheus_scrapes_every_worker_replica() -> None:
    config = yaml.safe_load((ROOT / "infra" / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "slmstream-worker"]
    assert job["dns_sd_configs"][0]["names"] == ["worker"] and job["dns_sd_configs"][0]["port"] == 6066
