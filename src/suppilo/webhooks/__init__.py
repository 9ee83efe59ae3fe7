"""Outbound webhooks: signed, SSRF-safe delivery (``client.deliver``) and the receiver's check (``signing``)."""

from suppilo.webhooks.client import MAX_ATTEMPTS, WebhookResult, deliver, retry_delay
from suppilo.webhooks.signing import verify_signature

__all__ = ["MAX_ATTEMPTS", "WebhookResult", "deliver", "retry_delay", "verify_signature"]
