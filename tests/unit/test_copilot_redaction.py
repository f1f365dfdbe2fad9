"""Personal data never reaches the model: redaction, restoration and the wire itself."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fake_anthropic import FakeAnthropic, evidence_blocks, placeholders_seen, tool_answer
from marshmallow import RAISE, Schema, fields

from copilot.llm import Copilot, Evidence, Task, copilot_for
from copilot.redaction import NameCache, NameIndex, Redactor, people_names
from core.config import Config, Secret
from core.services import Services, configure
from core.tenants import Tenant

TENANT = "hubspot-4455"
OTHER_TENANT = "hubspot-9988"
NOW = datetime(2026, 10, 1, tzinfo=UTC)

PEOPLE = {
    "lead": [("L1", "Margarethe", "Quistorp", "m.quistorp@brightline.io", "+49 30 1234 5678")],
    "contact": [("C1", "Dariusz", "Wolanski", "dwolanski@harbor-freight.example", "415-555-0142")],
    "user": [
        ("U1", "Priya", "Raghunathan", "priya.r@fieldwise-customer.example", "(212) 555-0199")
    ],
}
ACCOUNT_NUMBER = "ACCT-77120934"
RECORD_ID = "0035e00000QxYzAAB"
PROFILE_URL = "https://www.linkedin.com/in/margarethe-quistorp-1a2b3c"


def person_record(
    entity: str, crm_id: str, first: str, last: str, email: str, phone: str
) -> dict[str, Any]:
    return {
        "tenant_id": TENANT,
        "crm": "hubspot",
        "crm_id": crm_id,
        "updated_at": NOW,
        "first_name": first,
        "last_name": last,
        "email": email,
        "phone": phone,
    }


class EchoSchema(Schema):
    class Meta:
        unknown = RAISE

    summary = fields.String(required=True)
    quotes = fields.List(fields.Dict(), required=True)


ECHO_TASK = Task(
    name="forecast_note",
    instructions="Summarise the deal's risks.",
    output_schema={
        "type": "object",
        "additionalProperties": False,
        "required": ["summary", "quotes"],
        "properties": {
            "summary": {"type": "string"},
            "quotes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["text", "cites"],
                    "properties": {
                        "text": {"type": "string"},
                        "cites": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    },
    validator=EchoSchema(),
)


@pytest.fixture
def tenant_with_people(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> Iterator[tuple[Services, Copilot]]:
    config = Config.for_demo(
        lancedb_uri=str(tmp_path / "lancedb"),
        anthropic_api_key=Secret("sk-ant-test-0123456789abcdef"),
        anthropic_base_url=fake_anthropic.url,
        llm_timeout_s=5.0,
    )
    services = configure(config)
    services.registry.save(Tenant(TENANT, "hubspot", "4455", None, status="active"))
    for entity, people in PEOPLE.items():
        services.store.upsert(TENANT, entity, [person_record(entity, *p) for p in people])
    yield services, copilot_for(services)
    stop = getattr(services.queue, "stop", None)
    if stop is not None:
        stop()


def every_secret() -> list[str]:
    found = [ACCOUNT_NUMBER, RECORD_ID, PROFILE_URL, "linkedin.com/in"]
    for people in PEOPLE.values():
        for _, first, last, email, phone in people:
            found += [first, last, email, phone, email.split("@")[0]]
    return found


def test_no_personal_data_from_the_store_reaches_the_model_and_the_answer_is_restored(
    tenant_with_people: tuple[Services, Copilot], fake_anthropic: FakeAnthropic
) -> None:
    _, copilot = tenant_with_people
    evidence = [
        Evidence(
            "note:N1",
            "note",
            "2026-09-20",
            "Call with Margarethe Quistorp (m.quistorp@brightline.io, +49 30 1234 5678): "
            f"budget approved, PO against account {ACCOUNT_NUMBER}. Her profile: {PROFILE_URL}",
        ),
        Evidence(
            "activity:A1",
            "activity",
            "2026-09-25",
            "Dariusz Wolanski asked Priya to resend the MSA; call him on 415-555-0142. "
            f"Contact record {RECORD_ID}. Quistorp is the signer.",
            facets={"owner": "Priya Raghunathan"},
        ),
    ]
    facts = {
        "owner": "Priya Raghunathan",
        "owner_email": "priya.r@fieldwise-customer.example",
        "champion": {"name": "Dariusz Wolanski", "phones": ["(212) 555-0199"]},
        "amount": 84000,
        "stage": "Negotiation",
    }

    def echo(request: dict[str, Any]) -> dict[str, Any]:
        seen = placeholders_seen(request)
        quotes = [{"text": text, "cites": [ref]} for ref, text in evidence_blocks(request)]
        return {"summary": " | ".join(seen), "quotes": quotes}

    fake_anthropic.respond = tool_answer(echo)

    generated = copilot.generate(TENANT, ECHO_TASK, evidence, facts=facts, offline=dict)

    wire = json.dumps([r.body for r in fake_anthropic.requests], ensure_ascii=False)
    leaked = [secret for secret in every_secret() if secret.lower() in wire.lower()]
    assert leaked == []
    assert "Negotiation" in wire and "84000" in wire and "2026-09-20" in wire
    # Every placeholder the fake echoed came back as the original text.
    summary = generated.data["summary"]
    assert "[" not in summary
    for original in (
        "Margarethe Quistorp",
        "m.quistorp@brightline.io",
        "+49 30 1234 5678",
        ACCOUNT_NUMBER,
        PROFILE_URL,
        "Dariusz Wolanski",
        "415-555-0142",
        RECORD_ID,
        "Quistorp",
        "Priya Raghunathan",
        "priya.r@fieldwise-customer.example",
        "(212) 555-0199",
    ):
        assert original in summary
    assert [q["text"] for q in generated.data["quotes"]] == [e.text for e in evidence]


def test_people_names_come_from_leads_contacts_and_users_of_that_tenant_only(
    tenant_with_people: tuple[Services, Copilot],
) -> None:
    services, _ = tenant_with_people
    services.store.upsert(
        OTHER_TENANT,
        "lead",
        [
            {
                "tenant_id": OTHER_TENANT,
                "crm": "hubspot",
                "crm_id": "X1",
                "updated_at": NOW,
                "first_name": "Zebulon",
                "last_name": "Ferncastle",
            }
        ],
    )

    index = people_names(services.store, TENANT)

    assert {"margarethe", "quistorp", "dariusz", "wolanski", "priya", "raghunathan"} <= index.parts
    assert "zebulon" not in index.parts
    assert "priya raghunathan" in index.full_names


def test_the_name_cache_reuses_an_index_until_it_is_stale(
    tenant_with_people: tuple[Services, Copilot],
) -> None:
    services, _ = tenant_with_people
    clock = [1000.0]
    cache = NameCache(services.store, ttl_s=60, clock=lambda: clock[0])
    first = cache.get(TENANT)
    services.store.upsert(
        TENANT, "lead", [person_record("lead", "L2", "Ottoline", "Bramwell", "o@b.example", "")]
    )

    assert cache.get(TENANT) is first
    clock[0] += 61
    assert "ottoline" in cache.get(TENANT).parts


def redactor() -> Redactor:
    return Redactor(NameIndex.from_people([("Jane", "Doe"), ("Will", "Price"), ("José", "Müller")]))


def test_names_become_stable_placeholders_and_full_names_one_placeholder() -> None:
    r = redactor()

    text = r.redact("Jane Doe met José Müller. Later Jane and JOSÉ spoke; Jane Doe agreed.")

    assert text == (
        "[PERSON_1] met [PERSON_2]. Later [PERSON_3] and [PERSON_4] spoke; [PERSON_1] agreed."
    )
    assert r.placeholders["[PERSON_1]"] == "Jane Doe"
    assert (
        r.restore(text) == "Jane Doe met José Müller. Later Jane and JOSÉ spoke; Jane Doe agreed."
    )


def test_lowercase_words_and_unknown_names_are_left_alone() -> None:
    assert redactor().redact("we will price it for Acme; Oracle lost") == (
        "we will price it for Acme; Oracle lost"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail a.b-c+tag@sub.example.co.uk now", "mail [EMAIL_1] now"),
        ("call +1 (415) 555-0100.", "call [PHONE_1]."),
        ("call 020 7946 0958 today", "call [PHONE_1] today"),
        ("ref 123456789 and SF id 0015e00000AbCdE", "ref [ID_1] and SF id [ID_2]"),
        ("invoice INV-20260931 sent", "invoice [ID_1] sent"),
        ("see https://docs.example.com/u/jdoe/cv.pdf", "see [URL_1]"),
        ("site www.acme.com and https://acme.com/", "site www.acme.com and https://acme.com/"),
        (
            "closes 2026-10-01T09:30 for $120,000 in Q3",
            "closes 2026-10-01T09:30 for $120,000 in Q3",
        ),
    ],
)
def test_emails_phones_identifiers_and_personal_urls_are_replaced(text: str, expected: str) -> None:
    assert Redactor().redact(text) == expected


def test_restore_reaches_every_string_of_nested_output_and_leaves_unknown_placeholders() -> None:
    r = redactor()
    r.redact("Jane at jane@x.example")

    restored = r.restore(
        {"a": ["[PERSON_1] wrote", {"b": "to [EMAIL_1]"}], "n": 3, "odd": "[PERSON_9]"}
    )

    assert restored == {
        "a": ["Jane wrote", {"b": "to jane@x.example"}],
        "n": 3,
        "odd": "[PERSON_9]",
    }


def test_redacting_stays_fast_with_a_hundred_thousand_people() -> None:
    people = [(f"First{n:05d}x", f"Last{n:05d}y") for n in range(100_000)]
    people += [("Jane", "Doe")]
    started = time.perf_counter()
    index = NameIndex.from_people(people)
    built_s = time.perf_counter() - started
    note = "Spoke with Jane Doe about the rollout; Jane will loop in legal. " * 40

    started = time.perf_counter()
    redacted = Redactor(index).redact(note)
    redact_s = time.perf_counter() - started

    assert "Jane" not in redacted and "Doe" not in redacted
    assert built_s < 2.0
    assert redact_s < 0.1
