"""Understanding a latent space: estimators of its geometry, the space report with
measured advice, drift between two spaces, 2-D projections and the maps drawn from them.

The estimators are plain functions over numpy arrays; :meth:`Collection.analyze` and
:meth:`Collection.map` feed them a collection's vectors.
"""

from latentdb.analysis._advice import index_headline
from latentdb.analysis._drift import (
    ChangedRecord,
    ComparedSpace,
    SpaceComparison,
    compare_spaces,
    shared_positions,
)
from latentdb.analysis._duplicates import DuplicateCount, count_near_duplicates
from latentdb.analysis._estimators import (
    DimensionPoint,
    Hubness,
    NeighbourScan,
    NormSummary,
    dimension_curve,
    gaussian_like,
    gaussian_rows,
    hubness,
    hubness_skewness,
    k_occurrence,
    levina_bickel,
    nearest_others,
    norm_summary,
    occurrence_skewness,
    relative_contrast,
    scan_neighbours,
    two_nn,
)
from latentdb.analysis._map import check_map_path, coloring, write_html, write_map, write_png
from latentdb.analysis._progress import Steps, steps_bar
from latentdb.analysis._projection import PROJECTIONS, SpaceMap, check_method, project
from latentdb.analysis._reduction import Reduction, candidate_dimensions, reduction_trials
from latentdb.analysis._report import (
    REPORT_STEPS,
    Advice,
    Hub,
    IndexMeasurement,
    NearDuplicate,
    SpaceReport,
    build_report,
    sample_positions,
)

__all__ = [
    "PROJECTIONS",
    "REPORT_STEPS",
    "Advice",
    "ChangedRecord",
    "ComparedSpace",
    "DimensionPoint",
    "DuplicateCount",
    "Hub",
    "Hubness",
    "IndexMeasurement",
    "NearDuplicate",
    "NeighbourScan",
    "NormSummary",
    "Reduction",
    "SpaceComparison",
    "SpaceMap",
    "SpaceReport",
    "Steps",
    "build_report",
    "candidate_dimensions",
    "check_map_path",
    "check_method",
    "coloring",
    "compare_spaces",
    "count_near_duplicates",
    "dimension_curve",
    "gaussian_like",
    "gaussian_rows",
    "hubness",
    "hubness_skewness",
    "index_headline",
    "k_occurrence",
    "levina_bickel",
    "nearest_others",
    "norm_summary",
    "occurrence_skewness",
    "project",
    "reduction_trials",
    "relative_contrast",
    "sample_positions",
    "scan_neighbours",
    "shared_positions",
    "steps_bar",
    "two_nn",
    "write_html",
    "write_map",
    "write_png",
]
