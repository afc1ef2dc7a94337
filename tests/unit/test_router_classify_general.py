"""The classifier's ways of generalising beyond its exact words (docs/routing-rules.md):
the character n-gram fallback with homophone typos, pinyin, families of words that count
together, denials, the question default, and the safety net that keeps every threat or
safety report urgent and on second line whatever else is decided."""

from __future__ import annotations

import pytest

from services.router.classify import Classifier, load_rules, parse_rules
from services.router.domain import DEFAULT_RULES_FILE, Decision, DecisionInput, decide
from shared.events import Category, Priority, Tier

# A small rules file that isolates each mechanism from the shipped vocabulary.
SMALL = """
version: 1
pinyin: {退货: tui huo}
homophones: [货获]
families:
  took: [吃了, 喝了]
  symptom: [疼, 发烧]
  question: [吗]
negation:
  words: [没有, 不]
  skip: [要]
  intent: [不是]
tie_order: [complaint, product_quality, return_refund, invoice, logistics, order_status,
            presale, other]
categories:
  complaint: {says: complains}
  product_quality: {says: broken}
  return_refund: {says: returns, strong: [退货]}
  invoice: {says: invoice}
  logistics: {says: shipping, strong: [收货地]}
  order_status: {says: orders}
  presale: {says: pre-sale, terms: [尺码]}
  other: {says: anything else}
signals:
  safety:
    says: reports a safety problem
    terms: [漏电]
    together: [[took, symptom]]
    priority: urgent
    tier: L2
    category: product_quality
    weight: 3
    threat: true
  regulator:
    says: threatens a regulator
    terms: ["12315"]
    priority: urgent
    tier: L2
    category: complaint
    weight: 3
    threat: true
    negation: false
context:
  question_category: presale
"""


@pytest.fixture(scope="module")
def small() -> Classifier:
    return Classifier(parse_rules(SMALL, "small.yaml"))


def cat(clf: Classifier, text: str) -> Category:
    return clf.classify(text).category


def signals(clf: Classifier, text: str) -> list[str]:
    return [s.name for s in clf.classify(text).signals]


def d(text: str, **kw: object) -> Decision:
    return decide(DecisionInput(text, **kw))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- mechanisms


def test_a_word_is_found_inside_a_longer_cut(small: Classifier) -> None:
    assert cat(small, "我的退货单填好了") is Category.return_refund
    assert cat(small, "填好了") is Category.other


def test_a_homophone_typo_counts_unless_it_is_a_real_word(small: Classifier) -> None:
    assert cat(small, "我要退获") is Category.return_refund  # 获 typed for 货
    # 收获 is a word of its own: 收获地 is no typo of the rule word 收货地.
    assert small.tokenizer.is_word("收获")
    assert cat(small, "收获地") is not Category.logistics
    assert cat(small, "收货地填错了") is Category.logistics


def test_pinyin_whole_or_mixed_reads_as_the_word(small: Classifier) -> None:
    assert cat(small, "想tuihuo") is Category.return_refund
    assert cat(small, "我要退huo") is Category.return_refund
    assert cat(small, "我要tui货") is Category.return_refund
    assert cat(small, "tuihuo") is Category.return_refund
    # only whole pinyin syllables next to the characters, not inside English words
    assert cat(small, "stuihuox 好") is Category.other


def test_families_count_only_together(small: Classifier) -> None:
    assert signals(small, "喝了以后一直发烧") == ["safety"]
    assert signals(small, "喝了 挺好") == []
    assert signals(small, "一直发烧") == []


def test_a_denied_signal_word_does_not_count(small: Classifier) -> None:
    assert signals(small, "漏电") == ["safety"]
    assert signals(small, "没有漏电") == []
    assert signals(small, "没有要漏电") == []  # one word of `skip` may stand between
    assert signals(small, "没有 就是漏电") == ["safety"]  # a denial two words away does not


def test_a_denied_threat_still_counts(small: Classifier) -> None:
    assert signals(small, "不12315") == ["regulator"]


