"""Outbound HTTP for webhooks and the ``http.request`` built-in: only to permitted addresses.

The destination policy is applied to the addresses a host name *resolves to*, inside the
resolver that aiohttp connects with: aiohttp opens the connection to exactly the addresses the
resolver returned and does not look the name up again, so a name that answers a public address
to a check and a private one to the connection (DNS rebinding) cannot get through. IP-literal
URLs skip aiohttp's resolver, so they are checked before the request. Redirects are never
followed, proxies from the environment are ignored, and every request has a deadline.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from taskd.errors import DeliveryFailed, DestinationRefused
from taskd.notify import signing

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
USER_AGENT = "taskd-webhook/1"
MAX_BODY_BYTES = 64 * 1024
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Cloud metadata endpoints outside the link-local range (AWS's IPv6 one is in fc00::/7 anyway).
_METADATA = frozenset(
    {ipaddress.ip_address("100.100.100.200"), ipaddress.ip_address("fd00:ec2::254")}
)


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo client)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def is_public(ip: IPAddress) -> bool:
    """False for private, loopback, link-local (cloud metadata), shared, reserved, multicast,
    unspecified and documentation addresses — and for IPv6 addresses that embed one."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None and not is_public(inner):
            return False
    if ip in _METADATA:
        return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


class DestinationPolicy:
    """Public addresses are permitted; others only inside an allowed network."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.allow: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(a, strict=False) for a in allow
        )

    def permits(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
        except ValueError:
            return False
        if any(ip.version == net.version and ip in net for net in self.allow):
            return True
        return is_public(ip)


class PolicyResolver(AbstractResolver):
    """Resolves names, then keeps only the addresses the (current) policy permits."""

    def __init__(
        self, policy: Callable[[], DestinationPolicy], inner: AbstractResolver | None = None
    ) -> None:
        self.policy = policy
        self.inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        policy = self.policy()
        permitted = [r for r in found if policy.permits(r["host"])]
        if not permitted:
            addresses = ", ".join(sorted({r["host"] for r in found}))
            raise DestinationRefused(
                f"{host} resolves to {addresses}: not a permitted destination "
                "(private, loopback, link-local or metadata; see notify.webhook.allow)"
            )
        return permitted

    async def close(self) -> None:
        await self.inner.close()


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes  # at most MAX_BODY_BYTES


def check_url(url: str, policy: DestinationPolicy) -> URL:
    """The parsed URL if its scheme and (literal) host may be used; else DestinationRefused."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as e:
        raise DestinationRefused(f"not a URL: {e}") from e
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise DestinationRefused("only http:// and https:// URLs with a host are allowed")
    host = parsed.host.strip("[]")
    literal = ":" in host or host.replace(".", "").isdigit()  # what aiohttp does not resolve
    if literal and not policy.permits(host):
        raise DestinationRefused(f"{host} is not a permitted destination")
    return parsed


class HttpClient:
    """One aiohttp session whose connections go only where ``policy`` permits (assign a new
    policy to ``policy`` to change it: the next connection uses it)."""

    def __init__(self, policy: DestinationPolicy) -> None:
        self.policy = policy
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=PolicyResolver(lambda: self.policy), use_dns_cache=False
            )
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, headers={"User-Agent": USER_AGENT}
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        time_limit: float = 10.0,
    ) -> HttpResponse:
        """One request, no redirects; DestinationRefused or DeliveryFailed when it fails."""
        check_url(url, self.policy)
        try:
            async with self._client().request(
                method,
                url,
                headers=dict(headers or {}),
                data=body,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=time_limit),
            ) as resp:
                data = await resp.content.read(MAX_BODY_BYTES)
                return HttpResponse(resp.status, dict(resp.headers), data)
        except DestinationRefused:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise DeliveryFailed(f"{method} {URL(url).with_query(None)}: {_describe(e)}") from e
        except ValueError as e:  # e.g. a header value with a line break
            raise DestinationRefused(f"invalid request: {e}") from e

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _describe(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


class WebhookChannel:
    """POST a signed JSON body (Standard Webhooks headers); 2xx is delivered."""

    def __init__(self, http: HttpClient) -> None:
        self.http = http

    async def post(
        self, url: str, msg_id: str, body: bytes, *, key: bytes, time_limit: float
    ) -> int:
        stamp = int(time.time())
        headers = {"Content-Type": "application/json", **signing.headers(key, msg_id, stamp, body)}
        resp = await self.http.request(
            "POST", url, headers=headers, body=body, time_limit=time_limit
        )
        if not 200 <= resp.status < 300:
            raise DeliveryFailed(f"the receiver answered HTTP {resp.status}")
        return resp.status
