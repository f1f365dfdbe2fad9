"""Contract: Metadata API SOAP calls and the Tooling API create custom fields that describe shows."""

from __future__ import annotations

import sys
from pathlib import Path
from xml.etree import ElementTree as ET

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
pytest_plugins = ["salesforce_fixtures"]

from sandbox.salesforce import SalesforceSandbox  # noqa: E402

MD = "http://soap.sforce.com/2006/04/metadata"
NS = {"s": "http://schemas.xmlsoap.org/soap/envelope/", "m": MD}


def soap(sf_api, session, operation_xml):
    envelope = (
        '<soap-env:Envelope xmlns:soap-env="http://schemas.xmlsoap.org/soap/envelope/">'
        f'<soap-env:Header><ns0:SessionHeader xmlns:ns0="{MD}"><ns0:sessionId>{session}'
        "</ns0:sessionId></ns0:SessionHeader></soap-env:Header>"
        f"<soap-env:Body>{operation_xml}</soap-env:Body></soap-env:Envelope>"
    )
    return sf_api.http.post(
        sf_api.url("/services/Soap/m/59.0/"),
        data=envelope.encode(),
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'},
    )


def create_field(field_xml):
    return (
        f'<ns0:createMetadata xmlns:ns0="{MD}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f'<ns0:metadata xsi:type="ns0:CustomField">{field_xml}</ns0:metadata></ns0:createMetadata>'
    )


def results(response):
    root = ET.fromstring(response.content)
    return root.findall(".//m:result", NS)


def test_create_metadata_number_field_answers_save_result(sf_api, sf_sandbox):
    response = soap(
        sf_api,
        sf_sandbox.access_token,
        create_field(
            "<ns0:fullName>Lead.AI_Score__c</ns0:fullName><ns0:label>AI Score</ns0:label>"
            "<ns0:precision>5</ns0:precision><ns0:scale>2</ns0:scale><ns0:type>Number</ns0:type>"
        ),
    )
    assert response.status_code == 200
    (result,) = results(response)
    assert result.findtext("m:fullName", namespaces=NS) == "Lead.AI_Score__c"
    assert result.findtext("m:success", namespaces=NS) == "true"
    fields = {f["name"]: f for f in sf_api.get("sobjects/Lead/describe").json()["fields"]}
    score = fields["AI_Score__c"]
    assert (score["type"], score["precision"], score["scale"], score["custom"]) == (
        "double",
        5,
        2,
        True,
    )
    assert score["createable"] and score["updateable"]
    lead_id = sf_api.create("Lead", LastName="S", Company="C", AI_Score__c=87.456)
    assert sf_api.get(f"sobjects/Lead/{lead_id}").json()["AI_Score__c"] == 87.46
    too_big = sf_api.post("sobjects/Lead/", {"LastName": "S", "Company": "C", "AI_Score__c": 1000})
    assert too_big.json()[0]["errorCode"] == "NUMBER_OUTSIDE_VALID_RANGE"


def test_duplicate_field_is_duplicate_developer_name(sf_api, sf_sandbox):
    xml = create_field(
        "<ns0:fullName>Lead.Dup__c</ns0:fullName><ns0:label>Dup</ns0:label>"
        "<ns0:length>10</ns0:length><ns0:type>Text</ns0:type>"
    )
    soap(sf_api, sf_sandbox.access_token, xml)
    (result,) = results(soap(sf_api, sf_sandbox.access_token, xml))
    assert result.findtext("m:success", namespaces=NS) == "false"
    assert result.findtext("m:errors/m:statusCode", namespaces=NS) == "DUPLICATE_DEVELOPER_NAME"


