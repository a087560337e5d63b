"""Fixtures of the real-browser test: a JupyterLab on 127.0.0.1 and Debian's Chromium.

The server runs in a temporary root holding a copy of the test notebook, with a random free
port and a token, no news, no update checks and a read-only extension manager (no network).
It is shut down (kernels included) when the module's tests end, also after a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

HERE = Path(__file__).parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item (fixtures screenshot the page on failure)."""
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots and measured timings go (gitignored)."""
    out = Path(os.environ.get("VITLENS_UI_ARTIFACTS", HERE / "_artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"\nUI test artifacts: {out.resolve()}")
    return out


class Lab:
    """A running JupyterLab: ``url(path)`` gives an address with the token."""

    def __init__(self, root: Path, port: int, token: str, proc: subprocess.Popen,
                 log: Path) -> None:
        self.root, self.port, self.token, self.proc, self.log = root, port, token, proc, log
        self.base = f"http://127.0.0.1:{port}"

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}?token={self.token}"

    def json(self, path: str):
        req = urllib.request.Request(self.url(path),
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def api(self, path: str, method: str = "GET") -> int:
        req = urllib.request.Request(self.url(f"api/{path}"), method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)


def start_server(root: Path, app: str = "lab", extra: list[str] | None = None) -> Lab:
    """Start ``jupyter lab`` (or ``jupyter notebook``, Notebook 7) in ``root`` on 127.0.0.1.

    Nothing reaches the internet: no news, no update checks, a read-only extension manager.
    """
    private = root / ".jupyter"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               JUPYTER_CONFIG_DIR=str(private / "config"),
               JUPYTER_RUNTIME_DIR=str(private / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(private / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(private / "workspaces"))
    labconfig = private / "config" / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    (labconfig / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    port, token = _free_port(), secrets.token_hex(16)
    log = root / f"jupyter{app}.log"
    cmd = [sys.executable, "-m", "jupyter", app, "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False",
           f"--ServerApp.root_dir={root}", "--ServerApp.terminals_enabled=False"]
    if app == "lab":
        cmd += ["--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--LabApp.extension_manager=readonly"]
    cmd += extra or []
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        cmd.append("--allow-root")
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT)
    server = Lab(root, port, token, proc, log)
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            pytest.fail(f"jupyter {app} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if server.api("status") == 200:
                return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            _shutdown(server)
            pytest.fail(f"jupyter {app} did not start in 90 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Lab:
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(HERE / "explorers.ipynb", root / "explorers.ipynb")
    server = start_server(root)
    try:
        yield server
    finally:
        _shutdown(server)


def _shutdown(server: Lab) -> None:
    """Ask the server to stop (it shuts its kernels down), then make sure it has."""
    try:
        server.api("shutdown", method="POST")
    except Exception:  # noqa: BLE001 - the process is stopped below either way
        pass
    try:
        server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=10)


@contextlib.contextmanager
def chromium_page(server: Lab):
    """A Chromium page that may reach only the local server (other requests are refused).

    Yields ``SimpleNamespace(page, external, errors)``: the page, the refused addresses and
    the console errors.
    """
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1500, "height": 1100})
            pg = context.new_page()
            ui = SimpleNamespace(page=pg, external=[], errors=[])

            def gate(route) -> None:
                url = route.request.url
                if url.startswith(server.base) or url.startswith(("data:", "blob:")):
                    route.continue_()
                else:
                    ui.external.append(url)
                    route.abort()

            pg.route("**/*", gate)
            pg.on("console", lambda m: m.type == "error" and ui.errors.append(m.text))
            yield ui
        finally:
            browser.close()


@contextlib.contextmanager
def live_notebook(root: Path, app: str = "lab"):
    """``live.ipynb`` served from ``root`` by ``app`` ("lab" or "notebook"), with a page.

    Yields ``SimpleNamespace(server, ui, kernel=None)``; set ``kernel`` to the
    :class:`Kernel` client once the notebook runs, and it is closed at the end. On the way
    out it checks that the page reached nothing beyond the local server, prints the server
    log if anything failed, and stops the server.
    """
    shutil.copy(HERE / "live.ipynb", root / "live.ipynb")
    server = start_server(root, app=app)
    run = SimpleNamespace(server=server, ui=None, kernel=None)
    try:
        with chromium_page(server) as ui:
            run.ui = ui
            yield run
            assert ui.external == [], ui.external  # nothing beyond 127.0.0.1
    except BaseException:
        print("server log:", server.log.read_text()[-3000:])
        raise
    finally:
        if run.kernel is not None:
            run.kernel.close()
        _shutdown(server)


@pytest.fixture(scope="module")
def browser_page(lab: Lab):
    with chromium_page(lab) as ui:
        yield ui


class Kernel:
    """The notebook's own kernel, reached with jupyter_client: the tests read its state."""

    def __init__(self, server: Lab, notebook: str, timeout: float = 120) -> None:
        from jupyter_client import BlockingKernelClient

        deadline = time.monotonic() + timeout
        kid = None
        while kid is None:
            for sess in server.json("api/sessions"):
                if sess.get("path", "").endswith(notebook) and sess.get("kernel"):
                    kid = sess["kernel"]["id"]
            if kid is None:
                if time.monotonic() > deadline:
                    pytest.fail(f"no kernel for {notebook} in {timeout:.0f} s")
                time.sleep(0.5)
        conn = server.root / ".jupyter" / "runtime" / f"kernel-{kid}.json"
        while not conn.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.client = BlockingKernelClient(connection_file=str(conn))
        self.client.load_connection_file()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def run(self, code: str, timeout: float = 120) -> str:
        """Execute ``code`` in the kernel (queued after the notebook's cells); its stdout."""
        out: list[str] = []

        def hook(msg: dict) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                out.append("\n".join(content["traceback"]))
                raise AssertionError(f"kernel error: {content['ename']}: {content['evalue']}")

        self.client.execute_interactive(code, output_hook=hook, timeout=timeout,
                                        store_history=False)
        return "".join(out)

    def eval(self, expr: str, timeout: float = 120):
        """The JSON value of an expression evaluated in the kernel."""
        text = self.run(f"import json as _j; print(_j.dumps({expr}))", timeout)
        return json.loads(text.strip().splitlines()[-1])

    def close(self) -> None:
        self.client.stop_channels()
