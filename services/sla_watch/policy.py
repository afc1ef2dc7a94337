"""SLA policies: which clocks a ticket gets, chosen by conditions, from a validated file.

The file (YAML, or TOML when it ends in ``.toml``) names working-hour calendars and an
ordered list of policies; the first policy whose conditions all match a ticket applies.
A file that does not validate is refused at start-up with the reason (``PolicyError``).
Without a file the built-in default is the contract: a 30 s first response for every
ticket and a 24 h resolution for complaints.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from datetime import date, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from services.sla_watch.domain import Calendar, ClockPolicy
from shared.config_file import read_yaml, validation_reasons
from shared.events import Category, Channel, ClockName, Priority, Tier


class PolicyError(ValueError):
    """The policy file is unreadable or invalid; the message says why."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(v: object) -> float:
    """``30``, ``"30s"``, ``"15m"``, ``"24h"``, ``"2d"`` -> seconds."""
    if isinstance(v, bool):
        raise ValueError("a duration is a number of seconds or e.g. '30s', '24h'")
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str) and (m := _DURATION.match(v)):
        return float(m.group(1)) * _UNIT[m.group(2)]
    raise ValueError(f"not a duration: {v!r} (use seconds or e.g. '30s', '15m', '24h')")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalendarSpec(_Strict):
    timezone: str = "Asia/Shanghai"
    hours: tuple[time, time] = Field(description="Opening and closing time, e.g. [09:00, 21:00].")
    weekdays: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7])
    holidays: list[date] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    @field_validator("weekdays")
    @classmethod
    def _days(cls, v: list[int]) -> list[int]:
        if not v or any(d < 1 or d > 7 for d in v):
            raise ValueError("weekdays are ISO numbers 1 (Monday) .. 7 (Sunday), at least one")
        return v

    @model_validator(mode="after")
    def _hours(self) -> CalendarSpec:
        if self.hours[0] >= self.hours[1]:
            raise ValueError("hours: opening time must be before closing time")
        return self

    def build(self) -> Calendar:
        return Calendar(
            self.timezone,
            self.hours[0],
            self.hours[1],
            frozenset(self.weekdays),
            frozenset(self.holidays),
        )


class ClockSpec(_Strict):
    limit: float = Field(description="Seconds, or a duration such as '30s', '24h'.")
    warning_at: float | None = Field(0.8, gt=0, lt=1, description="Share of the limit; null: none.")
    calendar: str | None = None
    pause_when_waiting_on_customer: bool = False

    @field_validator("limit", mode="before")
    @classmethod
    def _limit(cls, v: object) -> float:
        return parse_duration(v)

    @field_validator("limit")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("limit must be positive")
        return v


class MatchSpec(_Strict):
    category: list[Category] | None = None
    priority: list[Priority] | None = None
    tier: list[Tier] | None = None
    channel: list[Channel] | None = None
    shop: list[str] | None = None


class PolicySpec(_Strict):
    name: str = Field(min_length=1, max_length=80)
    match: MatchSpec = Field(default_factory=MatchSpec)
    clocks: dict[ClockName, ClockSpec]


