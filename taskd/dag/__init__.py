"""Pure DAG logic: validation, topological order, ready set, failure cascade. No I/O."""

from taskd.dag.graph import DagError, Graph, Problem

__all__ = ["DagError", "Graph", "Problem"]
