"""Classification of customer messages: tokenisation, the rules file, and the classifier."""

from services.router.classify.engine import Classification, Classifier, RiskHit
from services.router.classify.rules import RulesError, RulesFile, load_rules, parse_rules
from services.router.classify.text import Tokenizer, Tokens

__all__ = [
    "Classification",
    "Classifier",
    "RiskHit",
    "RulesError",
    "RulesFile",
    "Tokenizer",
    "Tokens",
    "load_rules",
    "parse_rules",
]
