"""graph: Wikipedia dump -> pages, links (anchor + sentence), redirects, nodes and the CSR link graph."""

from hopforge.graph.ingest import IngestBatch, ingest_batch, plan_ingest
from hopforge.graph.linkgraph import LinkGraph
from hopforge.graph.stage import GraphStage, GraphStats, run_ingest
from hopforge.text.titles import SiteInfo

__all__ = ["GraphStage", "GraphStats", "IngestBatch", "LinkGraph", "SiteInfo", "ingest_batch", "plan_ingest",
           "run_ingest"]
