"""Writing with Anthropic's models over retrieved CRM evidence.

Writing with Anthropic's models over retrieved CRM evidence: the client, redaction of personal
data, retrieval, battle cards, forecast notes and segment specialists.
"""
