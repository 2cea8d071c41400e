"""The dashboard's security headers, on the page and its assets, and the page working under them in chromium.

Issue 12, finding 10: the page carried no Content-Security-Policy, no nosniff, could be framed,
and named its charset twice.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.browser import browser, stack, text, wait_for
from tests.e2e.stack import Stack

__all__ = ["browser", "stack"]  # fixtures, used by name

PAGES = ["/", "/static/dashboard.js", "/static/dashboard.css", "/static/index.html"]


def _directives(policy: str) -> dict[str, str]:
    return {d.split()[0]: " ".join(d.split()[1:]) for d in policy.split(";") if d.strip()}


def test_page_and_assets_carry_security_headers(stack: Stack) -> None:
    for path in PAGES:
        resp = httpx.get(stack.url + path)
        assert resp.status_code == 200, path
        csp = _directives(resp.headers["content-security-policy"])
        assert csp["default-src"] == "'none'"
        assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'"  # nothing inline, nothing external
        assert csp["connect-src"] == "'self'" and csp["frame-ancestors"] == "'none'"
        assert not any("http" in v or "unsafe" in v or "*" in v for v in csp.values()), csp
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["x-frame-options"] == "DENY"
        assert resp.headers["referrer-policy"] == "no-referrer"
        assert resp.headers.get_list("content-type") == [resp.headers["content-type"]]
        assert resp.headers["content-type"].count("charset") <= 1, resp.headers["content-type"]
    assert httpx.get(stack.url + "/").headers["content-type"] == "text/html; charset=utf-8"
    # Finding 9: a NUL in a static path was a 500 ("embedded null byte"); no file has such a name.
    for path in ("/static/index.html%00.js", "/static/%00", "/static/dashboard.css%00"):
        resp = httpx.get(stack.url + path)
        assert resp.status_code == 404, (path, resp.text)
        assert resp.json()["code"] == "404"


def test_page_works_under_its_policy_and_refuses_framing(stack: Stack, browser: Any) -> None:
    browser.get(stack.url + "/")
    wait_for(browser, lambda: text(browser, "conn") == "live", "the watch stream to open under the CSP")
    wait_for(browser, lambda: text(browser, "count-total") == "0", "the counts from /stats")
    # The console is captured (so a violation would be seen), and the policy refuses inline script.
    browser.execute_script("console.error('jobreg-probe')")
    browser.execute_script(
        "const s = document.createElement('script'); s.textContent = 'window.inlineRan = 1';"
        "document.head.appendChild(s)"
    )
    assert browser.execute_script("return window.inlineRan") is None
    logs = [entry["message"] for entry in browser.get_log("browser")]
    assert any("jobreg-probe" in m for m in logs)
    violations = [m for m in logs if "Content Security Policy" in m or "Refused to" in m]
    assert len(violations) == 1 and "inline script" in violations[0], violations  # only the probe's
    # A page framing the dashboard gets nothing (frame-ancestors 'none'); /healthz, JSON without a
    # policy of its own, stands in for any framing page.
    browser.get(stack.url + "/healthz")
    browser.execute_script(
        "const f = document.createElement('iframe'); f.id = 'f'; f.src = '/'; document.body.appendChild(f)"
    )
    wait_for(
        browser,
        lambda: any("frame-ancestors" in e["message"] for e in browser.get_log("browser")),
        "chromium to refuse framing the dashboard",
    )
    assert browser.execute_script("return document.getElementById('f').contentDocument") is None
