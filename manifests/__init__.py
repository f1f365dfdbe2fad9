"""Declarative install definitions per CRM.

Declarative install definitions per CRM: the OAuth scopes, the fields and properties Fieldwise
owns, webhook subscriptions and widgets. The single source of truth for provisioning and for which field
each result is written to.
"""