class PolicyFile(_Strict):
    calendars: dict[str, CalendarSpec] = Field(default_factory=dict)
    policies: list[PolicySpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _refs(self) -> PolicyFile:
        names = [p.name for p in self.policies]
        if len(set(names)) != len(names):
            raise ValueError("policy names must be unique")
        for p in self.policies:
            for clock, spec in p.clocks.items():
                if spec.calendar is not None and spec.calendar not in self.calendars:
                    raise ValueError(
                        f"policy {p.name!r} clock {clock.value}: unknown calendar {spec.calendar!r}"
                    )
        if self.policies[-1].match != MatchSpec():
            raise ValueError(
                "the last policy must have no conditions (the default for every other ticket)"
            )
        return self


@dataclass(frozen=True, slots=True)
class Labels:
    """What a policy can be chosen by; None while unknown (before routing)."""

    category: Category | None = None
    priority: Priority | None = None
    tier: Tier | None = None
    channel: Channel | None = None
    shop: str | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    match: MatchSpec
    clocks: dict[ClockName, ClockPolicy]

    def matches(self, labels: Labels) -> bool:
        m = self.match
        pairs: list[tuple[list[Any] | None, object]] = [
            (m.category, labels.category),
            (m.priority, labels.priority),
            (m.tier, labels.tier),
            (m.channel, labels.channel),
            (m.shop, labels.shop),
        ]
        return all(allowed is None or value in allowed for allowed, value in pairs)

    def clock(self, name: ClockName) -> ClockPolicy | None:
        return self.clocks.get(name)


@dataclass(frozen=True, slots=True)
class Policies:
    policies: tuple[Policy, ...]

    def select(self, labels: Labels) -> Policy:
        for p in self.policies:
            if p.matches(labels):
                return p
        return self.policies[-1]

    def with_overrides(
        self,
        *,
        first_response: float | None = None,
        resolution: float | None = None,
        warning_fraction: float | None = None,
    ) -> Policies:
        """The env overrides: one limit (or warning share) for that clock in every policy."""

        def fix(c: ClockPolicy) -> ClockPolicy:
            if c.clock is ClockName.first_response and first_response is not None:
                c = replace(c, limit_seconds=first_response)
            if c.clock is ClockName.resolution and resolution is not None:
                c = replace(c, limit_seconds=resolution)
            if warning_fraction is not None and c.warning_fraction is not None:
                c = replace(c, warning_fraction=warning_fraction)
            return c

        return Policies(
            tuple(
                replace(p, clocks={k: fix(v) for k, v in p.clocks.items()}) for p in self.policies
            )
        )


def compile_policies(spec: PolicyFile) -> Policies:
    calendars = {name: c.build() for name, c in spec.calendars.items()}
    out = []
    for p in spec.policies:
        clocks = {
            clock: ClockPolicy(
                clock=clock,
                limit_seconds=c.limit,
                warning_fraction=c.warning_at,
                calendar=calendars[c.calendar] if c.calendar else None,
                calendar_name=c.calendar,
                pause_on_customer_wait=c.pause_when_waiting_on_customer,
            )
            for clock, c in p.clocks.items()
        }
        out.append(Policy(p.name, p.match, clocks))
    return Policies(tuple(out))


DEFAULT: dict[str, Any] = {
    "policies": [
        {
            "name": "complaint",
            "match": {"category": ["complaint"]},
            "clocks": {"first_response": {"limit": "30s"}, "resolution": {"limit": "24h"}},
        },
        {"name": "default", "clocks": {"first_response": {"limit": "30s"}}},
    ]
}


def parse_policies(data: object, path: str = "", root: yaml.Node | None = None) -> Policies:
    """Validate policies; a refusal names each problem, with the file and line when
    ``path`` (and the YAML node tree ``root``) are given."""
    try:
        return compile_policies(PolicyFile.model_validate(data))
    except ValidationError as exc:
        if path:
            raise PolicyError(validation_reasons(exc, path, root, "(file)")) from None
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}"
            + (f" (got {e['input']!r})" if isinstance(e.get("input"), str | int | float) else "")
            for e in exc.errors()
        )
        raise PolicyError(f"invalid SLA policy: {reasons}") from None


def load_policies(path: str | Path | None) -> Policies:
    """The policies of ``path`` (YAML or TOML), or the built-in default when None."""
    if path is None or str(path) == "":
        return parse_policies(DEFAULT)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read SLA policy file {p}: {exc.strerror}") from None
    if p.suffix == ".toml":  # no lines: the reasons name the file and the keys
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"SLA policy file {p} is not valid TOML: {exc}") from None
        return parse_policies(data, str(p))
    try:
        data, root = read_yaml(text, str(p))
    except ValueError as exc:
        raise PolicyError(str(exc)) from None
    return parse_policies(data, str(p), root)
