"""Notification channels: one small adapter per destination, behind ``Channel``."""

from __future__ import annotations

from services.notifier.channels.base import Channel
from services.notifier.channels.dingtalk import DingTalkRobot
from services.notifier.channels.email import EmailChannel
from services.notifier.channels.feishu import FeishuBot
from services.notifier.channels.generic import GenericWebhook
from services.notifier.channels.slack import SlackWebhook
from services.notifier.channels.wecom import WeComRobot
from services.notifier.routes import ChannelConf


def make_channel(name: str, conf: ChannelConf, *, smtp_timeout: float = 10.0) -> Channel:
    """The adapter for one configured channel (the configuration is already validated)."""
    secret = conf.secret.get_secret_value() if conf.secret else None
    common = {"rate": conf.rate(), "locale": conf.locale}
    url = conf.url or ""
    if conf.type == "dingtalk":
        return DingTalkRobot(name, url, secret, conf.mention, conf.mention_all, **common)
    if conf.type == "wecom":
        return WeComRobot(name, url, conf.mention, conf.mention_all, **common)
    if conf.type == "feishu":
        return FeishuBot(name, url, secret, conf.mention, conf.mention_all, **common)
    if conf.type == "slack":
        return SlackWebhook(name, url, conf.mention, **common)
    if conf.type == "webhook":
        return GenericWebhook(name, url, (secret or "").encode(), **common)
    return EmailChannel(
        name,
        host=conf.smtp_host or "",
        port=conf.smtp_port,
        from_addr=conf.from_addr or "",
        to=conf.to,
        starttls=conf.smtp_starttls,
        use_ssl=conf.smtp_ssl,
        username=conf.smtp_username,
        password=conf.smtp_password.get_secret_value() if conf.smtp_password else None,
        timeout=smtp_timeout,
        **common,
    )


__all__ = ["Channel", "make_channel"]
