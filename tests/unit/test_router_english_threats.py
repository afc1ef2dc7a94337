"""English threats and safety reports with the shipped rules (docs/routing-rules.md,
"English threats"): outside parties with an intent or an act, harm to a person or a pet.
The look-alikes that must stay low (slang, things, denials, a job) are in
test_router_classify_general.py. The messages are written for the tests, not taken from an
evaluation set."""

from __future__ import annotations

import pytest

from services.router.domain import Decision, DecisionInput, decide
from shared.events import Priority, Tier


def d(text: str) -> Decision:
    return decide(DecisionInput(text))


@pytest.mark.parametrize(
    ("text", "signal"),
    [
        # an authority, named or as a consumer body, or the police with an intent or an act
        ("I'm filing a complaint with the Better Business Bureau.", "threat_regulator"),
        ("Final warning: sort it or I'm going to Trading Standards", "threat_regulator"),
        ("Do I need to get the ombudsman involved?", "threat_regulator"),
        ("Consumer Council will be hearing about this", "threat_regulator"),
        ("My husband says you are breaking consumer law.", "threat_regulator"),
        ("I've reported this to the police as fraud.", "threat_regulator"),
        ("refund me or I call the cops", "threat_regulator"),
        # a lawyer or a court
        ("You'll be hearing from my solicitor.", "threat_legal"),
        ("I'm taking you to the small claims court.", "threat_legal"),
        ("Don't make me involve a lawyer", "threat_legal"),
        ("Consider this a formal complaint; next step is the county court.", "threat_legal"),
        ("wont refund? fine, see you in court", "threat_legal"),
        ("We will take legal action", "threat_legal"),
        # the press, or a site with what one does to put it there
        ("Going straight to the press with this.", "threat_media"),
        ("I'll be writing to the newspaper", "threat_media"),
        ("I will be leaving reviews on Facebook and Trustpilot.", "threat_media"),
        ("Going to warn everyone in my neighbourhood Facebook group", "threat_media"),
        ("ima post this on tiktok so everyone knows", "threat_media"),
        ("I will name and shame you", "threat_media"),
        # the bank or the card, the selling marketplace
        ("I'll be speaking to my bank tomorrow about reversing this payment.", "chargeback"),
        ("I have contacted my credit card provider.", "chargeback"),
        ("I'll raise a dispute with Visa.", "chargeback"),
        ("Opening a case with eBay is my next step if there's no refund.", "threat_platform"),
        ("I'm reporting this listing to Etsy", "threat_platform"),
        # harm to a person or a pet, or a near miss
        ("The hairdryer burst into flames in my hand", "safety"),
        ("The charger sparked and melted the socket", "safety"),
        ("The heater started smoking and tripped the fuse", "safety"),
        ("The electric blanket scorched my leg", "safety"),
        ("The kettle gave me an electric shock", "safety"),
        ("My son got a nasty burn from the straighteners", "safety"),
        ("The glass lid shattered and cut my daughter's arm", "safety"),
        ("The step stool gave way and I broke my wrist", "safety"),
        ("My baby choked on a piece that broke off the rattle", "safety"),
        ("my 2 year old had the battery from the remote in his mouth", "safety"),
        ("We all got food poisoning from the frozen prawns", "safety"),
        ("My cat has been vomiting since eating the new food", "safety"),
        ("My face is swollen after using your serum", "safety"),
        ("The gas hob smells of gas and my kids are scared", "safety"),
        ("we spent the night in A&E", "safety"),
        ("The adapter smells of burning and the plug went black", "safety"),
        # a video promised, a site with "put", a fall, a chargeback named with an intent or
        # an act (second round)
        ("I'll make a YouTube video about how you treat customers", "threat_media"),
        ("Recording a TikTok story about this shop tonight", "threat_media"),
        ("Gonna put this on Facebook unless you refund me today", "threat_media"),
        ("The walking frame's wheel came off and my grandad fell", "safety"),
        ("The shelf bracket gave way and the shelf fell on my foot", "safety"),
        ("Filing a chargeback today.", "chargeback"),
        ("I want a chargeback, this is theft", "chargeback"),
        ("I'll open another PayPal dispute if this isn't fixed", "chargeback"),
        # third round: more marketplaces, payment parties, sites, authorities, arbitration and
        # one's own legal team, a medicine taken with a symptom, breathing cut off
        (
            "I'll be reporting your shop to Mercado Libre if the refund doesn't arrive today",
            "threat_platform",
        ),
        ("Refund me or I'm disputing it with Affirm", "chargeback"),
        ("Unless this is fixed I'll take it to arbitration", "threat_legal"),
        ("Our in-house legal team will be in touch unless a credit note is issued", "threat_legal"),
        ("I'm sending the details to the health department", "threat_regulator"),
        ("I will raise a complaint with the Ministry of Commerce", "threat_regulator"),
        ("Otherwise I go to Procon tomorrow", "threat_regulator"),
        ("going to post this on my snap story so everyone sees", "threat_media"),
        ("She had been taking the drops for three days and felt dizzy and sick", "safety"),
        ("our cat got tangled in the cord and was gasping", "safety"),
        # fifth round (en_threats3's kinds): consumer bodies in other languages or by acronym,
        # anti-fraud and food standards bodies, tribunals by acronym, standards bureaus,
        # marketplaces of more countries, review sites and newer feeds, a paper by its name
        # or a column, sharing widely
        ("I'll be reporting your site to the CPSC, that crib is a death trap.", "threat_regulator"),
        (
            "Je vais contacter la protection des consommateurs, ok? No refund, no patience.",
            "threat_regulator",
        ),
        (
            "I will go to the defensa del consumidor office if you keep ignoring me",
            "threat_regulator",
        ),
        (
            "I'm reporting the missing allergen warning to the Food Standards Agency.",
            "threat_regulator",
        ),
        ("Taking the kettle to KEBS so they can test it.", "threat_regulator"),
        ("If the money isn't back by Friday I'm lodging a claim with VCAT.", "threat_legal"),
        ("Reported your store to Fnac already.", "threat_platform"),
        ("I'll escalate this to OnBuy customer support then.", "threat_platform"),
        ("I'll be writing this up on Tripadvisor and Feefo tonight.", "threat_media"),
        ("Going to post the whole story on Threads.", "threat_media"),
        ("Starting a thread on Netmums about this shop.", "threat_media"),
        ("My sister writes a column for the Herald, she'll be interested.", "threat_media"),
        ("I'll share the lab results widely.", "threat_media"),
        # a group of buyers told, a bulletin, a following asked; harm to more animals, blood,
        # an infection treated, care at a walk-in centre
        ("Sort this out or I'll be telling all my colleagues to shop elsewhere.", "threat_media"),
        ("Unless you fix it, this goes in the club bulletin next month.", "threat_media"),
        ("Shall I ask my followers if a six week wait is normal?", "threat_media"),
        ("The hamster bedding left both hamsters wheezing, now on antibiotics", "safety"),
        ("Our ferret's paw got infected from the cage wire", "safety"),
        ("The guinea pig chewed the cable and there was blood on the bars", "safety"),
        ("She needed glue on her forehead at the walk-in centre", "safety"),
        ("My son ended up in the emergency department after your trampoline net ripped.", "safety"),
        ("We had to ring poison control after she drank the bubble mixture", "safety"),
        ("I'll be raising this with my local councillor if it isn't fixed.", "threat_regulator"),
        ("I'll charge it back through Visa then", "chargeback"),
        # sixth round: competition and fair-trade regulators, a complaints book, bodies named
        # "X of Y", elected representatives, licensing regulators, prosecutors, acronyms;
        # mediation, legal aid and legal insurance; delivery apps and shop builders; mobile
        # money and card networks; deal forums and group chats; near misses, more animals,
        # body parts and wounds, a toxic substance found
        ("I'm sending the screenshots to the Competition Bureau.", "threat_regulator"),
        ("The Commerce Commission will want to see this advert.", "threat_regulator"),
        ("Fine, it's going in the complaints book then.", "threat_regulator"),
        ("Next stop is the county weights and measures office.", "threat_regulator"),
        ("I'm lodging it with the department of insurance on Monday.", "threat_regulator"),
        ("Should I file with the contractors board instead?", "threat_regulator"),
        ("Service Alberta is getting an email from me tonight.", "threat_regulator"),
        ("My husband filled in the consumer services complaint form.", "threat_regulator"),
        ("I'll be writing to my MEP about this.", "threat_regulator"),
        ("My state senator's office is hearing about this tomorrow.", "threat_regulator"),
        ("I will report that so-called nurse to AHPRA.", "threat_regulator"),
        ("Taking the receipts to the prosecutor on Monday.", "threat_regulator"),
        ("I'm complaining to Ofcom if this happens again.", "threat_regulator"),
        ("We already contacted the privacy commissioner about your emails.", "threat_regulator"),
        ("Next step is a conciliation hearing if you keep stalling.", "threat_legal"),
        ("I've booked an appointment with legal aid for Thursday.", "threat_legal"),
        ("My legal expenses insurance will take this on.", "threat_legal"),
        ("Opening a claim with Deliveroo right now.", "threat_platform"),
        ("I'll report your store to Shopify.", "threat_platform"),
        ("I'll get Safaricom to reverse the M-Pesa payment.", "chargeback"),
        ("No reply again, so I am disputing it now.", "chargeback"),
        ("I'll write it up on OzBargain for everyone.", "threat_media"),
        ("Going to write this up on Rip-off Report tonight.", "threat_media"),
        ("I'll tell our neighbourhood group chat to avoid you.", "threat_media"),
        ("Kassensturz would love a story like this.", "threat_media"),
        ("Keep ignoring me and I'll tell my whole family to boycott you.", "threat_media"),
        ("The ladder slipped and missed my daughter by inches.", "safety"),
        ("The lid flew off on the motorway, nobody hurt by some miracle.", "safety"),
        ("Her collarbone was fractured when the bike stand gave way.", "safety"),
        ("The perch wire left our galah with a cut under her wing", "safety"),
        ("The face cream gave me itchy welts on my cheeks.", "safety"),
        ("Tests found mercury in her urine after months of the cream.", "safety"),
    ],
)
def test_an_english_threat_or_safety_report_is_urgent_and_second_line(
    text: str, signal: str
) -> None:
    dec = d(text)
    assert signal in dec.risk_signals, (text, dec.risk_signals)
    assert dec.priority is Priority.urgent and dec.tier is Tier.L2, text


def test_an_english_profanity_after_a_denial_still_counts() -> None:
    # English denials deny threats and safety reports only
    assert "profanity" in d("I do not have a damn account, can I register?").risk_signals
