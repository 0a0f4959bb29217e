"""The workload's release repository, published and served by a git daemon of the test's own.

Each test process that deploys a release gets its own daemon on the lab bridge, on a free port:
the shared ``tools/serve-releases.sh`` daemon may be started and stopped by another test process
meanwhile, and another lab user's daemon never clashes with it.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab import config

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def served_release_repository(prefix: str) -> Iterator[str]:
    """``workload/publish-repo.sh`` into a temp dir named ``prefix``..., served on the bridge;
    yields its git:// URL and stops the daemon and removes the dir afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    dest = tmp / "hft_system.git"
    try:
        pub = subprocess.run([str(ROOT / "workload" / "publish-repo.sh"), str(dest)], capture_output=True,
                             text=True, timeout=300)
        assert pub.returncode == 0, f"workload/publish-repo.sh failed: {pub.stderr}{pub.stdout}"
        with socket.socket() as s:
            s.bind((config.GATEWAY, 0))
            port = s.getsockname()[1]
        daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", f"--base-path={tmp}", "--export-all",
                                   f"--listen={config.GATEWAY}", f"--port={port}", str(dest)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"git://{config.GATEWAY}:{port}/hft_system.git"
            for _ in range(50):
                if subprocess.run(["git", "ls-remote", url], capture_output=True, timeout=10).returncode == 0:
                    break
                time.sleep(0.2)
            else:
                raise AssertionError(f"git daemon on {url} does not answer")
            yield url
        finally:
            daemon.terminate()
            try:
                daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.kill()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
