"""Data-subject erasure: ``fieldwise forget <email or CRM id>``.

A person is removed from every table that can hold them: the lead, contact and user rows that are
them, the notes and activities attached to those records, notes anywhere that quote their email
address, and every side table keyed by their record ids (write ledger, audit log, score ledger).
Old table versions are then purged so nothing survives on disk or in the full-text and vector
indexes. The erasure is logged by a hash of the subject, and the same hashes keep the person's
records from being synced back in while they still exist in the CRM.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from core.services import Services
from core.store import PERSON_LINKS

log = logging.getLogger(__name__)


@dataclass
class ErasureReport:
    """What one erasure removed from one tenant."""

    tenant_id: str
    removed: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Rows removed in all."""
        return sum(self.removed.values())


def forget(
    services: Services, subject: str, tenant_ids: list[str] | None = None
) -> list[ErasureReport]:
    """Erase a person (by email address or CRM id) from the given tenants, or from all of them.

    Raises:
        ValueError: the subject is empty.
    """
    subject = subject.strip()
    if not subject:
        raise ValueError("name the person to forget by email address or CRM id")
    targets = tenant_ids or [t.tenant_id for t in services.registry.all()]
    reports = []
    for tenant_id in targets:
        store = services.store
        removed: Counter[str] = Counter()
        people = store.find_person(tenant_id, subject)
        for entity, crm_ids in people.items():
            removed[entity] += store.delete(tenant_id, entity, crm_ids)
            for child in ("note", "activity"):
                for link in PERSON_LINKS:
                    removed[child] += store.delete_where(tenant_id, child, link, crm_ids)
            removed["history"] += store.erase_record_history(tenant_id, crm_ids)
            store.suppress_ids(tenant_id, crm_ids)
        if "@" in subject:
            removed["note"] += store.delete_containing(tenant_id, "note", "body", subject)
            removed["activity"] += store.delete_containing(tenant_id, "activity", "body", subject)
        store.record_erasure(tenant_id, subject, dict(removed))
        reports.append(ErasureReport(tenant_id, {k: v for k, v in removed.items() if v}))
        log.info("erasure in %s removed %d rows", tenant_id, sum(removed.values()))
    services.store.purge_history()
    return reports
