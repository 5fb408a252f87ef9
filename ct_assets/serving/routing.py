"""Which model answers a request, and under which arm: pure functions, no I/O.

The deployment mode is stored on the registered model by ``ct-assets deploy`` as the tags
``ct.deployment.mode`` (off | shadow | canary | ab) and ``ct.deployment.fraction`` (0..1):

* ``off``: the champion answers every request (arm ``champion``).
* ``shadow``: the champion answers every request (arm ``champion``); the challenger scores
  the same request too, and that score is logged under the arm ``shadow``. The response
  never depends on the challenger.
* ``canary``: ``fraction`` of the traffic is answered by the challenger (arm ``canary``),
  the rest by the champion (arm ``champion``).
* ``ab``: an experiment: ``fraction`` of the traffic is answered by the challenger (arm
  ``b``), the rest by the champion (arm ``a``).

Canary and A/B assignment is sticky: a request's key (its ``user_id``, else its
``entity_id``), salted with the challenger's version, is hashed with BLAKE2b to a point in
[0, 1), and the request goes to the challenger when that point is below ``fraction``.
Within one canary (one challenger version) the same key always gets the same arm for a
given fraction (in every worker and after restarts), and raising the fraction only moves
keys from the champion to the challenger, never back. The salt makes each challenger draw
its own users: the next canary does not land on the same people again (nor does its
comparison inherit whatever sets those users apart). A request without a key gets a
fresh random draw, so its arm is not sticky.

Without a challenger (none registered, the same version as the champion, or not loaded)
every request is answered by the champion under the arm ``champion``, whatever the mode.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

Mode = Literal["off", "shadow", "canary", "ab"]
MODES: Final[tuple[Mode, ...]] = ("off", "shadow", "canary", "ab")

TAG_MODE: Final = "ct.deployment.mode"
TAG_FRACTION: Final = "ct.deployment.fraction"
#: The fraction used when the tag is missing or unreadable (as ``ct-assets deploy`` defaults).
DEFAULT_FRACTION: Final[Mapping[Mode, float]] = {
    "off": 0.0,
    "shadow": 1.0,
    "canary": 0.1,
    "ab": 0.5,
}

ARM_CHAMPION: Final = "champion"
ARM_SHADOW: Final = "shadow"
ARM_CANARY: Final = "canary"
ARM_A: Final = "a"
ARM_B: Final = "b"
#: The arms answered by the challenger.
CHALLENGER_ARMS: Final = frozenset({ARM_CANARY, ARM_B})

_SCALE: Final = float(2**64)


@dataclass(frozen=True)
class Route:
    """The arm that answers a request, and whether the challenger also scores it (shadow)."""

    arm_served: str
    shadow: bool = False

    @property
    def challenger_serves(self) -> bool:
        return self.arm_served in CHALLENGER_ARMS


CHAMPION_ONLY: Final = Route(ARM_CHAMPION)
_SHADOW: Final = Route(ARM_CHAMPION, shadow=True)


def bucket(key: str, salt: str = "") -> float:
    """A stable point in [0, 1) for ``key`` under ``salt``: the first 8 bytes of the BLAKE2b
    digest of the key (keyed by the salt, when there is one)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, salt=_salt_bytes(salt)).digest()
    return int.from_bytes(digest, "big") / _SCALE


def _salt_bytes(salt: str) -> bytes:
    """BLAKE2b's salt parameter takes at most 16 bytes: longer salts are hashed to 16."""
    raw = salt.encode("utf-8")
    if len(raw) <= hashlib.blake2b.SALT_SIZE:
        return raw
    return hashlib.blake2b(raw, digest_size=hashlib.blake2b.SALT_SIZE).digest()


def routing_key(user_id: str | None, entity_id: str | None) -> str | None:
    """What a request is assigned by: its user, else its entity, else nothing (random)."""
    if user_id is not None:
        return f"user:{user_id}"
    if entity_id is not None:
        return f"entity:{entity_id}"
    return None


def route(
    mode: str,
    fraction: float,
    key: str | None,
    *,
    has_challenger: bool = True,
    salt: str = "",
    draw: Callable[[], float] = random.random,
) -> Route:
    """The route of one request; ``salt`` is the challenger's version (each canary draws
    its own users); ``draw`` gives the point of a request without a key."""
    if not has_challenger or mode == "off":
        return CHAMPION_ONLY
    if mode == "shadow":
        return _SHADOW
    if mode not in ("canary", "ab"):
        raise ValueError(f"unknown deployment mode {mode!r}: one of {', '.join(MODES)}")
    point = bucket(key, salt) if key is not None else draw()
    to_challenger = point < fraction
    if mode == "canary":
        return Route(ARM_CANARY) if to_challenger else CHAMPION_ONLY
    return Route(ARM_B if to_challenger else ARM_A)


def parse_deployment(tags: Mapping[str, str] | None) -> tuple[Mode, float]:
    """The mode and fraction of the registered model's tags.

    A missing or unknown mode is ``off`` (the safe choice: only the champion answers); a
    missing or unreadable fraction is the mode's default; a fraction out of range is
    clamped to [0, 1]. ``shadow`` always scores every request (fraction 1).
    """
    tags = tags or {}
    raw_mode = tags.get(TAG_MODE, "off").strip().lower()
    mode: Mode = next((m for m in MODES if m == raw_mode), "off")
    if mode in ("off", "shadow"):
        return mode, DEFAULT_FRACTION[mode]
    try:
        fraction = float(tags.get(TAG_FRACTION, ""))
    except ValueError:
        return mode, DEFAULT_FRACTION[mode]
    if fraction != fraction:  # NaN
        return mode, DEFAULT_FRACTION[mode]
    return mode, min(1.0, max(0.0, fraction))
