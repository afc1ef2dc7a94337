"""Escalation routes: which channels (and people) hear about an escalation, level by level.

The configuration is a YAML file (``NOTIFIER_ROUTES_FILE``), validated in full at start-up:
a bad file stops the service with the reason. ``${NAME}`` in any string is replaced by
the environment variable ``NAME`` (secrets stay out of the file). Routes are tried in
order; the first whose ``match`` fits the escalation wins. Level 1 is sent at once; level
*n* is sent ``after_minutes`` after the escalation arrived, unless it was acknowledged or
its ticket resolved by then. See docs/notifier.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from shared.config_file import read_yaml, validation_reasons
from shared.events import Category, EscalationEvent, EscalationReason, Priority, Tier

GENERIC = "generic"  # the channel of NOTIFIER_GENERIC_WEBHOOK_URL; reserved name
ChannelType = Literal["wecom", "dingtalk", "feishu", "slack", "email", "webhook"]

# Vendor limits per minute (robots: 20 a minute; Feishu: 100 a minute; Slack: ~1 a second).
DEFAULT_RATE: dict[str, int | None] = {
    "wecom": 20,
    "dingtalk": 20,
    "feishu": 100,
    "slack": 60,
    "email": None,
    "webhook": None,
}
_NEEDS_URL = {"wecom", "dingtalk", "feishu", "slack", "webhook"}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RoutesError(ValueError):
    """The routes configuration is unusable; the message says why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChannelConf(_Strict):
    type: ChannelType
    url: str | None = Field(None, description="The robot's or hook's full webhook URL.")
    secret: SecretStr | None = Field(
        None, description="DingTalk 加签 / Feishu 签名校验 secret; HMAC secret of `webhook`."
    )
    rate_per_window: int | None = Field(
        None, ge=1, description="Messages per rate window (vendor default when unset)."
    )
    locale: Literal["zh", "en"] | None = None
    mention: list[str] = Field(default_factory=list, description="Vendor user ids to @.")
    mention_all: bool = False
    # email
    smtp_host: str | None = None
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    from_addr: str | None = None
    to: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fields_for_type(self) -> ChannelConf:
        if self.type in _NEEDS_URL:
            if not self.url:
                raise ValueError(f"a {self.type} channel needs `url`")
            if not self.url.startswith(("http://", "https://")):
                raise ValueError("`url` must start with http:// or https://")
        if self.type == "webhook" and self.secret is None:
            raise ValueError("a webhook channel needs `secret` (it signs every body)")
        if self.type == "email":
            if not self.smtp_host or not self.from_addr or not self.to:
                raise ValueError("an email channel needs `smtp_host`, `from_addr` and `to`")
            for addr in [self.from_addr, *self.to]:
                if "@" not in addr:
                    raise ValueError(f"not an e-mail address: {addr!r}")
        return self

    def rate(self) -> int | None:
        return self.rate_per_window if self.rate_per_window is not None else DEFAULT_RATE[self.type]


class Match(_Strict):
    """Every listed field must match (a value in its list); an empty list matches all."""

    tier: list[Tier] = Field(default_factory=list)
    category: list[Category] = Field(default_factory=list)
    priority: list[Priority] = Field(default_factory=list)
    shop: list[str] = Field(default_factory=list)
    reason: list[EscalationReason] = Field(default_factory=list)

    def fits(self, esc: EscalationEvent) -> bool:
        checks: list[tuple[list[Any], Any]] = [
            (self.tier, esc.tier),
            (self.category, esc.category),
            (self.priority, esc.priority),
            (self.shop, esc.shop_id),
            (self.reason, esc.reason),
        ]
        return all(not allowed or value in allowed for allowed, value in checks)


class Level(_Strict):
    after_minutes: float = Field(0, ge=0, description="Since the escalation arrived.")
    channels: list[str] = Field(min_length=1)


class Route(_Strict):
    name: str = Field(min_length=1, max_length=100)
    match: Match = Field(default_factory=Match)
    levels: list[Level] = Field(min_length=1)

    @model_validator(mode="after")
    def _levels_in_order(self) -> Route:
        if self.levels[0].after_minutes != 0:
            raise ValueError("level 1 is sent at once: its `after_minutes` must be 0")
        for a, b in zip(self.levels, self.levels[1:], strict=False):
            if b.after_minutes <= a.after_minutes:
                raise ValueError("levels' `after_minutes` must increase")
        return self


class RoutesConfig(_Strict):
    channels: dict[str, ChannelConf] = Field(min_length=1)
    routes: list[Route] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> RoutesConfig:
        if GENERIC in self.channels:
            raise ValueError(
                f"channel name {GENERIC!r} is reserved for NOTIFIER_GENERIC_WEBHOOK_URL"
            )
        names = [r.name for r in self.routes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"route names must be unique: {dupes}")
        for r in self.routes:
            for i, lvl in enumerate(r.levels, 1):
                for ch in lvl.channels:
                    if ch not in self.channels:
                        raise ValueError(f"route {r.name!r} level {i} names unknown channel {ch!r}")
        return self

    def route_for(self, esc: EscalationEvent) -> Route | None:
        for r in self.routes:
            if r.match.fits(esc):
                return r
        return None

    def route_named(self, name: str | None) -> Route | None:
        for r in self.routes:
            if r.name == name:
                return r
        return None


def _substitute(value: Any, env: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in env:
                raise RoutesError(f"{where}: environment variable {name} is not set")
            return env[name]

        return _VAR.sub(repl, value)
    if isinstance(value, list):
        return [_substitute(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _substitute(v, env, f"{where}.{k}") for k, v in value.items()}
    return value


def parse_routes(
    text: str, env: Mapping[str, str] | None = None, path: str = "routes"
) -> RoutesConfig:
    """Parse and validate; raise ``RoutesError`` with a reason a person can act on, naming
    the line of each problem."""
    try:
        raw, root = read_yaml(text, path)
    except ValueError as exc:
        raise RoutesError(str(exc)) from None
    if not isinstance(raw, dict):
        raise RoutesError(
            f"{path}:1: the routes file must be a mapping with `channels` and `routes`"
        )
    raw = _substitute(raw, os.environ if env is None else env, "routes")
    try:
        return RoutesConfig.model_validate(raw)
    except ValidationError as exc:
        # Values are not shown: after substitution they may hold tokens and webhook secrets.
        raise RoutesError(
            validation_reasons(exc, path, root, "routes", show_values=False)
        ) from None


def load_routes(path: Path, env: Mapping[str, str] | None = None) -> RoutesConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutesError(f"cannot read {path}: {exc.strerror}") from None
    return parse_routes(text, env, str(path))
