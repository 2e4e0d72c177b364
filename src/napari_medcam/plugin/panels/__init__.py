"""The Med-CAM dock widget's panels, one job each, wired together by `MedCAMWidget`.

- `input.InputPanel`: which image layer, which pyramid level / region / slices;
- `classifier.ClassifierPanel`: which classifier and which class to explain;
- `settings.SettingsPanel`: preset, device, advanced settings, extra layers;
- `run.RunPanel`: the Explain/Cancel button, progress and the background worker;
- `summary.SummaryPanel`: what the last explanation found;
- `review.ReviewPanel`: check an edited mask, compare it with a reference;
- `export.ExportPanel`: save the mask (TIFF + GeoJSON).

Panels do not know the widget: each gets the shared pieces it needs (viewer,
`common.Session`, `results.ResultStore`, the panels it reads from) when it is made,
and says what changed through Qt signals.
"""