def test_a_threat_told_by_families_counts_denied_too() -> None:
    # threats say `negation: false`: their family words count after a denial as their
    # words do (I didn't want to post it on WeChat Moments, you made me), safety does not
    assert "threat_media" in d("我也不想发到朋友圈 是你们逼我的").risk_signals
    assert "safety" not in d("用了以后没有疼").risk_signals


# English denials: `firm` words deny threats and family words too, over up to `reach`
# words of `skip`; a `things` word after a signal word (past a hyphen) names a thing.
SMALL_EN = (
    SMALL.replace("  skip: [要]", "  skip: [要, going, to, need, for, a]\n  reach: 3")
    .replace(
        "  intent: [不是]", '  intent: [不是]\n  firm: [not, "no", t]\n  things: [alarm, safe]'
    )
    .replace("  question: [吗]", "  question: [吗]\n  counsel: [lawyer]\n  act: [call, ll]")
    .replace('terms: ["12315"]', 'terms: ["12315", sue, smoke]\n    together: [[act, counsel]]')
    .replace("terms: [尺码]", "terms: [尺码, refund]")
    .replace("context:", "  rude: {says: swears, terms: [damn], priority: important}\ncontext:")
)


@pytest.fixture(scope="module")
def small_en() -> Classifier:
    return Classifier(parse_rules(SMALL_EN, "small_en.yaml"))


def test_a_firm_denial_denies_a_threat_too(small_en: Classifier) -> None:
    assert signals(small_en, "i will sue") == ["regulator"]
    assert signals(small_en, "i am not going to sue anyone") == []  # two words of skip
    assert signals(small_en, "no need for a lawyer i ll call") == []  # three, a family word
    assert signals(small_en, "i ll call a lawyer") == ["regulator"]
    # up to `reach` words of skip, and a plain (not firm) denial keeps a threat
    assert signals(small_en, "not going to need for a sue") == ["regulator"]
    assert signals(small_en, "不12315") == ["regulator"]
    # a firm word denies no category word (only `intent` words do) and no other signal
    assert cat(small_en, "no refund yet") is Category.presale
    assert signals(small_en, "i do not have a damn account") == ["rude"]


def test_a_not_family_in_a_group_keeps_it_from_firing(small_en: Classifier) -> None:
    # together: [[act, counsel, not elsewhere]]: a lawyer with an act, unless a word of
    # `elsewhere` is there too (a past dispute with another shop)
    rules = SMALL_EN.replace("  act: [call, ll]", "  act: [call, ll]\n  elsewhere: [another, ago]")
    rules = rules.replace("[[act, counsel]]", "[[act, counsel, not elsewhere]]")
    clf = Classifier(parse_rules(rules, "small_en.yaml"))
    assert signals(clf, "i ll call a lawyer") == ["regulator"]
    assert signals(clf, "i ll call a lawyer like with another shop years ago") == []
    assert signals(clf, "i ll call a lawyer and then sue") == ["regulator"]  # its terms count
    assert signals(small_en, "i ll call a lawyer like with another shop years ago") == ["regulator"]


def test_a_thing_word_after_a_signal_word_names_a_thing(small_en: Classifier) -> None:
    assert signals(small_en, "smoke alarm") == []
    assert signals(small_en, "is it smoke-safe") == []
    assert signals(small_en, "smoke from the plug") == ["regulator"]


def test_without_reach_one_word_of_skip_may_stand_between(small: Classifier) -> None:
    parsed = parse_rules(SMALL, "small.yaml")
    assert parsed.negation.reach == 1 and parsed.negation.firm == []


def test_only_intent_words_deny_a_category_word(small: Classifier) -> None:
    assert cat(small, "不是退货 问尺码") is Category.presale
    assert cat(small, "不退货") is Category.return_refund


def test_a_question_without_other_clue_is_the_question_category(small: Classifier) -> None:
    assert cat(small, "能机洗吗") is Category.presale
    assert cat(small, "能机洗") is Category.other


# --------------------------------------------------------------------------- shipped rules


