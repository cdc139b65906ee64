"""Federated learning as the chain's application.

``settings`` (FL genesis section), ``update`` (signed model updates on the wire), ``blobs``
(content-addressed model and update store), ``pool`` (updates waiting for a block), ``round``
(the deterministic aggregation step a proposer runs and every verifier re-runs), ``app`` (the
:class:`consensus.app.Application`), ``trainer`` (the node's own asynchronous training loop),
``api`` (the ``/fl/...`` HTTP routes).
"""
