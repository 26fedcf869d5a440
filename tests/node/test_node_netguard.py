from __future__ import annotations

import pytest

from libs.common.netguard import (
    ForbiddenAddressError,
    check_addresses,
    check_url_allowed,
    check_url_allowed_async,
)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/", "http://localhost:8080/", "http://10.1.2.3/", "http://192.168.0.1/",
        "http://169.254.169.254/latest/meta-data", "http://[::1]/", "http://[fe80::1]/",
        "http://0.0.0.0/", "http://224.0.0.1/", "http://[::ffff:127.0.0.1]/",
        "http://100.64.0.1/", "ftp://example.com/", "file:///etc/passwd",
    ],
)  # fmt: skip
def test_private_and_non_http_urls_are_refused(url: str) -> None:
    with pytest.raises(ForbiddenAddressError):
        check_url_allowed(url, [])


def test_public_addresses_pass() -> None:
    check_url_allowed("https://93.184.216.34/path", [])
    check_url_allowed("http://[2606:4700::1111]/", [])


def test_allow_list_takes_hosts_wildcards_and_networks() -> None:
    check_url_allowed("http://localhost:9000/", ["localhost"])
    check_url_allowed("http://10.1.2.3/", ["10.0.0.0/8"])
    check_url_allowed("http://[::1]/", ["::1"])
    check_addresses("svc.internal.example", ["10.0.0.7"], ["*.internal.example"])
    with pytest.raises(ForbiddenAddressError):
        check_url_allowed("http://10.1.2.3/", ["192.168.0.0/16", "other.host"])


def test_every_resolved_address_must_pass() -> None:
    with pytest.raises(ForbiddenAddressError, match=r"evil\.example \(10\.0\.0\.1\)"):
        check_addresses("evil.example", ["93.184.216.34", "10.0.0.1"], [])


async def test_async_check_resolves_names() -> None:
    with pytest.raises(ForbiddenAddressError):
        await check_url_allowed_async("http://localhost/", [])
    await check_url_allowed_async("http://localhost/", ["127.0.0.0/8", "::1/128"])
