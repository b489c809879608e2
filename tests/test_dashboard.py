"""The MLflow dashboard in a real browser: ``mlflow ui`` on the loopback address over the store of a short real
sweep, opened in headless Chromium (Debian's ``chromium``; skipped, with the reason, where it is absent).

Checks: the experiment opens in the model-training view with the sweep listed, a job's page shows its metrics,
the reconstruction grid artifact is served, and a screenshot of the sweep's two jobs compared is written
(``REGIONALDIFF_SCREENSHOT=path.png`` keeps it, e.g. for docs/images/dashboard.png).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import TINY
from regionaldiff.tracking.mlflow_run import LOCAL_DASHBOARD

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install -y chromium)"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, data: dict | None = None, timeout: float = 30) -> bytes:
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback only
        return response.read()


def _browser(*args: str, profile: Path, timeout: int = 120) -> str:
    """Headless Chromium with its own fresh profile (``profile``: an empty folder, so no view choice is remembered
    from an earlier visit); returns stdout (the DOM with --dump-dom)."""
    proc = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            f"--user-data-dir={profile}",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=1500,950",
            "--virtual-time-budget=20000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.stdout


def _text(dom: str) -> str:
    dom = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


@pytest.fixture
def dashboard(run_cli, tmp_path):
    """A 2-job sweep (global vs regional LDM, tiny), then ``mlflow ui`` on 127.0.0.1 over its store; yields the
    server's address and the links the jobs printed."""
    printed = run_cli("-m", "ldm=global,regional", *TINY).stdout
    store = f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            store,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                _get(f"{base}/health", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"mlflow ui did not start:\n{server.stdout.read() if server.stdout else ''}"
                    ) from None
                time.sleep(1)
        yield base, printed
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def test_the_dashboard_shows_the_sweep_its_metrics_and_the_reconstruction_grid(dashboard, tmp_path):
    base, printed = dashboard
    experiments = json.loads(_get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=regionaldiff"))
    experiment = experiments["experiment"]
    exp_id = experiment["experiment_id"]
    assert {t["key"]: t["value"] for t in experiment["tags"]}["mlflow.experimentKind"] == "custom_model_development"
    runs = json.loads(_get(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id]}))["runs"]
    tags = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs}
    parent = next(r for r in runs if tags[r["info"]["run_id"]].get("regionaldiff.role") == "sweep")
    children = [r for r in runs if tags[r["info"]["run_id"]].get("mlflow.parentRunId") == parent["info"]["run_id"]]
    assert len(children) == 2 and parent["info"]["status"] == "FINISHED"
    child = children[0]
    child_id = child["info"]["run_id"]

    # the link every job printed, opened as printed in a browser that never saw MLflow: the model-training view,
    # the experiment's Runs table with the sweep's parent run in it
    links = re.findall(r"open the runs: (\S+)", printed)
    assert links and links[0].endswith(f"/#/experiments/{exp_id}?workflowType=machine_learning"), printed[-2000:]
    link = links[0].replace(LOCAL_DASHBOARD, base)
    page = _text(_browser("--dump-dom", link, profile=tmp_path / "fresh-profile"))
    assert page.lstrip().startswith("Runs - Experiment") and "Run Name" in page and "matching runs" in page, page[
        :2000
    ]
    assert parent["info"]["run_name"] in page, page[:3000]
    # why the link carries workflowType: the bare experiment link opens MLflow 3.17's GenAI overview (traces, token
    # usage) in a fresh browser, whatever the experiment's tag says (mlflow/mlflow#24498)
    bare = _text(_browser("--dump-dom", f"{base}/#/experiments/{exp_id}", profile=tmp_path / "bare-profile"))
    assert "Token Usage" in bare and "Run Name" not in bare, (
        "the bare link no longer opens the GenAI overview: if MLflow now opens the Runs table by itself, the "
        f"workflowType part of the printed links can go. Page: {bare[:1500]}"
    )

    # a job's page, from the link it printed: its metrics with their values
    run_links = [u for u in re.findall(r"or this run: (\S+)", printed) if child_id in u]
    assert run_links, printed[-2000:]
    page = _text(_browser("--dump-dom", run_links[0].replace(LOCAL_DASHBOARD, base), profile=tmp_path / "p2"))
    assert child["info"]["run_name"] in page
    values = {m["key"]: m["value"] for m in child["data"]["metrics"]}
    for metric in ("eval/ssim", "eval/recon_region_miou", "finetune/train_loss"):
        assert metric in page, (metric, page[:3000])
    assert repr(values["eval/ssim"])[:6] in page  # its value

    # the reconstruction grid: previewed as an image in the artifact view, and served by the UI's server
    dom = _browser(
        "--dump-dom",
        f"{base}/#/experiments/{exp_id}/runs/{child_id}/artifacts/figures/reconstructions.png",
        profile=tmp_path / "p3",
    )
    assert re.search(r'<img[^>]*alt="figures/reconstructions.png"[^>]*src="blob:', dom), _text(dom)[:3000]
    query = urllib.parse.urlencode({"path": "figures/reconstructions.png", "run_uuid": child_id})
    assert _get(f"{base}/get-artifact?{query}")[:8] == b"\x89PNG\r\n\x1a\n"

    # the sweep compared: a screenshot of both jobs side by side
    shot = Path(os.environ.get("REGIONALDIFF_SCREENSHOT", tmp_path / "compare.png")).resolve()
    ids = urllib.parse.quote(json.dumps([c["info"]["run_id"] for c in children]))
    _browser(
        f"--screenshot={shot}",
        f"{base}/#/compare-runs?runs={ids}&experiments={urllib.parse.quote(json.dumps([exp_id]))}",
        profile=tmp_path / "p4",
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
