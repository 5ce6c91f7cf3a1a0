"""Who may ask what: the Host header, the Origin of a browser's POST, the token. Pure."""

from __future__ import annotations

import hmac
import ipaddress
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


def host_allowed(host_header: str | None, loopback_only: bool) -> bool:
    """On a loopback bind, only requests addressed to this machine's own names. Pure.

    A web page elsewhere can point a name it controls at 127.0.0.1 (DNS
    rebinding) and then read this server as its own origin; the Host header
    still carries that name, so refusing it stops the attack.
    """
    if not loopback_only:
        return True
    if not host_header:
        return False
    name = host_name(host_header)
    return name == "localhost" or name.endswith(".localhost") or is_loopback(name)


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

