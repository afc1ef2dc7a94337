"""Chinese threats and safety reports told through families of words (issue #4, the tenth
set's round: docs/routing-rules.md, "Chinese, tenth set"): an outside party named in
passing with what one does to take the matter there, a group chat or a board with what
the customer is going to do there, a payment party with a complaint, a fall, something
toppling near a person, a flare; and look-alikes that must stay low. Sentences written for
this test, in wordings of no evaluation set."""

from __future__ import annotations

import pytest

from services.router.domain import DecisionInput, decide
from shared.events import Priority, Tier

RULE_THREATS = {"threat_regulator", "threat_media", "threat_legal", "threat_platform"}


@pytest.mark.parametrize(
    ("text", "signal"),
    [
        # an authority, a union or the press named in passing, with an act
        ("你们不处理，我就找城管来现场看看", "threat_regulator"),
        ("这事我已经跟街道办反映过了", "threat_regulator"),
        ("我给电台的热线打过去了，等着吧", "threat_media"),
        ("这笔扣款不说清楚，我就打12363问问", "threat_regulator"),
        ("我就去环保局反映一下这批货的味道", "threat_regulator"),
        ("我已经向杂志爆料了", "threat_media"),
        # a group chat or a board: written up there, going to tell it there, warning others
        ("这事我会写到车友群里，让大家都小心", "threat_media"),
        ("我准备在百家号开个帖说说你们家", "threat_media"),
        ("我会在我们公司群里说这件事", "threat_media"),
        ("让车友群的兄弟们谁也别来你们家买", "threat_media"),
        # a payment party with a complaint
        ("这笔钱我去云闪付投诉", "chargeback"),
        ("再不退我就找银联投诉", "chargeback"),
        ("我去白条那边投诉你们", "chargeback"),
        # harm: a fall off something, something toppling near a person, a flare, how hot
        ("柜子倒下来差点砸到孩子，幸好我在旁边", "safety"),
        ("孩子骑着滑板车扑出去，门牙都磕掉了", "safety"),
        ("我妈用你们的按摩椅，直接从上面摔下来了", "safety"),
        ("孩子从秋千上甩出去，额头磕了个包", "safety"),
        ("打火机一点就窜出一团火，把我手背燎了", "safety"),
        ("充电宝越来越烫，都不敢碰", "safety"),
        ("这东西是要出人命的", "safety"),
        # the eleventh set's round (session 9): a complaint site, more marketplaces asked to
        # judge, boards, video sites and groups of buyers, the customer's own channel, more
        # public bodies and the cyber police, a payment party
        ("这事我已经在电诉宝上登记了", "threat_media"),
        ("我去中国质量万里行那边登记一下", "threat_media"),
        ("我要找得物客服来评评理", "threat_platform"),
        ("这单我会让闲鱼来判", "threat_platform"),
        ("饿了么上投诉你们店", "threat_platform"),
        ("这事我只好在校友群里说一说了", "threat_media"),
        ("要不要我在团购群里问问大家", "threat_media"),
        ("视频我已经上传到优酷了", "threat_media"),
        ("这个经过我写出来放妈妈网", "threat_media"),
        ("我在值得买提醒大家别上当", "threat_media"),
        ("我的直播间今晚就拿你们这个锅开箱", "threat_media"),
        ("我已经去村委会反映了这批种子的事", "threat_regulator"),
        ("我打算把材料交给调解委员会", "threat_regulator"),
        ("我表哥是政协委员，这事我会拿给他看", "threat_regulator"),
        ("这事我去林业局问过了", "threat_regulator"),
        ("再拖我就报网警", "threat_regulator"),
        ("我已经给残连打过电话了", "threat_regulator"),
        ("我去京东金融那边申诉这笔钱", "chargeback"),
        # harm: lead in the blood, a baby throwing up, an animal fed and dead, choking, a near
        # drowning, a trapped arm, something toppling with a narrow escape
        ("孩子体检血铅超了，医生说要排铅", "safety"),
        ("宝宝喝了这个奶粉一直吐", "safety"),
        ("喂了你们的猫粮，小猫抽搐了", "safety"),
        ("买的鱼苗放进去第二天就死了一半", "safety"),
        ("小孩吃果冻卡住了，憋紫了才咳出来", "safety"),
        ("泳圈漏气，孩子呛了好几口水", "safety"),
        ("按摩仪把我手臂夹住了，青了一块", "safety"),
        ("架子倒下来砸到我老公，还好躲开了", "safety"),
        # the 13th and 14th sets' round (session 10): township and county bodies, village
        # cadres, testing bodies and their acts; TV help programmes, a village's loudspeaker,
        # the county's media centre, "the whole village"; boards and apps where people talk;
        # banks by name and taking the money back; a brand's anti-counterfeit team; farm
        # animals dead, an older relative hit, being made to vomit
        ("这事我去司法所找人评理", "threat_regulator"),
        ("再不给说法，我就去乡政府反映", "threat_regulator"),
        ("我舅是村主任，他说要往上报", "threat_regulator"),
        ("东西我送到计量所鉴定，假的就上报", "threat_regulator"),
        ("我打了区长热线", "threat_regulator"),
        ("发票有问题，我直接报稽查局", "threat_regulator"),
        ("这事我准备去找疾控中心反映", "threat_regulator"),
        ("我去县融媒体中心爆料", "threat_media"),
        ("这事我要找帮女郎", "threat_media"),
        ("看新闻说你们家的东西有问题，再不退我就让你们上新闻", "threat_media"),
        ("这事要让全村的人都知道", "threat_media"),
        ("我要在连登开个帖", "threat_media"),
        ("视频我发到小宇宙上", "threat_media"),
        ("脉脉上我要发个避雷", "threat_media"),
        ("用农行卡付的，我去把钱拦回来", "chargeback"),
        ("我找信用社撤销交易", "chargeback"),
        ("品牌方那边我已经申请打假了", "threat_platform"),
        ("鸭子吃了你们的饲料，死了一半", "safety"),
        ("塘里的鱼全翻白了，就是用了你们的药", "safety"),
        ("刀片飞出去，差点划到我外公", "safety"),
        ("吃了两口才发现是洗衣凝珠，赶紧催吐", "safety"),
    ],
)
def test_a_chinese_threat_told_by_families_is_urgent_and_second_line(
    text: str, signal: str
) -> None:
    dec = decide(DecisionInput(text))
    assert signal in dec.risk_signals, dec.reasons
    assert (dec.priority, dec.tier) == (Priority.urgent, Tier.L2)


