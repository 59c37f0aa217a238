"""Alert rules evaluated inside the server on committed events.

``rules`` checks and converts the wire form of a rule, ``rulebook`` keeps every
account's rules, ``alerting`` evaluates them as a durable consumer of the log and
writes firings and resolutions as ``alert.*`` events, ``webhooks`` delivers those
events to the rules' URLs (another durable consumer), ``service`` is the
``AlertService`` of the API.
"""

from .alerting import Alerting
from .model import ALERT_FLOW, FiringAlert, GroupBy, Kind, Rule
from .rulebook import MAX_RULES_PER_ACCOUNT, RuleBook, RuleBookError, TooManyRulesError
from .webhooks import WebhookPolicy, WebhookPolicyError, Webhooks

__all__ = [
    "ALERT_FLOW",
    "MAX_RULES_PER_ACCOUNT",
    "Alerting",
    "FiringAlert",
    "GroupBy",
    "Kind",
    "Rule",
    "RuleBook",
    "RuleBookError",
    "TooManyRulesError",
    "WebhookPolicy",
    "WebhookPolicyError",
    "Webhooks",
]
