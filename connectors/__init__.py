"""One package per CRM: the only code that speaks a CRM's wire format.

One package per CRM, the only code that speaks that CRM's wire format. Each has the same six
files: ``client.py`` (HTTP, retries, rate limits), ``auth.py`` (OAuth tokens), ``streams.py`` (one stream
per CRM object), ``mappers.py`` (raw payloads to canonical records and back), ``errors.py`` (status codes to
retriable, fatal or skippable errors) and ``provision.py`` (fields, webhooks and widgets from the manifest).
"""
