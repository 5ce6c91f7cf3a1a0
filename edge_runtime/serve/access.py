"""Who may ask what, and how often: the Host header, the Origin of a browser's POST, the token, rates.

All pure but `Limiter`, which keeps its counts in memory (bounded).
"""

from __future__ import annotations

import hmac
import ipaddress
import threading
import time
from collections import OrderedDict
from urllib.parse import urlsplit

from .http import HttpError

WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine. Pure."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def host_name(host_header: str) -> str:
    """'example.local:8080' -> 'example.local', '[::1]:8080' -> '::1'. Pure."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def machine_names(hostname: str, extra: list[str] | tuple[str, ...] = ()) -> frozenset[str]:
    """The names this machine answers to on a LAN bind: its host name, with and without its
    domain, as name.local (mDNS), and the --allow_host names. Pure."""
    names = {"localhost", *(n.strip().lower().rstrip(".") for n in extra if n.strip())}
    if hostname:
        full = hostname.lower().rstrip(".")
        short = full.split(".")[0]
        names |= {full, short, f"{short}.local"}
    return frozenset(names)


def host_allowed(host_header: str | None, loopback_only: bool, names: frozenset[str] = frozenset()) -> bool:
    """Whether a request's Host is this machine, as far as it can tell. Pure.

    A web page elsewhere can point a name it controls at this server's
    address (DNS rebinding) and then read it as its own origin: the camera's
    frames, the predictions. The Host header still carries that name, so
    refusing names that aren't this machine's stops the attack. On a
    loopback bind: localhost and loopback addresses only. On a LAN bind:
    any IP address (a page can't be served from an address that is not its
    server's), localhost, *.local (mDNS: only the LAN answers it), this
    machine's own names and `names` (--allow_host).
    """
    if not host_header:
        return False
    name = host_name(host_header).rstrip(".")
    if name == "localhost" or name.endswith(".localhost") or is_loopback(name):
        return True
    if loopback_only:
        return False
    return is_ip_literal(name) or name.endswith(".local") or name in names


def same_origin(origin: str | None, host_header: str | None) -> bool:
    """A browser's POST from another site carries that site's Origin: refuse it (CSRF). Pure.

    No Origin header at all is a program (curl, a script), not a browser page.
    """
    if origin is None:
        return True
    parts = urlsplit(origin)
    return bool(host_header) and parts.scheme in ("http", "https") and parts.netloc.lower() == host_header.lower()


def check_token(authorization: str | None, token: str | None) -> None:
    """HttpError 401 without the bearer token, 403 with a wrong one; nothing when no token is set. Pure.

    hmac.compare_digest takes as long for a nearly right token as for a wrong
    one, so the time of an answer tells nothing about the token.
    """
    if token is None:
        return
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HttpError(401, "this needs the token serve printed at start: send the header "
                             "'Authorization: Bearer TOKEN' (the page asks for it)",
                        (("WWW-Authenticate", 'Bearer realm="fashion-edge"'),))
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise HttpError(403, "wrong token; serve prints the right one at start")


class Limiter:
    """Token buckets per key (a client's address, or one key for everyone): `allow(key)` takes one.

    Each bucket holds `burst` and refills at `rate` a second. Keys are kept
    for the `keys` most recent clients only, so the memory is bounded however
    many addresses a LAN (or IPv6) can send from.
    """

    def __init__(self, rate: float, burst: float, keys: int = 1024, clock=time.monotonic):
        self.rate, self.burst, self.keys, self.clock = rate, burst, keys, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _level(self, key: str, now: float) -> float:
        level, then = self._buckets.get(key, (self.burst, now))
        return min(self.burst, level + (now - then) * self.rate)

    def allow(self, key: str) -> bool:
        """Take one token from `key`'s bucket: False when it is empty."""
        with self._lock:
            now = self.clock()
            level = self._level(key, now)
            allowed = level >= 1.0
            self._buckets[key] = (level - 1.0 if allowed else level, now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self.keys:
                self._buckets.popitem(last=False)
            return allowed

    def empty(self, key: str) -> bool:
        """Whether `key` has no token left (without taking one)."""
        with self._lock:
            return key in self._buckets and self._level(key, self.clock()) < 1.0

    def wait_s(self, key: str) -> int:
        """Seconds until `key` has a token again (for Retry-After)."""
        with self._lock:
            return max(1, int((1.0 - self._level(key, self.clock())) / self.rate + 0.999))


class Refusals:
    """Counts refusals per client and kind, and says when one is worth a log line: the first,
    then at most one a minute per client and kind, with the count since."""

    def __init__(self, every_s: float = 60.0, clock=time.monotonic, keys: int = 1024):
        self.every_s, self.clock, self.keys = every_s, clock, keys
        self._seen: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()

    def note(self, client: str, kind: str) -> int:
        """Record one; returns the number to report now (refusals since the last line), or 0."""
        with self._lock:
            now = self.clock()
            last, count = self._seen.get((client, kind), (None, 0))
            count += 1
            if last is None or now - last >= self.every_s:
                self._seen[(client, kind)] = (now, 0)
                report = count
            else:
                self._seen[(client, kind)] = (last, count)
                report = 0
            self._seen.move_to_end((client, kind))
            while len(self._seen) > self.keys:
                self._seen.popitem(last=False)
            return report
