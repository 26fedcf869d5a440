"""Outbound address policy shared by every component that fetches user-supplied URLs
(the node service's ``http_request`` node and the tool service's http tool).

A URL is refused when its host resolves to a private, loopback, link-local, multicast,
reserved or unspecified address, unless the host name or the address is on the allow-list
(``HEDDLE_HTTP_ALLOW_HOSTS``: host names, ``*.suffix`` wildcards, IP addresses and CIDRs).
Every resolved address is checked, not only the first, because the HTTP client may connect
to any of them.

The check resolves the name itself, so a DNS answer that changes between the check and the
connection (rebinding) is not covered; callers that need that must pin the address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "ForbiddenAddressError",
    "check_addresses",
    "check_url_allowed",
    "check_url_allowed_async",
    "url_host",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_ALLOWED_SCHEMES = ("http", "https")


class ForbiddenAddressError(ValueError):
    """The URL's scheme or one of its host's addresses is not allowed by the policy."""


def url_host(url: str) -> tuple[str, int]:
    """The (host, port) a URL points at; raise ForbiddenAddressError for a non-HTTP URL."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in _ALLOWED_SCHEMES:
        raise ForbiddenAddressError(f"only http and https URLs are allowed, got {url!r}")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise ForbiddenAddressError(f"URL has no host: {url!r}")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError as exc:
        raise ForbiddenAddressError(f"invalid port in URL {url!r}") from exc
    return host, port


def _is_forbidden(address: IPAddress) -> bool:
    # An IPv4-mapped IPv6 address (::ffff:127.0.0.1) reaches the IPv4 host: judge that one.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        not address.is_global  # private ranges and shared space such as 100.64.0.0/10
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _host_listed(host: str, allow: Iterable[str]) -> bool:
    for entry in allow:
        entry = entry.strip().rstrip(".").lower()
        if not entry:
            continue
        if entry == host or (entry.startswith("*.") and host.endswith(entry[1:])):
            return True
    return False


def _networks(allow: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for entry in allow:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            continue  # a host name, matched by _host_listed
    return networks


def check_addresses(host: str, addresses: Iterable[str], allow: Iterable[str]) -> None:
    """Raise ForbiddenAddressError unless every address of ``host`` may be contacted."""
    allow = list(allow)
    if _host_listed(host, allow):
        return
    networks = _networks(allow)
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
        if not _is_forbidden(address):
            continue
        if any(address.version == net.version and address in net for net in networks):
            continue
        shown = host if host == str(address) else f"{host} ({address})"
        raise ForbiddenAddressError(
            f"refusing to connect to {shown}: private, loopback, link-local or reserved "
            "addresses are blocked; add the host or network to HEDDLE_HTTP_ALLOW_HOSTS "
            "to allow it"
        )


def _literal_address(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def _pending_resolution(url: str, allow: list[str]) -> tuple[str, int] | None:
    """Decide what needs no DNS; return (host, port) when the name must still be resolved."""
    host, port = url_host(url)
    literal = _literal_address(host)
    if literal is not None:
        check_addresses(host, [literal], allow)
        return None
    if _host_listed(host, allow):
        return None
    return host, port


def _addresses(infos: Iterable[tuple[Any, ...]]) -> list[str]:
    return sorted({str(info[4][0]) for info in infos})


def check_url_allowed(url: str, allow: list[str]) -> None:
    """Raise ForbiddenAddressError if ``url`` may not be fetched under the allow-list.

    Resolves the host with the blocking resolver; a name that does not resolve raises
    ``socket.gaierror`` (an OSError), which callers treat as a connection failure.
    """
    pending = _pending_resolution(url, allow)
    if pending is not None:
        host, port = pending
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        check_addresses(host, _addresses(infos), allow)


async def check_url_allowed_async(url: str, allow: list[str]) -> None:
    """Like :func:`check_url_allowed`, resolving through the running loop's executor."""
    pending = _pending_resolution(url, allow)
    if pending is not None:
        host, port = pending
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        check_addresses(host, _addresses(infos), allow)
