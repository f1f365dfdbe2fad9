"""rq jobs that move data between the CRMs and the store.

rq jobs that move data: webhook batches to fetches to LanceDB, backfill, reconciliation and the
write-back of results into CRM fields. Jobs are module-level functions that take ids, not objects.
"""
