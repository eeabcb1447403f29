"""`labeler review` as a user starts it, in its own process, for the browser tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADDRESS = re.compile(r"(http://127\.0\.0\.1:(\d+)/)\?token=(\S+)")


class ReviewServer:
    """`labeler review RUN --port 0` in a subprocess; `url`, `token` once it printed its address."""

    def __init__(self, run: Path, *extra: str) -> None:
        self.run, self.extra = run, extra
        self.process: subprocess.Popen[str] | None = None
        self.base = self.token = ""

    def start(self) -> ReviewServer:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "labeler", "review", str(self.run), "--port", "0", *self.extra]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        assert self.process.stdout is not None
        deadline, seen = time.monotonic() + 60, ""
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            seen += line
            match = ADDRESS.search(line)
            if match:
                self.base, self.token = match.group(1), match.group(3)
                time.sleep(0.3)  # uvicorn starts serving on the bound socket right after the address is printed
                return self
        self.stop()
        raise AssertionError(f"labeler review printed no address:\n{seen}")

    @property
    def url(self) -> str:
        return f"{self.base}?token={self.token}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None

    def restart(self) -> ReviewServer:
        self.stop()
        return self.start()
