"""Pure routing decision: category, priority and tier of one customer message.

This is the first, simple rule set of the walking skeleton: keyword rules in Chinese and
English, VIP level and order value raising priority, complaints to L2, FAQs to the bot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from shared.events import Category, Channel, Priority, Tier

_CATEGORY_KEYWORDS: tuple[tuple[Category, tuple[str, ...]], ...] = (
    (
        Category.complaint,
        (
            "投诉",
            "12315",
            "工商",
            "律师",
            "曝光",
            "差评",
            "complain",
            "lawyer",
            "unacceptable",
            "worst",
            "scam",
            "骗",
        ),
    ),
    (
        Category.product_quality,
        ("碎", "坏", "破损", "质量", "瑕疵", "broken", "damaged", "defect", "faulty", "cracked"),
    ),
    (
        Category.return_refund,
        ("退款", "退货", "换货", "退钱", "refund", "return", "exchange", "money back"),
    ),
    (
        Category.logistics,
        (
            "物流",
            "快递",
            "发货",
            "没收到",
            "配送",
            "地址",
            "shipping",
            "delivery",
            "shipment",
            "courier",
            "address",
        ),
    ),
    (Category.invoice, ("发票", "开票", "invoice", "receipt", "vat")),
    (
        Category.order_status,
        ("订单", "付款", "支付", "取消", "order", "payment", "cancel", "track"),
    ),
    (
        Category.presale,
        (
            "有货",
            "库存",
            "尺码",
            "优惠",
            "价格",
            "多少钱",
            "in stock",
            "price",
            "discount",
            "size",
            "available",
        ),
    ),
)
_ANGER = ("!!", "！！", "气死", "垃圾", "骗子", "愤怒", "furious", "angry", "ridiculous", "wtf")
_THREAT = ("12315", "工商", "律师", "曝光", "媒体", "起诉", "lawyer", "sue", "media", "chargeback")


@dataclass(frozen=True, slots=True)
class DecisionInput:
    text: str
    channel: Channel = Channel.chat
    vip_level: int = 0
    order_amount: Decimal | None = None
    order_status: str | None = None
    reopen_count: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    category: Category
    priority: Priority
    tier: Tier
    reasons: list[str] = field(default_factory=list)
    risk_signals: list[str] = field(default_factory=list)
    sentiment: float = 0.0

    @property
    def queue(self) -> str:
        return f"{self.tier.value}.{self.priority.value}"


def decide(inp: DecisionInput) -> Decision:
    text = inp.text.lower()
    reasons: list[str] = []
    category = Category.other
    for cat, words in _CATEGORY_KEYWORDS:
        hit = next((w for w in words if w in text), None)
        if hit is not None:
            category = cat
            reasons.append(f"category {cat.value}: the message mentions “{hit}”")
            break
    else:
        reasons.append("category other: no category keyword found")
    risks = [w for w in _THREAT if w in text]
    angry = any(w in text for w in _ANGER)
    sentiment = -0.8 if angry or risks else 0.0
    priority = Priority.normal
    if risks:
        priority = Priority.urgent
        reasons.append(f"urgent: the customer threatens escalation ({', '.join(risks)})")
    elif category in (Category.complaint, Category.product_quality) or angry:
        priority = Priority.important
        reasons.append("important: complaint, quality problem or angry customer")
    if inp.vip_level >= 3 and priority is not Priority.urgent:
        priority = Priority.urgent if priority is Priority.important else Priority.important
        reasons.append(f"raised: VIP level {inp.vip_level}")
    if inp.order_amount is not None and inp.order_amount >= 1000 and priority is Priority.normal:
        priority = Priority.important
        reasons.append(f"raised: order value {inp.order_amount}")
    if category is Category.complaint or risks:
        tier = Tier.L2
        reasons.append("second line: complaints and disputes go to L2")
    elif category is Category.presale and priority is Priority.normal:
        tier = Tier.bot
        reasons.append("bot: a simple pre-sale question")
    else:
        tier = Tier.L1
        reasons.append("first line: a routine question")
    return Decision(category, priority, tier, reasons, [f"threat:{r}" for r in risks], sentiment)
