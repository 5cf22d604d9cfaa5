"""Download an image by URL without letting callers reach internal networks (SSRF).

Every TCP connection, for the first request and for each redirect hop, is opened by
`_CheckedBackend`: it resolves the host itself, refuses the host when any of its addresses is
not public, and connects to the address it checked. TLS (SNI, certificate) and the Host header
still use the hostname. A redirect or a DNS answer that changes between check and connect
(rebinding) therefore cannot reach an address nobody checked. Redirects are followed here, one
hop at a time, so each hop's URL passes the scheme and allowed-host checks too.

httpcore is used directly (not httpx's client) because it takes a network backend; httpx only
parses URLs. No proxy settings are read from the environment. Trusted CAs are certifi's, or
SSL_CERT_FILE / SSL_CERT_DIR when set.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from collections.abc import Callable, Iterable
from functools import lru_cache
from http import HTTPStatus

import anyio
import httpcore
import httpx

from festora.config import Settings
from festora.errors import ImageFetchError, ImageTooLarge

MAX_REDIRECTS = 5

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressCheck = Callable[[IPAddress], bool]

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_REQUEST_HEADERS = [
    (b"User-Agent", b"festora-vision/1 (image fetcher)"),
    (b"Accept", b"image/*, */*;q=0.5"),
    (b"Accept-Encoding", b"identity"),
]
_HTTPCORE_ERRORS = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
)

# IANA special-purpose blocks that are not globally reachable, plus multicast and the
# deprecated site-local range. Python's `is_global` misses several (multicast, ::/96, 6to4).
_NON_PUBLIC_V4 = tuple(
    ipaddress.IPv4Network(block)
    for block in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
_NON_PUBLIC_V6 = tuple(
    ipaddress.IPv6Network(block)
    for block in (
        "::/96",
        "100::/64",
        "64:ff9b:1::/48",
        "2001::/23",
        "2001:db8::/32",
        "3fff::/20",
        "5f00::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 (64:ff9b::/96) or 6to4 address reaches."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def is_public_address(address: IPAddress) -> bool:
    """Whether `address` is on the public internet, judging IPv6 forms by the IPv4 they carry."""
    if isinstance(address, ipaddress.IPv6Address):
        carried = embedded_ipv4(address)
        if carried is not None:
            return is_public_address(carried)
        blocked: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = _NON_PUBLIC_V6
    else:
        blocked = _NON_PUBLIC_V4
    return address.is_global and not any(address in block for block in blocked)


def _any_address(address: IPAddress) -> bool:
    return True


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """Resolves each host itself and connects only to addresses that pass `allowed`."""

    def __init__(self, allowed: AddressCheck) -> None:
        self._allowed = allowed
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await _resolve(host, port, timeout)
        if not all(self._allowed(address) for address in addresses):
            raise ImageFetchError(
                f"refusing to fetch from '{host}': only public internet addresses are allowed"
            )
        *fallbacks, last = addresses
        for address in fallbacks:
            try:
                return await self._connect(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                continue
        return await self._connect(last, port, timeout, local_address, socket_options)

    async def _connect(
        self,
        address: IPAddress,
        port: int,
        timeout: float | None,
        local_address: str | None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None,
    ) -> httpcore.AsyncNetworkStream:
        return await self._inner.connect_tcp(
            str(address),
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


async def _resolve(host: str, port: int, timeout: float | None) -> list[IPAddress]:
    try:
        with anyio.fail_after(timeout):
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise ImageFetchError(f"resolving host '{host}' timed out") from None
    except (OSError, UnicodeError) as exc:
        raise ImageFetchError(f"could not resolve host '{host}'") from exc
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if not addresses:
        raise ImageFetchError(f"could not resolve host '{host}'")
    return addresses


@lru_cache(maxsize=4)
def _tls_context(ca_environment: tuple[str | None, str | None]) -> ssl.SSLContext:
    """Built once per CA setting (the SSL_CERT_FILE / SSL_CERT_DIR values httpx reads, passed
    as the cache key): loading a CA bundle costs milliseconds per request otherwise."""
    return httpx.create_ssl_context()


async def fetch_url(
    url: str, settings: Settings, *, address_allowed: AddressCheck | None = None
) -> bytes:
    """The body of a GET on `url` (http/https), capped in size and total time.

    Redirects are followed up to `MAX_REDIRECTS` hops. Destinations must be public addresses
    unless `settings.allow_private_urls`; `address_allowed` replaces that policy (it lets tests
    run the per-connection check against loopback servers).
    Raises ImageFetchError (422) or ImageTooLarge (413).
    """
    if address_allowed is None:
        address_allowed = _any_address if settings.allow_private_urls else is_public_address
    target = _parse(url)
    limit = settings.max_image_fetch_timeout_seconds
    tls = _tls_context((os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")))
    try:
        with anyio.fail_after(limit):
            async with httpcore.AsyncConnectionPool(
                ssl_context=tls, network_backend=_CheckedBackend(address_allowed)
            ) as pool:
                return await _get_following_redirects(pool, target, settings)
    except TimeoutError:
        raise ImageFetchError(
            f"fetching the image from '{target.host}' took longer than {limit:g} s"
        ) from None


async def _get_following_redirects(
    pool: httpcore.AsyncConnectionPool, target: httpx.URL, settings: Settings
) -> bytes:
    total = settings.max_image_fetch_timeout_seconds
    timeouts = {
        "connect": settings.image_connect_timeout_seconds,
        "read": total,
        "write": total,
        "pool": total,
    }
    for _ in range(MAX_REDIRECTS + 1):
        _check_target(target, settings)
        host = target.host
        try:
            async with pool.stream(
                "GET",
                httpcore.URL(
                    scheme=target.raw_scheme,
                    host=target.raw_host,
                    port=target.port,
                    target=target.raw_path,
                ),
                headers=[(b"Host", target.netloc), *_REQUEST_HEADERS],
                extensions={"timeout": timeouts},
            ) as response:
                location = _redirect_location(response)
                if location is None:
                    _check_status(response.status, host)
                    return await _read_capped(response, settings.max_image_size_bytes, host)
        except _HTTPCORE_ERRORS as exc:
            raise _transport_error(exc, host) from exc
        target = _follow(target, location)
    raise ImageFetchError(f"too many redirects (more than {MAX_REDIRECTS})")


def _parse(url: str) -> httpx.URL:
    try:
        return httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ImageFetchError(f"invalid image URL: {exc}") from exc


def _follow(current: httpx.URL, location: str) -> httpx.URL:
    try:
        return current.join(location)
    except httpx.InvalidURL as exc:
        raise ImageFetchError(f"'{current.host}' redirected to an invalid URL") from exc


def _check_target(target: httpx.URL, settings: Settings) -> None:
    if target.scheme not in ("http", "https"):
        raise ImageFetchError("only http and https image URLs are supported")
    if target.userinfo:
        raise ImageFetchError("image URLs must not contain credentials (user@host)")
    if not target.host:
        raise ImageFetchError("the image URL has no host")
    if target.port is not None and not 0 < target.port < 65536:
        raise ImageFetchError(f"the image URL has an invalid port: {target.port}")
    allowed = settings.url_allowed_hosts
    if allowed:
        names = {target.host, target.raw_host.decode("ascii")}
        if not any(name.lower().rstrip(".") in allowed for name in names):
            raise ImageFetchError(f"host '{target.host}' is not in the allowed hosts list")


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    return next((value for key, value in headers if key.lower() == name), None)


def _redirect_location(response: httpcore.Response) -> str | None:
    if response.status not in _REDIRECT_STATUSES:
        return None
    location = _header(response.headers, b"location")
    return location.decode("latin-1") if location else None


def _check_status(status: int, host: str) -> None:
    if 200 <= status < 300:
        return
    try:
        phrase = f" {HTTPStatus(status).phrase}"
    except ValueError:
        phrase = ""
    raise ImageFetchError(f"'{host}' answered HTTP {status}{phrase}")


async def _read_capped(response: httpcore.Response, cap: int, host: str) -> bytes:
    declared = _header(response.headers, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise ImageTooLarge(f"the image is {int(declared)} bytes, over the {cap}-byte limit")
    encoding = _header(response.headers, b"content-encoding")
    if encoding and encoding.strip().lower() != b"identity":
        raise ImageFetchError(
            f"'{host}' sent a compressed ({encoding.decode('latin-1')}) body; "
            "only uncompressed image bytes are accepted"
        )
    chunks: list[bytes] = []
    received = 0
    async for chunk in response.aiter_stream():
        received += len(chunk)
        if received > cap:
            raise ImageTooLarge(f"the image is larger than the {cap}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _transport_error(exc: Exception, host: str) -> ImageFetchError:
    if isinstance(exc, httpcore.ConnectTimeout):
        return ImageFetchError(f"connecting to '{host}' timed out")
    if isinstance(exc, httpcore.ConnectError):
        return ImageFetchError(f"could not connect to '{host}'")
    if isinstance(exc, httpcore.TimeoutException):
        return ImageFetchError(f"'{host}' stopped responding")
    if isinstance(exc, httpcore.RemoteProtocolError):
        return ImageFetchError(f"'{host}' sent an incomplete or invalid HTTP response")
    if isinstance(exc, httpcore.NetworkError):
        return ImageFetchError(f"the connection to '{host}' failed")
    return ImageFetchError(f"could not request the image from '{host}'")
