"""Fixtures of the browser tests: a real imagefactoryd with the mock plugins, and a real
headless Chromium driven by selenium.

The daemon and the plugins come from cargo's debug build (`cargo build --workspace`
first; scripts/test.sh does). Chromium and chromedriver are Debian's (scripts/setup.sh).
A missing piece fails the test loudly; nothing is skipped.
"""

import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = pathlib.Path(__file__).resolve().parents[2]
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
if not TARGET.is_absolute():
    TARGET = ROOT / TARGET
DEBUG = TARGET / "debug"
OAUTH_KEY = "ui-key"
OAUTH_SECRET = "ui-secret-not-for-production"

MOCK_TDL = """<template>
  <name>ui-test</name>
  <os><name>MockOS_A</name><version>1</version><arch>x86_64</arch>
    <install type='url'><url>http://mirror.invalid/mock/</url></install>
    <rootpw>ui-test-password</rootpw>
  </os>
  <description>browser test</description>
</template>
"""


def built(name):
    """A build product, the newer of target/debug and its deps directory."""
    found = [p for p in (DEBUG / name, DEBUG / "deps" / name) if p.is_file()]
    if not found:
        raise AssertionError(f"{name} is missing from {DEBUG}: run `cargo build --workspace` first")
    return max(found, key=lambda p: p.stat().st_mtime)


class Daemon:
    """imagefactoryd over a temporary directory, on a free loopback port."""

    def __init__(self, oauth=False):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="if-ui-"))
        self.oauth = oauth
        plugins = self.dir / "plugins"
        for sub in ("plugins", "storage", "tmp"):
            (self.dir / sub).mkdir()
        for so in ("libmock_os.so", "libmock_cloud.so"):
            shutil.copy(built(so), plugins / so)
        config = {
            "plugins": str(plugins),
            "image_manager_args": {"storage_path": str(self.dir / "storage")},
            "tmpdir": str(self.dir / "tmp"),
            "max_concurrent_local_sessions": 2,
            "clients": {OAUTH_KEY: OAUTH_SECRET},
        }
        (self.dir / "imagefactory.conf").write_text(json.dumps(config))
        args = [str(built("imagefactoryd")), "--foreground", "--no_ssl", "--address", "127.0.0.1",
                "--port", "0", "--config", str(self.dir / "imagefactory.conf")]
        if not oauth:
            args.append("--no_oauth")
        self.log = open(self.dir / "daemon.log", "w")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.port = None
        deadline = time.time() + 30
        prefix = "imagefactoryd listening on http://127.0.0.1:"
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError("imagefactoryd exited at start: " + (self.dir / "daemon.log").read_text())
            if line.startswith(prefix):
                self.port = int(line[len(prefix):].split("/")[0])
                break
        assert self.port, "imagefactoryd did not print its listening line"
        # Keep draining stdout so the daemon never blocks on it.
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}"

    def api(self, method, path, body=None):
        """One unsigned request (the tests' daemons for API set-up run without OAuth)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + "/imagefactory" + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                text = r.read().decode()
                return r.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def build_base(self, parameters=None):
        status, answer = self.api("POST", "/base_images",
                                  {"base_image": {"template": MOCK_TDL, "parameters": parameters or {}}})
        assert status == 202, answer
        return answer["base_image"]["id"]

    def wait(self, image_id, statuses=("COMPLETE", "FAILED"), collection="base_images", timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, answer = self.api("GET", f"/{collection}/{image_id}")
            if status == 200:
                rec = next(iter(answer.values()))
                if rec["status"] in statuses:
                    return rec
            time.sleep(0.1)
        raise AssertionError(f"{image_id} did not reach {statuses}")

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def daemon():
    d = Daemon()
    yield d
    d.stop()


@pytest.fixture
def oauth_daemon():
    d = Daemon(oauth=True)
    yield d
    d.stop()


@pytest.fixture
def browser():
    for tool in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        assert os.access(tool, os.X_OK), f"{tool} is missing: Debian packages chromium chromium-driver (scripts/setup.sh)"
    profile = tempfile.mkdtemp(prefix="if-ui-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={profile}"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)
