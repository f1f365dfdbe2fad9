"""Local stand-ins for Salesforce and HubSpot that speak the vendors' real wire formats.

The sandbox serves the demo, the end-to-end and reliability tests and the benchmarks: the unmodified
``simple-salesforce`` and ``hubspot-api-client`` libraries talk to it over HTTP exactly as they would to
a real org or portal. It also holds the seeded generator of a realistic CRM history
(``sandbox.history``). Nothing outside ``sandbox/`` and the tests imports from here.
"""
