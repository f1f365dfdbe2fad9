"""The Salesforce connector: OAuth, streams, mappers, the error table, provisioning and write-back.

``client.SalesforceConnector`` is the entry point (built by ``connectors.base.connector_for``);
``auth`` holds the OAuth flows the install handlers call.
"""
