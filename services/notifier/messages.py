"""What a person reads: one escalation or a digest, in Chinese or English.

Pure functions. A ``Notice`` is the rendered, channel-neutral message; each channel turns
it into its vendor's body (plain text, Markdown, Slack mrkdwn, e-mail). A notice never
carries a customer's phone number or address: the escalation event has none, and the
masked customer reference is masked again here in case an upstream masking slipped.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.events import EscalationEvent, Priority

Locale = Literal["zh", "en"]

_DIGITS = re.compile(r"\d{5,}")  # a phone number, an ID card, a long order number
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+")


def mask_ref(ref: str | None) -> str:
    """A customer reference fit for a group chat: long digit runs and e-mails masked."""
    if not ref:
        return "-"

    def digits(m: re.Match[str]) -> str:
        s = m.group(0)
        return s[:2] + "*" * (len(s) - 4) + s[-2:]

    out = _EMAIL.sub(lambda m: m.group(0)[:1] + "***@***", ref)
    return _DIGITS.sub(digits, out)[:40]


def duration(seconds: float | None, locale: Locale) -> str:
    if seconds is None:
        return "-"
    s = max(0, round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if locale == "zh":
        parts = [
            f"{h}小时" if h else "",
            f"{m}分" if m else "",
            f"{sec}秒" if sec or s == 0 else "",
        ]
    else:
        parts = [f"{h}h" if h else "", f"{m}m" if m else "", f"{sec}s" if sec or s == 0 else ""]
    return "".join(p for p in parts if p)


_T: dict[str, dict[str, str]] = {
    "zh": {
        "escalation": "工单升级",
        "digest": "工单升级汇总",
        "level": "第{n}级",
        "first_response_breached": "首次响应超时",
        "resolution_breached": "解决时限超时",
        "next_response_breached": "再次响应超时",
        "routed_to_l2": "直接转二线处理",
        "late_by": "超时 {d}",
        "what": "事件",
        "priority": "优先级",
        "category": "类别",
        "waiting": "客户已等待",
        "agent": "负责客服",
        "unassigned": "未分配",
        "shop": "店铺",
        "customer": "客户",
        "ticket": "查看工单",
        "ack": "确认已处理",
        "total": "合计 {n} 条",
        "by_category": "按类别",
        "by_priority": "按优先级",
        "worst": "等待最久",
        "urgent": "紧急",
        "important": "重要",
        "normal": "普通",
        "presale": "售前咨询",
        "order_status": "订单状态",
        "logistics": "物流",
        "return_refund": "退换货/退款",
        "product_quality": "商品质量",
        "invoice": "发票",
        "complaint": "投诉",
        "other": "其他",
        "-": "-",
    },
    "en": {
        "escalation": "Escalation",
        "digest": "Escalation digest",
        "level": "level {n}",
        "first_response_breached": "first response breached",
        "resolution_breached": "resolution breached",
        "next_response_breached": "next response breached",
        "routed_to_l2": "routed straight to second line",
        "late_by": "late by {d}",
        "what": "What",
        "priority": "Priority",
        "category": "Category",
        "waiting": "Customer waiting",
        "agent": "Agent",
        "unassigned": "unassigned",
        "shop": "Shop",
        "customer": "Customer",
        "ticket": "Open ticket",
        "ack": "Acknowledge",
        "total": "Total: {n}",
        "by_category": "By category",
        "by_priority": "By priority",
        "worst": "Longest waiting",
        "urgent": "urgent",
        "important": "important",
        "normal": "normal",
        "presale": "pre-sale",
        "order_status": "order status",
        "logistics": "logistics",
        "return_refund": "return/refund",
        "product_quality": "product quality",
        "invoice": "invoice",
        "complaint": "complaint",
        "other": "other",
        "-": "-",
    },
}


def t(locale: Locale, key: str, **kw: Any) -> str:
    text = _T[locale].get(key, key)
    return text.format(**kw) if kw else text


@dataclass(frozen=True, slots=True)
class Notice:
    """A rendered message: a title, labelled rows and links (label, URL)."""

    key: str  # escalation id or digest id: stays the same across retries
    title: str
    rows: list[tuple[str, str]]
    links: list[tuple[str, str]] = field(default_factory=list)
    items: list[str] = field(default_factory=list)  # digest: one line per top item
    esc: EscalationEvent | None = None
    digest: dict[str, Any] | None = None
    level: int = 1

    def text(self) -> str:
        lines = [self.title]
        lines += [f"{k}: {v}" for k, v in self.rows]
        lines += [f"- {i}" for i in self.items]
        lines += [f"{label}: {url}" for label, url in self.links]
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = [f"### {self.title}"]
        lines += [f"- **{k}**: {v}" for k, v in self.rows]
        lines += [f"> {i}" for i in self.items]
        if self.links:
            lines.append(" | ".join(f"[{label}]({url})" for label, url in self.links))
        return "\n".join(lines)

    def slack(self) -> str:
        lines = [f"*{self.title}*"]
        lines += [f"*{k}*: {v}" for k, v in self.rows]
        lines += [f"• {i}" for i in self.items]
        if self.links:
            lines.append(" | ".join(f"<{url}|{label}>" for label, url in self.links))
        return "\n".join(lines)


def _what(esc: EscalationEvent, locale: Locale) -> str:
    what = t(locale, esc.reason.value)
    if esc.lateness_seconds is not None and esc.reason.value.endswith("_breached"):
        sep = "，" if locale == "zh" else ", "
        what += sep + t(locale, "late_by", d=duration(esc.lateness_seconds, locale))
    return what


def render_escalation(
    esc: EscalationEvent,
    locale: Locale,
    *,
    ticket_url: str,
    ack_url: str | None,
    level: int = 1,
) -> Notice:
    prio = t(locale, esc.priority.value) if esc.priority else "-"
    cat = t(locale, esc.category.value) if esc.category else "-"
    head = f"{t(locale, 'escalation')} · {t(locale, 'level', n=level)}"
    title = f"[{head}] {prio} · {cat} · {_what(esc, locale)}"
    if locale == "zh":
        title = f"【{head}】{prio} · {cat} · {_what(esc, locale)}"
    rows = [
        (t(locale, "what"), _what(esc, locale)),
        (t(locale, "priority"), prio),
        (t(locale, "category"), cat),
        (t(locale, "waiting"), duration(esc.waiting_seconds, locale)),
        (t(locale, "agent"), esc.agent_id or t(locale, "unassigned")),
        (t(locale, "shop"), esc.shop_id or "-"),
        (t(locale, "customer"), mask_ref(esc.customer_ref)),
    ]
    links = [(t(locale, "ticket"), ticket_url)]
    if ack_url:
        links.append((t(locale, "ack"), ack_url))
    return Notice(esc.escalation_id, title, rows, links, esc=esc, level=level)


# -- digests ------------------------------------------------------------------------------

TOP_ITEMS = 5
_PRIO_RANK = {p.value: i for i, p in enumerate(Priority)}


def summarise(escs: list[EscalationEvent], top: int = TOP_ITEMS) -> dict[str, Any]:
    """The digest of many escalations: counts, the worst waiting times, the top items."""

    def rank(e: EscalationEvent) -> tuple[int, float]:
        prio = _PRIO_RANK.get(e.priority.value, 9) if e.priority else 9
        return (prio, -(e.waiting_seconds or 0.0))

    worst = sorted(escs, key=rank)[:top]
    return {
        "count": len(escs),
        "by_category": dict(Counter(e.category.value if e.category else "-" for e in escs)),
        "by_priority": dict(Counter(e.priority.value if e.priority else "-" for e in escs)),
        "max_waiting_seconds": max((e.waiting_seconds or 0.0 for e in escs), default=0.0),
        "top": [
            {
                "escalation_id": e.escalation_id,
                "ticket_id": e.ticket_id,
                "reason": e.reason.value,
                "priority": e.priority.value if e.priority else None,
                "category": e.category.value if e.category else None,
                "waiting_seconds": e.waiting_seconds,
            }
            for e in worst
        ],
    }


def render_digest(
    digest_id: str, summary: dict[str, Any], locale: Locale, *, ticket_base_url: str
) -> Notice:
    n = int(summary["count"])
    title = f"[{t(locale, 'digest')}] {t(locale, 'total', n=n)}"
    if locale == "zh":
        title = f"【{t(locale, 'digest')}】{t(locale, 'total', n=n)}"
    sep = "，" if locale == "zh" else ", "

    def counts(d: dict[str, int]) -> str:
        return sep.join(f"{t(locale, k)} {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]))

    rows = [
        (t(locale, "by_priority"), counts(summary["by_priority"])),
        (t(locale, "by_category"), counts(summary["by_category"])),
        (t(locale, "worst"), duration(summary["max_waiting_seconds"], locale)),
    ]
    items = [
        f"{t(locale, i['priority'] or '-')} · {t(locale, i['category'] or '-')} · "
        f"{t(locale, i['reason'])} · {duration(i['waiting_seconds'], locale)} · "
        f"{ticket_base_url}{i['ticket_id']}"
        for i in summary["top"]
    ]
    return Notice(digest_id, title, rows, items=items, digest=summary)
