"""Real headless Chromium for page tests: Debian's ``chromium`` driven by playwright.

``playwright install`` cannot download its own browsers here, so the system browser is
launched through ``executable_path``; WebGL runs on SwiftShader (no GPU). A page's console
errors are collected so a test can assert there were none.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

CHROMIUM_ARGS = (
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
)


def chromium_path() -> str:
    """The system Chromium; skip with the reason where it is absent, fail in CI (it must be)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    reason = "no system chromium on PATH (make setup installs Debian's chromium)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass
class ConsoleLog:
    """Console messages and uncaught page errors seen by one page."""

    errors: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def attach(self, page: object) -> None:
        page.on("console", self._on_console)  # type: ignore[attr-defined]
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))  # type: ignore[attr-defined]

    def _on_console(self, message: object) -> None:
        text = f"{message.type}: {message.text}"  # type: ignore[attr-defined]
        self.messages.append(text)
        if message.type == "error":  # type: ignore[attr-defined]
            self.errors.append(text)


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    """One headless Chromium for the session (pages and contexts are per test)."""
    executable = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        yield browser
        browser.close()