def test_invalid_field_definitions_fail_with_status_codes(sf_api, sf_sandbox):
    def field(full_name, type_name, label="<ns0:label>x</ns0:label>"):
        return f"<ns0:fullName>{full_name}</ns0:fullName>{label}<ns0:type>{type_name}</ns0:type>"

    cases = {
        field("Lead.NoSuffix", "Checkbox"): "FIELD_INTEGRITY_EXCEPTION",
        field("Widget.A__c", "Checkbox"): "INVALID_CROSS_REFERENCE_KEY",
        field("Lead.Long__c", "LongTextArea"): "FIELD_INTEGRITY_EXCEPTION",
        field("Lead.Odd__c", "Hologram"): "FIELD_INTEGRITY_EXCEPTION",
        field("Lead.NoLabel__c", "Checkbox", label=""): "REQUIRED_FIELD_MISSING",
    }
    for xml, code in cases.items():
        (result,) = results(soap(sf_api, sf_sandbox.access_token, create_field(xml)))
        assert result.findtext("m:errors/m:statusCode", namespaces=NS) == code, xml


def test_restricted_picklist_field_shows_values_and_rejects_others(sf_api, sf_sandbox):
    values = "".join(
        f"<ns0:value><ns0:fullName>{g}</ns0:fullName><ns0:default>false"
        f"</ns0:default><ns0:label>{g}</ns0:label></ns0:value>"
        for g in "ABC"
    )
    response = soap(
        sf_api,
        sf_sandbox.access_token,
        create_field(
            "<ns0:fullName>Lead.AI_Grade__c</ns0:fullName><ns0:label>AI Grade</ns0:label>"
            "<ns0:type>Picklist</ns0:type><ns0:valueSet><ns0:restricted>true</ns0:restricted>"
            f"<ns0:valueSetDefinition><ns0:sorted>false</ns0:sorted>{values}"
            "</ns0:valueSetDefinition></ns0:valueSet>"
        ),
    )
    assert results(response)[0].findtext("m:success", namespaces=NS) == "true"
    fields = {f["name"]: f for f in sf_api.get("sobjects/Lead/describe").json()["fields"]}
    grade = fields["AI_Grade__c"]
    assert grade["type"] == "picklist" and grade["restrictedPicklist"] is True
    assert [p["value"] for p in grade["picklistValues"]] == ["A", "B", "C"]
    bad = sf_api.post("sobjects/Lead/", {"LastName": "G", "Company": "C", "AI_Grade__c": "Z"})
    assert bad.json()[0]["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"


def test_read_and_delete_metadata(sf_api, sf_sandbox):
    token = sf_sandbox.access_token
    soap(
        sf_api,
        token,
        create_field(
            "<ns0:fullName>Lead.AI_Reasons__c</ns0:fullName><ns0:label>Reasons</ns0:label>"
            "<ns0:length>32000</ns0:length><ns0:visibleLines>5</ns0:visibleLines>"
            "<ns0:type>LongTextArea</ns0:type>"
        ),
    )
    read = soap(
        sf_api,
        token,
        f'<ns0:readMetadata xmlns:ns0="{MD}"><ns0:type>CustomField'
        "</ns0:type><ns0:fullNames>Lead.AI_Reasons__c</ns0:fullNames>"
        "</ns0:readMetadata>",
    )
    record = ET.fromstring(read.content).find(".//m:records", NS)
    assert record.findtext("m:type", namespaces=NS) == "LongTextArea"
    assert record.findtext("m:length", namespaces=NS) == "32000"
    deleted = soap(
        sf_api,
        token,
        f'<ns0:deleteMetadata xmlns:ns0="{MD}"><ns0:type>CustomField'
        "</ns0:type><ns0:fullNames>Lead.AI_Reasons__c</ns0:fullNames>"
        "</ns0:deleteMetadata>",
    )
    assert results(deleted)[0].findtext("m:success", namespaces=NS) == "true"
    response = sf_api.post(
        "sobjects/Lead/", {"LastName": "X", "Company": "C", "AI_Reasons__c": "r"}
    )
    assert response.json()[0]["errorCode"] == "INVALID_FIELD"


def test_bad_session_and_bad_envelopes_are_soap_faults(sf_api):
    response = soap(sf_api, "bogus", create_field("<ns0:fullName>Lead.X__c</ns0:fullName>"))
    assert response.status_code == 500
    assert ET.fromstring(response.content).findtext(".//faultcode") == "sf:INVALID_SESSION_ID"
    garbage = sf_api.http.post(
        sf_api.url("/services/Soap/m/59.0"), data=b"<not-xml", headers={"Content-Type": "text/xml"}
    )
    assert garbage.status_code == 500
    assert ET.fromstring(garbage.content).findtext(".//faultcode") == "soapenv:Client"


def test_more_than_ten_components_is_a_fault(sf_api, sf_sandbox):
    items = "".join(
        f'<ns0:metadata xsi:type="ns0:CustomField"><ns0:fullName>Lead.Many{n}__c</ns0:fullName>'
        "<ns0:label>m</ns0:label><ns0:type>Checkbox</ns0:type></ns0:metadata>"
        for n in range(11)
    )
    response = soap(
        sf_api,
        sf_sandbox.access_token,
        f'<ns0:createMetadata xmlns:ns0="{MD}" xmlns:xsi="http://www.w3.org/2001/'
        f'XMLSchema-instance">{items}</ns0:createMetadata>',
    )
    assert response.status_code == 500


def test_tooling_api_creates_reads_and_deletes_custom_field(sf_api):
    response = sf_api.post(
        "tooling/sobjects/CustomField/",
        {
            "FullName": "Opportunity.AI_Forecast_Note__c",
            "Metadata": {
                "label": "Forecast Note",
                "type": "Html",
                "length": 32768,
                "visibleLines": 10,
            },
        },
    )
    assert response.status_code == 201
    body = response.json()
    assert body["success"] is True and body["id"].startswith("00N")
    fields = {f["name"]: f for f in sf_api.get("sobjects/Opportunity/describe").json()["fields"]}
    note = fields["AI_Forecast_Note__c"]
    assert note["type"] == "textarea" and note["extraTypeInfo"] == "richtextarea"
    assert note["htmlFormatted"] is True and note["length"] == 32768
    read = sf_api.get(f"tooling/sobjects/CustomField/{body['id']}").json()
    assert read["FullName"] == "Opportunity.AI_Forecast_Note__c"
    assert read["Metadata"]["type"] == "Html"
    duplicate = sf_api.post(
        "tooling/sobjects/CustomField/",
        {
            "FullName": "Opportunity.AI_Forecast_Note__c",
            "Metadata": {
                "label": "Forecast Note",
                "type": "Html",
                "length": 32768,
                "visibleLines": 10,
            },
        },
    )
    assert duplicate.status_code == 400
    assert duplicate.json()[0]["errorCode"] == "DUPLICATE_DEVELOPER_NAME"
    assert sf_api.delete(f"tooling/sobjects/CustomField/{body['id']}").status_code == 204


def test_state_survives_a_restart_on_the_same_data_dir(tmp_path):
    from salesforce_fixtures import Api

    first = SalesforceSandbox(tmp_path).start()
    try:
        api = Api(first)
        token = first.access_token
        api.post(
            "tooling/sobjects/CustomField/",
            {"FullName": "Lead.Kept__c", "Metadata": {"label": "Kept", "type": "Checkbox"}},
        )
        lead_id = api.create("Lead", LastName="Persist", Company="C", Kept__c=True)
        api.admin(
            "outbound-messages",
            {
                "name": "Leads",
                "object": "Lead",
                "fields": ["Email"],
                "endpoint_url": "http://127.0.0.1:9/hook",
            },
        )
        ids = (first.org_id, first.client_id, first.client_secret, first.user_id)
        cert = first.ca_cert.read_bytes()
    finally:
        first.stop()
    second = SalesforceSandbox(tmp_path).start()
    try:
        assert (second.org_id, second.client_id, second.client_secret, second.user_id) == ids
        assert second.ca_cert.read_bytes() == cert
        api = Api(second)
        record = api.get(f"sobjects/Lead/{lead_id}", token=token)
        assert record.status_code == 200 and record.json()["Kept__c"] is True
        assert [c["name"] for c in second.relay.configs()] == ["Leads"]
    finally:
        second.stop()
