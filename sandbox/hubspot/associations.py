"""HubSpot's built-in association types between the object types the sandbox serves.

Association types are directional: contact-to-company (279) has company-to-contact (280) as its
reverse. The ids are HubSpot's ``HUBSPOT_DEFINED`` ones from the associations v4 docs table; v3
responses name them (``contact_to_company``) instead of numbering them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AssociationType:
    """One direction of a HubSpot-defined association."""

    type_id: int
    from_type: str
    to_type: str
    reverse_id: int
    label: str | None
    """The v4 label; None for the unlabeled default, ``"Primary"`` for primary company."""
    v3_name: str


_SINGULAR = {
    "contacts": "contact",
    "companies": "company",
    "deals": "deal",
    "notes": "note",
    "calls": "call",
    "emails": "email",
    "meetings": "meeting",
    "tasks": "task",
}

# (from, to, id, reverse id, label): each pair is listed once and its reverse derived.
_PAIRS: list[tuple[str, str, int, int, str | None]] = [
    ("contacts", "companies", 279, 280, None),
    ("contacts", "companies", 1, 2, "Primary"),
    ("deals", "contacts", 3, 4, None),
    ("deals", "companies", 341, 342, None),
    ("deals", "companies", 5, 6, "Primary"),
    ("notes", "contacts", 202, 201, None),
    ("notes", "companies", 190, 189, None),
    ("notes", "deals", 214, 213, None),
    ("calls", "contacts", 194, 193, None),
    ("calls", "companies", 182, 181, None),
    ("calls", "deals", 206, 205, None),
    ("emails", "contacts", 198, 197, None),
    ("emails", "companies", 186, 185, None),
    ("emails", "deals", 210, 209, None),
    ("meetings", "contacts", 200, 199, None),
    ("meetings", "companies", 188, 187, None),
    ("meetings", "deals", 212, 211, None),
    ("tasks", "contacts", 204, 203, None),
    ("tasks", "companies", 192, 191, None),
    ("tasks", "deals", 216, 215, None),
]


def _v3_name(from_type: str, to_type: str, type_id: int, label: str | None) -> str:
    base = f"{_SINGULAR[from_type]}_to_{_SINGULAR[to_type]}"
    if {from_type, to_type} == {"contacts", "companies"} or {from_type, to_type} == {
        "deals",
        "companies",
    }:
        return base if label else f"{base}_unlabeled"
    return base


TYPES: dict[int, AssociationType] = {}
for _from, _to, _id, _rev, _label in _PAIRS:
    TYPES[_id] = AssociationType(_id, _from, _to, _rev, _label, _v3_name(_from, _to, _id, _label))
    TYPES[_rev] = AssociationType(_rev, _to, _from, _id, _label, _v3_name(_to, _from, _rev, _label))


def default_type(from_type: str, to_type: str) -> AssociationType | None:
    """The unlabeled association type from one object type to another, if they can associate."""
    for assoc in TYPES.values():
        if assoc.from_type == from_type and assoc.to_type == to_type and assoc.label is None:
            return assoc
    return None


def by_v3_name(from_type: str, to_type: str, name: str) -> AssociationType | None:
    """The association type a v3 request names (``contact_to_company``), in that direction."""
    for assoc in TYPES.values():
        if assoc.from_type == from_type and assoc.to_type == to_type and assoc.v3_name == name:
            return assoc
    return None
