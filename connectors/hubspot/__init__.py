"""The HubSpot connector: OAuth, CRM reads and write-back, and install provisioning for one portal.

``client.HubSpotConnector`` is what :func:`connectors.base.connector_for` builds; ``auth`` serves the
install handlers; ``streams``, ``mappers``, ``errors`` and ``provision`` each do one job for it.
"""

from __future__ import annotations
