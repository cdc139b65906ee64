"""Deterministic simulation of a whole fedchain network in one process (see ``docs/netsim.md``).

Real node stacks (gossip, consensus engine, chain store, application) on a virtual clock over a
simulated transport; :func:`netsim.sim.run` plays a scenario from one seed.
"""
