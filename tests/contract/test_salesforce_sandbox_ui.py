"""Contract: the record pages list and show records, escape values and embed the widget."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
pytest_plugins = ["salesforce_fixtures"]


def test_record_page_escapes_values_and_embeds_the_widget(sf_api):
    sf_api.post(
        "tooling/sobjects/CustomField/",
        {
            "FullName": "Lead.AI_Reason__c",
            "Metadata": {"label": "AI Reason", "type": "Text", "length": 255},
        },
    )
    lead_id = sf_api.create(
        "Lead",
        LastName="<script>alert(1)</script>",
        Company="A&B",
        AI_Reason__c="score <b>high</b>",
    )
    page = sf_api.http.get(sf_api.url(f"/ui/Lead/{lead_id}"))
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "score &lt;b&gt;high&lt;/b&gt;" in page.text and "A&amp;B" in page.text
    assert "AI_Reason__c" in page.text
    assert f"src='/ui/Lead/{lead_id}/fieldwise'" in page.text


def test_record_list_links_to_record_pages(sf_api):
    lead_id = sf_api.create("Lead", LastName="Listed", Company="C")
    page = sf_api.http.get(sf_api.url("/ui/Lead"))
    assert page.status_code == 200 and f"href='/ui/Lead/{lead_id}'" in page.text


def test_unknown_record_page_is_404(sf_api):
    assert sf_api.http.get(sf_api.url("/ui/Lead/00Q000000000000AAA")).status_code == 404
    assert sf_api.http.get(sf_api.url("/ui/Nope/1")).status_code == 404
