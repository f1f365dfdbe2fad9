"""What every step of the data flow shares.

What every step of the data flow shares: configuration, canonical schemas, the LanceDB store,
the queue, embeddings, encryption of secrets at rest and the command line. Nothing in ``core`` speaks a
CRM's wire format; everything else imports from here.
"""
