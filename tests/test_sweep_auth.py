"""The shared tracking server of docs/sweeps.md, started as documented (MLflow's basic-auth app): a request without
credentials is refused, a job's client with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD gets in."""

from __future__ import annotations

import base64
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("flask_wtf") is None,
        reason='MLflow\'s basic-auth app needs Flask-WTF: pip install "mlflow[auth]"',
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_the_documented_server_refuses_requests_without_credentials(tmp_path):
    ini = tmp_path / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{tmp_path / 'basic_auth.db'}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        MLFLOW_AUTH_CONFIG_PATH=str(ini),
        MLFLOW_AUTH_ADMIN_PASSWORD="a-long-admin-password-1",
        MLFLOW_FLASK_SERVER_SECRET_KEY="0123456789abcdef" * 4,
    )
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--app-name",
            "basic-auth",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--artifacts-destination",
            str(tmp_path / "mlartifacts"),
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    search = f"{base}/api/2.0/mlflow/experiments/search?max_results=10"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                _status(f"{base}/health")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    server.kill()
                    raise AssertionError(server.communicate()[0][-3000:]) from None
                time.sleep(1)
        assert _status(search) == 401
        assert _status(search, ("admin", "wrong")) == 401
        assert _status(search, ("admin", "a-long-admin-password-1")) == 200
        # a job's MLflow client reads its credentials from the environment, as the docs say
        code = (
            "from mlflow.tracking import MlflowClient\n"
            f"c = MlflowClient('{base}')\n"
            "print(c.create_experiment('sweeps'))\n"
        )
        job_env = dict(env, MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD="a-long-admin-password-1")
        ok = subprocess.run([sys.executable, "-c", code], env=job_env, capture_output=True, text=True, timeout=120)
        assert ok.returncode == 0, ok.stderr[-2000:]
        refused = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0 and "401" in refused.stderr + refused.stdout
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
