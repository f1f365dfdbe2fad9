"""A local Salesforce org for the demo, the tests and the benchmarks.

It speaks the real wire formats (OAuth, REST, SOQL, composite, Metadata SOAP, Tooling, Outbound
Messages) over HTTPS, so the unmodified ``simple-salesforce`` library works against it.
"""

from __future__ import annotations

from sandbox.salesforce.server import SalesforceSandbox

__all__ = ["SalesforceSandbox"]
