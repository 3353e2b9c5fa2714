"""/docs and /redoc work with no internet: every asset they load comes from the API itself."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

#: A URL naming a host: `https://host…`, `//host…` (a relative one names none).
_WITH_HOST = re.compile(r"(?:\b[a-z][a-z0-9+.-]*:)?//[a-z0-9.-]+", re.IGNORECASE)
#: The places a script or style sheet makes the browser fetch a URL, in minified JS and in CSS.
_LOAD_SITE = re.compile(
    r"""(?P<how>\bsrc\s*[:=]|\bhref\s*[:=]|url\(|@import\s|importScripts\(|import\(|fetch\(|"""
    r"""new\s+(?:Worker|SharedWorker|EventSource|WebSocket)\()\s*\\?["'`]?"""
    r"""(?P<url>(?:[a-z][a-z0-9+.-]*:)?//[^"'`)\s\\]+)""",
    re.IGNORECASE,
)
_ELEMENT = re.compile(r"""createElement\(\s*["'](\w+)["']""")


class _References(HTMLParser):
    """Every URL an HTML page names in an attribute, and the text of its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, url)
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "spec-url", "action", "poster", "data") and value:
                self.urls.append((tag, name, value))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.scripts.append(data)


def _references(html: str) -> _References:
    parser = _References()
    parser.feed(html)
    return parser


def external_loads(code: str) -> list[tuple[str | None, str]]:
    """(the element it is an attribute of, when one is, URL) of every URL with a host that
    `code` (minified JavaScript or CSS) would make the browser fetch or link to."""
    found = []
    for match in _LOAD_SITE.finditer(code):
        elements = _ELEMENT.findall(code, max(0, match.start() - 300), match.start())
        how = match.group("how").lower()
        element = elements[-1].lower() if elements and how[:3] in ("src", "hre") else None
        found.append((element, match.group("url")))
    return found


def _csp_sources(header: str, directive: str) -> list[str]:
    for part in header.split(";"):
        name, *sources = part.split()
        if name == directive:
            return sources
    pytest.fail(f"no {directive} in Content-Security-Policy {header!r}")


def test_the_scanner_finds_an_outside_load_in_minified_code() -> None:
    code = (
        'x.createElement("img",{alt:"logo",src:"https://cdn.example.org/l.svg"}),'
        'x.createElement("a",{href:"https://example.org/"}),b{background:url(//f.example/x.png)}'
        "importScripts('https://w.example/w.js');"
    )
    assert external_loads(code) == [
        ("img", "https://cdn.example.org/l.svg"),
        ("a", "https://example.org/"),
        (None, "//f.example/x.png"),
        (None, "https://w.example/w.js"),
    ]
    assert external_loads('a.src=s+"/x.js";url(data:image/svg+xml;base64,AAA)') == []


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_a_docs_page_loads_nothing_from_outside(empty_client: TestClient, page: str) -> None:
    response = empty_client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert empty_client.head(page).status_code == 200
    html = response.text
    assert not _WITH_HOST.findall(html), "the page names an outside host"
    refs = _references(html)
    loaded = [url for tag, _, url in refs.urls if tag in ("script", "link")]
    assert any(url.endswith(".js") for url in loaded)
    assert all(url.startswith("/") and not url.startswith("//") for _, _, url in refs.urls)

    # The browser may take images only from the API: it never asks for the one a bundle names
    # from its vendor's CDN (ReDoc's logo), which would hang where the internet is closed.
    images = _csp_sources(response.headers["content-security-policy"], "img-src")
    assert set(images) <= {"'self'", "data:", "blob:"}

    for url in loaded:
        asset = empty_client.get(url)
        assert asset.status_code == 200, url
        assert asset.content, f"{url} is empty"
        kind = asset.headers["content-type"]
        if url.endswith(".js"):
            assert "javascript" in kind, (url, kind)
        if url.endswith(".css"):
            assert kind.startswith("text/css"), (url, kind)
        if url.endswith((".js", ".css")):
            for element, outside in external_loads(asset.text):
                # A link the reader may click is not a load; an image is refused by the CSP.
                assert element in ("a", "img"), f"{url} loads {outside}"
        if url.endswith(".css"):
            for ref in re.findall(r"""url\(\s*["']?([^"')\s]+)""", asset.text):
                assert ref.startswith("data:") or not urlsplit(ref).netloc, (url, ref)


def test_swagger_ui_reads_the_apps_own_schema(empty_client: TestClient) -> None:
    html = empty_client.get("/docs").text
    script = "\n".join(_references(html).scripts)
    assert re.search(r"""\burl:\s*'/openapi\.json'""", script), script
    # Swagger UI's default validator badge is an image from validator.swagger.io.
    assert '"validatorUrl": null' in script
    assert "'/docs/oauth2-redirect'" in script
    assert empty_client.get("/docs/oauth2-redirect").status_code == 200
    schema = empty_client.get("/openapi.json")
    assert schema.status_code == 200
    assert "/predict" in schema.json()["paths"]
    # The docs pages and their assets are not operations of the API.
    assert not [path for path in schema.json()["paths"] if "doc" in path or "static" in path]


def test_redoc_reads_the_apps_own_schema(empty_client: TestClient) -> None:
    refs = _references(empty_client.get("/redoc").text)
    assert ("redoc", "spec-url", "/openapi.json") in refs.urls


def test_behind_a_path_prefix_every_url_of_the_page_carries_it(empty_client: TestClient) -> None:
    # The same app (started by `empty_client`), as a proxy that serves it under /fraud calls it.
    client = TestClient(empty_client.app, root_path="/fraud")
    for page in ("/docs", "/redoc"):
        refs = _references(client.get(page).text)
        assert refs.urls
        assert all(url.startswith("/fraud/") for _, _, url in refs.urls), refs.urls
        # The ASGI path carries the prefix (uvicorn --root-path puts it there).
        for tag, _, url in refs.urls:
            if tag in ("script", "link"):
                assert client.get(url).status_code == 200, url
    script = "\n".join(_references(client.get("/docs").text).scripts)
    assert "url: '/fraud/openapi.json'" in script
