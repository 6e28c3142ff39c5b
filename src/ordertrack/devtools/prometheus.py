"""Debian's `prometheus` for `ordertrack dev` (and the tests): scrapes every process of the
stack with the rules and alerts of deploy/prometheus loaded, so `ordertrack rollout report`
and the recording rules work against the dev stack as they do in production.

Each target carries the `job` its Deployment gives it in production (ws-order-tracking,
logistics-gateway, order-tracking-api, order-tracking-ingest) and a `pod` label, as
deploy/prometheus/prometheus.yaml's relabelings do. Scrapes and rule evaluations every 5 s
(production: 15 s / 30 s): a demo shows numbers within seconds.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

BINARY = "prometheus"
INTERVAL = "5s"


def rules_files() -> list[Path]:
    """deploy/prometheus/alerts.yaml of the source tree this package runs from ([] when the
    package is installed without it)."""
    here = Path(__file__).resolve()
    for root in (here.parents[3], Path.cwd()):
        path = root / "deploy" / "prometheus" / "alerts.yaml"
        if path.is_file():
            return [path]
    return []


def config_text(targets: Mapping[str, Mapping[str, str]], rule_files: list[Path]) -> str:
    """prometheus.yml (as JSON, which YAML reads): one scrape job per production job name;
    `targets` is job -> {pod name: host:port}."""
    scrape = []
    for job, pods in targets.items():
        scrape.append({
            "job_name": job,
            "static_configs": [{"targets": [address], "labels": {"pod": pod, "namespace": "dev"}}
                               for pod, address in pods.items()],
        })
    return json.dumps({
        "global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": scrape,
    }, indent=2) + "\n"


def argv(config_path: Path, data_dir: Path, port: int) -> list[str]:
    binary = shutil.which(BINARY) or BINARY
    return [binary, f"--config.file={config_path}", f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=15d",
            "--log.format=json"]


def installed() -> bool:
    return shutil.which(BINARY) is not None
