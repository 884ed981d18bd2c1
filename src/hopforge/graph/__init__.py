"""graph: Wikipedia dump -> pages, links (anchor + sentence), redirects, nodes and the CSR link graph."""

from hopforge.graph.build import build_graph
from hopforge.graph.ingest import IngestBatch, ingest_batch, plan_ingest, run_ingest
from hopforge.graph.linkgraph import LinkGraph
from hopforge.text.titles import SiteInfo

__all__ = ["IngestBatch", "LinkGraph", "SiteInfo", "build_graph", "ingest_batch", "plan_ingest", "run_ingest"]
