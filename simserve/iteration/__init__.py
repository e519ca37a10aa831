"""Iteration plans (layer 1): what a stage does in one iteration, as data, and its closed-form price."""
from simserve.iteration.steps import (AllToAll, Collective, Compute, Experts, Host, Interleaved, IterationPlan,
                                      Layers)
from simserve.iteration.price import IdleNetwork, Price, price

__all__ = ["AllToAll", "Collective", "Compute", "Experts", "Host", "IdleNetwork", "Interleaved", "IterationPlan",
           "Layers", "Price", "price"]
