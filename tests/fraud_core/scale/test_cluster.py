"""Connecting to the cluster, describing it, and keeping dask out of everything else."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed import Client

from fraud_core.scale.cluster import ClusterUnavailable, cluster_size, connect
from servicectl.process import free_port

REPO = Path(__file__).resolve().parents[3]


def test_a_port_nobody_listens_on_is_a_clear_error_naming_the_address() -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(ClusterUnavailable, match=rf"no Dask scheduler answers at {address}"):
        connect(address, timeout_s=1)
    assert time.monotonic() - start < 20  # the timeout holds, not a default of minutes


def test_an_address_that_is_not_one_is_named() -> None:
    with pytest.raises(ClusterUnavailable, match="'nonsense://x' is not a Dask scheduler"):
        connect("nonsense://x", timeout_s=1)


def test_the_real_cluster_has_two_one_thread_workers(cluster_address: str) -> None:
    client = connect(cluster_address, timeout_s=10, min_workers=2)
    try:
        size = cluster_size(client)
        assert (size.address, size.workers, size.threads) == (cluster_address, 2, 2)
        assert size.memory_bytes == 2 * 10**9  # --memory-limit 1GB each
        metadata = size.as_metadata()
        assert metadata["dask_workers"] == 2 and metadata["dask_scheduler"] == cluster_address
    finally:
        client.close()


def test_too_few_workers_is_a_clear_error(cluster_address: str) -> None:
    with pytest.raises(ClusterUnavailable, match=r"has 2 worker\(s\) after 1s; at least 3"):
        connect(cluster_address, timeout_s=1, min_workers=3)


def test_the_client_is_not_made_dask_s_default(cluster: Client) -> None:
    """Connecting changes nothing else in the process: other dask code keeps its scheduler."""
    from distributed import default_client

    with pytest.raises(ValueError, match="No clients found"):
        default_client()
    assert cluster.status == "running"


def test_importing_fraud_core_scale_imports_no_dask() -> None:
    code = "import sys, fraud_core.scale; print(sorted(m for m in sys.modules if 'dask' in m))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_nothing_else_in_fraud_core_imports_dask_or_the_scale_package() -> None:
    """The API image has no dask: only fraud_core/scale may import it (lazy imports too)."""
    offenders = []
    for path in sorted((REPO / "fraud_core").rglob("*.py")):
        if "scale" in path.relative_to(REPO / "fraud_core").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.split(".")[0] in {"dask", "distributed"} or name.startswith(
                    "fraud_core.scale"
                ):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
    assert offenders == []
