"""Retrieval facets, tenant isolation, citations and competitor intel ingestion."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from copilot.competitors import CompetitorMatcher, merge_competitors, opportunities_with_competitor
from copilot.intel import IntelError, add_intel, chunk_text, doc_id_for, list_intel, read_chunks
from copilot.retrieval import FacetError, resolve_ref, retrieve
from copilot.settings import load_settings, save_settings
from core.cli import main
from core.config import Config
from core.services import configure
from core.tenants import Tenant
from sandbox.canonical import load_history_into_store
from sandbox.history import generate

ACME, GLOBEX = "acme", "globex"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    services = configure(
        Config.for_demo(lancedb_uri=str(tmp_path_factory.mktemp("retrieval") / "db"))
    )
    services.queue.pause()  # refresh jobs queued by intel add are checked, not run
    history = generate(seed=7, n_leads=600)
    loader = services.store  # the embedder keeps vectors by text: the second load is cheap
    for tenant_id, org in ((ACME, "00DACME"), (GLOBEX, "00DGLOBEX")):
        services.registry.save(Tenant(tenant_id, "salesforce", org, None, status="active"))
        load_history_into_store(loader, history, tenant_id)
        save_settings(services.registry, tenant_id, {"competitors": history.competitors})
    # A note only Acme has, on one of its closed-lost Vantora deals.
    lost = next(
        o
        for o in history.opportunities
        if o.is_closed and not o.is_won and "Vantora" in o.competitors
    )
    services.store.upsert(
        ACME,
        "note",
        [
            {
                "tenant_id": ACME,
                "crm": "salesforce",
                "crm_id": "note-acme-only",
                "updated_at": datetime(2026, 10, 30, tzinfo=UTC),
                "created_at": datetime(2026, 10, 30, tzinfo=UTC),
                "title": "Loss debrief",
                "body": "Vantora undercut us with a zanzibar escrow clause and free onboarding.",
                "opportunity_id": lost.key,
            }
        ],
    )
    yield services, history, lost
    stop = getattr(services.queue, "stop", None)
    if stop is not None:
        stop()


def _deals(history, *, outcome=None, competitor=None, stage=None):
    chosen = set()
    for o in history.opportunities:
        result = "open" if not o.is_closed else ("won" if o.is_won else "lost")
        if outcome and result != outcome:
            continue
        if competitor and competitor not in o.competitors:
            continue
        if stage and o.stage != stage:
            continue
        chosen.add(o.key)
    return chosen


def test_competitor_and_outcome_facets_return_only_those_deals_evidence(world):
    services, history, _ = world
    expected = _deals(history, outcome="lost", competitor="Vantora")
    found = retrieve(
        services.store,
        ACME,
        "why did we lose on price",
        facets={"competitor": "Vantora", "outcome": "lost"},
        kinds=("note", "activity"),
    )
    assert len(found) == 12
    assert {e.facets["opportunity_id"] for e in found} <= expected
    assert all(e.facets["outcome"] == "lost" and "Vantora" in e.facets["competitor"] for e in found)
    assert {e.kind for e in found} <= {"note", "activity"}


def test_stage_and_account_facets_narrow_to_matching_records(world):
    services, history, _ = world
    won = retrieve(services.store, ACME, "champion pilot", facets={"stage": "closed won"})
    assert won and {e.facets["opportunity_id"] for e in won} <= _deals(history, outcome="won")
    account = history.opportunities[0].account_key
    deals_of_account = {o.key for o in history.opportunities if o.account_key == account}
    hits = retrieve(services.store, ACME, "call summary", facets={"account_ids": [account]})
    assert hits
    for e in hits:
        assert e.facets.get("opportunity_id") in deals_of_account or (
            e.facets.get("account_id") == account
        )


def test_a_facet_matching_nothing_returns_nothing(world):
    services, *_ = world
    assert retrieve(services.store, ACME, "price", facets={"opportunity_ids": ["opp-none"]}) == []


def test_results_stay_within_the_tenant(world):
    services, *_ = world
    query = "zanzibar escrow clause"
    acme = retrieve(services.store, ACME, query, facets={"competitor": "Vantora"})
    globex = retrieve(services.store, GLOBEX, query, facets={"competitor": "Vantora"})
    assert acme[0].ref == "note:note-acme-only"
    assert "note:note-acme-only" not in {e.ref for e in globex}
    for item in globex:
        record = resolve_ref(services.store, GLOBEX, item.ref)
        assert record is not None and record["tenant_id"] == GLOBEX


def test_resolve_ref_finds_records_of_the_same_tenant_only(world):
    services, _, lost = world
    assert resolve_ref(services.store, ACME, "note:note-acme-only")["tenant_id"] == ACME
    assert resolve_ref(services.store, GLOBEX, "note:note-acme-only") is None
    assert resolve_ref(services.store, GLOBEX, f"opportunity:{lost.key}")["tenant_id"] == GLOBEX
    assert resolve_ref(services.store, ACME, "account:acct-missing") is None
    assert "vector" not in resolve_ref(services.store, ACME, "note:note-acme-only")
    for bad in ("note-acme-only", "memo:1", "intel:xyz", 42):
        with pytest.raises(ValueError):
            resolve_ref(services.store, ACME, bad)


def test_unknown_facets_and_values_are_refused(world):
    services, *_ = world
    with pytest.raises(FacetError, match="unknown facet 'colour'"):
        retrieve(services.store, ACME, "x", facets={"colour": "red"})
    with pytest.raises(FacetError, match="outcome"):
        retrieve(services.store, ACME, "x", facets={"outcome": "maybe"})
    with pytest.raises(FacetError, match="opportunity_ids"):
        retrieve(services.store, ACME, "x", facets={"opportunity_ids": "opp-1"})
    with pytest.raises(FacetError, match="kind"):
        retrieve(services.store, ACME, "x", kinds=("email",))


def test_matcher_finds_aliases_as_whole_words_and_short_codes_only_in_capitals():
    matcher = CompetitorMatcher({"Vantora": ("Vantora CRM", "VTR"), "Quillmark": ("Quill",)})
    assert matcher.find("They chose vantora crm over us; Quill was second.") == [
        "Vantora",
        "Quillmark",
    ]
    assert matcher.find("VTR came in cheaper") == ["Vantora"]
    assert matcher.find("the vtr cable and Quillfeather pens") == []
    assert merge_competitors({"Vantora": ["VTR"]}, ["vantora", "Zephyr"]) == {
        "Vantora": ("Vantora", "VTR"),
        "Zephyr": ("Zephyr",),
    }


def test_opportunities_with_competitor_lists_open_deals_on_record_or_in_notes(world):
    services, history, _ = world
    on_record = {
        o.key for o in history.opportunities if not o.is_closed and "Vantora" in o.competitors
    }
    found = opportunities_with_competitor(
        services.store, ACME, "Vantora", aliases=history.competitors["Vantora"]
    )
    assert on_record <= set(found)
    closed = {o.key for o in history.opportunities if o.is_closed}
    assert not set(found) & closed


# --------------------------------------------------------------------------------------------------
# Intel


def _minimal_pdf(text: str) -> bytes:
    """A one-page PDF with a text layer, written by hand (offsets computed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)