@pytest.mark.parametrize(
    ("text", "signal"),
    [
        ("喝了你们的果汁以后一直拉肚子", "safety"),
        ("小米粥里吃出碎玻璃", "safety"),
        ("这个电饼铛一插电就有焦味", "safety"),
        ("煤气罐接上以后砰的一声", "safety"),
        ("我要把这件事发到朋友圈", "threat_media"),
        ("已经打了市长热线反映", "threat_regulator"),
        ("我去信用卡中心申请追回这笔钱", "chargeback"),
        ("我的bank会dispute这笔交易", "chargeback"),
        ("准备申请仲裁", "threat_legal"),
    ],
)
def test_threats_in_new_words_are_urgent_and_second_line(text: str, signal: str) -> None:
    dec = d(text)
    assert signal in dec.risk_signals
    assert (dec.priority, dec.tier) == (Priority.urgent, Tier.L2)


def test_denials_and_doubts_on_shipped_rules() -> None:
    quiet = d("没有漏电 就是坏了")
    assert "safety" not in quiet.risk_signals and quiet.tier is Tier.L1
    assert d("这个取暖器会不会起火").tier is Tier.bot  # a doubt before buying
    assert d("取暖器起火了").tier is Tier.L2
    assert d("不用转人工了 谢谢").tier is Tier.bot
    assert d("转人工").tier is Tier.L1
    threat = d("我也不想去12315 你们看着办")
    assert threat.tier is Tier.L2 and threat.priority is Priority.urgent


def test_typo_and_mixed_language_on_shipped_rules() -> None:
    assert "bad_review" in d("再不处理就给差平").risk_signals  # 平 typed for 评
    assert d("kuaidi到哪了").category is Category.logistics
    assert d("我的refund还没到账").category is Category.return_refund
    assert d("fa票开了没").category is Category.invoice
    # a sent video is evidence, not a threat to go public
    evidence = d("我发个视频给你看看哪里坏了")
    assert evidence.tier is Tier.L1 and "threat_media" not in evidence.risk_signals


def test_a_threat_is_forced_to_second_line_even_when_its_rule_says_less() -> None:
    """The safety net in decide(): built in code past the file's validation, a safety
    signal that says important / L1 still gives urgent / L2."""
    rules = load_rules(DEFAULT_RULES_FILE)
    weak = rules.signals["safety"].model_copy(
        update={"priority": Priority.important, "tier": Tier.L1}
    )
    clf = Classifier(rules.model_copy(update={"signals": {**rules.signals, "safety": weak}}))
    dec = decide(DecisionInput("插座冒烟了"), clf)
    assert "safety" in dec.risk_signals
    assert (dec.priority, dec.tier) == (Priority.urgent, Tier.L2)
    assert any("always goes to L2" in r for r in dec.reasons)
    # ... whatever the category: a safety word in an account question
    dec = decide(DecisionInput("登录密码忘了 充电器还冒烟了"), clf)
    assert dec.tier is Tier.L2


# Written in session 4 after the change, in wordings of no evaluation set: threats that must
# reach L2, and look-alikes that must not.
@pytest.mark.parametrize(
    "text",
    [
        "我已经向市场监管部门反映了",
        "这个事情我会发到微信群里让大家都知道",
        "我跟银行说了这笔不是我授权的 让他们退回来",
        "信用卡我已经申请退单了",
        "吃了你们的月饼以后一直在吐",
        "孩子玩了这个玩具手上全是红疙瘩",
        "打开包装一股刺鼻的味道 熏得头疼",
        "插头插上去啪的一声 整个屋都停电了",
        "床架塌了 孩子摔下来磕破了头",
        "不解决我就在大众点评上写",
    ],
)
def test_more_new_wordings_reach_second_line(text: str) -> None:
    assert d(text).tier is Tier.L2


