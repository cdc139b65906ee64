"""A device's own training data: file formats, checks against a task, and the public evaluation set.

Each device names its data in its own config; these modules read it (:mod:`.formats`), check it
against what the chain's task expects (:mod:`.checks`) and encode the one set every node shares,
the public evaluation set, as content-addressed bytes (:mod:`.evalset`).
"""
