"""How a setting is declared: :func:`setting` (its variable, parser, check, section,
secrecy), the sections, and the parsers and checks the declarations share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ct_assets.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_HOME = PROJECT_ROOT / ".ct"

#: full: train from scratch; incremental: continue the champion; auto: both compete as
#: candidates (see ct_assets.training.candidates), incremental only when no change was found.
TrainingMode = Literal["full", "incremental", "auto"]

#: The sections settings are grouped in, in the order ``ct-assets config`` lists them.
SECTIONS = (
    "core",
    "api",
    "eventlog",
    "eventstream",
    "curation",
    "training",
    "gate",
    "drift",
    "performance",
    "canary",
    "bias",
    "monitoring",
    "serving",
    "retention",
    "storage",
    "cluster",
)


class SettingsError(ValueError):
    """An environment variable holds a value the settings cannot use."""


#: A check of a setting's value: ``None`` when it is fine, else what is wrong ("must be
#: >= 1"). It also receives the whole settings, for limits that depend on another one.
Check = Callable[[Any, "Settings"], str | None]

DECLARATION_KEY = "ct_setting"


@dataclass(frozen=True)
class Declaration:
    """What :func:`setting` declares about one field of :class:`Settings`."""

    name: str
    env: str
    section: str
    parse: Callable[[str], Any]
    check: Check | None
    secret: bool  # never printed (``ct-assets config`` shows it redacted)
    uri: bool  # a URI that may carry credentials (redacted when shown)
    help: str
    default: Any


def setting(
    default: Any,
    *,
    env: str,
    section: str,
    parse: Callable[[str], Any] = str,
    check: Check | None = None,
    secret: bool = False,
    uri: bool = False,
    help: str = "",
) -> Any:
    """A field of :class:`Settings` with its environment variable, parser, check and section."""
    if section not in SECTIONS:
        raise ValueError(f"unknown settings section {section!r}")
    spec = {
        "env": env,
        "section": section,
        "parse": parse,
        "check": check,
        "secret": secret,
        "uri": uri,
        "help": help,
    }
    return field(default=default, repr=not secret, metadata={DECLARATION_KEY: spec})


# --- checks -----------------------------------------------------------------------------------


def at_least(low: float) -> Check:
    return lambda value, _s: None if value >= low else f"must be >= {low:g}"


def above(low: float) -> Check:
    return lambda value, _s: None if value > low else f"must be > {low:g}"


def between(low: float, high: float, *, closed: str = "()") -> Check:
    """``closed``: the brackets of the interval, ``"()"``, ``"[)"``, ``"(]"`` or ``"[]"``."""

    def check(value: Any, _s: Settings) -> str | None:
        ok_low = value >= low if closed[0] == "[" else value > low
        ok_high = value <= high if closed[1] == "]" else value < high
        return None if ok_low and ok_high else f"must be in {closed[0]}{low:g}, {high:g}{closed[1]}"

    return check


def one_of(*choices: str) -> Check:
    return lambda value, _s: None if value in choices else "must be one of " + "|".join(choices)


def check_cron(value: Any, _s: Settings) -> str | None:
    if len(str(value).split()) == 5:
        return None
    return "must be a cron with 5 fields (minute hour day month weekday)"


def check_iso_date(value: Any, _s: Settings) -> str | None:
    try:
        date.fromisoformat(value)
    except (TypeError, ValueError):
        return "must be a date YYYY-MM-DD"
    return None if len(value) == 10 else "must be a date YYYY-MM-DD"


_CANDIDATE_WINDOWS = ("window", "recent", "incremental")


def check_candidate_windows(value: Any, _s: Settings) -> str | None:
    names = {part for part in value.replace(" ", "").split(",")}
    if value.strip() and names <= set(_CANDIDATE_WINDOWS):
        return None
    return "must be a comma list of " + ", ".join(_CANDIDATE_WINDOWS)


def check_drift_min_window(value: Any, s: Settings) -> str | None:
    if 1 <= value <= s.drift_window:
        return None
    return f"must be between 1 and CT_DRIFT_WINDOW ({s.drift_window})"


def check_nats_url(value: Any, _s: Settings) -> str | None:
    if str(value).startswith(("nats://", "tls://")) and "," not in value and " " not in value:
        return None
    return "must be one nats:// or tls:// URL (the client learns the cluster's other servers)"


def check_stream_name(value: Any, _s: Settings) -> str | None:
    if value and not any(c in value for c in " .*>/\\\t"):
        return None
    return "must be a JetStream stream name (no spaces, '.', '*', '>', '/' or '\\')"


# --- parsers ----------------------------------------------------------------------------------


def parse_non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def parse_fraction(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be between 0 and 1")
    return value


def parse_flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected 1/0, true/false, yes/no or on/off, got {raw!r}")


def parse_mode(raw: str) -> str:
    if raw not in ("full", "incremental", "auto"):
        raise ValueError("must be 'full', 'incremental' or 'auto'")
    return raw


def parse_home(raw: str) -> Path:
    return Path(raw).expanduser().resolve()


def parse_positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a number > 0")
    return value


def parse_non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError("must be a number >= 0")
    return value


def parse_positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be an integer >= 1")
    return value


def parse_queue_size(raw: str) -> int:
    value = int(raw)
    if value < 2:
        raise ValueError("must be an integer >= 2 (a shadowed prediction makes two records)")
    return value


TRAINING_MODES = ("full", "incremental", "auto")


def check_storage_uri(value: Any, _s: Settings) -> str | None:
    from ct_assets.storage import parse_storage_uri  # the one definition of what is valid

    if not value:
        return None
    try:
        parse_storage_uri(value)
    except ValueError as error:
        return str(error)
    return None


def check_dask_scheduler(value: Any, _s: Settings) -> str | None:
    from ct_assets.uris import scheduler_address_problem  # the one definition

    return scheduler_address_problem(str(value))


def check_endpoint_url(value: Any, _s: Settings) -> str | None:
    if not value or value.startswith(("http://", "https://")):
        return None
    return "must be http(s)://host[:port]"
