"""Cohorts: explain every slide of a study on a Dask cluster, resumably.

`run_cohort` is the Python form of ``napari-medcam batch``; see
`napari_medcam.batch.cohort` for how slides, workers and failures are handled.
"""

from napari_medcam.batch.cohort import CohortInterrupted, CohortReport, run_cohort

__all__ = ["CohortInterrupted", "CohortReport", "run_cohort"]