@pytest.mark.parametrize(
    "text",
    [
        "用了一周想吐槽一下",  # 想吐 is not in 想|吐槽
        "钱退回支付宝了吗",  # a refund to Alipay is no chargeback
        "信用卡付款能撤销吗",
        "这个锅能用燃气灶吗",
        "充电宝充电很慢",
        "网上显示已发货",
        # English (docs/routing-rules.md, "English threats"): slang, things, a party named
        # in passing or as a job, denials, idioms with a person
        "These wings are fire!",
        "This phone case is fire, do you have it in green?",
        "Killer deal, does the code stack?",
        "The smoke grey colour is sold out?",
        "Is the smoke detector battery included?",
        "Is this charger fire-rated?",
        "Does the heater have a fire safety certificate?",
        "Will the court shoes come in black?",
        "I saw your reviews on TikTok, will you restock the blue one?",
        "Are you on Instagram? I'd love to follow",
        "my bank says the payment went through, can you check?",
        "I'm a police officer and need 12 pairs of boots, bulk price?",
        "My lawyer friend recommended you guys, do you ship to Canada?",
        "We're a law firm, can we get a VAT invoice?",
        "I work for the BBC, can I get an invoice with our address?",
        "I'm not going to sue anyone, I just want to swap the size",
        "No need to call the police, the parcel turned up!",
        "Never had a problem with you before, no need for lawyers, just send the right size",
        "I won't be reporting anything, it was my mistake",
        "Not planning a chargeback, just checking the order went through",
        "My son is sick of waiting for his order, where is it?",
        "My son broke the zip on the backpack, can I buy a new one?",
        "My daughter's reaction when she opened it was priceless, thank you!",
        "My daughter fell in love with the dress, any more colours?",
        # who someone is with no intent form or act, a question about a policy, a fall or a
        # video that is none (issue #4, second round)
        "I'm a reporter at a local radio station, can I get your price list?",
        "I work as a journalist and need a sturdy laptop bag. Which one fits 15 inch?",
        "Do you have a policy on chargebacks?",
        "My son fell asleep in the car seat within minutes, so comfy",
        "The handle fell off the drawer, can I get a new one?",
        "Saw a YouTube video of your sofa, does it come in grey?",
        # a dispute with the bank or the card elsewhere or long ago
        "Had a chargeback with another seller years ago, do you accept PayPal?",
        "I disputed a payment with my bank once, with a previous shop. Do you ship to Spain?",
        # a product's name, a marketplace or a payment party named in passing, a question
        # about terms, one's own legal team asking for an invoice (issue #4, third round)
        "is the poison ivy soothing lotion back in stock?",
        "Do you also sell on Shein or only on your own site?",
        "Is there an arbitration clause in your terms? Just curious before I buy",
        "Can I pay with Affirm?",
        "I saw your ad on fb, do you ship to Ireland?",
        "Our legal team needs an invoice with the company name please",
        # exposed as a state, an ombudsman or a job as where someone works, one's own case
        # in a tribunal, threads of a seam (fifth round)
        "The wallpaper has an exposed brick look, is it washable?",
        "Is the cable exposed at the plug end normal? it's new",
        "My mum works at the ombudsman, she loves your candles. Do you ship to Leeds?",
        "I'm a paramedic, do the boots have steel toes?",
        "My employment tribunal is next week, can you deliver on Friday instead?",
        "The jumper has loose threads everywhere, can you tell me how to return it?",
        "Can you leave the parcel with my colleagues at reception?",
        "My dad needs a blood pressure monitor, do you ship to Wales?",
        "Is the blood orange candle in stock? my mum loves it",
        "Is this chew safe for my ferret?",
        "The mayor of our town loves your mugs, can I get 20 engraved?",
        "Casualty of the sale: the blue one sold out, any restock date?",
        "I want the shipping charge back, it was meant to be free",
        # a substance asked about, a group or a body named in passing, a worn part of a thing
        # that breaks, a payment party or an app named in passing (sixth round)
        "Does the face cream contain mercury? I am pregnant.",
        "Is there a group discount? I'd like to tell my book club",
        "Can I pay with M-Pesa or Airtel Money?",
        "Do you also deliver through DoorDash?",
        "The heel broke off my boot after a week, can I get a new pair?",
        "The shoulder strap broke on day two, can you send a new one?",
        "Our MEP's office would like 20 mugs, can we get a quote?",
        "I saw it in the community chat, is the blue one back in stock?",
    ],
)
def test_look_alikes_stay_below_second_line(text: str) -> None:
    dec = d(text)
    assert dec.tier is not Tier.L2 and dec.priority is not Priority.urgent, dec.reasons


