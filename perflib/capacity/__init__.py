"""Capacity planning: the GPUs a pool needs to keep the queue wait within its target, hour of
the week by hour, from the observed arrivals and predicted service times (``perflib capacity``).
"""
from perflib.capacity.planner import CapacityPlan, plan_capacity

__all__ = ["CapacityPlan", "plan_capacity"]
