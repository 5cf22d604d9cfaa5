"""fetch_url and read_image_bytes against real local HTTP(S) servers.

Every server here listens on loopback, which the default policy refuses; tests that need a
successful connection set `allow_private_urls=True` or pass their own `address_allowed` check,
and the refusal tests use the default policy.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from festora.config import Settings
from festora.errors import ImageFetchError, ImageTooLarge
from festora.fetch import MAX_REDIRECTS, IPAddress, fetch_url, is_public_address
from festora.ingest import read_image_bytes
from festora.schemas import ImageInput
from tests import httpserver as hs
from tests import imagecorpus as corpus

PNG = corpus.png()
REFUSED = "only public internet addresses are allowed"


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "allow_private_urls": True,
        "url_allowed_hosts": (),
        "max_image_size_bytes": 100_000,
        "max_image_fetch_timeout_seconds": 5.0,
        "image_connect_timeout_seconds": 2.0,
    }
    return Settings(**(values | overrides))


PUBLIC_ONLY = settings(allow_private_urls=False)


def fetch(url: str, config: Settings, **options: Any) -> bytes:
    return asyncio.run(fetch_url(url, config, **options))


@pytest.fixture(scope="module")
def server() -> Iterator[hs.LocalHttpServer]:
    with hs.LocalHttpServer() as running:
        yield running


def via_localhost(url: str) -> str:
    return url.replace("127.0.0.1", "localhost")


# --- which addresses count as public ---------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e",
     "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"],
)  # fmt: skip
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.255.0.9", "10.0.0.1", "172.16.5.4", "172.31.255.255", "192.168.0.1",
        "169.254.169.254", "169.254.0.1", "100.64.0.1", "100.127.255.254", "0.0.0.0", "0.1.2.3",
        "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "192.0.0.8", "192.0.2.1",
        "198.18.0.1", "198.51.100.7", "203.0.113.9",
        "::", "::1", "fe80::1", "fc00::1", "fd00:ec2::254", "fec0::1", "ff02::1", "2001:db8::1",
        "100::1", "2001::1",
        "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",  # IPv4-mapped
        "::127.0.0.1", "::8.8.8.8",  # IPv4-compatible (deprecated, never public)
        "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::1",  # NAT64
        "2002:7f00:1::1", "2002:a9fe:a9fe::", "2002:c0a8:101::1",  # 6to4
    ],
)  # fmt: skip
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


# --- refusals under the default policy: nothing is ever connected to -------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/", "http://127.9.9.9:8080/x.png", "http://10.1.2.3/", "http://172.16.0.1/",
        "http://192.168.1.1/", "http://169.254.169.254/latest/meta-data/", "http://100.64.0.1/",
        "http://224.0.0.1/", "http://240.0.0.1/", "http://255.255.255.255/", "http://0.0.0.0/",
        "http://[::]/", "http://[::1]/", "http://[fe80::1]/", "http://[fd12:3456::1]/",
        "http://[ff02::1]/", "http://[::ffff:127.0.0.1]/", "http://[::ffff:a9fe:a9fe]/",
        "http://[::127.0.0.1]/", "http://[64:ff9b::10.0.0.1]/", "http://[2002:c0a8:101::1]/",
        # Other spellings of 127.0.0.1: decimal, hex, octal, short forms.
        "http://2130706433/", "http://0x7f.1/", "http://017700000001/", "http://0x7f000001/",
        "http://127.1/", "https://127.0.0.1/",
        # Names that resolve to loopback: refused from the resolved address, not the name.
        "http://localhost/", "http://LocalHost:8080/image.jpg",
    ],
)  # fmt: skip
def test_non_public_destinations_are_refused(url: str) -> None:
    with pytest.raises(ImageFetchError, match=REFUSED) as caught:
        fetch(url, PUBLIC_ONLY)

    assert caught.value.status_code == 422


def test_a_harmless_looking_name_is_refused_at_connect_time(server: hs.LocalHttpServer) -> None:
    url = via_localhost(server.route("/refused-by-name.png", hs.send_bytes(PNG)))

    with pytest.raises(ImageFetchError, match=REFUSED) as caught:
        fetch(url, PUBLIC_ONLY)

    assert "127.0.0.1" not in caught.value.message  # the resolved address is not disclosed
    assert server.requests_to("/refused-by-name.png") == []
    assert fetch(url, settings()) == PNG  # the same URL works once private addresses are allowed


def test_each_connection_is_checked_on_the_address_it_resolves_to(
    server: hs.LocalHttpServer,
) -> None:
    final = server.route("/checked-final.png", hs.send_bytes(PNG))
    first = via_localhost(server.route("/checked-first", hs.redirect_to(final)))
    checked: list[IPAddress] = []

    def allow_and_record(address: IPAddress) -> bool:
        checked.append(address)
        return True

    assert fetch(first, PUBLIC_ONLY, address_allowed=allow_and_record) == PNG
    # Two origins (localhost, then 127.0.0.1), two connections, each checked after resolving.
    assert checked.count(ipaddress.ip_address("127.0.0.1")) == 2


@pytest.fixture(scope="module")
def other_server() -> Iterator[hs.LocalHttpServer]:
    try:
        second_loopback = hs.LocalHttpServer("127.0.0.2")
    except OSError:
        pytest.skip("127.0.0.2 is not a loopback address here")
    with second_loopback as running:
        yield running


def test_a_redirect_to_a_refused_address_fails_on_that_hop(
    server: hs.LocalHttpServer, other_server: hs.LocalHttpServer
) -> None:
    internal = other_server.route("/internal.png", hs.send_bytes(PNG))
    start = server.route("/to-internal", hs.redirect_to(internal))

    def only_127_0_0_1(address: IPAddress) -> bool:
        return address == ipaddress.ip_address("127.0.0.1")

    with pytest.raises(ImageFetchError, match=REFUSED):
        fetch(start, PUBLIC_ONLY, address_allowed=only_127_0_0_1)

    assert len(server.requests_to("/to-internal")) == 1
    assert other_server.requests_to("/internal.png") == []
    assert fetch(internal, settings()) == PNG


# --- URL checks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/a.png", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("gopher://example.com/", "only http and https"),
        ("not a url", "only http and https"),
        ("//example.com/a.png", "only http and https"),
        ("http:///a.png", "no host"),
        ("http://user:secret@example.com/a.png", "credentials"),
        ("http://example.com@127.0.0.1/a.png", "credentials"),
        ("http://example.com:x@127.0.0.1/", "credentials"),
        ("http://0177.0.0.1/", "invalid image URL"),
        ("http://example.com:99999/", "invalid port"),
    ],
)
def test_unusable_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ImageFetchError, match=message):
        fetch(url, PUBLIC_ONLY)


def test_allow_list_refuses_other_hosts_before_connecting(server: hs.LocalHttpServer) -> None:
    url = server.route("/allow-list.png", hs.send_bytes(PNG))
    only_localhost = settings(url_allowed_hosts=("localhost",))

    with pytest.raises(ImageFetchError, match=r"'127\.0\.0\.1' is not in the allowed hosts"):
        fetch(url, only_localhost)

    assert server.requests_to("/allow-list.png") == []
    assert fetch(via_localhost(url), only_localhost) == PNG


def test_allow_list_is_checked_on_every_redirect_hop(server: hs.LocalHttpServer) -> None:
    outside = server.route("/outside-allow-list.png", hs.send_bytes(PNG))
    start = via_localhost(server.route("/leaves-allow-list", hs.redirect_to(outside)))

    with pytest.raises(ImageFetchError, match="not in the allowed hosts"):
        fetch(start, settings(url_allowed_hosts=("localhost",)))

    assert len(server.requests_to("/leaves-allow-list")) == 1
    assert server.requests_to("/outside-allow-list.png") == []


# --- redirects --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_followed(server: hs.LocalHttpServer, status: int) -> None:
    server.route(f"/moved-{status}.png", hs.send_bytes(PNG))
    url = server.route(f"/redirect-{status}", hs.redirect_to(f"moved-{status}.png", status=status))

    assert fetch(url, settings()) == PNG


def test_up_to_the_redirect_limit_is_followed_and_one_more_is_refused(
    server: hs.LocalHttpServer,
) -> None:
    server.route("/chain-end.png", hs.send_bytes(PNG))
    target = "/chain-end.png"
    for hop in range(MAX_REDIRECTS):
        target = server.route(f"/chain-{hop}", hs.redirect_to(target))
    assert fetch(target, settings()) == PNG

    loop = server.route("/loop", hs.redirect_to("/loop"))
    with pytest.raises(ImageFetchError, match="too many redirects"):
        fetch(loop, settings())
    assert len(server.requests_to("/loop")) == MAX_REDIRECTS + 1


@pytest.mark.parametrize(
    ("name", "location", "message"),
    [
        ("file", "file:///etc/passwd", "only http and https"),
        ("ftp", "ftp://localhost/a.png", "only http and https"),
        ("credentials", "http://user:pw@localhost/a.png", "credentials"),
    ],
)
def test_redirects_to_unusable_urls_are_refused(
    server: hs.LocalHttpServer, name: str, location: str, message: str
) -> None:
    url = server.route(f"/bad-redirect-{name}", hs.redirect_to(location))

    with pytest.raises(ImageFetchError, match=message):
        fetch(url, settings())


# --- bodies, sizes and time -------------------------------------------------------------------


def test_good_fetch_sends_the_hostname_and_asks_for_uncompressed_bytes(
    server: hs.LocalHttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # would fail if it were used
    url = via_localhost(server.route("/good.png", hs.send_bytes(PNG, content_type="image/png")))

    assert fetch(url, settings()) == PNG

    (seen,) = server.requests_to("/good.png")
    assert seen.headers["host"] == f"localhost:{server.port}"
    assert seen.headers["accept-encoding"] == "identity"
    assert seen.method == "GET"


@pytest.mark.parametrize(
    "responder",
    [hs.send_bytes(PNG), hs.send_chunked(PNG, chunk_size=100), hs.send_until_close(PNG)],
    ids=["content-length", "chunked", "until-close"],
)
def test_bodies_with_and_without_content_length_arrive_whole(
    server: hs.LocalHttpServer, responder: hs.Responder, request: pytest.FixtureRequest
) -> None:
    url = server.route(f"/whole-{request.node.callspec.id}", responder)

    assert fetch(url, settings()) == PNG


def test_a_body_of_exactly_the_cap_is_accepted(server: hs.LocalHttpServer) -> None:
    url = server.route("/exact-cap", hs.send_chunked(b"x" * 1000, chunk_size=300))

    assert fetch(url, settings(max_image_size_bytes=1000)) == b"x" * 1000


def test_declared_length_over_the_cap_fails_before_reading(server: hs.LocalHttpServer) -> None:
    url = server.route("/declared-too-big", hs.send_bytes(b"x" * 2000))

    with pytest.raises(ImageTooLarge, match="2000 bytes, over the 1000-byte limit") as caught:
        fetch(url, settings(max_image_size_bytes=1000))

    assert caught.value.status_code == 413


@pytest.mark.parametrize(
    "responder",
    [hs.send_chunked(b"x" * 5000, chunk_size=700), hs.send_until_close(b"x" * 5000)],
    ids=["chunked", "until-close"],
)
def test_undeclared_bodies_are_cut_off_at_the_cap(
    server: hs.LocalHttpServer, responder: hs.Responder, request: pytest.FixtureRequest
) -> None:
    url = server.route(f"/undeclared-{request.node.callspec.id}", responder)

    with pytest.raises(ImageTooLarge, match="larger than the 1000-byte limit"):
        fetch(url, settings(max_image_size_bytes=1000))


def test_an_endless_fast_stream_is_cut_off_as_soon_as_it_passes_the_cap(
    server: hs.LocalHttpServer,
) -> None:
    url = server.route("/firehose", hs.trickle_forever(b"x" * 65_536, interval=0))
    started = time.monotonic()

    with pytest.raises(ImageTooLarge):
        fetch(url, settings(max_image_size_bytes=1_000_000, max_image_fetch_timeout_seconds=30))

    assert time.monotonic() - started < 5


def test_a_content_length_lower_than_what_is_sent_limits_the_body(
    server: hs.LocalHttpServer,
) -> None:
    url = server.route("/lies-low", hs.send_with_declared_length(100, b"y" * 50_000))

    assert fetch(url, settings(max_image_size_bytes=1000)) == b"y" * 100


def test_a_content_length_higher_than_what_is_sent_is_a_fetch_error(
    server: hs.LocalHttpServer,
) -> None:
    url = server.route("/lies-high", hs.send_with_declared_length(500, b"z" * 100))

    with pytest.raises(ImageFetchError, match="incomplete"):
        fetch(url, settings())


@pytest.mark.parametrize(
    ("responder", "path"),
    [(hs.trickle_forever(b"x", interval=0.05), "/trickle"), (hs.never_answer(), "/silent")],
    ids=["streams-forever", "never-answers"],
)
def test_slow_servers_are_cut_off_by_the_total_timeout(
    server: hs.LocalHttpServer, responder: hs.Responder, path: str
) -> None:
    url = server.route(path, responder)
    started = time.monotonic()

    with pytest.raises(ImageFetchError, match=r"took longer than 0\.5 s"):
        fetch(url, settings(max_image_fetch_timeout_seconds=0.5))

    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (404, "HTTP 404 Not Found"),
        (403, "HTTP 403 Forbidden"),
        (500, "HTTP 500"),
        (302, "HTTP 302"),
    ],
)
def test_non_success_statuses_are_fetch_errors(
    server: hs.LocalHttpServer, status: int, message: str
) -> None:
    # The 302 carries no Location header, so there is nothing to follow.
    url = server.route(f"/status-{status}", hs.send_bytes(b"nope", status=status))

    with pytest.raises(ImageFetchError, match=message):
        fetch(url, settings())


def test_compressed_bodies_are_refused(server: hs.LocalHttpServer) -> None:
    url = server.route(
        "/gzipped", hs.send_bytes(b"\x1f\x8b" + b"\0" * 20, headers=[("Content-Encoding", "gzip")])
    )

    with pytest.raises(ImageFetchError, match="compressed"):
        fetch(url, settings())


def test_a_closed_port_is_a_fetch_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(ImageFetchError, match=r"could not connect to '127\.0\.0\.1'"):
        fetch(f"http://127.0.0.1:{port}/a.png", settings())


def test_ipv6_literal_urls_work_when_private_addresses_are_allowed() -> None:
    try:
        ipv6 = hs.LocalHttpServer("::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with ipv6:
        url = ipv6.route("/v6.png", hs.send_bytes(PNG))

        assert fetch(url, settings()) == PNG
        assert ipv6.requests_to("/v6.png")[0].headers["host"] == f"[::1]:{ipv6.port}"


# --- TLS: the connection goes to the checked IP, SNI and certificate use the hostname ---------


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_verifies_the_hostname_while_connecting_to_the_checked_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = hs.tls_files(tmp_path, hostname="localhost")
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_file))
    with hs.LocalHttpServer(tls=tls.server_context) as https:
        url = via_localhost(https.route("/secure.png", hs.send_bytes(PNG)))

        assert url.startswith("https://localhost:")
        assert fetch(url, settings()) == PNG
        assert tls.server_names == ["localhost"]
        # The certificate names localhost only: by IP address the same server is not trusted.
        with pytest.raises(ImageFetchError, match="could not connect"):
            fetch(https.url("/secure.png"), settings())
        monkeypatch.delenv("SSL_CERT_FILE")
        with pytest.raises(ImageFetchError, match="could not connect"):  # CA no longer trusted
            fetch(url, settings())


# --- read_image_bytes: the entry point the service calls -------------------------------------


def test_read_image_bytes_fetches_urls(server: hs.LocalHttpServer) -> None:
    url = server.route("/ingest.png", hs.send_bytes(PNG))

    assert asyncio.run(read_image_bytes(ImageInput(url=url), settings())) == PNG
    with pytest.raises(ImageFetchError, match=REFUSED):
        asyncio.run(read_image_bytes(ImageInput(url=url), PUBLIC_ONLY))


def test_read_image_bytes_decodes_base64_under_the_same_cap() -> None:
    encoded = base64.b64encode(PNG).decode()

    assert asyncio.run(read_image_bytes(ImageInput(data=encoded), settings())) == PNG
    with pytest.raises(ImageTooLarge):
        small_cap = settings(max_image_size_bytes=len(PNG) - 1)
        asyncio.run(read_image_bytes(ImageInput(data=encoded), small_cap))
