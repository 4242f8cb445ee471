"""A ComfyUI prompt priced node by node from what the store holds: the per-node phases
(``"<node id>:<class>"``) of the prompts a server or GPU ran teach each node class's cost
(:mod:`perflib.comfyui.node_costs`), and the job-level estimate is refined with it.

How the two combine (measured with ``tools/comfyui_replay.py``, README "ComfyUI"): once
:data:`MIN_JOBS` stored prompts have node times and every node that will run has a learned
cost, the total is the sum over the nodes (``total_from: "node_sum"``); otherwise it is the
job-level estimate (``"job_model"``), shared out over the nodes (learned costs where known, the
rest by sampler work) and less the nodes ComfyUI will serve from its cache. Either way the
``nodes`` sum to the total.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

import sqlalchemy as sa

from perflib.comfyui.graph import ParsedPrompt
from perflib.comfyui.node_costs import NodeCosts, NodeObservation, NodePrice, job_node_features
from perflib.store import Store
from perflib.store.schema import generation_performance as jobs_table
from perflib.store.schema import generation_phases as phases_table

MAX_JOBS = 500  # latest stored prompts a fit learns from
MIN_JOBS = 3  # stored prompts with node times before their sum answers alone
JOB_TYPE = "comfyui"  # what the collector and the node record (a cache hit has its own type)


@dataclass(frozen=True)
class LearnedNodes:
    """Node costs fitted on `jobs` stored prompts of one GPU (and server, where it had some)."""

    costs: NodeCosts
    jobs: int


def stored_observations(store: Store, gpu_name: str | None, hostname: str | None = None,
                        as_of: datetime | None = None, limit: int = MAX_JOBS
                        ) -> tuple[list[NodeObservation], int]:
    """(each recorded node run, how many prompts they came from) of the latest `limit`
    successful ComfyUI prompts on `gpu_name` (and `hostname`, when given) that finished before
    `as_of`. Reads only."""
    query = sa.select(jobs_table.c.job_id, jobs_table.c.passes, jobs_table.c.extra_params) \
        .where(jobs_table.c.job_type == JOB_TYPE, jobs_table.c.status == "success",
               jobs_table.c.gpu_name.is_(None) if gpu_name is None
               else jobs_table.c.gpu_name == gpu_name)
    if hostname is not None:
        query = query.where(jobs_table.c.hostname == hostname)
    if as_of is not None:
        query = query.where(jobs_table.c.finished_at < as_of)
    query = query.order_by(jobs_table.c.finished_at.desc()).limit(limit)
    with store.engine.connect() as conn:
        jobs = {row.job_id: row for row in conn.execute(query)}
        phases = conn.execute(sa.select(phases_table.c.job_id, phases_table.c.name,
                                        phases_table.c.seconds)
                              .where(phases_table.c.job_id.in_(list(jobs)))).all() \
            if jobs else []
    features = {job_id: job_node_features({"passes": row.passes or [],
                                           "extra_params": row.extra_params or {}})
                for job_id, row in jobs.items()}
    seen, taught = [], set()
    for job_id, name, seconds in phases:
        node_id, colon, class_type = str(name).partition(":")
        if colon and seconds is not None and class_type != "unknown":
            seen.append(NodeObservation(class_type, features[job_id].get(node_id, ()),
                                        float(seconds)))
            taught.add(job_id)
    return seen, len(taught)


def learn_nodes(store: Store, gpu_name: str | None, hostname: str | None = None,
                as_of: datetime | None = None) -> LearnedNodes:
    """Node costs for a prompt on this server, or on any server with this GPU while the
    server itself has too few prompts with node times."""
    seen, jobs = stored_observations(store, gpu_name, hostname, as_of)
    if hostname is not None and jobs < MIN_JOBS:
        seen, jobs = stored_observations(store, gpu_name, None, as_of)
    return LearnedNodes(NodeCosts().fit(seen), jobs)


def refine(prediction: Mapping[str, Any], learned: LearnedNodes, graph: Mapping[str, Any],
           parsed: ParsedPrompt, cached: set[str]) -> dict[str, Any]:
    """The job-level `prediction` with ``nodes`` (every node the prompt needs, in id order:
    id, class_type, seconds, cached) and ``total_from``; the total and its interval are the
    nodes' sum (see the module's rule)."""
    job_seconds = float(prediction["predicted_time_seconds"])
    priced = learned.costs.price(graph, parsed, cached)
    unknown = [p for p in priced if p.seconds is None and not p.cached]
    if learned.jobs >= MIN_JOBS and not unknown:
        nodes, total_from = priced, "node_sum"
    else:
        nodes, total_from = _shared_out(job_seconds, learned, graph, parsed, cached), "job_model"
    total = sum(p.seconds or 0.0 for p in nodes)
    ratio = total / job_seconds if job_seconds > 0 else 1.0
    low, high = prediction["uncertainty_range"]
    return {**prediction, "predicted_time_seconds": round(total, 3),
            "uncertainty_range": (round(low * ratio, 3), round(high * ratio, 3)),
            "nodes": [p.as_dict() for p in nodes], "total_from": total_from}


def _shared_out(job_seconds: float, learned: LearnedNodes, graph: Mapping[str, Any],
                parsed: ParsedPrompt, cached: set[str]) -> list[NodePrice]:
    """The job-level total over the prompt's nodes as if none were cached (learned costs where
    known, scaled to the total; what they leave over the others by sampler work, evenly when
    none is a sampler); then the cached ones cost 0."""
    whole = learned.costs.price(graph, parsed, set())
    known = sum(p.seconds for p in whole if p.seconds is not None)
    features = job_node_features(parsed.job_params())
    unknown = [p for p in whole if p.seconds is None]
    weights = {p.node_id: features[p.node_id][1] if len(features.get(p.node_id, ())) == 2
               else 0.0 for p in unknown}  # a sampler's latent work
    if not sum(weights.values()):
        weights = dict.fromkeys(weights, 1.0)
    left = max(job_seconds - known, 0.0) / (sum(weights.values()) or 1.0)
    shares = {p.node_id: p.seconds if p.seconds is not None else left * weights[p.node_id]
              for p in whole}
    scale = job_seconds / sum(shares.values()) if sum(shares.values()) > 0 else 0.0
    return [NodePrice(p.node_id, p.class_type,
                      0.0 if p.node_id in cached else shares[p.node_id] * scale,
                      p.node_id in cached) for p in whole]