def test_chunking_follows_headings_and_caps_chunk_size():
    text = "# Overview\nVantora sells to mid-market.\n\n## Pricing\n" + "Seats cost money. " * 120
    chunks = chunk_text(text)
    assert chunks[0] == ("Overview", "Vantora sells to mid-market.")
    assert {title for title, _ in chunks[1:]} == {"Pricing"}
    assert all(len(body) <= 800 for _, body in chunks)


def test_intel_add_stores_markdown_text_and_pdf_and_replaces_a_readded_file(world, tmp_path):
    services, history, _ = world
    md = tmp_path / "vantora.md"
    md.write_text(
        "# Vantora at a glance\nVantora CRM targets mid-market sales teams.\n\n"
        "## Pricing\nList price is $95 per seat per month; they discount 30% in the first year.\n"
    )
    txt = tmp_path / "field-notes.txt"
    txt.write_text("Vantora implementation is free but change requests are billed hourly.\n")
    pdf = tmp_path / "brief.pdf"
    pdf.write_bytes(_minimal_pdf("Vantora data residency is US only"))

    added = add_intel(services, GLOBEX, "vantora", [md, txt, pdf])
    assert added.competitor == "Vantora" and not added.new_competitor
    assert [d.chunks for d in added.documents] == [2, 1, 1]
    assert added.refresh_opportunity_ids == opportunities_with_competitor(
        services.store, GLOBEX, "Vantora", aliases=history.competitors["Vantora"]
    )
    assert added.refresh_opportunity_ids and added.refresh_enqueued
    docs = {d["source"]: d for d in list_intel(services.store, GLOBEX)}
    assert set(docs) == {"vantora.md", "field-notes.txt", "brief.pdf"}
    pdf_chunk = read_chunks(services.store, GLOBEX, competitor="Vantora")
    assert any("data residency is US only" in c["text"] for c in pdf_chunk)

    hits = retrieve(
        services.store, GLOBEX, "pricing per seat discount", facets={"competitor": "Vantora"},
        kinds=("intel",),
    )  # fmt: skip
    assert hits[0].text.startswith("Pricing: List price is $95")
    assert resolve_ref(services.store, GLOBEX, hits[0].ref)["doc_id"] == doc_id_for(
        "Vantora", md.name
    )
    assert resolve_ref(services.store, ACME, hits[0].ref) is None

    md.write_text("# Vantora\nVantora raised prices in 2026.\n")
    again = add_intel(services, GLOBEX, "Vantora", [md])
    assert again.documents[0].replaced and again.documents[0].chunks == 1
    texts = [c["text"] for c in read_chunks(services.store, GLOBEX, competitor="Vantora")]
    assert "Vantora raised prices in 2026." in texts
    assert not any("$95 per seat" in t for t in texts)
    assert len(list_intel(services.store, GLOBEX)) == 3


