"""A local HubSpot portal that speaks HubSpot's wire formats for ``hubspot-api-client``.

``HubSpotSandbox`` serves OAuth, CRM v3 objects (basic, batch, search, merge), associations v3/v4,
properties, owners, the webhooks v3 API with signed batched delivery, rate limits, and a plain
record page that embeds the Fieldwise card.
"""

from __future__ import annotations

from sandbox.hubspot.server import HubSpotSandbox

__all__ = ["HubSpotSandbox"]
