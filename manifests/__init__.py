"""Declarative install definitions per CRM.

The OAuth scopes, the fields and properties Fieldwise owns, webhook subscriptions and widgets, one
manifest per CRM (``<crm>/manifest.yaml``). The single source of truth for provisioning and for
which field each result is written to; read it through :func:`manifests.loader.load_manifest`.
"""
