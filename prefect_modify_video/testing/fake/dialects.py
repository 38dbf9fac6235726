"""The registry of fake services, built from the dialect classes."""

from __future__ import annotations

from prefect_modify_video.testing.fake.dialect import Dialect
from prefect_modify_video.testing.fake.fal import FalDialect
from prefect_modify_video.testing.fake.luma import LumaDialect
from prefect_modify_video.testing.fake.luma_agents import LumaAgentsDialect
from prefect_modify_video.testing.fake.replicate import ReplicateDialect
from prefect_modify_video.testing.fake.runway import RunwayDialect
from prefect_modify_video.testing.fake.segmind import SegmindDialect

DIALECTS: dict[str, type[Dialect]] = {
    dialect.service: dialect
    for dialect in (SegmindDialect, LumaDialect, FalDialect, ReplicateDialect, RunwayDialect, LumaAgentsDialect)
}
"""Each fake service's name (its dialect's ``service``) to its dialect class."""

SERVICES: tuple[str, ...] = tuple(DIALECTS)
"""The names of the fake services, in registry order."""
