"""The Flask app and its blueprints.

The Flask app and its blueprints: webhook receivers, OAuth install, data for the in-CRM widgets,
feedback, the admin console and health. Handlers verify, parse and enqueue; they never do CRM work.
"""