# --------------------------------------------------------------------------- recall-first
# Threats and safety reports told in forms no word list holds (docs/routing-rules.md,
# "Recall-first threat and safety detection").


@pytest.mark.parametrize(
    "text", ["再不退就打幺二三幺五", "一二三一五 听说过没", "12 3 15 见", "1 2 3 1 5"]
)
def test_a_hotline_number_written_another_way_is_the_number(small: Classifier, text: str) -> None:
    assert signals(small, text) == ["regulator"]


def test_only_short_spaced_groups_are_joined(small: Classifier) -> None:
    # a phone number written in groups is not one hotline number; two words stay two
    assert small.tokenizer.prepare("电话 138 1234 5678")[0] == "电话 138 1234 5678"
    assert small.tokenizer.prepare("三番五次")[0] == "三番五次"


def test_pinyin_typed_syllable_by_syllable_reads_as_the_word(small: Classifier) -> None:
    assert cat(small, "我要 tui huo 了") is Category.return_refund
    assert cat(small, "我要 tui 了") is Category.other  # one syllable is not the word


def _urgent_l2(text: str) -> bool:
    dec = d(text)
    return (dec.priority, dec.tier) == (Priority.urgent, Tier.L2)


@pytest.mark.parametrize(
    ("text", "signal"),
    [
        # pinyin, spaced pinyin, abbreviations, homophone slips inside a word of the cut
        ("gongshangju见", "threat_regulator"),
        ("再拖我就 bao jing", "threat_regulator"),
        ("我就找律湿", "threat_legal"),
        ("这事我要发到xhs上", "threat_media"),
        ("你们等着上小红薯吧", "threat_media"),
        ("我去消斜反映", "threat_regulator"),
        ("我申请pingtai介入", "threat_platform"),
        # structure: evidence or an ultimatum + an authority, the platform, a public place
        ("聊天记录我都截屏了 有关部门会来找你们", "threat_regulator"),
        ("给你们最后一次机会 不然我找上级部门", "threat_regulator"),
        ("我要申请平台介入", "threat_platform"),
        ("已经在淘宝上投诉你们了", "threat_platform"),
        ("我有十万粉丝 准备拍视频讲讲这家店", "threat_media"),
        ("截图都在朋友圈了", "threat_media"),
        ("我要让所有人都知道你们卖假货", "threat_media"),
        # harm told as what happened to the body
        ("吃了你们的面包才发现发霉了", "safety"),
        ("摸了一下外壳 手到现在还麻", "safety"),
        ("敷完脸像烧伤一样 去医院挂号了", "safety"),
        ("饺子里吃出一根钢丝", "safety"),
        ("老人摔倒了 已经打了120", "safety"),
        ("我去人民网留言板反映你们", "threat_regulator"),
    ],
)
def test_threats_told_other_ways_are_urgent_and_second_line(text: str, signal: str) -> None:
    assert signal in d(text).risk_signals
    assert _urgent_l2(text)


@pytest.mark.parametrize(
    "text",
    [
        "充电宝会不会爆炸 能带上飞机吗",  # a doubt before buying, inside the word 爆炸
        "烟雾报警器会误报吗",  # 报警器 is an alarm, not calling the police
        "律师事务所要开专票",  # a law firm asks for an invoice
        "抖音直播间的同款有吗",  # a livestream room is where they saw it
        "律诗写得真好",  # 律诗 is a word of its own, no slip of 律师
        "优惠券用了一半过期了",  # used + past its date, but nothing eaten
        "手机麻烦帮我看看",  # 麻烦 is no numbness
        "看了抖音的测评想买",
        "我拍视频给你看看哪里坏了",
        "粉丝价有吗",
    ],
)
def test_risk_look_alikes_stay_low(text: str) -> None:
    dec = d(text)
    assert dec.priority is not Priority.urgent, dec.reasons


