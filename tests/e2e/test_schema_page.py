"""/schema in a real headless chromium with every host but this machine unreachable: the OpenAPI page
renders the API's operations from assets the server itself ships."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser import chromium, wait_for
from tests.e2e.stack import Stack, running_stack
from tests.topology import Store

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")

OFFLINE = (
    # Names resolve to nothing and any proxied request goes nowhere; loopback alone is reachable.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>;127.0.0.1",
)


@pytest.fixture
def offline_browser() -> Iterator[Any]:
    with chromium(*OFFLINE) as driver:
        yield driver


@pytest.fixture
def stack(store: Store, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(store, tmp_path) as s:
        yield s


def test_schema_page_renders_offline(stack: Stack, offline_browser: Any) -> None:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    browser = offline_browser
    # The network really is closed for anything else.
    with pytest.raises(WebDriverException, match="ERR_"):
        browser.get("https://cdn.jsdelivr.net/npm/swagger-ui-dist/swagger-ui-bundle.js")

    browser.get(stack.url + "/schema")
    paths = wait_for(
        browser,
        lambda: [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")] or None,
        "Swagger UI to render the operations",
    )
    assert "/api/v2/jobs" in paths and "/api/v2/jobs/{job_id}" in " ".join(paths).replace("{id}", "{job_id}"), paths
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(r.startswith(stack.url) for r in resources), resources