@pytest.mark.parametrize(
    "text",
    [
        # 爆 and 炸 as slang or a name, not a blast
        "这款充电宝是爆款吗",
        "这个空气炸锅插上电多久能热",
        "这个吹风机火力强到爆，还有白色吗",
        "打火机算易燃易爆品吗，能寄吗",
        # where one works, or an authority's rule, with no act
        "我在教育局上班，单位要开发票",
        "我在派出所工作，想批量买手电筒",
        "学校教育局要求统一的校服，有XL吗",
        "有工信部入网许可吗",
        "这个灭火器有消防认证吗",
        "海关扣了我的包裹，什么时候能放行",
        # a group chat or a shopping app named in passing
        "在家长群里看到你们家的书包，还有货吗",
        "我会在抖音直播间下单的",
        "公众号推文里说的满减还有吗",
        # a fall or a near miss that is none
        "宝宝学步鞋防摔倒吗",
        "快递箱砸下来了，幸好东西没事",
        "柜子塌了，差点把花瓶砸了",
        "花呗分期可以吗",
        "白条分期可以吗",
        "孩子的玩具掉下去了，找不到",
        "好险，差点拍错了",
        "杯子很烫手吗，能装开水吗",
        # the eleventh set's round (session 9): the cyber police quoted, a public body as a
        # buyer, where the customer saw it, a plush dog, an animal's question, a doubt
        "网警提醒大家不要点陌生链接",
        "网警说加微信退款的都是骗子，这个客服是你们的吗",
        "我们村委会要买二十把椅子，能开发票吗",
        "笑死了，这个小狗玩偶太可爱了",
        "鱼苗什么时候发货，死了包赔吗",
        "这款猫粮小猫能吃吗",
        "这个卡扣会不会夹住手",
        "我是美团骑手，想买个头盔，有3C认证吗",
        # a camera's exposure settings, slang of a deal with a blast or a fracture in it
        "这台相机的曝光补偿在哪里调",
        "夜景下曝光度怎么设置",
        "评论区炸了，都说这价格跟打骨折一样",
        # the 13th and 14th sets' round (session 10): a bank whose name holds a regulator
        # word, a cadre or a body as a buyer, a group bought in, farm words with no death
        "我用工商银行的卡付的，退款原路退回吗",
        "我爸是村支书，想给村里买五十把椅子",
        "我们协会要买一百个保温杯，能报个价吗",
        "疾控中心要采购一批消毒液，能开专票吗",
        "我要在群里拼团，能便宜点吗",
        "这款投屏器能连电视吗",
        "鱼缸的灯坏了，鱼倒是没事",
        "蜂蜜好吃死了，还有货吗",
        # what the news said, heard before buying (the news is where it was heard)
        "看新闻说有人网上买的奶粉是假的，你们这个是正品吗",
        "新闻上说这种面膜有激素，你们家的有检测报告吗",
    ],
)
def test_a_chinese_look_alike_stays_low(text: str) -> None:
    dec = decide(DecisionInput(text))
    assert not RULE_THREATS & set(dec.risk_signals), dec.reasons
    assert "safety" not in dec.risk_signals and "chargeback" not in dec.risk_signals
    assert dec.priority is not Priority.urgent, dec.reasons


def test_where_the_customer_saw_it_is_no_rule_threat() -> None:
    """A group chat after 我就在 is where the customer saw the shop, not where they will tell
    (``seen_zh``). The rules take no threat; the second opinion still raises this one (its
    我就 weighs: docs/routing-rules.md, "Chinese, eleventh set")."""
    dec = decide(DecisionInput("我就在宝妈群里看到你们家的链接，还有货吗"))
    assert not RULE_THREATS & set(dec.risk_signals), dec.reasons
    dec = decide(DecisionInput("我就在宝妈群里说说你们家的链接"))
    assert "threat_media" in dec.risk_signals, dec.reasons