def test_a_denied_intent_to_complain_is_no_complaint() -> None:
    assert d("她说不想投诉 就想换个颜色").category is Category.return_refund


def test_delivered_but_not_received_rudeness_and_silence_in_words() -> None:
    shown = d("快递显示已签收 但是我没收到")
    assert (shown.category, shown.priority) == (Category.logistics, Priority.important)
    assert d("快递显示已签收 谢谢").priority is Priority.normal
    assert d("你们客服说话太冲了").tier is Tier.L2
    assert d("耳机一边没声").category is Category.product_quality


@pytest.mark.parametrize(
    ("traditional", "simplified"),
    [
        ("我要去消委會投訴你們 再不處理就上媒體曝光", "我要去消委会投诉你们 再不处理就上媒体曝光"),
        ("充電器插上就冒煙 差點燒起來", "充电器插上就冒烟 差点烧起来"),
        ("請問這款有藍色嗎", "请问这款有蓝色吗"),
    ],
)
def test_traditional_characters_decide_as_their_simplified_forms(
    traditional: str, simplified: str
) -> None:
    a, b = d(traditional), d(simplified)
    assert (a.category, a.priority, a.tier) == (b.category, b.priority, b.tier)
    assert a.risk_signals == b.risk_signals


def test_traditional_to_simplified_leaves_simplified_text_alone() -> None:
    from services.router.classify.text import Tokenizer

    assert Tokenizer.normalise("投訴 消委會 爆炸了嗎") == "投诉 消委会 爆炸了吗"
    text = "我要投诉 12315 著名品牌 后来 发货了吗 头发 面条"
    assert Tokenizer.normalise(text) == text


def test_normalising_by_character_is_exactly_nfkc() -> None:
    """The fast path of ``Tokenizer.normalise`` (one character at a time) is exact: what its
    characters become holds no character that canonical composition joins to the one before
    it (the second of any two-character canonical decomposition) and no combining mark, and
    random texts of those characters (and a few others) normalise as unicodedata does."""
    import random
    import sys
    import unicodedata

    from services.router.classify.text import (
        _NFKC_BY_CHARACTER,
        _NFKC_CHANGED,
        _NFKC_RANGES,
        _T2S,
        Tokenizer,
        _nfkc_character,
        fold_latin,
    )

    seconds = set()
    for c in range(sys.maxunicode + 1):
        d = unicodedata.decomposition(chr(c)).split()
        if len(d) == 2 and not d[0].startswith("<"):
            seconds.add(chr(int(d[1], 16)))
    kept = [
        chr(c)
        for lo, hi in _NFKC_RANGES
        for c in range(lo, hi)
        if _NFKC_BY_CHARACTER.fullmatch(chr(c))
    ]
    assert len(kept) > 27_000  # ASCII, CJK, punctuation and full-width forms take it
    assert _NFKC_BY_CHARACTER.fullmatch("\u2017") is None  # becomes a space + a combining mark
    for ch in kept:
        out = unicodedata.normalize("NFKC", ch)
        assert not seconds & set(out), ch
        assert not any(unicodedata.combining(x) for x in out), ch
        assert _NFKC_CHANGED.sub(_nfkc_character, ch) == out, ch
    rng = random.Random(5)
    others = ["e\u0301", "\u30ab\uff9e", "\u1100\u1161", "\u2017", "\u00e9"]
    for _ in range(3_000):
        text = "".join(rng.choice(kept) for _ in range(rng.randint(0, 12)))
        if rng.random() < 0.2:
            text += rng.choice(others)
        lowered = unicodedata.normalize("NFKC", text).lower()
        expected = fold_latin("".join(_T2S.get(ord(c), c) for c in lowered))
        assert Tokenizer.normalise(text) == " ".join(expected.split()), text
