"""Chinese categories told by families of words (issue #4, the tenth set's round:
docs/routing-rules.md, "Chinese, tenth set"): an order change before dispatch, a dent, a
machine answering, a question before buying, a bulk price, a parcel shown delivered and
not had. Sentences written for this test, in wordings of no evaluation set."""

from __future__ import annotations

import pytest

from services.router.domain import DecisionInput, decide
from shared.events import Category, Priority, Tier


@pytest.mark.parametrize(
    ("text", "category", "priority", "tier"),
    [
        ("如果还没发货的话，帮我把地址改成公司的", Category.order_status, Priority.normal, Tier.L1),
        ("地址写错了，没发货的话改一下", Category.order_status, Priority.normal, Tier.L1),
        ("电视柜收到时侧面有个凹坑", Category.product_quality, Priority.important, Tier.L1),
        ("客服全是自动回复，没一个真人", Category.complaint, Priority.important, Tier.L2),
        ("这个书架多高", Category.presale, Priority.normal, Tier.bot),
        ("拖鞋批发多少钱一双，要三百双", Category.presale, Priority.normal, Tier.L1),
        ("快递显示已送达，我的包裹去哪了", Category.logistics, Priority.important, Tier.L1),
        # a product name or price slang holding a fault or harm word (session 9)
        ("这个破壁机能打豆浆吗", Category.presale, Priority.normal, Tier.bot),
        ("骨折价还有吗", Category.presale, Priority.normal, Tier.bot),
    ],
)
def test_a_chinese_category_told_by_families(
    text: str, category: Category, priority: Priority, tier: Tier
) -> None:
    dec = decide(DecisionInput(text))
    assert (dec.category, dec.priority, dec.tier) == (category, priority, tier), dec.reasons


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("都一周了还没发货？？", Category.logistics),  # chasing a parcel stays shipping
        ("整箱都是坏的，怎么办", Category.product_quality),  # a large amount, no price asked
        ("我要换货，快递怎么寄回", Category.return_refund),
    ],
)
def test_a_chinese_look_alike_keeps_its_category(text: str, category: Category) -> None:
    assert decide(DecisionInput(text)).category is category