def test_intel_add_accepts_a_new_competitor_and_adds_it_to_settings(world, tmp_path):
    services, *_ = world
    doc = tmp_path / "zephyr.txt"
    doc.write_text("Zephyr AI is a new entrant with usage-based pricing.")
    added = add_intel(services, GLOBEX, "  Zephyr   AI ", [doc])
    assert added.new_competitor and added.competitor == "Zephyr AI"
    assert added.refresh_opportunity_ids == []
    assert "Zephyr AI" in load_settings(services.registry, GLOBEX).competitors
    assert not add_intel(services, GLOBEX, "zephyr ai", [doc]).new_competitor


def test_intel_add_bad_input_is_refused_and_changes_nothing(world, tmp_path):
    services, *_ = world
    good = tmp_path / "ok.md"
    good.write_text("Pipewell is strong in EMEA.")
    empty = tmp_path / "empty.md"
    empty.write_bytes(b"")
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\x00\x01\x02\xff" * 50)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    docx = tmp_path / "brief.docx"
    docx.write_bytes(b"PK\x03\x04")
    no_text = tmp_path / "scan.pdf"
    no_text.write_bytes(_minimal_pdf("").replace(b"() Tj", b""))
    fake_pdf = tmp_path / "fake.pdf"
    fake_pdf.write_text("not really a pdf")
    before = list_intel(services.store, ACME)
    settings_before = load_settings(services.registry, ACME)
    cases = [
        (ACME, "Pipewell", [good, tmp_path / "missing.md"], "no such file"),
        (ACME, "Pipewell", [good, empty], "empty"),
        (ACME, "Pipewell", [good, binary], "binary"),
        (ACME, "Pipewell", [good, latin], "not UTF-8"),
        (ACME, "Pipewell", [good, docx], "unsupported file type"),
        (ACME, "Pipewell", [good, no_text], "no text"),
        (ACME, "Pipewell", [good, fake_pdf], "not a PDF"),
        (ACME, "Pipewell", [], "no files"),
        (ACME, "   ", [good], "must not be empty"),
        (ACME, "Brand new", [good, empty], "empty"),
        ("nobody", "Pipewell", [good], "no tenant"),
    ]
    for tenant_id, competitor, paths, reason in cases:
        with pytest.raises(IntelError, match=reason):
            add_intel(services, tenant_id, competitor, paths)
    assert list_intel(services.store, ACME) == before
    assert load_settings(services.registry, ACME) == settings_before


def test_cli_intel_add_and_list(tmp_path):
    env = {
        "FIELDWISE_LANCEDB_URI": str(tmp_path / "db"),
        "FIELDWISE_SECRET_KEY": "s" * 40,
    }
    config = Config.for_demo(lancedb_uri=env["FIELDWISE_LANCEDB_URI"])
    env["FIELDWISE_ENCRYPTION_KEY"] = config.encryption_key.reveal()
    services = configure(config)
    services.queue.pause()
    tenant = Tenant("cli-tenant", "hubspot", "123", None, status="active")
    services.registry.save(replace(tenant))
    doc = tmp_path / "corvex.md"
    doc.write_text("# Corvex\nCorvex bundles a dialer.")
    runner = CliRunner()
    added = runner.invoke(main, ["intel", "add", "Corvex", str(doc)], env=env)
    assert added.exit_code == 0, added.output
    assert '"competitor": "Corvex"' in added.output and '"chunks": 1' in added.output
    listed = runner.invoke(main, ["intel", "list"], env=env)
    assert listed.exit_code == 0 and "corvex.md" in listed.output
    missing = runner.invoke(main, ["intel", "add", "Corvex", str(tmp_path / "nope.md")], env=env)
    assert missing.exit_code == 1 and "no such file" in missing.output
